"""Host-level primitives of the local provider: commands, processes, cgroups, bounded waits."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Iterable

from jeroboam.infra.base import InfraError, InfraTimeout, wait_until  # noqa: F401 (re-exported)

CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")


def run(argv: list[str], step: str, input: str | None = None, timeout: float = 30) -> str:
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise InfraTimeout(step, f"{argv[0]} did not finish in {timeout:g} s") from None
    except FileNotFoundError:
        raise InfraError(step, f"{argv[0]} not found; run scripts/host-prereqs.sh") from None
    if proc.returncode != 0:
        raise InfraError(step, f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def ip_batch(commands: Iterable[str], step: str) -> None:
    """Run several iproute2 commands with one fork (the node start path is latency bound)."""
    run(["ip", "-batch", "-"], step, input="\n".join(commands) + "\n")


def link_exists(name: str) -> bool:
    return (SYS_NET / name).exists()


def links() -> list[str]:
    return sorted(os.listdir(SYS_NET))


def netns_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def taken_subnets(known: list) -> list:
    """``known`` networks plus every destination of the host's routes (any table)."""
    nets = list(known)
    for route in json.loads(run(["ip", "-4", "-j", "route", "show", "table", "all"],
                                "read host routes") or "[]"):
        if route.get("dst", "default") != "default":
            nets.append(ipaddress.ip_network(route["dst"], strict=False))
    return nets


def check_subnet(net, known: list):
    clash = [str(t) for t in taken_subnets(known) if net.overlaps(t)]
    if clash:
        raise InfraError("allocate network", f"{net} overlaps host routes or networks {clash}")
    return net


def free_subnet(pools, known: list):
    """The first /24 of ``pools`` overlapping neither ``known`` networks nor host routes."""
    taken = taken_subnets(known)
    for pool in pools:
        for net in pool.subnets(new_prefix=max(pool.prefixlen, 24)):
            if not any(net.overlaps(t) for t in taken):
                return net
    raise InfraError("allocate network", "every /24 of the address pools "
                     f"{[str(p) for p in pools]} overlaps a host route or network")


# --- processes -------------------------------------------------------------------------

def proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with its PID, names it for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_live(pid: int) -> bool:
    # PID 1 of some hosts reaps orphans only every minute or so, so a dead process lingers as
    # a zombie and `kill -0` succeeds on it: read the state instead.
    return proc_state(pid) not in (None, "Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def netns_id(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def netns_id_of(name: str) -> str | None:
    """The ``net:[inode]`` id of a named netns, comparable with :func:`netns_id`."""
    try:
        return f"net:[{os.stat(NETNS_DIR / name).st_ino}]"
    except FileNotFoundError:
        return None


def cgroup_paths(pid: int) -> list[str]:
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]


def pids() -> list[int]:
    own = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != own]


def kill(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# --- cgroups ---------------------------------------------------------------------------

def cgroup_dirs(name: str) -> list[Path]:
    """Every hierarchy's directory for cgroup ``/name`` (v1 controllers, named ones, v2)."""
    found = [CGROUP_ROOT / name] if (CGROUP_ROOT / name / "cgroup.procs").exists() else []
    for hierarchy in CGROUP_ROOT.iterdir():
        if (hierarchy / name).is_dir():
            found.append(hierarchy / name)
    return found


def cgroup_names(pattern) -> list[str]:
    """Top-level cgroup names (any hierarchy) matching a compiled regex."""
    names = {p.name for p in CGROUP_ROOT.iterdir() if pattern.fullmatch(p.name)}
    for hierarchy in CGROUP_ROOT.iterdir():
        if hierarchy.is_dir() and not hierarchy.is_symlink():
            try:
                names.update(n for n in os.listdir(hierarchy) if pattern.fullmatch(n))
            except (NotADirectoryError, PermissionError):
                continue
    return sorted(names)


def remove_cgroup(name: str) -> bool:
    """rmdir ``/name`` bottom-up in every hierarchy; False while some process is still inside."""
    done = True
    for top in cgroup_dirs(name):
        for sub in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            done &= _rmdir(sub)
        done &= _rmdir(top)
    return done


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:  # EBUSY: a process (or child cgroup) is still there
        return False
    return True


# --- mounts ----------------------------------------------------------------------------

def mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # field 5 is the mount point, with spaces etc. octal-escaped
        points.append(line.split()[4].encode().decode("unicode_escape"))
    return points
