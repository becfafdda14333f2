"""Fixtures for the vm provider's tests: real QEMU virtual machines, as root, under a private
prefix. Booting is slow under TCG (tens of seconds): the tests share their nodes."""

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from jeroboam.infra.vm.provider import BUILD_SCRIPT, DEFAULT_IMAGES, VmProvider

PREFIX = "jvt"
LOCK = "/tmp/jvt-tests.lock"


def host_snapshot() -> dict[str, str]:
    """Host state outside the provider's own names that it must never change."""
    def out(*argv):
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return {"routes": out("ip", "-4", "route", "show", "table", "main"),
            "iptables": out("iptables", "-S"), "nat": out("iptables", "-t", "nat", "-S")}


@pytest.fixture(scope="session")
def vm_images():
    """The node images (scripts/build-vm-images.sh: minutes the first time, cached after)."""
    if os.geteuid() != 0:
        pytest.skip("VM nodes need root (network namespaces, taps)")
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.DEVNULL)
    return DEFAULT_IMAGES


@pytest.fixture(scope="session")
def vm_provider(vm_images):
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one session at a time owns the PREFIX names
        state = tempfile.mkdtemp(prefix="jvt-", dir="/tmp")
        p = VmProvider(state, prefix=PREFIX, images_dir=vm_images)
        try:
            p.setup()
            p.remove_leftovers([], [])
            yield p
        finally:
            p.remove_leftovers([], [])
            shutil.rmtree(state, ignore_errors=True)


def qemu_status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in
                Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
