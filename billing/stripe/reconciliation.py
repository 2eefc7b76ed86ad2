"""Reconciliation: the ledger against Stripe's meter event summaries, per customer and hour.

For every organization with a Stripe customer and every hour of the look-back window that reporting has finished
(no unassigned or pending usage left for it), the charged ledger total must equal Stripe's aggregated value.
Each difference is recorded as a Discrepancy for staff (and resolved automatically once the numbers agree again).
Stripe's summaries are eventually consistent: the newest hour is skipped.
"""
from dataclasses import dataclass
from datetime import datetime, timedelta

import stripe
from django.db.models import Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from billing.models import BillingAccount, Discrepancy, LedgerEntry, MeterReport, UsageEvent
from billing.stripe import gateway as stripe_gateway


@dataclass
class ReconcileStats:
    customers: int = 0
    windows_checked: int = 0
    discrepancies: int = 0
    resolved: int = 0


def reconcile(*, now: datetime | None = None, lookback_hours: int = 48,
              sc: stripe.StripeClient | None = None) -> ReconcileStats:
    from billing.stripe.webhooks import resync_subscriptions

    stats = ReconcileStats()
    resync_subscriptions()  # subscriptions an ambiguous webhook left in doubt while Stripe was unreachable
    sc = sc or stripe_gateway.client()
    setup = stripe_gateway.current_setup() or stripe_gateway.setup(sc=sc)
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0)  # the current hour is still filling
    start = end - timedelta(hours=lookback_hours)
    for account in BillingAccount.all_tenants_unsafe.exclude(stripe_customer_id=""):
        stats.customers += 1
        org_id = account.organization_id
        ledger = dict(
            LedgerEntry.all_tenants_unsafe.filter(organization_id=org_id, status=LedgerEntry.Status.SUCCEEDED,
                                        created_at__gte=start, created_at__lt=end)
            .annotate(hour=TruncHour("created_at")).values("hour").annotate(total=Sum("cost_micros"))
            .values_list("hour", "total")
        )
        unfinished = set(
            UsageEvent.all_tenants_unsafe.filter(organization_id=org_id, occurred_at__gte=start, occurred_at__lt=end)
            .exclude(report__status=MeterReport.Status.DELIVERED).annotate(hour=TruncHour("occurred_at"))
            .values_list("hour", flat=True)
        )
        reported = dict(
            MeterReport.all_tenants_unsafe.filter(organization_id=org_id, status=MeterReport.Status.DELIVERED,
                                        window_start__gte=start, window_start__lt=end)
            .values("window_start").annotate(total=Sum("value_micros")).values_list("window_start", "total")
        )
        summaries = sc.v1.billing.meters.event_summaries.list(setup.meter_id, params={
            "customer": account.stripe_customer_id, "start_time": int(start.timestamp()),
            "end_time": int(end.timestamp()), "value_grouping_window": "hour", "limit": 100,
        })
        at_stripe: dict[datetime, int] = {}
        for summary in summaries.auto_paging_iter():
            hour = datetime.fromtimestamp(summary.start_time, tz=start.tzinfo)
            at_stripe[hour] = at_stripe.get(hour, 0) + int(round(summary.aggregated_value))
        for hour in sorted(set(ledger) | set(at_stripe)):
            if hour in unfinished:
                continue
            stats.windows_checked += 1
            ours, theirs = ledger.get(hour, 0), at_stripe.get(hour, 0)
            open_rows = Discrepancy.all_tenants_unsafe.filter(organization_id=org_id, window_start=hour,
                                                              resolved_at__isnull=True)
            if ours == theirs:
                stats.resolved += open_rows.update(resolved_at=now, note="amounts agree again")
                continue
            if not open_rows.filter(ledger_micros=ours, stripe_micros=theirs).exists():
                open_rows.update(resolved_at=now, note="superseded by a newer comparison")
                Discrepancy.all_tenants_unsafe.create(organization_id=org_id, window_start=hour,
                                           window_end=hour + timedelta(hours=1), ledger_micros=ours,
                                           reported_micros=reported.get(hour, 0), stripe_micros=theirs)
                stats.discrepancies += 1
    return stats
