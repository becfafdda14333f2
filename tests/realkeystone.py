"""A real Keystone for the tests (scripts/keystone.sh): SQLite, fernet tokens, gunicorn on loopback.

`start_keystone` installs it (once per machine), bootstraps it and provisions what the
tests use: a service user `jeroboam` holding only the `service` role in project `service`,
projects alpha and beta, and users with member or reader roles in them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.support import ROOT, Process, free_port

ADMIN_PASSWORD = "admin-secret"
PASSWORD = "user-secret"
SERVICE_USER = "jeroboam"
# user -> (project, role)
USERS = {"alpha-member": ("alpha", "member"), "alpha-reader": ("alpha", "reader"),
         "beta-member": ("beta", "member"), SERVICE_USER: ("service", "service")}


def _script(*args: str, timeout: float) -> str:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "keystone.sh"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "KEYSTONE_ADMIN_PASSWORD": ADMIN_PASSWORD})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


class Keystone:
    """One running Keystone; stopped by its own PID only."""

    def __init__(self, data: Path, port: int):
        self.data, self.port = data, port
        self.url = f"http://127.0.0.1:{port}"
        self.process = Process(["serve", str(data), str(port)], dict(os.environ), data / "gunicorn.log",
                               program=["bash", str(ROOT / "scripts" / "keystone.sh")])
        deadline = time.monotonic() + 90
        while True:
            assert self.process.proc.poll() is None, self.process.output()[-3000:]
            try:
                if httpx.get(self.url + "/v3", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "Keystone did not start"
            time.sleep(0.2)
        self.admin = httpx.Client(base_url=self.url + "/v3", timeout=30,
                                  headers={"X-Auth-Token": self.token("admin", "admin", ADMIN_PASSWORD)})

    def stop(self) -> None:
        self.process.stop()

    def issue(self, user: str, project: str, password: str = PASSWORD) -> tuple[str, str]:
        """A project-scoped token for the user, and its expires_at."""
        r = httpx.post(self.url + "/v3/auth/tokens", timeout=30, json={"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}})
        assert r.status_code == 201, r.text
        return r.headers["X-Subject-Token"], r.json()["token"]["expires_at"]

    def token(self, user: str, project: str, password: str = PASSWORD) -> str:
        return self.issue(user, project, password)[0]

    def _id(self, collection: str, name: str) -> str | None:
        found = self.admin.get(f"/{collection}", params={"name": name}).json()[collection]
        return found[0]["id"] if found else None

    def _ensure(self, collection: str, name: str, body: dict) -> str:
        existing = self._id(collection, name)
        if existing:
            return existing
        r = self.admin.post(f"/{collection}", json={collection[:-1]: {"name": name, **body}})
        assert r.status_code == 201, r.text
        return r.json()[collection[:-1]]["id"]

    def provision(self) -> None:
        for project in {p for p, _ in USERS.values()}:
            self._ensure("projects", project, {"domain_id": "default"})
        for user, (project, role) in USERS.items():
            user_id = self._ensure("users", user, {"domain_id": "default", "password": PASSWORD})
            role_id = self._ensure("roles", role, {})
            r = self.admin.put(f"/projects/{self._id('projects', project)}/users/{user_id}/roles/{role_id}")
            assert r.status_code == 204, r.text

    def register_container_infra(self, url: str) -> None:
        service = self._ensure("services", "magnum", {"type": "container-infra"})
        r = self.admin.post("/endpoints", json={"endpoint": {
            "service_id": service, "interface": "public", "url": url, "region_id": "RegionOne"}})
        assert r.status_code == 201, r.text

    def point_identity_endpoints_here(self) -> None:
        """A copy of another Keystone's database still lists the other one's URL: use ours."""
        for endpoint in self.admin.get("/endpoints").json()["endpoints"]:
            if endpoint["url"].endswith("/v3"):
                r = self.admin.patch(f"/endpoints/{endpoint['id']}", json={"endpoint": {"url": self.url + "/v3"}})
                assert r.status_code == 200, r.text


def start_keystone(data: Path) -> Keystone:
    """Install (once per machine), bootstrap and provision a Keystone in `data`."""
    _script("install", timeout=1200)
    port = free_port()
    _script("init", str(data), str(port), timeout=300)
    keystone = Keystone(data, port)
    keystone.provision()
    return keystone


def copy_keystone(source: Keystone, data: Path, expiration: int) -> Keystone:
    """A second Keystone from a copy of a provisioned one (same users and keys, no bootstrap
    wait) whose tokens expire after `expiration` seconds."""
    shutil.copytree(source.data, data, ignore=shutil.ignore_patterns("gunicorn.log"), dirs_exist_ok=True)
    conf = (data / "keystone.conf").read_text().replace(str(source.data), str(data))
    (data / "keystone.conf").write_text(re.sub(r"(?m)^expiration = \d+$", f"expiration = {expiration}", conf))
    keystone = Keystone(data, free_port())
    keystone.point_identity_endpoints_here()
    return keystone
