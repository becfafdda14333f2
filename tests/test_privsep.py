"""Privilege separation on real processes, started as root as an operator starts them: a root
`jeroboam serve` binds its port (one below 1024 here), runs its API as the jeroboam user with
no capability and its worker as root; a root `jeroboam api` drops in place. What the API
still does unprivileged: answer, read and write the database (SQLite, PostgreSQL), sign
certificates with the CA keys it holds there."""

import os
import pwd
import signal
import socket
import stat
import subprocess
import time

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jeroboam.cli.privsep import status
from tests.support import (JEROBOAM, ROOT, Api, Process, base_env, descendants, free_port,
                           unprivileged_as, wait_http)
from tests.test_postgres_scale_out import database  # noqa: F401 (a fixture: a fresh PostgreSQL database)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped from root")


@pytest.fixture(scope="module")
def user():
    return pwd.getpwnam("jeroboam")  # scripts/setup.sh makes it


def low_port() -> int:
    """A free port below 1024: only root may bind it."""
    for port in range(990, 900, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024")


def csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")])
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM).decode()


def run(args, env, timeout=60):
    return subprocess.run(JEROBOAM + args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("db, api_workers", [("sqlite", 1), ("sqlite", 2), ("postgresql", 1)])
def test_serve_as_root_runs_the_api_unprivileged(tmp_path, request, user, db, api_workers):
    port = low_port()
    settings = {"JEROBOAM_API_WORKERS": str(api_workers)}
    if db == "postgresql":
        settings["JEROBOAM_DATABASE_CONNECTION"] = request.getfixturevalue("database")
    url = f"http://127.0.0.1:{port}"
    proc = Process(["serve", "--bind", f"127.0.0.1:{port}"], base_env(tmp_path, **settings), tmp_path / "serve.log")
    try:
        wait_http(url, proc)
        # serve itself is the worker: root, with its capabilities
        assert status(proc.pid)["Uid"].split() == ["0"] * 4 and int(status(proc.pid)["CapEff"], 16)
        api = descendants(proc.pid)
        # one API process, or uvicorn's supervisor and its workers (and their resource tracker)
        assert len(api) >= (1 if api_workers == 1 else 1 + api_workers), api
        for pid in api:
            unprivileged_as(pid, user)

        alice = Api(url, project="p-privsep")
        assert httpx.get(url + "/v1", timeout=10).status_code == 200
        template = alice.template(name="privsep")
        cluster, task = alice.cluster(template["uuid"], name="privsep")
        assert alice.wait_task(task, timeout=60)["state"] == "SUCCEEDED"
        ca = x509.load_pem_x509_certificate(alice.get(f"/v1/certificates/{cluster}").json()["pem"].encode())
        signed = alice.post("/v1/certificates", json={"cluster_uuid": cluster, "csr": csr()})
        assert signed.status_code == 201, signed.text
        x509.load_pem_x509_certificate(signed.json()["pem"].encode()).verify_directly_issued_by(ca)
    finally:
        proc.stop()
    assert proc.proc.returncode == 0, proc.output()
    # uvicorn's workers and multiprocessing's resource tracker end on their own once their
    # parent has: give them a moment
    deadline = time.monotonic() + 10
    while [pid for pid in api if os.path.exists(f"/proc/{pid}")] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in api if os.path.exists(f"/proc/{pid}")], "an API process outlived serve"
    if db == "sqlite":
        # the API's group may add the -wal and -shm files; the sticky bit keeps the rest of
        # state_path (the worker's state) out of its hands
        data = os.stat(tmp_path)
        assert (data.st_uid, data.st_gid, stat.S_IMODE(data.st_mode)) == (0, user.pw_gid, 0o1770)
        db_file = os.stat(tmp_path / "jeroboam.sqlite")
        assert (db_file.st_uid, stat.S_IMODE(db_file.st_mode)) == (user.pw_uid, 0o600)


def test_api_as_root_drops_in_place(tmp_path, user):
    """`db upgrade` as root hands the new database to the API's user; `api` as root binds,
    then becomes that user in the same process and writes to it."""
    env = base_env(tmp_path)
    assert run(["db", "upgrade"], env).returncode == 0
    port = low_port()
    url = f"http://127.0.0.1:{port}"
    proc = Process(["api", "--bind", f"127.0.0.1:{port}"], env, tmp_path / "api.log")
    try:
        wait_http(url, proc)
        unprivileged_as(proc.pid, user)
        r = Api(url).post("/v1/clustertemplates", json={"name": "t", "coe": "swarm-mode", "image_id": "test-image"})
        assert r.status_code == 201, r.text
    finally:
        proc.stop()


def test_an_api_that_ends_ends_serve(tmp_path):
    port = free_port()
    proc = Process(["serve", "--bind", f"127.0.0.1:{port}"], base_env(tmp_path), tmp_path / "serve.log")
    try:
        wait_http(f"http://127.0.0.1:{port}", proc)
        [api] = descendants(proc.pid)
        os.kill(api, signal.SIGKILL)
        assert proc.proc.wait(30) == 1
        assert f"the API process {api} ended (exit status -9); stopping" in proc.output()
    finally:
        proc.stop()


def test_state_path_out_of_the_api_users_reach_is_one_line(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    result = run(["serve", "--bind", f"127.0.0.1:{free_port()}"], base_env(private / "data"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"jeroboam: the API as jeroboam: [DEFAULT] state_path: Permission denied: {private / 'data'}" in \
        result.stderr.splitlines(), result.stderr


def test_a_config_file_the_api_processes_cannot_read_is_one_line(tmp_path):
    """Several API processes read the configuration files again, as the API's user."""
    conf = tmp_path / "jeroboam.conf"
    conf.write_text("[api]\nworkers = 2\n")
    conf.chmod(0o600)
    result = run(["serve", "--config-file", str(conf), "--bind", f"127.0.0.1:{free_port()}"], base_env(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"jeroboam: the API as jeroboam: config file not readable: {conf}" in result.stderr.splitlines()


def test_unknown_api_user_is_one_line(tmp_path):
    result = run(["serve", "--bind", f"127.0.0.1:{free_port()}"], base_env(tmp_path, JEROBOAM_DEFAULT_API_USER="no-such-user"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "jeroboam: [DEFAULT] api_user: there is no user 'no-such-user' (scripts/setup.sh creates jeroboam); "
        "set it to root to keep the API root")


def test_serve_not_started_as_root_is_one_process(tmp_path, user):
    """A developer's serve: nothing to drop, API and worker in the one process as before."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, user.pw_uid, user.pw_gid)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(JEROBOAM + ["serve", "--bind", f"127.0.0.1:{port}"], env=base_env(data), cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, user=user.pw_uid, group=user.pw_gid,
                                extra_groups=[])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthcheck", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        assert descendants(proc.pid) == []
        assert status(proc.pid)["Uid"].split() == [str(user.pw_uid)] * 4
    finally:
        proc.terminate()
        proc.wait(30)
