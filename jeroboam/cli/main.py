"""The `jeroboam` command: serve, api, worker, db upgrade, config sample, task."""

from __future__ import annotations

import argparse
import importlib.metadata
import ipaddress
import logging
import logging.config
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from jeroboam import config
from jeroboam.cli import privsep, tasks

LOG = logging.getLogger("jeroboam")


class StartupError(Exception):
    """Something in the configuration or the database that stops a start: printed as one line."""


def _one_line(exc: BaseException) -> str:
    # SQLAlchemy wraps the driver's error and appends a link; the driver's own text says it all.
    return " ".join(str(getattr(exc, "orig", None) or exc).split())


def _settings(args) -> config.Settings:
    overrides = {
        ("database", "connection"): getattr(args, "database", None),
        ("api", "workers"): getattr(args, "api_workers", None),
        ("DEFAULT", "state_path"): getattr(args, "data_dir", None),
        ("api", "auth_strategy"): getattr(args, "auth", None),
        ("worker", "threads"): getattr(args, "threads", None),
    }
    if getattr(args, "bind", None):
        overrides["api", "host"], overrides["api", "port"] = config.split_bind(args.bind, "--bind")
    return config.load([arg for pair in args.config_args or () for arg in pair], overrides)


def _check_auth(settings: config.Settings) -> None:
    """Stop at start-up, in one line, when the auth strategy lacks its settings."""
    from jeroboam.api.auth import check_settings

    problem = check_settings(settings)
    if problem:
        sys.exit(f"jeroboam: {problem}")


def _log_path(settings: config.Settings, program: str) -> str:
    """Where the log goes as oslo.log decides it: log_file (in log_dir if set), else log_dir/<program>.log."""
    log_file, log_dir = str(settings.get("DEFAULT", "log_file")), str(settings.get("DEFAULT", "log_dir"))
    if log_dir:
        return os.path.join(log_dir, log_file or f"{program}.log")
    return log_file


def _logging(settings: config.Settings, program: str) -> None:
    level = "DEBUG" if settings.get("DEFAULT", "debug") else settings.get("DEFAULT", "log_level").upper()
    path = _log_path(settings, program)
    # WatchedFileHandler reopens the file when logrotate moves it away.
    handler = ({"class": "logging.handlers.WatchedFileHandler", "filename": path} if path else
               {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"})
    quiet = {}
    for pair in settings.get("DEFAULT", "default_log_levels"):
        name, _, quiet_level = pair.partition("=")
        if quiet_level.upper() not in logging.getLevelNamesMapping():
            raise StartupError(f"[DEFAULT] default_log_levels: no log level {quiet_level!r} (in {pair!r})")
        quiet[name] = {"level": quiet_level.upper()}
    try:
        logging.config.dictConfig({
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
                "json": {"()": "oslo_log.formatters.JSONFormatter"},
            },
            "handlers": {"main": {**handler, "formatter": "json" if settings.get("DEFAULT", "use_json") else "text"}},
            "root": {"level": level, "handlers": ["main"]},
            # alembic.runtime.plugins: a line per plugin at every start.
            "loggers": {"alembic.runtime.plugins": {"level": "WARNING"}, **quiet},
        })
    except ValueError as exc:  # a log file that cannot be opened, a level that does not exist
        cause = exc.__cause__
        raise StartupError(f"logging: {getattr(cause, 'strerror', None) or cause or exc}: {path}") from None
    for note in settings.notes:
        LOG.warning("configuration: %s", note)


def _engine(settings, revision: str):
    """An engine on a database that answers. Its schema revision, when not this code's, is
    an error (`revision="required"`), a warning ("warn") or of no concern ("any")."""
    from jeroboam.db import migrate
    from jeroboam.db.base import make_engine

    try:
        url = settings.database_url  # makes state_path for the embedded database
    except OSError as exc:
        raise StartupError(f"[DEFAULT] state_path: {exc.strerror}: {exc.filename}") from None
    try:
        engine = make_engine(url)
        shown = engine.url.render_as_string(hide_password=True)
        with engine.connect() as connection:
            at = migrate.current(connection)
    except Exception as exc:  # a bad URL, a missing driver, a database that does not answer
        raise StartupError(f"database {url.split('@')[-1]}: {_one_line(exc)}") from None
    if at != migrate.heads() and revision != "any":
        problem = (f"database {shown} is at revision {','.join(sorted(at)) or 'none'}, this code needs "
                   f"{','.join(sorted(migrate.heads()))}: run `jeroboam db upgrade`")
        if revision == "required":
            raise StartupError(problem)
        LOG.warning("%s (until then /healthcheck answers 503)", problem)
    return engine


def _upgrade(engine) -> None:
    from jeroboam.db.migrate import upgrade

    try:
        upgrade(engine)
    except Exception as exc:
        raise StartupError(f"database migration failed: {_one_line(exc)}") from None


def _start_worker(settings, engine, name=None):
    from jeroboam.db.base import make_sessionmaker
    from jeroboam.tasks.worker import NameInUse, Worker

    worker = Worker(engine, make_sessionmaker(engine), settings, name=name)
    try:
        worker.start()
    except NameInUse as exc:
        raise StartupError(str(exc)) from None
    return worker


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_exposure(settings, host: str, port: int) -> None:
    """noauth trusts identity headers, so anyone who can reach it is any project, admin
    included: it serves loopback only, unless the operator says otherwise."""
    if settings.get("api", "auth_strategy") != "noauth" or settings.get("auth", "noauth_allow_remote"):
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        addresses = set()
    if not addresses or not all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses):
        raise StartupError(f"refusing to serve noauth on {_host_port(host, port)}: without "
                           "authentication anyone who can reach the API acts as any project; bind to "
                           "127.0.0.1, use --auth keystone, or set [auth] noauth_allow_remote = true")


