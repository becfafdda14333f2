import re
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.support import Api, Process, base_env, free_port, wait_http


class TempDirs:
    """What tests use of pytest's tmp_path_factory, under a directory of this session; others
    may pass through each directory (not list it)."""

    def __init__(self, base: Path):
        self.base = base

    def mktemp(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.base))
        path.chmod(0o711)
        return path


@pytest.fixture(scope="session")
def tmp_path_factory():
    """Test directories the API of a root `serve` or `api` can reach: it runs as [DEFAULT]
    api_user, and pytest's own are under /tmp/pytest-of-root, which every pytest session on
    the machine keeps root's alone. A service hands its data directory to the API's group
    itself. Removed at the end."""
    base = Path(tempfile.mkdtemp(prefix="jbtests-", dir="/tmp"))
    base.chmod(0o711)
    try:
        yield TempDirs(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def tmp_path(request, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp(re.sub(r"\W", "_", request.node.name)[:30])


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`jeroboam serve` on the embedded default (SQLite); run as root, its API runs as the
    jeroboam user and its worker as root."""
    data = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = base_env(data, JEROBOAM_WORKER_LEASE_SECONDS="3")
    proc = Process(["serve", "--bind", f"127.0.0.1:{port}"], env, data / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url, proc)
        yield url
    finally:
        proc.stop()


@pytest.fixture
def alice(server):
    return Api(server, project=f"p-{uuid.uuid4().hex[:8]}", user="u-alice")


@pytest.fixture
def admin(server):
    return Api(server, project="p-admin", user="u-admin", roles="admin")
