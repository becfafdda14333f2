"""The guest agent of a ``vm`` node: PID 1 of the guest once the node's init script is done.

The provider puts this file, the local provider's supervisor (``nodeinit.py``) and the node's
settings on the node's config disk; the guest's init script sets up the network and execs
``python3 agent.py``. PID 1 only reaps orphans; its child starts the node supervisor
(``nodeinit.py``, which starts containerd and dockerd and supervises what the drivers start,
as on a local node) and serves the host over a virtio-serial port (no network listener: nothing on the
cluster network can talk to it).

Protocol: one JSON object a line each way; every request has an ``id`` echoed in its answer
(the host drops answers of requests it gave up on). Requests run in threads, so a slow
``stop`` does not hold up the others.
  {"op": "run", "argv": [...], "input": str|null, "timeout": s} -> {"rc", "stdout", "stderr"}
  {"op": "put", "path", "data" (base64), "mode"} -> {}
  {"op": "read", "path", "offset"} -> {"data" (base64)}
  {"op": "start", "spec"} / {"op": "stop", "name", "timeout"} -> the supervisor's answer
  {"op": "pid", "name"} -> {"pid": int|null}

Standard library only (Debian's python3 in the guest).
"""

from __future__ import annotations

import base64
import glob
import json
import os
import socket
import subprocess
import sys
import threading

PORT_NAME = "org.jeroboam.agent"
NODE_DIR = "/var/lib/jeroboam/node"
CONFIG_DIR = "/run/jeroboam"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _port() -> str:
    for name_file in glob.glob("/sys/class/virtio-ports/*/name"):
        with open(name_file) as f:
            if f.read().strip() == PORT_NAME:
                return "/dev/" + name_file.split("/")[-2]
    raise RuntimeError(f"no virtio port {PORT_NAME}")


def _supervisor(request: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.path.join(NODE_DIR, "init.sock"))
        s.sendall(json.dumps(request).encode() + b"\n")
        with s.makefile("rb") as f:
            return json.loads(f.readline() or b"{}") or {"error": "no answer"}


def _pid(name: str) -> int | None:
    try:
        with open(os.path.join(NODE_DIR, "proc", f"{name}.pid")) as f:
            pid, started = f.read().split()
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    return int(pid) if fields[19] == started and fields[0] not in "ZX" else None


def handle(request: dict) -> dict:
    op = request.get("op")
    if op == "run":
        try:
            proc = subprocess.run(request["argv"], input=request.get("input"), text=True,
                                  capture_output=True, timeout=request.get("timeout", 30),
                                  env={"PATH": PATH})
        except subprocess.TimeoutExpired:
            return {"error": f"{request['argv'][0]} did not finish in time"}
        except OSError as exc:
            return {"error": f"{request['argv'][0]}: {exc}"}
        return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
    if op == "put":
        path = request["path"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, request["mode"])
        with open(fd, "wb") as f:
            f.write(base64.b64decode(request["data"]))
        os.chmod(path + ".tmp", request["mode"])
        os.replace(path + ".tmp", path)
        return {}
    if op == "read":
        try:
            with open(request["path"], "rb") as f:
                f.seek(request.get("offset", 0))
                return {"data": base64.b64encode(f.read(4 << 20)).decode()}
        except FileNotFoundError:
            return {"data": ""}
    if op == "pid":
        return {"pid": _pid(request["name"])}
    if op in ("start", "stop"):
        return _supervisor({k: v for k, v in request.items() if k != "id"})
    return {"error": f"unknown op {op!r}"}


def serve() -> None:
    # the supervisor: starts dockerd, reports ready, its first process exits (reaped here)
    os.makedirs(os.path.join(NODE_DIR, "files"), exist_ok=True)
    subprocess.run([sys.executable, "-I", "-S", os.path.join(CONFIG_DIR, "nodeinit.py"),
                    NODE_DIR, *(os.path.join(CONFIG_DIR, f"{name}.json")
                                for name in ("containerd", "dockerd"))], check=True)
    port = os.open(_port(), os.O_RDWR)
    lock = threading.Lock()

    def answer(request: dict) -> None:
        try:
            reply = handle(request)
        except Exception as exc:  # the host gets it; the agent goes on serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        data = json.dumps({**reply, "id": request.get("id")}).encode() + b"\n"
        with lock:
            while data:
                data = data[os.write(port, data):]

    buffer = b""
    while True:
        chunk = os.read(port, 1 << 16)
        if not chunk:  # no host end connected: wait for one
            threading.Event().wait(0.1)
            continue
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                request = json.loads(line)
            except ValueError:
                continue  # the tail of a request the host abandoned
            threading.Thread(target=answer, args=(request,), daemon=True).start()


def main() -> None:
    if os.getpid() == 1 and os.fork():
        while True:  # PID 1: reap whatever is orphaned in the guest
            try:
                os.wait()
            except ChildProcessError:
                threading.Event().wait(1)
    serve()


if __name__ == "__main__":
    main()
