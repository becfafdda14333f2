"""Fixtures for the local provider's tests: real dockerds, as root, under a private prefix."""

import fcntl
import os
import shutil
import tempfile

import pytest

from jeroboam.infra.local import LocalProvider
from tests.support import host_snapshot as snapshot_of_host

# Link, netns and cgroup names of these tests start with "jbt", apart from a running product's.
PREFIX = "jbt"
LOCK = "/tmp/jbt-tests.lock"


@pytest.fixture(scope="session")
def provider():
    if os.geteuid() != 0:
        pytest.skip("the local provider needs root (network namespaces, mounts, dockerd)")
    # One session at a time owns the PREFIX names (and removes what a killed session left).
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # short: unix socket paths under it must stay below 108 bytes
        state = tempfile.mkdtemp(prefix="jbt-", dir="/tmp")
        p = LocalProvider(state, prefix=PREFIX)
        try:
            p.setup()
            p.remove_leftovers([], [])
            yield p
        finally:
            p.remove_leftovers([], [])
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def before(provider):
    """The provider's inventory and the host's routes/firewall before any test made a node."""
    return provider.inventory(), snapshot_of_host(PREFIX)


@pytest.fixture(scope="session")
def host_snapshot():
    return lambda: snapshot_of_host(PREFIX)
