"""Prometheus series of the API, aggregated over every worker process, and the scrape-time collectors.

Multiprocess mode. uvicorn runs WEB_CONCURRENCY worker processes; each keeps its counters in memory-mapped files in
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode, chosen by that variable when prometheus_client is
first imported) and a scrape of any worker sums every process's files, so /metrics answers for the whole host.
`make serve` sets the directory (per host and port) and empties it before uvicorn starts; a worker that died keeps
its counts (they are totals). Without the variable (`make run`, tests in one process) the series live in this
process's default registry. Only counters and histograms are kept this way; every gauge is computed at scrape time
by a collector (`register_collector`), from PostgreSQL or Redis, so no gauge needs a per-process mode.

Hot path. A request costs one counter increment and one histogram observation here (plus one of each per upstream
attempt); the children of labelled series are cached per label tuple so `labels()` is one dict lookup.

Names (all `imagegate_`): see docs/deployment.md's metrics table, which lists each series and its labels.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds. Requests run from a few milliseconds (the built-in renderer, an error) to minutes (a slow upstream, n=10).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

API_REQUESTS = Counter(
    "imagegate_api_requests", "API requests answered, by endpoint (URL name), model, provider and HTTP status.",
    ["endpoint", "model", "provider", "status"])
API_LATENCY = Histogram(
    "imagegate_api_request_duration_seconds", "Time from the request's arrival to its response, by endpoint.",
    ["endpoint"], buckets=LATENCY_BUCKETS)
UPSTREAM_ATTEMPTS = Counter(
    "imagegate_upstream_attempts", "Calls to upstream providers, by provider, model and outcome "
    "(succeeded, failed, refused, invalid).", ["provider", "model", "outcome"])
UPSTREAM_FAILURES = Counter(
    "imagegate_upstream_failures", "Upstream calls that failed (retryable or a bug), by provider and error type.",
    ["provider", "error_type"])
UPSTREAM_LATENCY = Histogram(
    "imagegate_upstream_request_duration_seconds", "Duration of one upstream call (every outcome), by provider.",
    ["provider"], buckets=LATENCY_BUCKETS)
RATE_LIMIT_REFUSALS = Counter(
    "imagegate_rate_limit_refusals", "Requests refused with 429 by a rate limit, by the limit that refused "
    "(key or organization).", ["limit"])
SPEND_LIMIT_REFUSALS = Counter(
    "imagegate_spend_limit_refusals", "Requests refused with 429 insufficient_quota, by what refused them "
    "(organization or key monthly limit, or the billing state).", ["limit"])

_children: dict[tuple, object] = {}


def child(metric, *labels: str):
    """`metric.labels(*labels)`, cached: the request path calls this a few times per request."""
    key = (id(metric), labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def count_request(endpoint: str, model: str, provider: str, status: int, seconds: float) -> None:
    child(API_REQUESTS, endpoint, model, provider, str(status)).inc()
    child(API_LATENCY, endpoint).observe(seconds)


def count_upstream_attempt(provider: str, model: str, outcome: str, seconds: float, error_type: str = "") -> None:
    child(UPSTREAM_ATTEMPTS, provider, model, outcome).inc()
    child(UPSTREAM_LATENCY, provider).observe(seconds)
    if outcome == "failed":
        child(UPSTREAM_FAILURES, provider, error_type or "unknown").inc()


def count_rate_limit_refusal(limit: str) -> None:
    child(RATE_LIMIT_REFUSALS, limit).inc()


def count_spend_limit_refusal(limit: str) -> None:
    child(SPEND_LIMIT_REFUSALS, limit).inc()


# --- Scrape-time collectors ------------------------------------------------------------------------------------------

# name -> function returning metric families. Apps register theirs in AppConfig.ready() (billing: ledger and Stripe
# backlogs; generation: circuit state); this module registers the Celery queue's. Each runs on every scrape, on a
# thread; one that fails is reported as imagegate_scrape_collector_up{collector=...} 0 and the rest still answer.
_collectors: dict[str, Callable[[], Iterable[Metric]]] = {}


def register_collector(name: str, collect: Callable[[], Iterable[Metric]]) -> None:
    """Add `collect` (returns prometheus_client metric families, e.g. GaugeMetricFamily) to every scrape."""
    _collectors[name] = collect


class _ScrapeTime:
    def collect(self):
        up = GaugeMetricFamily("imagegate_scrape_collector_up",
                               "1 when the scrape-time collector answered on this scrape, else 0.",
                               labels=["collector"])
        for name, collect in list(_collectors.items()):
            try:
                families = list(collect())
            except Exception:
                log.warning("Metrics collector %s failed", name, exc_info=True)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from families
        yield up


def multiprocess_dir() -> str:
    return os.environ.get(MULTIPROC_ENV, "")


def render() -> bytes:
    """The Prometheus text exposition of every series: all worker processes' counters and histograms (multiprocess
    mode) or this process's, then the scrape-time collectors. Blocking (files, PostgreSQL, Redis): call on a thread."""
    from prometheus_client import REGISTRY
    from prometheus_client.multiprocess import MultiProcessCollector

    if multiprocess_dir():
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry)
        output = generate_latest(registry)
    else:
        output = generate_latest(REGISTRY)
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_ScrapeTime())
    return output + generate_latest(scrape)


# --- The Celery queue (infrastructure: the broker is Redis) -----------------------------------------------------------

# kombu's Redis transport keeps a queue's messages of priority p in the list "<queue>\x06\x16<p>" (p = 0 is the bare
# queue name), priorities 0, 3, 6, 9 by default (kombu/transport/redis.py: PRIORITY_STEPS, _q_for_pri).
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)
_broker = {}


def celery_queue_lengths() -> Iterable[Metric]:
    from django.conf import settings

    family = GaugeMetricFamily("imagegate_celery_queue_length", "Tasks waiting in a Celery queue (Redis broker).",
                               labels=["queue"])
    broker_url = getattr(settings, "CELERY_BROKER_URL", "")
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return [family]  # tasks run in-process (the embedded default): no queue
    client = _broker.get(broker_url)
    if client is None:
        import redis

        client = _broker[broker_url] = redis.Redis.from_url(broker_url, socket_timeout=1.0,
                                                            socket_connect_timeout=1.0)
    queue = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")
    with client.pipeline(transaction=False) as pipe:
        for p in _PRIORITY_STEPS:
            pipe.llen(f"{queue}{_PRIORITY_SEP}{p}" if p else queue)
        family.add_metric([queue], sum(pipe.execute()))
    return [family]


register_collector("celery", celery_queue_lengths)
