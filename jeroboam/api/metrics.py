"""/metrics for Prometheus: requests as the API processes see them, and the service's state
as the database holds it.

Request metrics are counted per process. With several API processes (`--api-workers`)
prometheus_client's multiprocess mode adds them up: the parent sets PROMETHEUS_MULTIPROC_DIR
(a fresh directory under state_path) before it starts them, and any process answers a scrape
for all. Task, cluster and node figures are read from the database at scrape time (a custom
collector), so every API process reports the same whole-service numbers, workers included.
"""

from __future__ import annotations

import logging
import os

import sqlalchemy as sa
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from starlette.requests import Request
from starlette.responses import Response

from jeroboam import states
from jeroboam.db.base import utcnow
from jeroboam.db.models import Cluster, ClusterTemplate, NodeGroup, Task

LOG = logging.getLogger("jeroboam.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
TASK_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

REQUESTS = Counter("jeroboam_http_requests", "HTTP requests answered, by route template, method and status.",
                   ["route", "method", "status"])
LATENCY = Histogram("jeroboam_http_request_duration_seconds", "Time to answer an HTTP request.",
                    ["route", "method"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


class RequestMetrics:
    """Counts and times every request under its route's path template (`/v1/clusters/{ident}`),
    never the raw path, so that the number of series stays bounded whatever clients send.
    Called by the request middleware once a request is answered."""

    def __init__(self, routes):
        # Starlette puts the matched route's endpoint in the scope; map it back to its template.
        self.templates = {route.endpoint: route.path for route in routes}

    def __call__(self, scope, status: int, seconds: float) -> None:
        route = self.templates.get(scope.get("endpoint"), "unmatched")
        method = scope["method"] if scope["method"] in METHODS else "other"
        REQUESTS.labels(route, method, str(status)).inc()
        LATENCY.labels(route, method).observe(seconds)


class _Seconds(FunctionElement):
    """Seconds from one timestamp column to another, in each database's own date arithmetic."""

    type = sa.Float()
    inherit_cache = True
    name = "jeroboam_seconds"


@compiles(_Seconds, "sqlite")
def _seconds_sqlite(element, compiler, **kw):
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


@compiles(_Seconds, "postgresql")
def _seconds_postgresql(element, compiler, **kw):
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


@compiles(_Seconds, "mysql")
def _seconds_mysql(element, compiler, **kw):
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"(TIMESTAMPDIFF(MICROSECOND, {start}, {end}) / 1000000.0)"


class DatabaseCollector:
    """Whole-service figures, queried at scrape time: a handful of grouped counts."""

    def __init__(self, engine):
        self.engine = engine

    def describe(self):
        return []  # collected lazily: registering must not query the database

    def collect(self):
        up = GaugeMetricFamily("jeroboam_database_up", "1 when the last scrape could read the database.")
        try:
            with self.engine.connect() as connection:
                families = list(self._families(connection))
        except Exception:  # an unreachable database is reported, not raised into the scrape
            LOG.warning("metrics: database unreachable", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, connection):
        tasks = GaugeMetricFamily("jeroboam_tasks", "Tasks by action and state.", labels=["action", "state"])
        for action, state, count in connection.execute(
                sa.select(Task.action, Task.state, sa.func.count()).group_by(Task.action, Task.state)):
            tasks.add_metric([action, state], count)
        yield tasks

        pending = connection.execute(sa.select(sa.func.count(), sa.func.min(Task.created_at))
                                     .where(Task.state == states.PENDING)).one()
        yield GaugeMetricFamily("jeroboam_task_queue_depth", "Tasks waiting for a worker.", value=pending[0])
        yield GaugeMetricFamily("jeroboam_task_queue_oldest_seconds", "Age of the oldest task waiting for a worker.",
                                value=(utcnow() - pending[1]).total_seconds() if pending[1] else 0)
        expired = connection.scalar(sa.select(sa.func.count()).where(
            Task.state == states.RUNNING, Task.lease_expires_at < utcnow()))
        yield GaugeMetricFamily("jeroboam_tasks_lease_expired",
                                "Running tasks whose worker stopped heartbeating (awaiting takeover).", value=expired)

        seconds = _Seconds(Task.started_at, Task.finished_at)
        durations = HistogramMetricFamily("jeroboam_task_duration_seconds",
                                          "Run time of ended tasks, from start to end.", labels=["action", "state"])
        rows = connection.execute(
            sa.select(Task.action, Task.state, sa.func.count(), sa.func.sum(seconds),
                      *(sa.func.sum(sa.case((seconds <= b, 1), else_=0)) for b in TASK_BUCKETS))
            .where(Task.state.in_(states.TASK_DONE), Task.started_at.is_not(None), Task.finished_at.is_not(None))
            .group_by(Task.action, Task.state))
        for action, state, count, total, *cumulative in rows:
            buckets = [(str(b), int(n)) for b, n in zip(TASK_BUCKETS, cumulative)] + [("+Inf", count)]
            durations.add_metric([action, state], buckets, float(total or 0))
        yield durations

        clusters = GaugeMetricFamily("jeroboam_clusters", "Clusters by status and health status.",
                                     labels=["status", "health_status"])
        for status, health, count in connection.execute(
                sa.select(Cluster.status, Cluster.health_status, sa.func.count())
                .group_by(Cluster.status, Cluster.health_status)):
            clusters.add_metric([status, health or "UNKNOWN"], count)
        yield clusters

        nodes = GaugeMetricFamily("jeroboam_nodes", "Nodes of all clusters, by infrastructure provider "
                                  "(the template's server_type).", labels=["provider"])
        for provider, count in connection.execute(
                sa.select(ClusterTemplate.server_type, sa.func.sum(NodeGroup.node_count))
                .join(Cluster, Cluster.uuid == NodeGroup.cluster_id)
                .join(ClusterTemplate, ClusterTemplate.uuid == Cluster.cluster_template_id)
                .group_by(ClusterTemplate.server_type)):
            nodes.add_metric([provider], int(count or 0))
        yield nodes


class MetricsEndpoint:
    def __init__(self, engine):
        self.database = CollectorRegistry(auto_describe=False)
        self.database.register(DatabaseCollector(engine))
        if os.environ.get(MULTIPROC_ENV):
            self.requests = CollectorRegistry()
            MultiProcessCollector(self.requests)
        else:
            self.requests = REGISTRY  # this process's requests, with its process_* and python_* figures

    def __call__(self, request: Request) -> Response:
        body = generate_latest(self.requests) + generate_latest(self.database)
        return Response(body, 200, headers={"Content-Type": CONTENT_TYPE_LATEST})
