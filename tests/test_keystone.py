"""`--auth keystone` when Keystone misbehaves on the wire.

A real Keystone (tests/test_keystone_real.py) cannot be made to reset a connection
mid-request or to take seconds over one validation, nor does it count the validations
it answers, so a stub that speaks the two calls the service makes (its own login,
and validating a user's token) stands in for it here, and only here.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.support import Process, base_env, free_port, wait_http

RESET_TOKEN = "reset-me"
SLOW_TOKEN = "slow"
GOOD_TOKEN = "good"
SLOW_SECONDS = 5


class StubKeystone(BaseHTTPRequestHandler):
    validations: dict = {}

    def log_message(self, *args):
        pass

    def _reply(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # the service's own login
        self.rfile.read(int(self.headers["Content-Length"]))
        self._reply(201, {"token": {"expires_at": "2999-01-01T00:00:00.000000Z", "methods": ["password"],
                                    "user": {"id": "svc", "name": "jeroboam", "domain": {"id": "default", "name": "Default"}},
                                    "project": {"id": "service", "name": "service", "domain": {"id": "default", "name": "Default"}},
                                    "roles": [{"name": "service"}], "catalog": [{
                                        "type": "identity", "name": "keystone", "endpoints": [
                                            {"interface": i, "region": "RegionOne", "region_id": "RegionOne",
                                             "url": f"http://127.0.0.1:{self.server.server_port}/v3"}
                                            for i in ("public", "internal")]}]}},
                    {"X-Subject-Token": "service-token"})

    def do_GET(self):  # validate a user's token
        if self.path.rstrip("/").endswith("/v3"):
            return self._reply(200, {"version": {"id": "v3.14", "status": "stable", "links": [
                {"rel": "self", "href": f"http://127.0.0.1:{self.server.server_port}/v3/"}]}})
        token = self.headers["X-Subject-Token"]
        type(self).validations[token] = type(self).validations.get(token, 0) + 1
        if token == RESET_TOKEN:
            # Close with RST: what a crashing or overloaded Keystone does to its callers.
            self.connection.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            return
        if token == SLOW_TOKEN:
            time.sleep(SLOW_SECONDS)
        self._reply(200, {"token": {"user": {"id": "u-key", "name": "u", "domain": {"id": "default", "name": "Default"}},
                                    "project": {"id": "p-key", "name": "p", "domain": {"id": "default", "name": "Default"}},
                                    "methods": ["password"], "roles": [{"id": "r", "name": "member"}],
                                    "expires_at": "2999-01-01T00:00:00.000000Z", "issued_at": "2020-01-01T00:00:00Z"}})


@pytest.fixture
def keystone_server(tmp_path):
    stub = ThreadingHTTPServer(("127.0.0.1", 0), StubKeystone)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    port = free_port()
    env = base_env(tmp_path, JEROBOAM_KEYSTONE_AUTHTOKEN_AUTH_URL=f"http://127.0.0.1:{stub.server_port}/v3",
                   JEROBOAM_KEYSTONE_AUTHTOKEN_USERNAME="jeroboam", JEROBOAM_KEYSTONE_AUTHTOKEN_PASSWORD="secret",
                   JEROBOAM_KEYSTONE_AUTHTOKEN_HTTP_CONNECT_TIMEOUT="1",
                   JEROBOAM_KEYSTONE_AUTHTOKEN_HTTP_REQUEST_MAX_RETRIES="2", JEROBOAM_AUTH_TOKEN_CACHE_SIZE="2")
    proc = Process(["serve", "--auth", "keystone", "--bind", f"127.0.0.1:{port}"], env, tmp_path / "serve.log")
    try:
        wait_http(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()
        stub.shutdown()


def test_reset_connection_is_retried_then_503(keystone_server):
    assert httpx.get(keystone_server + "/v1/clusters", headers={"X-Auth-Token": GOOD_TOKEN}).status_code == 200
    r = httpx.get(keystone_server + "/v1/clusters", headers={"X-Auth-Token": RESET_TOKEN}, timeout=30)
    assert r.status_code == 503, r.text
    assert r.json()["errors"][0]["detail"] == "The Keystone service is temporarily unavailable."
    assert StubKeystone.validations[RESET_TOKEN] == 3  # the first try and http_request_max_retries=2


def test_slow_keystone_times_out_without_stalling_other_requests(keystone_server):
    assert httpx.get(keystone_server + "/v1/clusters", headers={"X-Auth-Token": GOOD_TOKEN}).status_code == 200
    results = {}
    slow = threading.Thread(target=lambda: results.update(r=httpx.get(
        keystone_server + "/v1/clusters", headers={"X-Auth-Token": SLOW_TOKEN}, timeout=60)))
    slow.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert httpx.get(keystone_server + "/healthcheck").status_code == 200
    assert httpx.get(keystone_server + "/v1/clusters", headers={"X-Auth-Token": GOOD_TOKEN}).status_code == 200
    # Blocked by the slow validation, these would wait for it (4.5 s: three tries of 1 s, and backoff).
    assert time.monotonic() - started < SLOW_SECONDS / 2
    assert slow.is_alive()
    slow.join()
    # Each read waits http_connect_timeout (1 s), far less than the stub's 5 s; then 503.
    assert results["r"].status_code == 503


def test_token_cache_is_bounded_least_recently_used_first(keystone_server):
    def get(token):
        assert httpx.get(keystone_server + "/v1/clusters", headers={"X-Auth-Token": token}).status_code == 200

    for token in ("lru-a", "lru-b", "lru-a", "lru-c", "lru-b"):
        get(token)
    # a was used again before c came, so the full cache (size 2) let b go, not a.
    assert [StubKeystone.validations[t] for t in ("lru-a", "lru-b", "lru-c")] == [1, 2, 1]
