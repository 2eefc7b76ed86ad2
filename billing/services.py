"""Writes for billing. Only this module writes ledger rows, outbox rows and spend counters."""
import logging
from dataclasses import dataclass
from datetime import date

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from accounts.models import ApiKey, Organization

from . import ledger, policy
from .models import BillingAccount, KeySpendLimit, LedgerEntry, LedgerHead, Price, SpendCounter, UsageEvent

log = logging.getLogger(__name__)

ALERT_THRESHOLD = 0.8  # e-mail the organization when a limit is 80% used


class UnpricedModel(Exception):
    """A successful image with no price: refuse rather than record $0 by accident."""


class SpendLimitExceeded(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Reservation:
    """Money held for a request in flight, on the counters that have a limit."""

    counter_ids: tuple[int, ...]
    amount_micros: int


NO_RESERVATION = Reservation(counter_ids=(), amount_micros=0)


def _month(now=None) -> date:
    return (now or timezone.now()).date().replace(day=1)


def _billing_state(organization: Organization, api_key: ApiKey | None) -> tuple[BillingAccount | None, int | None]:
    """The organization's billing account and the key's own limit, in one query."""
    account = BillingAccount.objects.filter(organization=organization).first()
    key_limit = None
    if api_key is not None:
        key_limit = KeySpendLimit.objects.filter(api_key=api_key).values_list("monthly_limit_micros", flat=True).first()
    return account, key_limit


def _limits(organization: Organization, api_key: ApiKey | None,
            state: tuple[BillingAccount | None, int | None] | None = None) -> list[tuple[ApiKey | None, int]]:
    """(key or None for the organization, monthly limit) for every limit that applies."""
    account, key_limit = state if state is not None else _billing_state(organization, api_key)
    out = []
    org_limit = account.monthly_spend_limit_micros if account else None
    free_tier = policy.free_tier_limit(account)
    if free_tier is not None:
        org_limit = free_tier if org_limit is None else min(org_limit, free_tier)
    if org_limit is not None:
        out.append((None, org_limit))
    if api_key is not None and key_limit is not None:
        out.append((api_key, key_limit))
    return out


def _counter(organization: Organization, api_key: ApiKey | None, month: date) -> SpendCounter:
    """This month's counter, created from the ledger's month-to-date spend the first time it is needed."""
    lookup = {"organization": organization, "api_key": api_key, "month": month}
    counter = SpendCounter.objects.filter(**lookup).first()
    if counter is not None:
        return counter
    rows = LedgerEntry.objects.for_organization(organization).filter(created_at__date__gte=month)
    if api_key is not None:
        rows = rows.filter(api_key=api_key)
    spent = rows.aggregate(total=Sum("cost_micros"))["total"] or 0
    try:
        with transaction.atomic():
            return SpendCounter.objects.create(spent_micros=spent, **lookup)
    except IntegrityError:
        return SpendCounter.objects.get(**lookup)


def reserve_spend(*, organization: Organization, api_key: ApiKey | None, amount_micros: int) -> Reservation:
    """Hold `amount_micros` against every monthly limit that applies, or raise SpendLimitExceeded. Each hold is one
    conditional UPDATE (spent + reserved + amount <= limit), so concurrent requests cannot pass a limit together."""
    state = _billing_state(organization, api_key)
    refusal = policy.access_refusal(state[0])
    if refusal:
        raise SpendLimitExceeded(refusal)
    limits = _limits(organization, api_key, state)
    if not limits or amount_micros <= 0:
        return NO_RESERVATION
    month = _month()
    held = []
    with transaction.atomic():
        for key, limit in limits:
            counter = _counter(organization, key, month)
            ok = SpendCounter.objects.filter(
                pk=counter.pk, spent_micros__lte=limit - amount_micros - F("reserved_micros")
            ).update(reserved_micros=F("reserved_micros") + amount_micros)
            if not ok:
                whose = f"API key {key.prefix}…" if key is not None else "your organization"
                raise SpendLimitExceeded(
                    f"You exceeded the monthly spend limit of ${limit / 1_000_000:,.2f} for {whose}. Raise the "
                    "limit on the billing page, or wait until next month."
                )
            held.append(counter.pk)
    return Reservation(counter_ids=tuple(held), amount_micros=amount_micros)


def release_spend(reservation: Reservation) -> None:
    """Give back a reservation of a request that was not charged."""
    if reservation.counter_ids:
        SpendCounter.objects.filter(pk__in=reservation.counter_ids).update(
            reserved_micros=F("reserved_micros") - reservation.amount_micros)


def _settle(reservation: Reservation, actual_micros: int) -> list[int]:
    """Turn a reservation into spend; returns the counters that just crossed the alert threshold."""
    if not reservation.counter_ids:
        return []
    SpendCounter.objects.filter(pk__in=reservation.counter_ids).update(
        reserved_micros=F("reserved_micros") - reservation.amount_micros,
        spent_micros=F("spent_micros") + actual_micros,
    )
    crossed = []
    for counter in SpendCounter.objects.filter(pk__in=reservation.counter_ids, alerted_at__isnull=True):
        limit = _limit_of(counter)
        if limit and counter.spent_micros >= ALERT_THRESHOLD * limit:
            if SpendCounter.objects.filter(pk=counter.pk, alerted_at__isnull=True).update(alerted_at=timezone.now()):
                crossed.append(counter.pk)
    return crossed


def _limit_of(counter: SpendCounter) -> int | None:
    if counter.api_key_id is None:
        limits = dict(_limits(counter.organization, None))
        return limits.get(None)
    return KeySpendLimit.objects.filter(api_key_id=counter.api_key_id).values_list(
        "monthly_limit_micros", flat=True).first()


def set_spend_limit(*, organization: Organization, api_key: ApiKey | None = None, monthly_limit_micros: int | None):
    """Set (or clear, with None) a monthly limit. The month's counter is rebuilt from the ledger on next use."""
    if monthly_limit_micros is not None and monthly_limit_micros < 0:
        raise ValueError("A spend limit cannot be negative.")
    with transaction.atomic():
        if api_key is None:
            BillingAccount.objects.update_or_create(organization=organization,
                                                    defaults={"monthly_spend_limit_micros": monthly_limit_micros})
        elif monthly_limit_micros is None:
            KeySpendLimit.objects.filter(api_key=api_key).delete()
        else:
            KeySpendLimit.objects.update_or_create(api_key=api_key,
                                                   defaults={"monthly_limit_micros": monthly_limit_micros})
        SpendCounter.objects.filter(organization=organization, api_key=api_key, month=_month(),
                                    reserved_micros=0).delete()


def _append(**fields) -> LedgerEntry:
    """Append one row to its organization's hash chain (the head row is locked while it is written)."""
    organization_id = fields["organization"].pk
    head = LedgerHead.objects.select_for_update().filter(organization_id=organization_id).first()
    if head is None:  # the organization's first row: create the head (a concurrent creator may win; then lock it)
        LedgerHead.objects.bulk_create([LedgerHead(organization_id=organization_id)], ignore_conflicts=True)
        head = LedgerHead.objects.select_for_update().get(organization_id=organization_id)
    entry = LedgerEntry(sequence=head.sequence + 1, prev_hash=head.last_hash, created_at=timezone.now(), **fields)
    entry.entry_hash = ledger.digest(ledger.row_values(entry), entry.prev_hash)
    entry.save(force_insert=True)
    LedgerHead.objects.filter(pk=organization_id).update(sequence=entry.sequence, last_hash=entry.entry_hash)
    return entry


def record_usage(
    *,
    organization: Organization,
    api_key: ApiKey | None,
    request_id: str,
    status: str,
    model: str = "",
    provider: str = "",
    size: str = "",
    quality: str = "",
    n: int = 0,
    price: Price | None = None,
    latency_ms: int = 0,
    error_code: str = "",
    endpoint: str = "generations",
    upstream_cost_micros: int | None = None,
    reservation: Reservation = NO_RESERVATION,
) -> LedgerEntry:
    """Write the one ledger row of a request, and (for a charge) its billing outbox row and spend, in one
    transaction. A success costs n × the price's unit price; anything else costs 0 and releases its reservation."""
    succeeded = status == LedgerEntry.Status.SUCCEEDED
    if succeeded and price is None:
        raise UnpricedModel(f"No price for {model} {size} {quality}")
    unit = price.unit_price_micros if (succeeded and price is not None) else 0
    cost = unit * n if succeeded else 0
    with transaction.atomic():
        entry = _append(
            organization=organization, api_key=api_key, request_id=request_id, endpoint=endpoint, model=model[:100],
            provider=provider[:50], size=size[:20], quality=quality[:20], n=n, price=price if succeeded else None,
            unit_price_micros=unit, cost_micros=cost,
            upstream_cost_micros=upstream_cost_micros if succeeded else None,
            latency_ms=max(0, int(latency_ms)), status=status, error_code=error_code[:64],
        )
        if cost > 0:
            UsageEvent.unscoped.create(ledger_entry=entry, organization=organization, value_micros=cost,
                                       occurred_at=entry.created_at)
        crossed = _settle(reservation, cost)
        if crossed:
            from .tasks import send_spend_alert

            for counter_id in crossed:
                transaction.on_commit(lambda cid=counter_id: send_spend_alert.delay(cid))
    return entry


def carry_spend_limit_to_rotated_key(*, old_key: ApiKey, new_key: ApiKey, **_) -> None:
    """A rotated key keeps its predecessor's monthly spend limit."""
    limit = KeySpendLimit.objects.filter(api_key=old_key).values_list("monthly_limit_micros", flat=True).first()
    if limit is not None:
        set_spend_limit(organization=new_key.organization, api_key=new_key, monthly_limit_micros=limit)