def _listen_socket(settings) -> socket.socket:
    """The socket of [api] host and port, bound now: a taken address is one clear line before
    anything starts, and a port below 1024 is bound while the process still may (see privsep).
    uvicorn listens on it once it serves."""
    host, port = settings.get("api", "host"), settings.get("api", "port")
    _check_exposure(settings, host, port)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {_host_port(host, port)}: {exc.strerror or exc}") from None
    return sock


def _announce_when_listening(host: str, port: int, database: str) -> None:
    """Log "serving" once the port accepts connections, not before (uvicorn binds it later)."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)

    def wait() -> None:
        while True:
            try:
                socket.create_connection((target, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        LOG.info("serving the API on http://%s:%d (database %s)", host, port, database)

    threading.Thread(target=wait, name="announce", daemon=True).start()


def _api_files(settings, port: int, user, program: str) -> str | None:
    """What the API needs made before it starts, its user's when it drops privileges: the
    embedded database, the log files it reopens after a rotation or its processes open, and
    the fresh directory where several API processes keep their request metrics (multiprocess
    mode; None for one process)."""
    workers = settings.get("api", "workers")
    if user is not None:
        privsep.share_database(settings, user)
        for path in {_log_path(settings, program), _log_path(settings, "jeroboam-api") if workers > 1 else ""}:
            if path:
                privsep.hand_over(path, user, 0o640)
    if workers < 2:
        return None
    path = Path(settings.get("DEFAULT", "state_path")) / "metrics" / str(port)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    return str(path)


def _run_api(settings, engine, sock: socket.socket, metrics_dir: str | None) -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    host, port = sock.getsockname()[:2]
    workers = settings.get("api", "workers")
    # The bound socket itself goes to uvicorn, not its fd: uvicorn takes an fd for a unix
    # socket, and its TCP connections then lack TCP_NODELAY, which costs every response
    # ~40 ms of delayed ACK.
    common = dict(loop="uvloop", http="httptools", access_log=False,
                  log_level=settings.get("DEFAULT", "log_level").lower(), lifespan="off",
                  log_config=None)  # uvicorn's lines go through our handlers, not its own
    _announce_when_listening(host, port, engine.url.render_as_string(hide_password=True))
    if workers > 1:
        # Child processes rebuild the settings from the same files and the environment: read
        # here first as they will (as the API's user after a privilege drop), a file they cannot
        # read is one line, not children failing over and over.
        os.environ.update(settings.child_env())
        config.load()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        Multiprocess(uvicorn.Config("jeroboam.cli.main:api_process_app", factory=True,
                                    workers=workers, **common), sockets=[sock]).run()
    else:
        from jeroboam.api.app import create_app

        uvicorn.Server(uvicorn.Config(create_app(settings, engine), **common)).run(sockets=[sock])


def api_process_app():
    """The app of one API worker process started by uvicorn: settings as its parent had them
    (Settings.child_env), and logging set up there too, or its request lines would be lost."""
    from jeroboam.api.app import create_app

    settings = config.load()
    _logging(settings, "jeroboam-api")
    return create_app(settings)


def cmd_serve(args) -> int:
    settings = _settings(args)
    _check_auth(settings)
    _logging(settings, "jeroboam")
    user = privsep.api_user(settings)
    sock = _listen_socket(settings)  # before anything starts: a busy port stops everything at once
    engine = _engine(settings, "any")
    _upgrade(engine)
    metrics_dir = _api_files(settings, sock.getsockname()[1], user, "jeroboam")
    if user is None:
        worker = _start_worker(settings, engine)
        try:
            _run_api(settings, engine, sock, metrics_dir)
        finally:
            worker.stop()
        return 0

    def api() -> int:
        _run_api(settings, _engine(settings, "any"), sock, metrics_dir)
        return 0
    # The API becomes the user in a process of its own, forked before the worker's threads
    # exist and without this process's database connections; the worker stays root here.
    engine.dispose()
    pid = privsep.fork_api(user, lambda: _reported(api, f"the API as {user.pw_name}: "))
    sock.close()
    try:
        worker = _start_worker(settings, engine)
    except BaseException:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        raise
    try:
        return privsep.supervise(pid)
    finally:
        worker.stop()


def cmd_api(args) -> int:
    settings = _settings(args)
    _check_auth(settings)
    _logging(settings, "jeroboam-api")
    user = privsep.api_user(settings)
    sock = _listen_socket(settings)  # a refused or busy address stops it before the database is looked at
    metrics_dir = _api_files(settings, sock.getsockname()[1], user, "jeroboam-api")
    if user is not None:
        privsep.drop_privileges(user)
    _run_api(settings, _engine(settings, "warn"), sock, metrics_dir)
    return 0


def cmd_worker(args) -> int:
    settings = _settings(args)
    _logging(settings, "jeroboam-worker")
    worker = _start_worker(settings, _engine(settings, "required"), name=args.name)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    worker.stop()
    return 0


def cmd_db_upgrade(args) -> int:
    settings = _settings(args)
    _logging(settings, "jeroboam-manage")
    user = privsep.api_user(settings)
    _upgrade(_engine(settings, "any"))
    if user is not None:
        privsep.share_database(settings, user)  # made by root, used by the API
    print("database is at the newest revision")
    return 0


def _tasks(args) -> tasks.Tasks:
    import requests

    if not (url := args.url or os.environ.get("JEROBOAM_URL")):
        settings = _settings(args)
        url = f"http://{_host_port(settings.get('api', 'host'), settings.get('api', 'port'))}"
    url = url.rstrip("/").removesuffix("/v1") + "/v1"
    headers = dict(tasks.HEADERS)
    if args.token:
        headers["X-Auth-Token"] = args.token
    http = requests.Session()
    http.headers.update(headers)

    def request(path, params):
        try:
            return http.get(url + path, params=params, timeout=30)
        except requests.RequestException as exc:
            raise tasks.TaskError(f"cannot reach {url}: {type(exc).__name__}") from None
    return tasks.Tasks(request)


def cmd_task_list(args) -> int:
    columns = tasks.LIST_COLUMNS
    rows = [[str(t[c]) for c in columns] for t in
            _tasks(args).list(resource_uuid=args.resource, action=args.action, state=args.state)]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    for row in [list(columns)] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def cmd_task_show(args) -> int:
    print("\n".join(tasks.describe(_tasks(args).get(args.task))))
    return 0


def cmd_task_wait(args) -> int:
    client = _tasks(args)
    uuid = args.task or client.latest(args.resource)["uuid"]
    return tasks.wait(client, uuid, sys.stdout, args.interval, args.timeout)


def cmd_provider_status(args) -> int:
    from jeroboam import infra

    settings = _settings(args)
    failed = False
    for server_type in infra.server_types():
        try:
            provider = infra.provider_for(server_type, settings)
            status = {"nodes": len(provider.nodes()), **provider.status()}
        except infra.InfraError as exc:
            status, failed = {"unusable": str(exc)}, True
        print(f"server_type {server_type}")
        for key, value in status.items():
            print(f"  {key}: {value}")
    return 1 if failed else 0


def cmd_config_sample(args) -> int:
    sys.stdout.write(config.sample())
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="jeroboam", description="Containers-as-a-service control plane.")
    top.add_argument("--version", action="version", version=f"jeroboam {importlib.metadata.version('jeroboam')}")
    sub = top.add_subparsers(dest="command", required=True)

    def config_files(p):
        # oslo.config's own options, handed to it in the order given (a later file wins).
        p.add_argument("--config-file", "--config", dest="config_args", action="append", metavar="FILE",
                       type=lambda path: ("--config-file", path),
                       help="configuration file (repeatable; default: /etc/jeroboam/jeroboam.conf)")
        p.add_argument("--config-dir", dest="config_args", action="append", metavar="DIR",
                       type=lambda path: ("--config-dir", path),
                       help="directory of *.conf files (repeatable; default: /etc/jeroboam/jeroboam.conf.d)")

    def common(p, api=False, worker=False):
        config_files(p)
        p.add_argument("--database", help="SQLAlchemy URL, e.g. postgresql://user@host/db ([database] connection)")
        p.add_argument("--data-dir", help="where the embedded database and cluster state live "
                                          "([DEFAULT] state_path)")
        if api:
            p.add_argument("--bind", help="HOST:PORT to listen on ([api] host and port; default 127.0.0.1:9511)")
            p.add_argument("--api-workers", type=int, help="number of API processes")
            p.add_argument("--auth", choices=["noauth", "keystone"], help="identity strategy ([api] auth_strategy)")
        if worker:
            p.add_argument("--threads", type=int, help="tasks run at once")

    serve = sub.add_parser("serve", help="API and worker in one command (as root: the API as [DEFAULT] "
                                         "api_user), embedded database by default")
    common(serve, api=True, worker=True)
    serve.set_defaults(func=cmd_serve)
    api = sub.add_parser("api", help="the API alone (scale out against PostgreSQL)")
    common(api, api=True)
    api.set_defaults(func=cmd_api)
    worker = sub.add_parser("worker", help="a worker alone (scale out against PostgreSQL)")
    common(worker, worker=True)
    worker.add_argument("--name", help="worker name shown in mservices, unique among live workers (default: the host name)")
    worker.set_defaults(func=cmd_worker)
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_sub.add_parser("upgrade", help="apply migrations (Alembic)")
    common(db_upgrade)
    db_upgrade.set_defaults(func=cmd_db_upgrade)
    cfg = sub.add_parser("config", help="configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    cfg_sub.add_parser("sample", help="print a commented sample file (as oslo-config-generator "
                                      "--namespace jeroboam)").set_defaults(func=cmd_config_sample)

    provider = sub.add_parser("provider", help="infrastructure providers on this host")
    provider_sub = provider.add_subparsers(dest="provider_command", required=True)
    provider_status = provider_sub.add_parser(
        "status", help="each server_type's provider: whether it can work here, and how (the vm "
                       "provider's images and acceleration)")
    common(provider_status)
    provider_status.set_defaults(func=cmd_provider_status)

    task = sub.add_parser("task", help="follow tasks (as `openstack coe task` does)")
    task_sub = task.add_subparsers(dest="task_command", required=True)

    def client(p):
        p.add_argument("--url", help="the API (default: $JEROBOAM_URL, else [api] host and port)")
        p.add_argument("--token", default=os.environ.get("OS_TOKEN"), help="Keystone token (default: $OS_TOKEN)")
        config_files(p)
    task_list = task_sub.add_parser("list", help="tasks, newest last")
    client(task_list)
    task_list.add_argument("--resource", help="only the tasks of this cluster, nodegroup or stack (uuid)")
    task_list.add_argument("--action", help="only this action, e.g. cluster_create")
    task_list.add_argument("--state", help="only this state, e.g. RUNNING")
    task_list.set_defaults(func=cmd_task_list)
    task_show = task_sub.add_parser("show", help="a task with its steps, and why it failed")
    client(task_show)
    task_show.add_argument("task", help="task uuid")
    task_show.set_defaults(func=cmd_task_show)
    task_wait = task_sub.add_parser("wait", help="follow a task to its end; exit 1 when it fails")
    client(task_wait)
    which = task_wait.add_mutually_exclusive_group(required=True)
    which.add_argument("task", nargs="?", help="task uuid")
    which.add_argument("--resource", help="the newest task of this resource (uuid) instead")
    task_wait.add_argument("--interval", type=float, default=0.5, help="seconds between looks (default 0.5)")
    task_wait.add_argument("--timeout", type=float, help="give up (exit 2) after this many seconds")
    task_wait.set_defaults(func=cmd_task_wait)
    return top


def _reported(run, who: str = "") -> int:
    """What run() returns, or 1 after printing the error that stopped it as one line."""
    try:
        return run()
    except (StartupError, config.ConfigError, tasks.TaskError, privsep.PrivsepError) as exc:
        print(f"jeroboam: {who}{exc}", file=sys.stderr)
        return 1


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return _reported(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
