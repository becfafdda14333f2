"""A local node's supervisor: the first process of the node, and the parent of all the others.

The provider starts it inside the node's fresh network, mount and UTS namespaces (NODE_INIT has
set them up). Its first process exits as soon as the supervisor is ready, so the worker that
started the node has no child left to reap, and every later process of the node is forked by
the supervisor, which reaps it: any worker can stop any node, no zombie stays behind. It is a
child subreaper, so what the node's processes leave behind when they die (dockerd's
containerd) is reaped here too. It holds the node's mount namespace: the mounts its processes
ask for live as long as the node.

Requests come over ``<node dir>/init.sock``, one JSON object a line: ``{"op": "start", "spec":
{...}}`` (a ProcessSpec as JSON), ``{"op": "stop", "name": ..., "timeout": ...}``. Per process
NAME: ``proc/NAME.pid`` holds "PID STARTTIME" while it runs, ``proc/NAME.exit`` its last exit
status, ``NAME.log`` its output; ``proc/init.pid`` is the supervisor's own.

Standard library only: it runs as ``python -I -S nodeinit.py NODE_DIR [SPEC_FILE...]``, each
SPEC_FILE a process to start before it reports ready.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socketserver
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
RESTART_DELAY = 1.0  # seconds before a process with ``restart`` is started again
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Supervisor:
    def __init__(self, node_dir: str):
        self.dir = node_dir
        self.proc_dir = os.path.join(node_dir, "proc")
        os.makedirs(self.proc_dir, exist_ok=True)
        self.cond = threading.Condition()
        self.running: dict[str, int] = {}  # name -> pid
        self.specs: dict[str, dict] = {}
        self.stopping: set[str] = set()
        self.mounted: set[tuple] = set()
        self.oneshots: dict[int, list] = {}  # pid -> [exit status] once reaped

    # --- requests ------------------------------------------------------------------------

    def start(self, spec: dict) -> dict:
        name = spec["name"]
        with self.cond:
            self.specs[name] = spec
            self.stopping.discard(name)
            if name in self.running:
                return {"pid": self.running[name], "started": False}
            for mount in spec.get("mounts", ()):
                self._mount(mount)
            return {"pid": self._spawn(spec), "started": True}

    def stop(self, name: str, timeout: float) -> dict:
        with self.cond:
            self.stopping.add(name)
            pid = self.running.get(name)
            if pid is None:
                return {"stopped": False}
            _signal(pid, signal.SIGTERM)
            if not self.cond.wait_for(lambda: self.running.get(name) != pid, timeout):
                _signal(-pid, signal.SIGKILL)  # its process group: it is a session leader
                self.cond.wait_for(lambda: self.running.get(name) != pid, 10)
            return {"stopped": True}

    # --- processes -----------------------------------------------------------------------

    def _spawn(self, spec: dict, argv=None, stdout: str | None = None) -> int:
        """posix_spawn (exec errors raise here); the reaper thread collects it."""
        argv = argv or spec["argv"]
        out = os.open(stdout or os.path.join(self.dir, f"{spec['name']}.log"),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            pid = os.posix_spawnp(
                argv[0], argv, {"PATH": PATH, **spec.get("env", {})},
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)],
                # Python ignores SIGPIPE and SIGXFSZ; a child must not inherit that
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ), setsid=True)
        finally:
            os.close(out)
        if stdout is None:
            self.running[spec["name"]] = pid
            try:
                started = _start_time(pid)
            except FileNotFoundError:
                return pid  # exited and reaped already; the reaper records it
            _write(os.path.join(self.proc_dir, f"{spec['name']}.pid"), f"{pid} {started}\n")
        return pid

    def _mount(self, mount: dict) -> None:
        key = (mount["type"], mount.get("source"), mount["target"], mount.get("options", ""))
        if key in self.mounted:
            return
        options = [o for o in key[3].split(",") if o]
        if key[0] == "bind":
            commands = [["mount", "--bind", key[1], key[2]]]
            if "ro" in options:
                commands.append(["mount", "-o", "remount,bind,ro", key[2]])
        elif key[0] == "tmpfs":
            commands = [["mount", "-t", "tmpfs", *(["-o", key[3]] if options else []),
                         "tmpfs", key[2]]]
        else:
            raise ValueError(f"unknown mount type {key[0]!r}")
        for argv in commands:
            self._run(argv)
        self.mounted.add(key)

    def _run(self, argv: list[str]) -> None:
        """Run a command to completion (called holding the lock; the reaper reaps it: a
        waitpid of our own would race with it)."""
        err = os.path.join(self.proc_dir, "command.err")
        pid = self._spawn({}, argv, stdout=err)
        self.oneshots[pid] = []
        self.cond.wait_for(lambda: self.oneshots[pid], 30)
        status = (self.oneshots.pop(pid) or [None])[0]
        if status != 0:
            with open(err, errors="replace") as f:
                detail = f.read().strip()
            raise RuntimeError(f"{' '.join(argv)}: {detail or status}")
        os.unlink(err)

    def reap(self) -> None:
        """Collect every child and adopted orphan; restart what asked for it."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.1)
                continue
            code = os.waitstatus_to_exitcode(status)
            with self.cond:
                if pid in self.oneshots:
                    self.oneshots[pid].append(code)
                name = next((n for n, p in self.running.items() if p == pid), None)
                if name is not None:
                    del self.running[name]
                    _remove(os.path.join(self.proc_dir, f"{name}.pid"))
                    _write(os.path.join(self.proc_dir, f"{name}.exit"),
                           json.dumps({"status": code, "at": time.time()}) + "\n")
                    if name not in self.stopping and self.specs[name].get("restart"):
                        threading.Timer(RESTART_DELAY, self._restart, (name,)).start()
                self.cond.notify_all()

    def _restart(self, name: str) -> None:
        with self.cond:
            if name in self.stopping or name in self.running:
                return
            try:
                self._spawn(self.specs[name])
            except OSError as exc:
                print(f"restart {name}: {exc}", flush=True)


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        supervisor: Supervisor = self.server.supervisor
        try:
            request = json.loads(self.rfile.readline())
            if request["op"] == "start":
                answer = supervisor.start(request["spec"])
            elif request["op"] == "stop":
                answer = supervisor.stop(request["name"], float(request.get("timeout", 10)))
            else:
                answer = {"error": f"unknown op {request['op']!r}"}
        except Exception as exc:  # the caller gets it; the supervisor stays up
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _start_time(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def _write(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def main(node_dir: str, spec_files: list[str]) -> None:
    ready_r, ready_w = os.pipe()
    if os.fork():
        # the starting worker's child: exits once the supervisor answers, reaped at once
        os.close(ready_w)
        message = os.read(ready_r, 65536)
        sys.stdout.buffer.write(message)
        sys.stdout.flush()
        os._exit(0 if message.startswith(b"ready") else 1)
    os.close(ready_r)
    os.chdir(node_dir)  # the node's processes start there
    log = os.open(os.path.join(node_dir, "init.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                  0o640)
    os.dup2(log, 1)  # off the starting worker's pipe
    os.dup2(log, 2)
    os.close(log)
    try:
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        supervisor = Supervisor(node_dir)
        _write(os.path.join(supervisor.proc_dir, "init.pid"),
               f"{os.getpid()} {_start_time(os.getpid())}\n")
        threading.Thread(target=supervisor.reap, name="reaper", daemon=True).start()
        sock = os.path.join(node_dir, "init.sock")
        _remove(sock)
        os.umask(0o077)  # the socket: root only
        server = Server(sock, Handler)
        server.supervisor = supervisor
        for path in spec_files:
            with open(path) as f:
                answer = supervisor.start(json.load(f))
    except Exception as exc:
        os.write(ready_w, f"error: {type(exc).__name__}: {exc}\n".encode())
        os._exit(1)
    os.write(ready_w, f"ready {os.getpid()} {answer.get('pid', '') if spec_files else ''}\n"
             .encode())
    os.close(ready_w)
    server.serve_forever(poll_interval=None)  # nothing ever shuts it down: no need to wake


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
