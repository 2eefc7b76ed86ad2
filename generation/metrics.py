"""Generation's scrape-time series for /metrics (config/observability/metrics.py): each enabled provider's circuit
breaker and health as every process shares them (generation/pipeline/health.py: Redis, or this process without it),
read on each scrape (one pipelined HMGET)."""
import time

from prometheus_client.core import GaugeMetricFamily

from generation.pipeline import health


def circuits():
    from generation.pipeline.service import health_book
    from generation.providers import registry

    names = sorted(registry())
    states = health_book().store.snapshot(names)
    now = time.time()
    state = GaugeMetricFamily("imagegate_upstream_circuit_state", "1 for the circuit breaker's current state of each "
                              "provider (closed, half_open, open), 0 for the others.", labels=["provider", "state"])
    errors = GaugeMetricFamily("imagegate_upstream_error_rate", "Provider error rate (EWMA, 0-1) the router orders "
                               "by.", labels=["provider"])
    failures = GaugeMetricFamily("imagegate_upstream_consecutive_failures", "Consecutive failed calls (the breaker "
                                 f"opens at {health.FAILURE_THRESHOLD}).", labels=["provider"])
    for name in names:
        current = states[name].state(now)
        for candidate in (health.CLOSED, health.HALF_OPEN, health.OPEN):
            state.add_metric([name, candidate], 1 if current == candidate else 0)
        errors.add_metric([name], states[name].error_rate)
        failures.add_metric([name], states[name].consecutive_failures)
    return [state, errors, failures]


def register() -> None:
    from config.observability.metrics import register_collector

    register_collector("circuits", circuits)
