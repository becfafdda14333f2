"""The systemd units of a host install: systemd's own checker accepts them, and they keep the
privilege split the README promises (systemd need not be running: nothing is started)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
INSTALLED = "/opt/jeroboam/bin/jeroboam"


def unit(name: str) -> dict[str, list[str]]:
    """The [Service] directives of a unit, each with all its values in order (systemd lets a
    directive repeat, and Environment= take several assignments)."""
    directives: dict[str, list[str]] = {}
    section = None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            directives.setdefault(key, []).extend(value.split() if key == "Environment" else [value])
    return directives


def verify(tmp_path: Path, text_by_name: dict[str, str]) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` on copies whose ExecStart names this environment's `jeroboam`
    instead of /opt/jeroboam (verify insists the program exists)."""
    exe = str(Path(sys.executable).with_name("jeroboam"))  # this venv's, as installed by pip
    paths = []
    for name, text in text_by_name.items():
        path = tmp_path / name
        path.write_text(text.replace(INSTALLED, exe))
        paths.append(str(path))
    return subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True)


@pytest.fixture
def analyze():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")


def test_systemd_accepts_the_units(analyze, tmp_path):
    texts = {p.name: p.read_text() for p in UNITS.glob("*.service")}
    assert set(texts) == {"jeroboam-api.service", "jeroboam-worker.service"}
    result = verify(tmp_path, texts)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_rejects_a_broken_unit(analyze, tmp_path):
    """The check above can fail: a misspelt directive is reported."""
    text = (UNITS / "jeroboam-api.service").read_text().replace("ExecStart=", "ExecStrat=")
    result = verify(tmp_path, {"jeroboam-api.service": text})
    assert "ExecStrat" in result.stdout + result.stderr


def test_api_unprivileged_worker_root():
    api, worker = unit("jeroboam-api.service"), unit("jeroboam-worker.service")
    assert api["User"] == ["jeroboam"] and api["CapabilityBoundingSet"] == [""] and api["NoNewPrivileges"] == ["yes"]
    assert api["ExecStart"] == [f"{INSTALLED} api"]
    assert worker["User"] == ["root"] and worker["ExecStart"] == [f"{INSTALLED} worker"]
    # nodes' dockerds are the worker's children: a worker restart must not kill the clusters
    assert worker["KillMode"] == ["process"]
    for service in (api, worker):
        # systemd would chown data_dir to the unit's user at each start: to jeroboam, node keys
        # included, or back to root, the API's database included
        assert "StateDirectory" not in service
    assert api["ReadWritePaths"] == ["-/var/lib/jeroboam"]
    # the API logs to the journal, never into the root worker's log directory
    assert {"JEROBOAM_DEFAULT_LOG_DIR=", "JEROBOAM_DEFAULT_LOG_FILE="} <= set(api["Environment"])
    assert "LogsDirectory" not in api
