"""A worker process: runner threads that claim and run tasks, and a heartbeat that keeps
their leases (and the worker's `mservices` record) alive; except on SQLite, also the session lock
that tells other workers it lives (jeroboam.tasks.liveness)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import traceback

import sqlalchemy as sa

from jeroboam import states
from jeroboam.db.base import locks_rows, retrying, utcnow
from jeroboam.db.models import Service, Task
from jeroboam.drivers import Registry
from jeroboam.tasks import liveness, queue, registry
from jeroboam.tasks.context import LeaseLost, StepFailed, TaskCancelled, TaskContext, describe

LOG = logging.getLogger("jeroboam.worker")
# What Magnum calls the process that runs cluster operations: mservices clients look for it.
BINARY = "magnum-conductor"


class NameInUse(RuntimeError):
    """Another live worker heartbeats under the name this one was to take."""


def default_worker_name() -> str:
    # Stable across restarts, so that a restarted worker keeps its mservices record.
    return socket.gethostname()


class Worker:
    def __init__(self, engine, session_factory, settings, name: str | None = None):
        self.engine = engine
        self.settings = settings
        self.session_factory = session_factory
        self.name = name or default_worker_name()
        self.threads = int(settings.get("worker", "threads"))
        self.lease = float(settings.get("worker", "lease_seconds"))
        self.poll = float(settings.get("worker", "poll_interval"))
        self.row_locks = locks_rows(engine)
        # held while this worker lives: how others know at once that it died (not on SQLite)
        self.session_lock = liveness.SessionLock(engine, self.name, self.lease / 3) \
            if liveness.supported(engine) else None
        self._stop = threading.Event()
        self._claiming = threading.Lock()
        self._threads: list[threading.Thread] = []
        # ids of the tasks this worker's runner threads are running (never claimed again here)
        self._running: set[int] = set()

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._register()
        drivers = Registry(self.settings.get("drivers", "disabled_drivers")).drivers.values()
        for driver in drivers:
            driver.on_worker_start(self.session_factory, self.settings)
        for driver in drivers:
            for interval, fn in driver.periodic_tasks(self.settings):
                self._spawn(self._periodic(interval, fn), f"{driver.name}-{fn.__name__}")
        self._spawn(self._heartbeat_loop, "heartbeat")
        for i in range(self.threads):
            self._spawn(self._run_loop, f"runner-{i}")
        LOG.info("worker %s started with %d runner threads", self.name, self.threads)

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        queue.work_available.set()
        for thread in self._threads:
            thread.join(timeout)
        if self.session_lock is not None:
            try:
                self.session_lock.release()
            except Exception:  # the server releases it anyway when the connection goes
                LOG.exception("could not release worker %s's session lock", self.name)
        try:
            with self.session_factory() as session, session.begin():
                # Down at once in mservices, and the name free for a restart without waiting.
                session.execute(sa.update(Service).where(Service.host == self.name, Service.binary == BINARY)
                                .values(last_seen_at=None))
        except Exception:  # stopping goes on; the record then goes down when its heartbeat ages
            LOG.exception("could not mark worker %s stopped", self.name)

    def _spawn(self, target, label: str) -> None:
        thread = threading.Thread(target=target, name=f"{self.name}-{label}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _last_seen(self):
        with self.session_factory() as session:
            return session.scalar(sa.select(Service.last_seen_at)
                                  .where(Service.host == self.name, Service.binary == BINARY))

    def _register(self) -> None:
        """Take this worker's name, keeping its mservices record from an earlier run.

        A record heartbeated less than a lease ago may belong to a live worker of the same
        name, or to this one's predecessor that was killed: wait until it is a lease old
        (dead, its tasks up for takeover) or moves (alive: refuse, two workers must not
        share a name since leases are held by name). With a session lock the database
        answers at once: a namesake holding it is alive, a free one was a dead worker's."""
        if self.session_lock is not None:
            if not self.session_lock.take():
                raise NameInUse(f"worker name {self.name!r} is in use by a live worker; give this one --name")
            seen = None
        else:
            seen = self._last_seen()
        while seen is not None and (utcnow() - seen).total_seconds() < self.lease:
            LOG.info("worker name %s was heartbeated %.1f s ago; waiting for it to go silent", self.name,
                     (utcnow() - seen).total_seconds())
            time.sleep(min(1.0, self.lease / 3))
            latest = self._last_seen()
            if latest is not None and latest != seen:
                raise NameInUse(f"worker name {self.name!r} is in use by a live worker; give this one --name")
            seen = latest  # None: it stopped cleanly meanwhile, the name is free
        with self.session_factory() as session, session.begin():
            service = session.scalars(
                sa.select(Service).where(Service.host == self.name, Service.binary == BINARY)).first()
            if service is None:
                session.add(Service(host=self.name, binary=BINARY, report_count=1, last_seen_at=utcnow()))
            else:
                service.last_seen_at = utcnow()
            # Tasks a predecessor of this name held are not running anywhere: free them now,
            # before this worker's heartbeat would extend their leases.
            session.execute(sa.update(Task).where(Task.worker == self.name, Task.state == states.RUNNING)
                            .values(lease_expires_at=utcnow()))

    # -- loops ------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        # Its own thread, whatever the runners do: a step may take far longer than a lease.
        interval = self.lease / 3  # as SessionLock is told
        while not self._stop.wait(interval):
            try:
                retrying(lambda: queue.heartbeat(self.session_factory, self.name, self.lease,
                                                 frozenset(self._running)))
                retrying(self._report)
                if self.session_lock is not None:
                    self.session_lock.keep()
            except Exception:  # the database may be away a while; the next beat tries again
                LOG.exception("heartbeat failed")

    def _report(self) -> None:
        with self.session_factory() as session, session.begin():
            session.execute(
                sa.update(Service)
                .where(Service.host == self.name, Service.binary == BINARY)
                .values(report_count=Service.report_count + 1, last_seen_at=utcnow()))

    def _periodic(self, interval: float, fn):
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    fn(self.session_factory)
                except Exception:  # a failed round is logged; the next one tries again
                    LOG.exception("periodic %s failed", fn.__name__)
        return loop

    def _run_loop(self) -> None:
        while not self._stop.is_set():
            # One idle runner at a time looks at the queue: an idle worker polls once per
            # interval, not once per thread, and the API processes beside it keep the CPU.
            with self._claiming:
                try:
                    task = queue.claim(self.session_factory, self.name, self.lease, self.row_locks,
                                       running_here=frozenset(self._running),
                                       session_locks=self.session_lock is not None)
                except Exception:
                    LOG.exception("claim failed")
                    task = None
                if task is None:
                    queue.work_available.wait(self.poll)
                    queue.work_available.clear()
                    continue
                self._running.add(task.id)
            try:
                self.run(task)
            finally:
                self._running.discard(task.id)

    # -- running one task ---------------------------------------------------------------
    def run(self, task: Task) -> None:
        LOG.info("task %s %s on %s: attempt %d", task.uuid, task.action, task.resource_uuid, task.attempts)
        try:
            ctx = TaskContext(self.session_factory, task, self.name, self.settings)
            registry.get(task.action).handler(ctx)
        except LeaseLost:
            LOG.warning("task %s: lease lost, leaving it to its new owner", task.uuid)
            return
        except TaskCancelled as exc:
            self._end(task.id, "cancel", str(exc))
        except StepFailed as exc:
            # Tenants see the reason with host paths hidden; the log keeps it whole.
            LOG.warning("task %s failed in step %s: %s", task.uuid, exc.step, exc.cause)
            self._end(task.id, "fail", str(exc), {"step": exc.step, "type": type(exc.cause).__name__})
        except Exception as exc:
            LOG.exception("task %s failed", task.uuid)
            detail = {"type": type(exc).__name__}
            if not isinstance(exc, sa.exc.SQLAlchemyError):  # whose text would show SQL
                detail["traceback"] = traceback.format_exc(limit=5)
            self._end(task.id, "fail", f"{type(exc).__name__}: {describe(exc)}", detail)
        else:
            self._end(task.id, "succeed")

    def _end(self, task_id: int, event: str, reason: str | None = None, detail: dict | None = None) -> None:
        def end() -> None:
            with self.session_factory() as session, session.begin():
                # The fence, as a write: this worker must still own the task, and on SQLite the
                # write lock is held before the task's end reads what it moves.
                owned = session.execute(
                    sa.update(Task).where(Task.id == task_id, Task.worker == self.name,
                                          Task.state == states.RUNNING)
                    .values(lease_expires_at=None).execution_options(synchronize_session=False)).rowcount
                if owned:
                    queue.finish(session, session.get(Task, task_id, populate_existing=True), event, reason,
                                 detail)
        try:
            retrying(end)
        except Exception:  # the task stays RUNNING; when its lease runs out it is taken over
            LOG.exception("task %s: recording its end failed", task_id)
