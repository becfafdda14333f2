"""Imports every model module so that Base.metadata knows all tables."""

import importlib

from jeroboam.db.base import Base

MODEL_MODULES = ("jeroboam.db.models", "jeroboam.db.stack_models")


def metadata():
    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # stack_models arrives with the orchestration engine; until then it is absent.
            if exc.name != name:
                raise
    return Base.metadata
