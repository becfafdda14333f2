"""Logging as an operator sets it up: a log file or directory, JSON lines, quiet third-party
loggers, one access line per request."""

import json
import subprocess
import sys

import httpx
import pytest

from tests.support import JEROBOAM, ROOT, Process, base_env, free_port, wait_http


def _serve(tmp_path, **settings):
    port = free_port()
    env = base_env(tmp_path / "data", JEROBOAM_SERVER_LOG_LEVEL="info", **{k: str(v) for k, v in settings.items()})
    proc = Process(["serve", "--bind", f"127.0.0.1:{port}"], env, tmp_path / "stderr.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url, proc)
    return proc, url


def _access_lines(lines: list[str], marker: str) -> list[str]:
    return [line for line in lines if marker in line and "jeroboam.access" in line]


@pytest.mark.parametrize("api_workers", [1, 2])
def test_json_lines_in_the_log_file_one_access_line_per_request(tmp_path, api_workers):
    """With several API processes (uvicorn's children) too: each sets up the same logging."""
    log_file = tmp_path / "jeroboam.json.log"
    proc, url = _serve(tmp_path, JEROBOAM_DEFAULT_LOG_FILE=log_file, JEROBOAM_DEFAULT_USE_JSON="true",
                       JEROBOAM_SERVER_API_WORKERS=api_workers)
    try:
        headers = {"X-Project-Id": "p-log", "X-Roles": "member,reader"}
        for _ in range(3):
            assert httpx.get(f"{url}/v1/clusters?bogus=1", headers=headers).status_code == 400
        assert httpx.get(f"{url}/v1/clustertemplates", headers=headers).status_code == 200
    finally:
        proc.stop()
    records = [json.loads(line) for line in log_file.read_text().splitlines()]  # every line parses
    access = [r for r in records if r["name"] == "jeroboam.access"]
    assert len([r for r in access if 'path="/v1/clusters"' in r["message"] and "status=400" in r["message"]]) == 3
    assert len([r for r in access if 'path="/v1/clustertemplates"' in r["message"]]) == 1
    assert all(r["levelname"] == "INFO" and r["message"].startswith("request_id=req-") for r in access)
    assert any(r["message"].startswith("serving the API on") for r in records)
    assert "jeroboam.access" not in proc.output()  # the file has them, not standard error


def test_log_dir_gets_a_file_named_after_the_command(tmp_path):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    proc, url = _serve(tmp_path, JEROBOAM_DEFAULT_LOG_DIR=str(log_dir))
    try:
        assert httpx.get(f"{url}/v1", headers={"X-Project-Id": "p-log"}).status_code == 200
    finally:
        proc.stop()
    lines = (log_dir / "jeroboam.log").read_text().splitlines()
    assert len(_access_lines(lines, 'path="/v1" status=200')) == 1
    assert any("serving the API on" in line for line in lines)


def test_third_party_loggers_stay_quiet_at_debug(tmp_path):
    """Debug logging for Jeroboam's own loggers; urllib3 and docker only from warnings up."""
    log_file = tmp_path / "debug.log"
    script = (
        "import logging; from jeroboam import config; from jeroboam.cli.main import _logging\n"
        "_logging(config.load(), 'jeroboam')\n"
        "for name in ('jeroboam.tasks', 'urllib3.connectionpool', 'docker.api', 'keystonemiddleware.auth_token'):\n"
        "    logging.getLogger(name).debug('debug from %s', name)\n"
        "logging.getLogger('urllib3.connectionpool').warning('warning from urllib3')\n")
    env = base_env(tmp_path, JEROBOAM_DEFAULT_DEBUG="true", JEROBOAM_DEFAULT_LOG_FILE=str(log_file))
    subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True, timeout=60)
    text = log_file.read_text()
    assert "debug from jeroboam.tasks" in text
    assert "warning from urllib3" in text
    assert "debug from urllib3" not in text and "debug from docker" not in text
    assert "debug from keystonemiddleware" not in text


def test_a_log_file_that_cannot_be_opened_stops_the_start_in_one_line(tmp_path):
    missing = tmp_path / "no-such-dir" / "jeroboam.log"
    env = base_env(tmp_path, JEROBOAM_DEFAULT_LOG_FILE=str(missing))
    done = subprocess.run(JEROBOAM + ["serve", "--bind", f"127.0.0.1:{free_port()}"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"jeroboam: logging: No such file or directory: {missing}"]
