"""Billing's scrape-time series for /metrics (config/observability/metrics.py): the ledger rows waiting for the
sealer and the usage waiting for Stripe, computed from PostgreSQL on each scrape (a few indexed aggregates)."""
from prometheus_client.core import GaugeMetricFamily

from billing import sealing
from billing.stripe import reporting


def ledger_backlog():
    unsealed, oldest = sealing.backlog()
    rows = GaugeMetricFamily("imagegate_ledger_unsealed_rows", "Ledger rows waiting to be sealed into their "
                             "organization's hash chain (billing/sealing.py).")
    rows.add_metric([], unsealed)
    age = GaugeMetricFamily("imagegate_ledger_oldest_unsealed_age_seconds", "How long the oldest ledger row waiting "
                            "for the sealer has waited (0 when none waits); verify_ledger faults past "
                            "LEDGER_SEAL_MAX_LAG_SECONDS.")
    age.add_metric([], oldest)
    return [rows, age]


def stripe_backlog():
    backlog = reporting.backlog()
    events = GaugeMetricFamily("imagegate_stripe_usage_unassigned_events", "Charged usage rows (billing outbox) not "
                               "in any Stripe meter report yet.")
    events.add_metric([], backlog.unassigned_events)
    reports = GaugeMetricFamily("imagegate_stripe_meter_reports_pending", "Stripe meter reports built but not "
                                "delivered yet (sending or backing off).")
    reports.add_metric([], backlog.pending_reports)
    micros = GaugeMetricFamily("imagegate_stripe_meter_backlog_micros", "Micro-USD of usage not yet accepted by "
                               "Stripe (both of the above).")
    micros.add_metric([], backlog.micros)
    age = GaugeMetricFamily("imagegate_stripe_oldest_unreported_usage_age_seconds", "Age of the oldest usage not yet "
                            "accepted by Stripe (0 when none); Stripe refuses meter events older than 35 days.")
    age.add_metric([], backlog.oldest_age_seconds)
    return [events, reports, micros, age]


def register() -> None:
    from config.observability.metrics import register_collector

    register_collector("ledger", ledger_backlog)
    register_collector("stripe", stripe_backlog)
