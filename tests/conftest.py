import os
import uuid

import pytest

from tests.support import Api, Process, base_env, free_port, wait_http


@pytest.fixture(scope="session", autouse=True)
def api_user_reaches_tmp(tmp_path_factory):
    """A root `serve` or `api` runs its API as [DEFAULT] api_user, which must reach the data
    directories tests make under pytest's root-only temporary directories: others may pass
    through those two (not list them); each test's own directory stays 0700 until a service
    hands it to the API's group."""
    base = tmp_path_factory.getbasetemp()
    for path in (base, base.parent):
        path.chmod(path.stat().st_mode | 0o001)


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
