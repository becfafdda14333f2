"""/healthcheck, as load balancers and oslo.middleware's healthcheck expect it.

503 while the disable file exists (drain before maintenance), while the database does not
answer, and while it is not at the schema revision this code expects (every /v1 call would
fail); 200 "OK" otherwise. The database verdict is cached for a moment so that frequent probes
cost one query per second at most, and the query runs off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from jeroboam.db import migrate

LOG = logging.getLogger("jeroboam.health")
CACHE_SECONDS = 1.0


class HealthCheck:
    def __init__(self, engine, disable_file: str):
        self.engine = engine
        self.disable_file = disable_file
        self._verdict: str | None = None
        self._checked_at = float("-inf")
        self._lock = asyncio.Lock()

    def _database_problem(self) -> str | None:
        try:
            with self.engine.connect() as connection:
                at = migrate.current(connection)
        except Exception as exc:  # any failure to reach the database is the answer itself
            return f"database unreachable: {type(exc).__name__}"
        expected = migrate.heads()
        if at != expected:
            return (f"database at revision {','.join(sorted(at)) or 'none'}, this code needs "
                    f"{','.join(sorted(expected))}: run jeroboam db upgrade")
        return None

    async def database_problem(self) -> str | None:
        async with self._lock:  # concurrent probes share one query
            if time.monotonic() - self._checked_at >= CACHE_SECONDS:
                verdict = await run_in_threadpool(self._database_problem)
                if verdict != self._verdict and verdict:
                    LOG.warning("unhealthy: %s", verdict)
                self._verdict, self._checked_at = verdict, time.monotonic()
            return self._verdict

    async def __call__(self, request: Request) -> Response:
        if self.disable_file and os.path.exists(self.disable_file):
            return Response("DISABLED BY FILE", 503, media_type="text/plain")
        problem = await self.database_problem()
        if problem:
            return Response(problem, 503, media_type="text/plain")
        return Response("OK", 200, media_type="text/plain")
