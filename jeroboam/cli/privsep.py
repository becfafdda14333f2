"""Privilege separation: the API never runs as root.

A root `jeroboam serve` or `jeroboam api` binds its port first (below 1024 only root may),
then its API process becomes [DEFAULT] api_user for good: no supplementary groups, that
user's uid and gid, no capability in any set (the bounding set too, where the process may
change it) and no_new_privs, so that nothing it executes regains one. `serve` forks that
process before its worker starts: the worker stays root for the host's namespaces, dockerds
and routes; the API needs only its socket, the database and its configuration.

The embedded SQLite database is shared by the two. Its directory (state_path) becomes
root:<the user's group> 1770: the API creates the -wal and -shm files there, and the sticky
bit keeps it from renaming or removing what it does not own, such as the worker's state in
state_path/local (root's, 0700). The database file becomes the user's, 0600: a root process
gives the -wal and -shm files it creates the owner and mode of the database, and SQLite
follows no link in their place.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import pwd
import signal
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Callable

# prctl(2) options (linux/prctl.h)
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
LOG = logging.getLogger("jeroboam")


class PrivsepError(Exception):
    """The API's user cannot be had or taken on; the message is one line."""


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def status(pid: int | str = "self") -> dict[str, str]:
    """/proc/<pid>/status as {field: value}."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def api_user(settings) -> pwd.struct_passwd | None:
    """The user the API becomes: None when this process is not root (nothing to drop) or the
    operator keeps the API root (api_user root or empty)."""
    if os.geteuid() != 0:
        return None
    name = str(settings.get("DEFAULT", "api_user")).strip()
    if not name:
        return None
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise PrivsepError(f"[DEFAULT] api_user: there is no user {name!r} (scripts/setup.sh creates "
                           "jeroboam); set it to root to keep the API root") from None
    return None if user.pw_uid == 0 else user


def share_database(settings, user: pwd.struct_passwd) -> None:
    """Make the embedded database and its directory the API user's (see above). A database
    the operator named is left as the operator set it up."""
    from sqlalchemy.engine import make_url

    if settings.get("database", "connection"):
        return
    database = make_url(settings.database_url).database  # makes state_path
    directory = os.path.dirname(database)
    os.chown(directory, 0, user.pw_gid)
    os.chmod(directory, 0o1770)
    for path in (database, f"{database}-wal", f"{database}-shm", f"{database}-journal"):
        if os.path.lexists(path):
            hand_over(path, user, 0o600)


def hand_over(path: str, user: pwd.struct_passwd, mode: int) -> None:
    """Make the file at `path` (created if missing) the user's, with `mode`."""
    try:  # a link in its place is not one root should follow
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, mode)
    except OSError as exc:
        raise PrivsepError(f"cannot hand {path} to {user.pw_name}: {exc.strerror}") from None
    try:
        os.fchown(fd, user.pw_uid, user.pw_gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def drop_privileges(user: pwd.struct_passwd) -> None:
    """Become `user` with no way back, or raise PrivsepError."""
    from oslo_privsep import capabilities  # (cffi: tens of ms that other commands need not wait)

    # The bounding set needs CAP_SETPCAP, so it goes first; a container may withhold that,
    # and no_new_privs below keeps an execve from raising anything anyway.
    for cap in range(int(Path("/proc/sys/kernel/cap_last_cap").read_text()) + 1):
        try:
            _prctl(PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise
            break
    os.setgroups([])
    os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
    os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)  # empties the permitted, effective, ambient sets
    capabilities.drop_all_caps_except([], [], [])  # and the inheritable one
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.environ.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    now = status()
    left = [name for name in ("CapInh", "CapPrm", "CapEff", "CapAmb") if int(now[name], 16)]
    ids = {int(i) for i in now["Uid"].split() + now["Gid"].split()}
    if left or ids != {user.pw_uid, user.pw_gid} or os.getgroups() or now["NoNewPrivs"] != "1":
        raise PrivsepError(f"could not become {user.pw_name}: Uid {now['Uid']}, Gid {now['Gid']}, "
                           f"capabilities left in {', '.join(left) or 'none'}")
    # The code it goes on running, which it imports as it goes, must be within its reach (a
    # Python under /root, as pyenv installs it, is not).
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # jeroboam's own
    for path in (sys.executable, sysconfig.get_path("stdlib"), sysconfig.get_path("purelib"), package):
        if not os.access(path, os.R_OK | os.X_OK):
            raise PrivsepError(f"[DEFAULT] api_user {user.pw_name} cannot read {path}: install Jeroboam "
                               "and its Python where it can, or set api_user to root to keep the API root")


def fork_api(user: pwd.struct_passwd, run: Callable[[], int]) -> int:
    """A child process that becomes `user`, then exits with what run() returns; its PID.
    Fork before starting any thread: the child carries on with only the forking one."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        drop_privileges(user)
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # (the uid change cleared it) the API ends with serve
        if os.getppid() == parent:
            code = run()
    except PrivsepError as exc:
        print(f"jeroboam: {exc}", file=sys.stderr, flush=True)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def supervise(pid: int) -> int:
    """Wait for the API process `pid`; a SIGTERM or SIGINT here stops it. 0 when it ended
    because it was asked to, else 1: an API that ended on its own ends serve too."""
    state = {"stopping": False, "ended": False}

    def stop(*_):
        state["stopping"] = True
        if not state["ended"]:
            os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _, wait_status = os.waitpid(pid, 0)
        state["ended"] = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if state["stopping"]:
        return 0
    LOG.error("the API process %d ended (exit status %d); stopping", pid, os.waitstatus_to_exitcode(wait_status))
    return 1
