"""Reporting usage to Stripe Billing Meters: every ledger cent exactly once.

1. Assign: unreported outbox rows (UsageEvent) are grouped per organization and hour into a MeterReport whose
   identifier (`ig-<org>-<YYYYMMDDHH>-<n>`) and value are fixed and committed BEFORE anything is sent. Later rows of
   the same hour go into the next report of that hour (n + 1). One call covers many requests.
2. Send: per customer, pending reports go out oldest first, one call at a time (a per-customer lock: Stripe allows
   one concurrent call per customer per meter). A success, or Stripe's "an event already exists with identifier"
   (a resend of something Stripe already has: the worker died between sending and marking, or a timeout hid the
   answer), marks the report delivered. 429, 5xx and connection errors back off exponentially (per report) and stop
   that customer's pass. A report older than Stripe's 35-day window is marked expired and raises a BillingAlert for
   staff: it can no longer be metered and must be invoiced by hand.
"""
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import stripe
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Max, Min, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from billing import money
from billing.models import BillingAccount, BillingAlert, MeterReport, UsageEvent
from billing.stripe import gateway as stripe_gateway

log = logging.getLogger(__name__)

STRIPE_MAX_AGE = timedelta(days=35)
SAFETY_MARGIN = timedelta(hours=1)  # don't send what would be older than 35 days by the time Stripe sees it
BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 3600
LOCK_SECONDS = 300


@dataclass
class PassStats:
    reports_created: int = 0
    calls: int = 0
    delivered: int = 0
    duplicates: int = 0
    deferred: int = 0
    expired: int = 0
    customers_skipped: int = 0
    errors: list[str] = field(default_factory=list)


def _identifier(organization_id: int, window: datetime, n: int) -> str:
    return f"ig-{organization_id}-{window:%Y%m%d%H}-{n}"


def assign_reports(*, stats: PassStats) -> None:
    """Group every unreported usage event of organizations with a Stripe customer into meter reports."""
    customers = dict(BillingAccount.all_tenants_unsafe.exclude(stripe_customer_id="").values_list("organization_id",
                                                                                       "stripe_customer_id"))
    groups = (UsageEvent.all_tenants_unsafe.filter(report__isnull=True, organization_id__in=list(customers))
              .annotate(window=TruncHour("occurred_at")).values("organization_id", "window")
              .annotate(max_id=Max("id")).order_by("organization_id", "window"))
    for group in groups:
        org_id, window = group["organization_id"], group["window"]
        with transaction.atomic():
            n = MeterReport.all_tenants_unsafe.filter(organization_id=org_id, window_start=window).count() + 1
            report = MeterReport.all_tenants_unsafe.create(
                organization_id=org_id, identifier=_identifier(org_id, window, n),
                stripe_customer_id=customers[org_id], window_start=window, window_end=window + timedelta(hours=1),
                value_micros=0, event_timestamp=window,
            )
            claimed = UsageEvent.all_tenants_unsafe.filter(
                report__isnull=True, organization_id=org_id, occurred_at__gte=window,
                occurred_at__lt=window + timedelta(hours=1), id__lte=group["max_id"],
            ).update(report=report)
            totals = UsageEvent.all_tenants_unsafe.filter(report=report).aggregate(value=Sum("value_micros"),
                                                                         last=Max("occurred_at"))
            if not claimed or not totals["value"]:
                report.delete()  # another pass took these rows first
                continue
            MeterReport.all_tenants_unsafe.filter(pk=report.pk).update(value_micros=totals["value"],
                                                             event_timestamp=totals["last"])
            stats.reports_created += 1


def _backoff(report: MeterReport, now: datetime, error: str) -> None:
    delay = min(BACKOFF_BASE_SECONDS * 2 ** max(0, report.attempts - 1), BACKOFF_MAX_SECONDS)
    delay *= 0.8 + 0.4 * random.random()
    MeterReport.all_tenants_unsafe.filter(pk=report.pk).update(next_attempt_at=now + timedelta(seconds=delay),
                                                     last_error=error[:2000])


def _expire(report: MeterReport, now: datetime, stats: PassStats) -> None:
    MeterReport.all_tenants_unsafe.filter(pk=report.pk).update(status=MeterReport.Status.EXPIRED,
                                                               last_error="older than 35 days")
    BillingAlert.all_tenants_unsafe.create(
        organization_id=report.organization_id, kind="usage_too_old_for_stripe",
        message=(f"Meter report {report.identifier} ({money.usd(report.value_micros)}, usage of "
                 f"{report.window_start:%Y-%m-%d %H}:00 UTC) could not be delivered within Stripe's 35-day window. "
                 "Invoice it manually."),
    )
    stats.expired += 1


def _call_lock_seconds() -> int:
    """How long one meter-event call can take (timeout × attempts) plus slack: the per-customer lock lives this long
    from each call, so a worker that dies mid-call frees the customer soon, and a live one never overlaps itself."""
    return int(settings.STRIPE_TIMEOUT_SECONDS * (settings.STRIPE_MAX_NETWORK_RETRIES + 1)) + 10


