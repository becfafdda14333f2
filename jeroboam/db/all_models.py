"""Imports every model module so that Base.metadata knows all tables."""

import jeroboam.db.models  # noqa: F401
import jeroboam.db.stack_models  # noqa: F401
from jeroboam.db.base import Base


def metadata():
    return Base.metadata
