"""`--auth keystone` against a real Keystone (installed from PyPI by scripts/keystone.sh),
driven by the real clients with password authentication through Keystone's catalog."""

import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from magnumclient import client as magnum_client
from magnumclient import exceptions as magnum_exc

from tests.realkeystone import ADMIN_PASSWORD, PASSWORD, SERVICE_USER, copy_keystone, start_keystone
from tests.support import JEROBOAM, Process, base_env, free_port, wait_http

OPENSTACK = str(Path(sys.executable).with_name("openstack"))
CACHE_SECONDS = 5


@pytest.fixture(scope="module")
def keystone(tmp_path_factory):
    ks = start_keystone(tmp_path_factory.mktemp("keystone"))
    yield ks
    ks.stop()


def _serve(data: Path, keystone, port: int | None = None, **settings):
    port = port or free_port()
    env = base_env(data, JEROBOAM_KEYSTONE_AUTHTOKEN_AUTH_URL=keystone.url + "/v3",
                   JEROBOAM_KEYSTONE_AUTHTOKEN_USERNAME=SERVICE_USER,
                   JEROBOAM_KEYSTONE_AUTHTOKEN_PASSWORD=PASSWORD,
                   JEROBOAM_KEYSTONE_AUTHTOKEN_INTERFACE="public", **settings)
    proc = Process(["serve", "--auth", "keystone", "--bind", f"127.0.0.1:{port}"], env, data / "serve.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url, proc)
    return url, proc


@pytest.fixture(scope="module")
def service(keystone, tmp_path_factory):
    """Jeroboam registered in Keystone's catalog as container-infra."""
    port = free_port()
    keystone.register_container_infra(f"http://127.0.0.1:{port}/v1")
    url, proc = _serve(tmp_path_factory.mktemp("serve-keystone"), keystone, port,
                       JEROBOAM_KEYSTONE_AUTHTOKEN_TOKEN_CACHE_TIME=str(CACHE_SECONDS))
    yield url
    proc.stop()


def _magnum(keystone, user: str, project: str, password: str = PASSWORD):
    auth = v3.Password(auth_url=keystone.url + "/v3", username=user, password=password, project_name=project,
                       user_domain_id="default", project_domain_id="default")
    return magnum_client.Client(session=ks_session.Session(auth=auth), interface="public", api_version="latest")


def test_service_user_holds_only_the_service_role(keystone):
    r = keystone.admin.get("/role_assignments", params={"user.id": keystone._id("users", SERVICE_USER),
                                                        "include_names": "true"})
    assert [(a["role"]["name"], a["scope"]["project"]["name"]) for a in r.json()["role_assignments"]] == [
        ("service", "service")]


def test_member_reader_admin_and_other_projects(keystone, service):
    member = _magnum(keystone, "alpha-member", "alpha")
    template = member.cluster_templates.create(name="ks-tpl", coe="swarm-mode", image_id="test-image")
    alpha = keystone._id("projects", "alpha")
    assert template.project_id == alpha
    cluster = member.clusters.create(name="ks-cluster", cluster_template_id=template.uuid, node_count=1,
                                     master_count=1)

    reader = _magnum(keystone, "alpha-reader", "alpha")
    assert "ks-tpl" in [t.name for t in reader.cluster_templates.list()]
    assert reader.clusters.get(cluster.uuid).name == "ks-cluster"
    with pytest.raises(magnum_exc.Forbidden):
        reader.cluster_templates.create(name="refused", coe="swarm-mode", image_id="test-image")
    with pytest.raises(magnum_exc.Forbidden):
        reader.clusters.delete(cluster.uuid)

    other = _magnum(keystone, "beta-member", "beta")
    assert "ks-tpl" not in [t.name for t in other.cluster_templates.list()]
    assert [c.uuid for c in other.clusters.list()] == []
    with pytest.raises(magnum_exc.NotFound):
        other.clusters.get(cluster.uuid)
    with pytest.raises(magnum_exc.Forbidden):
        other.mservices.list()

    admin = _magnum(keystone, "admin", "admin", ADMIN_PASSWORD)
    assert cluster.uuid in [c.uuid for c in admin.clusters.list()]
    assert [s.binary for s in admin.mservices.list()] == ["magnum-conductor"]


def test_openstack_cli_with_password_auth(keystone, service):
    env = {**os.environ, "OS_AUTH_URL": keystone.url + "/v3", "OS_IDENTITY_API_VERSION": "3",
           "OS_USER_DOMAIN_ID": "default", "OS_PROJECT_DOMAIN_ID": "default", "OS_PASSWORD": PASSWORD,
           "OS_INTERFACE": "public", "OS_PROJECT_NAME": "alpha"}
    for var in ("OS_AUTH_TYPE", "OS_ENDPOINT", "OS_TOKEN"):
        env.pop(var, None)

    def run(user, *args):
        return subprocess.run([OPENSTACK, "coe", "cluster", "template", *args], capture_output=True, text=True,
                              timeout=120, env={**env, "OS_USERNAME": user})

    created = run("alpha-member", "create", "cli-tpl", "--coe", "swarm-mode", "--image", "test-image",
                  "--external-network", "none", "-f", "value", "-c", "uuid")
    assert created.returncode == 0, created.stderr
    listed = run("alpha-reader", "list", "-f", "value", "-c", "name")
    assert listed.returncode == 0 and "cli-tpl" in listed.stdout.split(), listed.stderr
    # The CLI reports a refused delete on stdout and still exits 0; the template stays.
    refused = run("alpha-reader", "delete", "cli-tpl")
    assert "(HTTP 403)" in refused.stdout + refused.stderr
    token = keystone.token("alpha-member", "alpha")
    assert httpx.get(service + "/v1/clustertemplates/cli-tpl", headers={"X-Auth-Token": token}).status_code == 200


def test_tokens_missing_forged_and_revoked(keystone, service):
    r = httpx.get(service + "/v1/clusters")
    assert r.status_code == 401 and r.json()["error"]["title"] == "Unauthorized"
    assert r.headers["WWW-Authenticate"] == f'Keystone uri="{keystone.url}/v3"'
    assert httpx.get(service + "/v1/clusters", headers={"X-Auth-Token": "forged"}).status_code == 401
    token = keystone.token("alpha-member", "alpha")
    # Identity comes from the token, never from headers a client could forge.
    headers = {"X-Auth-Token": token, "X-Project-Id": "beta", "X-Roles": "admin"}
    assert httpx.get(service + "/v1/clusters", headers=headers).status_code == 200
    assert httpx.get(service + "/v1/mservices", headers=headers).status_code == 403

    revoked = httpx.delete(keystone.url + "/v3/auth/tokens", headers={"X-Auth-Token": token,
                                                                     "X-Subject-Token": token})
    assert revoked.status_code == 204
    assert httpx.get(keystone.url + "/v3/auth/tokens", headers={"X-Auth-Token": keystone.admin.headers[
        "X-Auth-Token"], "X-Subject-Token": token}).status_code == 404
    # As with keystonemiddleware, a validated token is trusted for token_cache_time, then asked about again.
    assert httpx.get(service + "/v1/clusters", headers=headers).status_code == 200
    time.sleep(CACHE_SECONDS + 0.5)
    r = httpx.get(service + "/v1/clusters", headers=headers)
    assert r.status_code == 401, r.text


@pytest.fixture(scope="module")
def short_lived(keystone, tmp_path_factory):
    """A Keystone whose tokens live 8 seconds, and a Jeroboam that would cache them far longer."""
    ks = copy_keystone(keystone, tmp_path_factory.mktemp("keystone-short"), expiration=8)
    url, proc = _serve(tmp_path_factory.mktemp("serve-short"), ks, JEROBOAM_KEYSTONE_AUTHTOKEN_TOKEN_CACHE_TIME="300",
                       JEROBOAM_KEYSTONE_AUTHTOKEN_HTTP_REQUEST_MAX_RETRIES="2")
    yield ks, url
    proc.stop()
    ks.stop()


def test_expired_token_is_refused_even_while_cached(short_lived):
    keystone, url = short_lived
    token, expires_at = keystone.issue("alpha-member", "alpha")
    # Its service user's tokens are as short-lived, so each validation also logs the service user in.
    assert httpx.get(url + "/v1/clusters", headers={"X-Auth-Token": token}, timeout=60).status_code == 200
    expiry = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    time.sleep(max(0.0, (expiry - datetime.now(timezone.utc)).total_seconds()) + 0.5)
    r = httpx.get(url + "/v1/clusters", headers={"X-Auth-Token": token}, timeout=60)
    assert r.status_code == 401, r.text


def test_keystone_stopped_answers_503(short_lived):
    keystone, url = short_lived
    token = keystone.token("alpha-member", "alpha")
    keystone.stop()
    r = httpx.get(url + "/v1/clusters", headers={"X-Auth-Token": token}, timeout=60)
    assert r.status_code == 503
    assert r.json()["errors"][0]["status"] == 503
    assert r.json()["errors"][0]["detail"] == "The Keystone service is temporarily unavailable."


def test_keystone_mode_without_its_settings_refuses_to_start(tmp_path):
    done = subprocess.run(JEROBOAM + ["serve", "--auth", "keystone", "--bind", f"127.0.0.1:{free_port()}"],
                          env=base_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "jeroboam: --auth keystone needs [keystone_authtoken] auth_url, username, password "
        "(or JEROBOAM_KEYSTONE_AUTHTOKEN_AUTH_URL)"]
