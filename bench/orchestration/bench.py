"""Orchestration engine benchmark (issue 3, item 8).

Creates then deletes stacks through the engine as a worker runs it (Engine on
the SQL store, every state change and event written), on SQLite and on
PostgreSQL: 10/100/1000 OS::Heat::None flat and in a chain, a ResourceGroup of
1000 None, and 50 TestResources with a 0.2 s delay, flat. For each case it
prints the median of 3 runs of wall and CPU time (this process: the engine and
its database driver; not the PostgreSQL server) for create and for delete,
next to Heat 27's create time and the target (30x faster; the 0.2 s case
within 2x of its 0.2 s lower bound).

The SQLite file and the PostgreSQL database it creates are removed at the end,
also on failure.

    bash bench/orchestration/run.sh [--runs 3] [--only sqlite|postgres] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from jeroboam.db.base import make_engine, make_sessionmaker  # noqa: E402
from jeroboam.db.migrate import upgrade  # noqa: E402
from jeroboam.orchestration.engine import Engine  # noqa: E402
from jeroboam.orchestration.sql_store import SqlStore  # noqa: E402

NONE = {"type": "OS::Heat::None"}


def flat(n: int) -> dict:
    return {f"r{i}": NONE for i in range(n)}


def chain(n: int) -> dict:
    return {f"r{i}": {**NONE, "depends_on": f"r{i - 1}"} if i else NONE for i in range(n)}


def group(n: int) -> dict:
    return {"group": {"type": "OS::Heat::ResourceGroup", "properties": {"count": n, "resource_def": NONE}}}


def delayed(n: int) -> dict:
    return {f"t{i}": {"type": "OS::Heat::TestResource", "properties": {"wait_secs": 0.2}} for i in range(n)}


# name, resources, Heat 27 create seconds (legacy engine, MariaDB; None = not measured), target seconds
CASES = [
    ("10 None flat", flat(10), None, None),
    ("100 None flat", flat(100), 2.8, 2.8 / 30),
    ("1000 None flat", flat(1000), 34.6, 34.6 / 30),
    ("10 None chain", chain(10), None, None),
    ("100 None chain", chain(100), None, None),
    ("1000 None chain", chain(1000), 46.0, 46.0 / 30),
    ("ResourceGroup of 1000 None", group(1000), 58.0, 58.0 / 30),
    ("50 TestResource 0.2 s flat", delayed(50), None, 0.4),
]


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run_case(engine: Engine, resources: dict, runs: int) -> dict:
    template = {"heat_template_version": "2021-04-16", "resources": resources}
    samples = {"create_wall": [], "create_cpu": [], "delete_wall": [], "delete_cpu": []}
    for _ in range(runs):
        def create():
            stack = engine.create_stack(f"bench-{uuid.uuid4().hex[:8]}", template, project_id="bench")
            return engine.run(stack.id)

        stack, wall, cpu = timed(create)
        assert stack.state == "CREATE_COMPLETE", stack.status_reason
        samples["create_wall"].append(wall)
        samples["create_cpu"].append(cpu)

        def delete():
            engine.delete_stack(stack.id)
            return engine.run(stack.id)

        gone, wall, cpu = timed(delete)
        assert gone.state == "DELETE_COMPLETE", gone.status_reason
        samples["delete_wall"].append(wall)
        samples["delete_cpu"].append(cpu)
    return {k: statistics.median(v) for k, v in samples.items()}


def bench_backend(label: str, url: str, runs: int) -> list[dict]:
    db = make_engine(url)
    try:
        upgrade(db)
        engine = Engine(SqlStore(make_sessionmaker(db)))
        run_case(engine, flat(10), 1)  # warm-up: imports, connection pool, statement caches
        rows = []
        for name, resources, heat, target in CASES:
            figures = run_case(engine, resources, runs)
            rows.append({"backend": label, "case": name, "heat_create_s": heat, "target_create_s": target,
                         **figures, "meets_target": None if target is None else figures["create_wall"] <= target})
            print(_line(rows[-1]), flush=True)
        return rows
    finally:
        db.dispose()


def _line(row: dict) -> str:
    heat = f"{row['heat_create_s']:6.1f}" if row["heat_create_s"] else "     -"
    target = f"{row['target_create_s']:7.3f}" if row["target_create_s"] else "      -"
    verdict = {None: "", True: "ok", False: "MISSED"}[row["meets_target"]]
    return (f"{row['backend']:<10} {row['case']:<28} {row['create_wall']:8.3f} {row['create_cpu']:8.3f} "
            f"{row['delete_wall']:8.3f} {row['delete_cpu']:8.3f}   {heat}  {target}  {verdict}")


def postgres_database(admin_url: str):
    import psycopg

    name = f"jeroboam_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, admin_url.rsplit("/", 1)[0] + "/" + name


def drop_postgres(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per case; the median is printed")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    admin_url = os.environ.get("JEROBOAM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1/postgres")

    print(f"{'backend':<10} {'case':<28} {'create s':>8} {'cpu s':>8} {'delete s':>8} {'cpu s':>8}   "
          f"{'Heat s':>6}  {'target':>7}")
    rows = []
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory(prefix="jeroboam-bench-") as tmp:
            rows += bench_backend("sqlite", f"sqlite:///{tmp}/bench.sqlite", args.runs)
    if args.only in (None, "postgres"):
        name, url = postgres_database(admin_url)
        try:
            rows += bench_backend("postgres", url, args.runs)
        finally:
            drop_postgres(admin_url, name)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    missed = [r for r in rows if r["meets_target"] is False]
    print(f"\n{len(rows) - len(missed)}/{len(rows)} cases within target" if not missed else
          f"\nMISSED: {', '.join(r['backend'] + ' ' + r['case'] for r in missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
