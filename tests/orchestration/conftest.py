import pytest

from jeroboam.orchestration.engine import Engine
from jeroboam.orchestration.store import MemoryStore


@pytest.fixture
def store():
    return MemoryStore()


@pytest.fixture
def engine(store):
    return Engine(store)
