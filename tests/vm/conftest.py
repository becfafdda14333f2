"""Fixtures for the vm provider's tests: real QEMU virtual machines, as root, under a private
prefix. Booting is slow under TCG (tens of seconds): the tests share their nodes."""

import fcntl
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from jeroboam.infra.local import BASE_IMAGE
from jeroboam.infra.vm.provider import BUILD_SCRIPT, DEFAULT_IMAGES, VmProvider

PREFIX = "jvt"
LOCK = "/tmp/jvt-tests.lock"


def privileged_view_of_host(client) -> str:
    """What a tenant root sees, in a `--privileged -v /:/host` container on its node, of a
    marker file just made on the host (an error message: it is not there) and of /etc/hostname
    (the node's own)."""
    marker = Path("/tmp", f"jvt-host-marker-{uuid.uuid4().hex}")
    marker.write_text("host secret\n")
    try:
        return client.containers.run(
            BASE_IMAGE, ["sh", "-c", f"ls /host{marker} 2>&1; cat /host/etc/hostname"],
            privileged=True, volumes={"/": {"bind": "/host", "mode": "rw"}},
            remove=True).decode()
    finally:
        marker.unlink()


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
