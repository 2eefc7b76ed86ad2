"""Reads for billing: prices and usage summaries."""
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from accounts.models import Organization

from .models import LedgerEntry, Price


_price_cache: dict[tuple[str, str, str], tuple[float, Price | None, datetime | None]] = {}


def clear_price_cache() -> None:
    _price_cache.clear()


def current_price(*, model: str, size: str, quality: str, at: datetime | None = None) -> Price | None:
    """The price in force at `at` (now by default) for one image of model/size/quality, or None if unpriced.

    Lookups for "now" are cached in-process for PRICE_CACHE_SECONDS (prices change rarely and are looked up on every
    request); a cached price is never used past the moment a newer price row takes effect."""
    if at is not None:
        return _lookup_price(model, size, quality, at)
    now = timezone.now()
    key = (model, size, quality)
    hit = _price_cache.get(key)
    if hit is not None:
        expires, price, superseded_at = hit
        if time.monotonic() < expires and (superseded_at is None or now < superseded_at):
            return price
    price = _lookup_price(model, size, quality, now)
    upcoming = (Price.objects.filter(model=model, size=size, quality=quality, effective_from__gt=now)
                .order_by("effective_from").values_list("effective_from", flat=True).first())
    _price_cache[key] = (time.monotonic() + settings.PRICE_CACHE_SECONDS, price, upcoming)
    return price


def _lookup_price(model: str, size: str, quality: str, at: datetime) -> Price | None:
    return (Price.objects.filter(model=model, size=size, quality=quality, effective_from__lte=at)
            .order_by("-effective_from").first())


@dataclass(frozen=True)
class UsageSummary:
    requests: int
    images: int
    cost_micros: int

    @property
    def cost_usd(self) -> float:
        return self.cost_micros / 1_000_000


def usage_since(*, organization: Organization, since: datetime) -> UsageSummary:
    totals = LedgerEntry.objects.for_organization(organization).filter(created_at__gte=since).aggregate(
        requests=Count("id"),
        images=Sum("n", filter=Q(status=LedgerEntry.Status.SUCCEEDED)),
        cost=Sum("cost_micros"),
    )
    return UsageSummary(requests=totals["requests"] or 0, images=totals["images"] or 0, cost_micros=totals["cost"] or 0)


def month_to_date(*, organization: Organization) -> UsageSummary:
    start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return usage_since(organization=organization, since=start)


def recent_entries(*, organization: Organization, limit: int = 20):
    return LedgerEntry.objects.for_organization(organization).select_related("api_key").order_by("-created_at")[:limit]


def billing_account(*, organization: Organization):
    from .models import BillingAccount

    return BillingAccount.objects.filter(organization=organization).first()


def invoices(*, organization: Organization, limit: int = 24):
    from .models import Invoice

    return Invoice.objects.for_organization(organization).order_by("-created")[:limit]
