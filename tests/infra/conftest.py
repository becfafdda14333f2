"""Fixtures for the local provider's tests: real dockerds, as root, under a private prefix."""

import os

import pytest

from jeroboam.infra.local import LocalProvider
from tests.support import host_snapshot as snapshot_of_host, scratch_provider

# Link, netns and cgroup names of these tests start with "jbt", apart from a running product's.
PREFIX = "jbt"


@pytest.fixture(scope="session")
def provider():
    if os.geteuid() != 0:
        pytest.skip("the local provider needs root (network namespaces, mounts, dockerd)")
    with scratch_provider(lambda state: LocalProvider(state, prefix=PREFIX), PREFIX) as p:
        yield p


@pytest.fixture(scope="session", autouse=True)
def before(provider):
    """The provider's inventory and the host's routes/firewall before any test made a node."""
    return provider.inventory(), snapshot_of_host(PREFIX)


@pytest.fixture(scope="session")
def host_snapshot():
    return lambda: snapshot_of_host(PREFIX)
