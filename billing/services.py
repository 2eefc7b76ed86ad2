"""Writes for billing: spend limits and ledger rows (with recording.py, the only writers of ledger and outbox rows;
spend counters live in billing/spend.py)."""
import logging

from django.db import transaction

from accounts.models import ApiKey, Organization

from . import recording, spend
from .models import BillingAccount, KeySpendLimit, LedgerEntry, Price

log = logging.getLogger(__name__)

SpendLimitExceeded = spend.SpendLimitExceeded


UnpricedModel = recording.UnpricedModel


def set_spend_limit(*, organization: Organization, api_key: ApiKey | None = None, monthly_limit_micros: int | None):
    """Set (or clear, with None) a monthly limit; every process applies it within a second."""
    if monthly_limit_micros is not None and monthly_limit_micros < 0:
        raise ValueError("A spend limit cannot be negative.")
    with transaction.atomic():
        if api_key is None:
            BillingAccount.objects.for_organization(organization).update_or_create(
                organization=organization, defaults={"monthly_spend_limit_micros": monthly_limit_micros})
        elif monthly_limit_micros is None:
            KeySpendLimit.objects.for_organization(organization).filter(api_key=api_key).delete()
        else:
            KeySpendLimit.objects.for_organization(organization).update_or_create(
                api_key=api_key, defaults={"monthly_limit_micros": monthly_limit_micros})
        spend.invalidate_limits()


def set_end_user_spend_limit(*, organization: Organization, monthly_limit_micros: int | None):
    """Set (or clear, with None) the monthly limit per end user; every process applies it within a second."""
    if monthly_limit_micros is not None and monthly_limit_micros < 0:
        raise ValueError("A spend limit cannot be negative.")
    with transaction.atomic():
        BillingAccount.objects.for_organization(organization).update_or_create(
            organization=organization, defaults={"end_user_monthly_limit_micros": monthly_limit_micros})
        spend.invalidate_limits()


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
) -> LedgerEntry:
    """Write the one ledger row of a request and, for a charge, its billing outbox row, in one transaction (the
    caller's, when it has one). A success costs n × the price's unit price (micro-USD); anything else costs 0. The
    row touches no row shared with other requests: the sealer hashes it into the organization's chain shortly after
    (billing/sealing.py). Raises UnpricedModel for a success without a price."""
    return record_usage_many([dict(
        organization=organization, api_key=api_key, request_id=request_id, status=status, model=model,
        provider=provider, size=size, quality=quality, n=n, price=price, latency_ms=latency_ms, error_code=error_code,
        endpoint=endpoint, upstream_cost_micros=upstream_cost_micros)])[0]


def record_usage_many(usages: list[dict]) -> list[LedgerEntry]:
    """`record_usage` for several requests at once, in one transaction (the request path writes through
    billing/recording.py instead: one statement with its other rows). Each dict takes record_usage's keyword
    arguments."""
    entries = recording.entries_for(usages)
    recording.write_sync(entries, [])
    return entries


def carry_spend_limit_to_rotated_key(*, old_key: ApiKey, new_key: ApiKey, **_) -> None:
    """A rotated key keeps its predecessor's monthly spend limit."""
    limit = (KeySpendLimit.objects.for_organization(old_key.organization_id).filter(api_key=old_key)
             .values_list("monthly_limit_micros", flat=True).first())
    if limit is not None:
        set_spend_limit(organization=new_key.organization, api_key=new_key, monthly_limit_micros=limit)
