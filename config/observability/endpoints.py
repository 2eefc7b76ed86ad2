"""GET /healthz, /readyz and /metrics: plain ASGI apps that config/asgi.py serves before Django.

Before Django because a load balancer's or Kubernetes' probe addresses the host by IP (ALLOWED_HOSTS would answer
400), over plain HTTP (SECURE_SSL_REDIRECT would answer 301), and must not open a session. None needs an API key.
No answer names a host, URL, setting or exception text: a failure is logged here, and answered with a name and a
word.

- /healthz: 200 {"status": "ok"} while the process serves; it checks nothing else (a liveness probe: restart me).
- /readyz: 200 {"status": "ready", "checks": {...}} when PostgreSQL, Redis and the image storage each answer within
  READY_TIMEOUT_SECONDS, else 503 {"status": "unavailable", "checks": {...}, "down": [names]}; each check is "ok",
  "down", or "off" (Redis when REDIS_URL is unset: the embedded default has none).
- /metrics: the Prometheus text format (metrics.py). With METRICS_TOKEN set, only `Authorization: Bearer
  <METRICS_TOKEN>` is answered (else 401); without it, anyone who reaches the port may scrape (keep it internal).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from . import metrics

log = logging.getLogger(__name__)

PATHS = ("/healthz", "/readyz", "/metrics")
READY_TIMEOUT_SECONDS = 2.0
# Each check runs on a thread of its own, one run at a time: a probe that finds the previous run still hanging waits
# for that run (within its timeout) instead of starting another, so a hung dependency holds one thread, never the
# request path's, and never delays the other checks.
_check_threads: dict[str, ThreadPoolExecutor] = {}
_in_flight: dict[str, asyncio.Future] = {}
_scrapes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="metrics")


async def _send(send, status: int, body: bytes, content_type: str, extra: list | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send, status: int, payload: dict, extra: list | None = None) -> None:
    await _send(send, status, json.dumps(payload).encode(), "application/json", extra)


# --- Readiness checks: each blocking, run on a thread with a timeout ------------------------------------------------

def check_database() -> None:
    from django.db import connections

    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connections.close_all()  # back to the pool


_redis_clients: dict = {}


def check_redis() -> None:
    client = _redis_clients.get(settings.REDIS_URL)
    if client is None:
        import redis

        client = _redis_clients[settings.REDIS_URL] = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=READY_TIMEOUT_SECONDS, socket_connect_timeout=READY_TIMEOUT_SECONDS)
    client.ping()


def check_storage() -> None:
    """The media storage answers a lookup (S3: a HEAD of a key that need not exist; files: the directory)."""
    from django.core.files.storage import default_storage

    default_storage.exists("readyz-probe")


def readiness_checks() -> dict:
    checks = {"database": check_database, "storage": check_storage}
    if settings.REDIS_URL:
        checks["redis"] = check_redis
    return checks


async def _run_check(name: str, check) -> str:
    loop = asyncio.get_running_loop()
    running = _in_flight.get(name)
    if running is None or running.done() or running.get_loop() is not loop:
        executor = _check_threads.get(name)
        if executor is None:
            executor = _check_threads[name] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"readyz-{name}")
        running = _in_flight[name] = loop.run_in_executor(executor, check)
        running.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: logged below, if awaited
    try:
        await asyncio.wait_for(asyncio.shield(running), READY_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning("readyz: %s did not answer within %.1f s", name, READY_TIMEOUT_SECONDS)
        return "down"
    except Exception:
        log.warning("readyz: %s is down", name, exc_info=True)
        return "down"
    return "ok"


async def readiness() -> tuple[int, dict]:
    """(HTTP status, body) of /readyz."""
    checks = readiness_checks()
    results = await asyncio.gather(*(_run_check(name, check) for name, check in checks.items()))
    status = dict(zip(checks, results))
    if not settings.REDIS_URL:
        status["redis"] = "off"
    down = sorted(name for name, result in status.items() if result == "down")
    if down:
        return 503, {"status": "unavailable", "checks": status, "down": down}
    return 200, {"status": "ready", "checks": status}


def _render() -> bytes:
    from django.db import connections

    try:
        return metrics.render()
    finally:
        connections.close_all()  # the scrape-time collectors' queries: back to the pool


# --- The ASGI app ----------------------------------------------------------------------------------------------------

def _authorized(scope) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return True
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    return False


async def app(scope, receive, send) -> None:
    """Serves PATHS (GET and HEAD; the caller routes only these paths here)."""
    path = scope["path"]
    if scope["method"] not in ("GET", "HEAD"):
        await _send_json(send, 405, {"error": "method not allowed"}, [(b"allow", b"GET, HEAD")])
        return
    if path == "/healthz":
        await _send_json(send, 200, {"status": "ok"})
    elif path == "/readyz":
        status, body = await readiness()
        await _send_json(send, status, body)
    else:
        if not _authorized(scope):
            await _send_json(send, 401, {"error": "a valid METRICS_TOKEN bearer token is required"},
                             [(b"www-authenticate", b'Bearer realm="metrics"')])
            return
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(_scrapes, _render)
        await _send(send, 200, body, metrics.CONTENT_TYPE)
