import uuid

import pytest

from tests.support import Api, Process, base_env, free_port, wait_http


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`jeroboam serve` on the embedded default (SQLite), API and workers in one process."""
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
