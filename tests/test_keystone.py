"""`--auth keystone`: tokens validated against Keystone's /v3/auth/tokens, and cached.

Keystone itself is not run here (it needs its own database, WSGI server and
bootstrap); a stub that speaks the two calls the service makes stands in for it.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.support import Process, base_env, free_port, wait_http

USER_TOKEN = "user-token-1"


class StubKeystone(BaseHTTPRequestHandler):
    validations = 0

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
                                    "user": {"id": "svc", "name": "jeroboam", "domain": {"id": "default"}},
                                    "project": {"id": "service", "name": "service", "domain": {"id": "default"}},
                                    "roles": [{"name": "service"}], "catalog": []}},
                    {"X-Subject-Token": "service-token"})

    def do_GET(self):  # validate a user's token
        assert self.headers["X-Auth-Token"] == "service-token"
        if self.headers["X-Subject-Token"] != USER_TOKEN:
            return self._reply(404, {"error": {"code": 404}})
        type(self).validations += 1
        self._reply(200, {"token": {"user": {"id": "u-key"}, "project": {"id": "p-key"},
                                    "roles": [{"name": "member"}], "expires_at": "2999-01-01T00:00:00Z"}})


@pytest.fixture
def keystone_server(tmp_path):
    stub = ThreadingHTTPServer(("127.0.0.1", 0), StubKeystone)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    port = free_port()
    env = base_env(tmp_path, JEROBOAM_AUTH_KEYSTONE_URL=f"http://127.0.0.1:{stub.server_port}",
                   JEROBOAM_AUTH_KEYSTONE_USERNAME="jeroboam", JEROBOAM_AUTH_KEYSTONE_PASSWORD="secret")
    proc = Process(["serve", "--auth", "keystone", "--bind", f"127.0.0.1:{port}"], env, tmp_path / "serve.log")
    try:
        wait_http(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()
        stub.shutdown()


def test_keystone_tokens(keystone_server):
    r = httpx.get(keystone_server + "/v1/clusters")
    assert r.status_code == 401 and r.json()["error"]["title"] == "Unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Keystone uri=")
    assert httpx.get(keystone_server + "/v1/clusters", headers={"X-Auth-Token": "forged"}).status_code == 401
    headers = {"X-Auth-Token": USER_TOKEN, "X-Project-Id": "someone-else", "X-Roles": "admin"}
    created = httpx.post(keystone_server + "/v1/clustertemplates", headers=headers,
                         json={"coe": "swarm-mode", "image_id": "test-image"})
    assert created.status_code == 201, created.text
    # Identity comes from the token, never from headers a client could forge.
    assert (created.json()["project_id"], created.json()["user_id"]) == ("p-key", "u-key")
    assert httpx.get(keystone_server + "/v1/mservices", headers=headers).status_code == 403
    assert httpx.get(keystone_server + "/", headers={}).status_code == 200
    assert StubKeystone.validations == 1
