"""The `jeroboam` command: serve, api, worker, db upgrade, config sample."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading

from jeroboam import config

LOG = logging.getLogger("jeroboam")


def _settings(args) -> config.Settings:
    overrides = {
        ("server", "bind"): getattr(args, "bind", None),
        ("server", "database"): getattr(args, "database", None),
        ("server", "api_workers"): getattr(args, "api_workers", None),
        ("server", "data_dir"): getattr(args, "data_dir", None),
        ("auth", "strategy"): getattr(args, "auth", None),
        ("worker", "threads"): getattr(args, "threads", None),
    }
    return config.load(getattr(args, "config", None), overrides)


def _logging(settings: config.Settings) -> None:
    logging.basicConfig(level=str(settings.get("server", "log_level")).upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _engine(settings):
    from jeroboam.db.base import make_engine

    return make_engine(settings.database_url)


def _start_worker(settings, engine, name=None):
    from jeroboam.db.base import make_sessionmaker
    from jeroboam.tasks.worker import Worker

    worker = Worker(engine, make_sessionmaker(engine), settings, name=name)
    worker.start()
    return worker


def _exposure_problem(settings) -> str | None:
    """Why the API must not start as configured: noauth trusts identity headers, so anyone who
    can reach it is any project, admin included. It serves loopback unless the operator says so."""
    if settings.get("auth", "strategy") != "noauth" or settings.get("auth", "noauth_allow_remote"):
        return None
    host = settings.get("server", "bind").rpartition(":")[0].strip("[]") or "127.0.0.1"
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        addresses = set()
    if addresses and all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses):
        return None
    return (f"refusing to serve noauth on {settings.get('server', 'bind')}: without authentication anyone "
            "who can reach the API acts as any project; bind to 127.0.0.1, use --auth keystone, or set "
            "[auth] noauth_allow_remote = true")


def _run_api(settings) -> None:
    import uvicorn

    host, _, port = settings.get("server", "bind").rpartition(":")
    workers = int(settings.get("server", "api_workers"))
    common = dict(host=host or "127.0.0.1", port=int(port), loop="uvloop", http="httptools", access_log=False,
                  log_level=str(settings.get("server", "log_level")).lower(), lifespan="off")
    if workers > 1:
        # Child processes rebuild the settings from the environment.
        os.environ.update(settings.as_env())
        uvicorn.run("jeroboam.cli.main:api_process_app", factory=True, workers=workers, **common)
    else:
        from jeroboam.api.app import create_app

        uvicorn.run(create_app(settings), **common)


def api_process_app():
    """The app of one API worker process started by uvicorn: settings from the environment,
    and logging set up there too, or its request lines would be lost."""
    from jeroboam.api.app import create_app

    settings = config.load()
    _logging(settings)
    return create_app(settings)


def _refused(settings) -> bool:
    problem = _exposure_problem(settings)
    if problem:
        print(f"jeroboam: {problem}", file=sys.stderr)
    return problem is not None


def cmd_serve(args) -> int:
    settings = _settings(args)
    if _refused(settings):
        return 2
    _logging(settings)
    from jeroboam.db.migrate import upgrade

    engine = _engine(settings)
    upgrade(engine)
    worker = _start_worker(settings, engine)
    LOG.info("serving the API on http://%s (database %s)", settings.get("server", "bind"),
             engine.url.render_as_string(hide_password=True))
    try:
        _run_api(settings)
    finally:
        worker.stop()
    return 0


def cmd_api(args) -> int:
    settings = _settings(args)
    if _refused(settings):
        return 2
    _logging(settings)
    _run_api(settings)
    return 0


def cmd_worker(args) -> int:
    settings = _settings(args)
    _logging(settings)
    worker = _start_worker(settings, _engine(settings), name=args.name)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    worker.stop()
    return 0


def cmd_db_upgrade(args) -> int:
    settings = _settings(args)
    _logging(settings)
    from jeroboam.db.migrate import upgrade

    upgrade(_engine(settings))
    print("database is at the newest revision")
    return 0


def cmd_config_sample(args) -> int:
    sys.stdout.write(config.sample())
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="jeroboam", description="Containers-as-a-service control plane.")
    sub = top.add_subparsers(dest="command", required=True)

    def common(p, api=False, worker=False):
        p.add_argument("--config", help="INI configuration file (see `jeroboam config sample`)")
        p.add_argument("--database", help="SQLAlchemy URL, e.g. postgresql://user@host/db")
        p.add_argument("--data-dir", help="where the embedded database and cluster state live")
        if api:
            p.add_argument("--bind", help="HOST:PORT to listen on (default 127.0.0.1:9511)")
            p.add_argument("--api-workers", type=int, help="number of API processes")
            p.add_argument("--auth", choices=["noauth", "keystone"], help="identity strategy")
        if worker:
            p.add_argument("--threads", type=int, help="tasks run at once")

    serve = sub.add_parser("serve", help="API and workers in one process, embedded database by default")
    common(serve, api=True, worker=True)
    serve.set_defaults(func=cmd_serve)
    api = sub.add_parser("api", help="the API alone (scale out against PostgreSQL)")
    common(api, api=True)
    api.set_defaults(func=cmd_api)
    worker = sub.add_parser("worker", help="a worker alone (scale out against PostgreSQL)")
    common(worker, worker=True)
    worker.add_argument("--name", help="worker name shown in mservices (default HOST-PID)")
    worker.set_defaults(func=cmd_worker)
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_sub.add_parser("upgrade", help="apply migrations (Alembic)")
    common(db_upgrade)
    db_upgrade.set_defaults(func=cmd_db_upgrade)
    cfg = sub.add_parser("config", help="configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    cfg_sub.add_parser("sample", help="print a commented sample file").set_defaults(func=cmd_config_sample)
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
