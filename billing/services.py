"""Writes for billing. Only this module writes ledger rows."""
from accounts.models import ApiKey, Organization

from .models import LedgerEntry, Price


class UnpricedModel(Exception):
    """A successful image with no price: refuse rather than record $0 by accident."""


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
    """Write the one ledger row of a request. A success costs n × the price's unit price; anything else costs 0."""
    succeeded = status == LedgerEntry.Status.SUCCEEDED
    if succeeded and price is None:
        raise UnpricedModel(f"No price for {model} {size} {quality}")
    unit = price.unit_price_micros if (succeeded and price is not None) else 0
    return LedgerEntry.unscoped.create(
        organization=organization,
        api_key=api_key,
        request_id=request_id,
        endpoint=endpoint,
        model=model[:100],
        provider=provider[:50],
        size=size[:20],
        quality=quality[:20],
        n=n,
        price=price if succeeded else None,
        unit_price_micros=unit,
        cost_micros=unit * n if succeeded else 0,
        upstream_cost_micros=upstream_cost_micros if succeeded else None,
        latency_ms=max(0, int(latency_ms)),
        status=status,
        error_code=error_code[:64],
    )
