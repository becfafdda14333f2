"""Tasks from a terminal: list, show, and wait with the steps shown live.

One implementation behind two front ends: `jeroboam task ...` (plain HTTP, for hosts
without the OpenStack client) and the `openstack coe task ...` plugin (jeroboam.osc), which
differ only in how they send a request.
"""

from __future__ import annotations

import time
from typing import Callable

DONE = ("SUCCEEDED", "FAILED", "CANCELLED")
HEADERS = {"OpenStack-API-Version": "container-infra latest", "Accept": "application/json"}
LIST_COLUMNS = ("uuid", "action", "resource_uuid", "state", "progress", "worker", "created_at")
SHOW_FIELDS = ("uuid", "action", "resource_type", "resource_uuid", "project_id", "state", "progress", "worker",
               "attempts", "error", "created_at", "started_at", "finished_at")


class TaskError(Exception):
    """The service refused a request (unknown task, no permission...); the message says why."""


class Tasks:
    """The /v1/tasks calls. `request(path, params)` sends a GET below the /v1 endpoint and
    returns the response (requests' or keystoneauth's: both have status_code and json())."""

    def __init__(self, request: Callable):
        self._request = request

    def _get(self, path: str, params: dict | None = None) -> dict:
        response = self._request(path, params or {})
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            errors = (body or {}).get("errors") or [{}]
            raise TaskError(errors[0].get("detail") or f"HTTP {response.status_code} from the service")
        return body

    def list(self, **filters) -> list[dict]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._get("/tasks", params)["tasks"]

    def get(self, uuid: str) -> dict:
        return self._get(f"/tasks/{uuid}")["task"]

    def latest(self, resource_uuid: str) -> dict:
        """The newest task on a resource: what `wait --resource` follows."""
        found = self._get("/tasks", {"resource_uuid": resource_uuid, "sort_key": "id", "sort_dir": "desc",
                                     "limit": 1})["tasks"]
        if not found:
            raise TaskError(f"No task found for resource {resource_uuid}.")
        return found[0]


def failure(task: dict) -> str | None:
    """Why a task did not succeed, naming the step that failed; None when it succeeded."""
    if task["state"] == "SUCCEEDED":
        return None
    failed = [s for s in task.get("steps") or [] if s["state"] == "FAILED"]
    if failed:
        return f"step '{failed[-1]['name']}' failed: {failed[-1]['error'] or task.get('error') or 'no reason given'}"
    step = (task.get("error_detail") or {}).get("step")
    reason = task.get("error") or "no reason given"
    return f"step '{step}' failed: {reason}" if step else reason


def step_line(step: dict) -> str:
    took = f"{step['duration_seconds']:.2f} s" if step.get("duration_seconds") is not None else ""
    line = f"  {step['state']:<9} {step['name']:<32} {took:>9}"
    if step.get("attempts", 1) > 1:
        line += f"  (attempt {step['attempts']})"
    if step.get("error"):
        line += f"  {step['error']}"
    return line.rstrip()


def progress_bar(task: dict, width: int = 30) -> str:
    filled = width * int(task["progress"]) // 100
    steps = task.get("steps") or []
    ended = sum(1 for s in steps if s["state"] in ("SUCCEEDED", "FAILED"))
    running = [s["name"] for s in steps if s["state"] == "RUNNING"]
    where = f"  step {min(ended + 1, len(steps))}/{len(steps)} {running[0]}" if running else ""
    return f"[{'#' * filled}{'-' * (width - filled)}] {int(task['progress']):3d}% {task['state']}{where}"


def summary(task: dict) -> str:
    why = failure(task)
    return f"task {task['uuid']} ({task['action']}) {task['state']}" + (f": {why}" if why else "")


def describe(task: dict) -> list[str]:
    """`show`: the task's fields, its steps, and why it failed."""
    lines = [f"{name:<14} {task.get(name)}" for name in SHOW_FIELDS]
    lines.append("steps")
    lines += [step_line(s) for s in task.get("steps") or []] or ["  (none planned yet)"]
    if failure(task):
        lines.append(f"failure        {failure(task)}")
    return lines


def wait(tasks: Tasks, uuid: str, out, interval: float = 0.5, timeout: float | None = None) -> int:
    """Follow a task to its end: a line per ended step, a progress bar (redrawn in place on a
    terminal, a line per change elsewhere), then the outcome. 0 when it succeeded, 1 when it
    failed or was cancelled, 2 when `timeout` ran out first."""
    tty = out.isatty()
    shown: dict[str, str] = {}
    last_bar = None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        task = tasks.get(uuid)
        for step in task.get("steps") or []:
            if step["state"] in ("SUCCEEDED", "FAILED") and shown.get(step["name"]) != step["state"]:
                shown[step["name"]] = step["state"]
                out.write(("\r\033[K" if tty else "") + step_line(step) + "\n")
                last_bar = None
        bar = progress_bar(task)
        if bar != last_bar:
            out.write(f"\r\033[K{bar}" if tty else bar + "\n")
            last_bar = bar
        out.flush()
        if task["state"] in DONE:
            out.write(("\n" if tty else "") + summary(task) + "\n")
            return 0 if task["state"] == "SUCCEEDED" else 1
        if deadline is not None and time.monotonic() >= deadline:
            out.write(("\n" if tty else "") + f"task {uuid} still {task['state']} after {timeout:g} s\n")
            return 2
        time.sleep(interval)
