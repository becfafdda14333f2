"""Policy in code: oslo.policy's tools read Jeroboam's documented rules, and a policy file
changed while the service runs takes effect without a restart."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from jeroboam.api.policy import list_rules
from tests.support import Api, Process, base_env, free_port, wait_http

BIN = Path(sys.executable).parent


def _tool(name: str, *args: str, env: dict | None = None) -> str:
    done = subprocess.run([str(BIN / name), *args], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _blocks(sample: str) -> dict[str, str]:
    """The sample's comment text before each commented-out rule, by rule name, whitespace folded."""
    found = {}
    for block in sample.split("\n\n"):
        lines = block.strip().splitlines()
        rule = re.match(r'#"([^"]+)":', lines[-1]) if lines else None
        if rule:
            found[rule.group(1)] = " ".join(" ".join(line.lstrip("# ") for line in lines[:-1]).split())
    return found


def test_sample_generator_documents_every_rule_with_its_requests_and_scope():
    blocks = _blocks(_tool("oslopolicy-sample-generator", "--namespace", "jeroboam"))
    rules = list_rules()
    assert {r.name for r in rules} == set(blocks)
    assert any(name.startswith("resource_types:") for name in blocks)
    for rule in rules:
        text = blocks[rule.name]
        assert rule.description and " ".join(rule.description.split()) in text, rule.name
        for op in getattr(rule, "operations", []):
            assert f"{op['method']} {op['path']}" in text, rule.name
        if rule.name != "context_is_admin":
            assert "Intended scope(s): project" in text, rule.name


def test_policy_generator_and_checker_see_the_configured_policy_file(tmp_path):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text('"cluster:get_all": "role:admin"\n')
    env = base_env(tmp_path, JEROBOAM_AUTH_POLICY_FILE=str(policy_file))
    effective = _tool("oslopolicy-policy-generator", "--namespace", "jeroboam", env=env)
    assert '"cluster:get_all": "role:admin"' in effective
    assert '"cluster:get": "role:admin or (role:reader and project_id:%(project_id)s)"' in effective
    (tmp_path / "effective.yaml").write_text(effective)
    (tmp_path / "reader.json").write_text(json.dumps({"token": {
        "roles": [{"name": "reader"}], "project": {"id": "p"}, "user": {"id": "u"}}}))
    checked = _tool("oslopolicy-checker", "--policy", str(tmp_path / "effective.yaml"),
                    "--access", str(tmp_path / "reader.json"))
    assert re.search(r"^failed: cluster:get_all$", checked, re.M), checked
    assert re.search(r"^passed: cluster:get$", checked, re.M), checked


def _until(check, timeout: float = 5.0) -> float:
    """Seconds until check() holds; fails after timeout."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "the policy change did not take effect"
        time.sleep(0.1)
    return time.monotonic() - start


def test_policy_file_changes_take_effect_while_serving(tmp_path):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("{}\n")
    port = free_port()
    env = base_env(tmp_path, JEROBOAM_AUTH_POLICY_FILE=str(policy_file), JEROBOAM_SERVER_LOG_LEVEL="info")
    proc = Process(["serve", "--bind", f"127.0.0.1:{port}"], env, tmp_path / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url, proc)
        member, admin = Api(url, project="p-pol"), Api(url, project="p-admin", roles="admin")
        assert member.get("/v1/clusters").status_code == 200

        policy_file.write_text('"cluster:get_all": "role:admin"\n')
        assert _until(lambda: member.get("/v1/clusters").status_code == 403) < 3
        assert admin.get("/v1/clusters").status_code == 200
        assert member.get("/v1/clustertemplates").status_code == 200  # other rules keep their defaults

        policy_file.write_text('"cluster:get_all": [[\n')  # an editor's half-written file
        time.sleep(2.5)
        assert member.get("/v1/clusters").status_code == 403  # the rules in force stay
        assert "policy file not reloaded" in proc.output()

        policy_file.write_text("{}\n")
        assert _until(lambda: member.get("/v1/clusters").status_code == 200) < 3
    finally:
        proc.stop()