def _send_customer(sc: stripe.StripeClient, event_name: str, customer: str, *, now: datetime,
                   stats: PassStats, lock: str) -> None:
    due = (MeterReport.all_tenants_unsafe.filter(stripe_customer_id=customer, status=MeterReport.Status.PENDING)
           .exclude(next_attempt_at__gt=now).order_by("window_start", "id"))
    for report in due:
        if report.event_timestamp < now - STRIPE_MAX_AGE + SAFETY_MARGIN:
            _expire(report, now, stats)
            continue
        cache.touch(lock, _call_lock_seconds())
        MeterReport.all_tenants_unsafe.filter(pk=report.pk).update(attempts=report.attempts + 1)
        report.attempts += 1
        stats.calls += 1
        try:
            sc.v1.billing.meter_events.create(params={
                "event_name": event_name,
                "payload": {"stripe_customer_id": customer, "value": str(report.value_micros)},
                "identifier": report.identifier,
                "timestamp": int(report.event_timestamp.timestamp()),
            })
        except stripe.InvalidRequestError as exc:
            message = exc.user_message or str(exc)
            if "already exists" in message:
                stats.duplicates += 1  # Stripe has it: delivered before the marking was lost
            elif "timestamp" in message.lower() and "past" in message.lower():
                _expire(report, now, stats)
                continue
            else:
                stats.errors.append(f"{report.identifier}: {message}")
                _backoff(report, now, message)
                stats.deferred += 1
                return
        except (stripe.RateLimitError, stripe.APIConnectionError, stripe.APIError) as exc:
            _backoff(report, now, f"{type(exc).__name__}: {exc}")
            stats.deferred += 1
            return  # this customer waits; others go on
        except stripe.StripeError as exc:
            _backoff(report, now, f"{type(exc).__name__}: {exc}")
            stats.errors.append(f"{report.identifier}: {exc}")
            stats.deferred += 1
            return
        MeterReport.all_tenants_unsafe.filter(pk=report.pk).update(status=MeterReport.Status.DELIVERED,
                                                                   delivered_at=now, last_error="")
        stats.delivered += 1


def report_usage(*, now: datetime | None = None, sc: stripe.StripeClient | None = None) -> PassStats:
    """One reporting pass (the Celery beat task and `manage.py report_usage` both call this)."""
    stats = PassStats()
    sc = sc or stripe_gateway.client()
    setup = stripe_gateway.current_setup() or stripe_gateway.setup(sc=sc)
    if cache.add("billing:assign-lock", "1", timeout=LOCK_SECONDS):
        try:
            assign_reports(stats=stats)
        finally:
            cache.delete("billing:assign-lock")
    now = now or timezone.now()
    customers = (MeterReport.all_tenants_unsafe.filter(status=MeterReport.Status.PENDING)
                 .exclude(next_attempt_at__gt=now).values_list("stripe_customer_id", flat=True).distinct())
    for customer in list(customers):
        lock = f"billing:meter-lock:{customer}"
        if not cache.add(lock, "1", timeout=_call_lock_seconds()):  # one call in flight per customer, any worker
            stats.customers_skipped += 1
            continue
        try:
            _send_customer(sc, setup.meter_event_name, customer, now=now, stats=stats, lock=lock)
        finally:
            cache.delete(lock)
    return stats


def ensure_customers(*, sc: stripe.StripeClient | None = None) -> int:
    """Give a Stripe customer to every organization that has usage to report but none yet."""
    from accounts.models import Organization

    sc = sc or stripe_gateway.client()
    missing = Organization.objects.filter(
        id__in=UsageEvent.all_tenants_unsafe.filter(report__isnull=True).values("organization_id")
    ).exclude(billing_account__stripe_customer_id__gt="")
    count = 0
    for organization in missing:
        stripe_gateway.ensure_customer(organization, sc=sc)
        count += 1
    return count


@dataclass(frozen=True)
class Backlog:
    """Usage not yet accepted by Stripe (for /metrics)."""

    unassigned_events: int  # outbox rows in no meter report yet
    pending_reports: int  # meter reports built, not delivered yet
    micros: int  # micro-USD of both
    oldest_age_seconds: float  # since the oldest such usage occurred; 0.0 when none


def backlog(*, now: datetime | None = None) -> Backlog:
    """Three indexed aggregates: unassigned outbox rows (usage_unreported), pending reports (meter_report_due) and the
    usage inside those (by report id)."""
    now = now or timezone.now()
    events = UsageEvent.all_tenants_unsafe.filter(report__isnull=True).aggregate(
        n=Count("id"), micros=Sum("value_micros"), oldest=Min("occurred_at"))
    reports = MeterReport.all_tenants_unsafe.filter(status=MeterReport.Status.PENDING).aggregate(
        n=Count("id"), micros=Sum("value_micros"))
    oldest = [events["oldest"]]
    if reports["n"]:
        pending = MeterReport.all_tenants_unsafe.filter(status=MeterReport.Status.PENDING).values("id")
        oldest.append(UsageEvent.all_tenants_unsafe.filter(report__in=pending).aggregate(o=Min("occurred_at"))["o"])
    oldest = [o for o in oldest if o is not None]
    return Backlog(unassigned_events=events["n"], pending_reports=reports["n"],
                   micros=(events["micros"] or 0) + (reports["micros"] or 0),
                   oldest_age_seconds=max(0.0, (now - min(oldest)).total_seconds()) if oldest else 0.0)
