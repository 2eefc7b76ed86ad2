"""Reads for billing: prices and usage summaries."""
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization
from config import process_cache

from . import price_list
from .models import LedgerEntry, Price
from .usage import reader

_prices = process_cache.ProcessCache("prices")


def clear_price_cache() -> None:
    """Every process re-reads prices within a second (config/process_cache.py)."""
    process_cache.invalidate("prices")


def _load_price(key) -> tuple[Price | None, datetime | None]:
    model, size, quality = key
    now = timezone.now()
    price = _lookup_price(model, size, quality, now)
    if price is None and price_list.materialize(Price, model, size, quality):  # a formula-priced size's first use
        price = _lookup_price(model, size, quality, now)
    upcoming = (Price.objects.filter(model=model, size=size, quality=quality, effective_from__gt=now)
                .order_by("effective_from").values_list("effective_from", flat=True).first())
    return price, upcoming


def current_price(*, model: str, size: str, quality: str, at: datetime | None = None) -> Price | None:
    """The price in force at `at` (now by default) for one image of model/size/quality, or None if unpriced.

    Lookups for "now" come from a per-process cache that every process drops within a second of a price change; a
    cached price is never used past the moment a newer price row takes effect."""
    if at is not None:
        return _lookup_price(model, size, quality, at)
    key = (model, size, quality)
    price, upcoming = _prices.get(key, _load_price)
    if upcoming is not None and timezone.now() >= upcoming:
        _prices.clear()
        price, upcoming = _prices.get(key, _load_price)
    return price


async def current_price_async(*, model: str, size: str, quality: str) -> Price | None:
    """current_price for now, from async code: a cache hit costs no I/O; a miss queries on a database thread."""
    key = (model, size, quality)
    price, upcoming = await _prices.aget(key, _load_price)
    if upcoming is not None and timezone.now() >= upcoming:
        _prices.clear()
        price, upcoming = await _prices.aget(key, _load_price)
    return price


def _lookup_price(model: str, size: str, quality: str, at: datetime) -> Price | None:
    return (Price.objects.filter(model=model, size=size, quality=quality, effective_from__lte=at)
            .order_by("-effective_from").first())


@dataclass(frozen=True)
class UsageSummary:
    requests: int
    images: int
    cost_micros: int


def usage_since(*, organization: Organization, since: datetime) -> UsageSummary:
    return _summary(organization, since, None)


def month_to_date(*, organization: Organization) -> UsageSummary:
    start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return usage_since(organization=organization, since=start)


def recent_entries(*, organization: Organization, limit: int = 20):
    return LedgerEntry.objects.for_organization(organization).select_related("api_key").order_by("-created_at")[:limit]


def billing_account(*, organization: Organization):
    from .models import BillingAccount

    return BillingAccount.objects.for_organization(organization).first()


def invoices(*, organization: Organization, limit: int = 24):
    from .models import Invoice

    return Invoice.objects.for_organization(organization).order_by("-created")[:limit]


# --- Dashboard reads: usage over a date range, per day and broken down; the request log ----------------------------
# Every aggregate reads through billing/usage/reader.py: the rollups plus the ledger's tail, as one consistent view.

_BREAKDOWN_FIELDS = {"model": "model", "provider": "provider", "api_key": "api_key__name"}


def _summary(organization: Organization, start: datetime, end: datetime | None) -> UsageSummary:
    summed = reader.add(reader.read_organization(organization, start, end, reader.Source.totals))
    return UsageSummary(requests=summed["requests"], images=summed["images"], cost_micros=summed["cost_micros"])


def usage_between(*, organization: Organization, start: datetime, end: datetime) -> UsageSummary:
    return _summary(organization, start, end)


def daily_usage(*, organization: Organization, start: datetime, end: datetime) -> list[dict]:
    """One dict per calendar day (current time zone) from start's day to the day before `end`, zero days included:
    {"day": date, "requests": int, "images": int, "cost_micros": int}."""
    from datetime import timedelta

    from django.db.models.functions import TruncDate

    tz = timezone.get_current_timezone()

    def read(source: reader.Source):
        rows = source.rows if source.rollup else source.rows.annotate(day=TruncDate("created_at", tzinfo=tz))
        return list(rows.values("day").annotate(**reader.totals(rollup=source.rollup)).order_by("day"))

    by_day: dict = {}
    for rows in reader.read_organization(organization, start, end, read):
        for r in rows:
            by_day[r["day"]] = reader.add([by_day.get(r["day"], {}), r])
    first = timezone.localtime(start, tz).date()
    last = timezone.localtime(end - timedelta(microseconds=1), tz).date()
    days = []
    day = first
    while day <= last:
        days.append({"day": day, **by_day.get(day, reader.add([]))})
        day += timedelta(days=1)
    return days


def daily_usage_by(*, organization: Organization, start: datetime, end: datetime, by: str,
                   top: int = 8) -> list[dict]:
    """Spend and images per calendar day (current time zone, zero days included, the days of `daily_usage`) for
    each model or API key (by = "model" | "api_key"), for stacked charts: the `top` dearest series, then one
    "Other" series summing the rest. [{"label": str, "detail": str, "cost_micros": [int per day],
    "images": [int per day]}], dearest first; [] when the range has no requests. Requests without a key label
    "Playground"."""
    from datetime import timedelta

    from django.db.models.functions import TruncDate

    field = _BREAKDOWN_FIELDS[by]
    group = [field, "api_key__prefix", "api_key_id"] if by == "api_key" else [field]
    tz = timezone.get_current_timezone()

    def read(source: reader.Source):
        rows = source.rows if source.rollup else source.rows.annotate(day=TruncDate("created_at", tzinfo=tz))
        return list(rows.values("day", *group).annotate(**reader.totals(rollup=source.rollup)).order_by())

    first = timezone.localtime(start, tz).date()
    last = timezone.localtime(end - timedelta(microseconds=1), tz).date()
    index = {first + timedelta(days=i): i for i in range((last - first).days + 1)}
    series: dict = {}
    for rows in reader.read_organization(organization, start, end, read):
        for r in rows:
            key = tuple(r[g] for g in group)
            entry = series.setdefault(key, {
                "label": r[field] or ("Playground" if by == "api_key" else "—"),
                "detail": f"{r['api_key__prefix']}…" if r.get("api_key__prefix") else "",
                "cost_micros": [0] * len(index), "images": [0] * len(index), "requests": 0})
            i = index.get(r["day"])
            if i is None:
                continue
            entry["cost_micros"][i] += r["cost_micros"] or 0
            entry["images"][i] += r["images"] or 0
            entry["requests"] += r["requests"] or 0
    ordered = sorted(series.values(), key=lambda e: (-sum(e["cost_micros"]), -sum(e["images"]), -e["requests"],
                                                     e["label"]))
    if len(ordered) > top + 1:
        rest = ordered[top:]
        ordered = ordered[:top] + [{
            "label": f"Other ({len(rest)})", "detail": "",
            "cost_micros": [sum(e["cost_micros"][i] for e in rest) for i in range(len(index))],
            "images": [sum(e["images"][i] for e in rest) for i in range(len(index))],
            "requests": sum(e["requests"] for e in rest)}]
    return ordered


def usage_chart_data(*, organization: Organization, start: datetime, end: datetime, days: list[dict]) -> dict:
    """What the overview's charts draw (passed to static/js/charts.js with json_script): {"days": ["YYYY-MM-DD"],
    "timezone": str, "totals": {"cost_micros": [int], "images": [int]}, "by": {"model" | "api_key": [{"label": str,
    "cost_micros": [int per day], "images": [int per day]}]}}. `days` is daily_usage's answer for the same range.
    Amounts stay integer micro-USD: the script formats them as billing/money.py does."""
    return {
        "days": [d["day"].isoformat() for d in days],
        "timezone": timezone.get_current_timezone_name(),
        "totals": {"cost_micros": [d["cost_micros"] for d in days], "images": [d["images"] for d in days]},
        "by": {by: [{"label": s["label"] + (f" ({s['detail']})" if s["detail"] else ""),
                     "cost_micros": s["cost_micros"], "images": s["images"]}
                    for s in daily_usage_by(organization=organization, start=start, end=end, by=by)]
               for by in ("model", "api_key")},
    }


def usage_breakdown(*, organization: Organization, start: datetime, end: datetime, by: str) -> list[dict]:
    """Requests, images and cost per model, provider or API key ("model" | "provider" | "api_key"), dearest first:
    [{"label": str, "requests": int, "images": int, "cost_micros": int}]. Requests without a key label "—"."""
    field = _BREAKDOWN_FIELDS[by]
    group = [field, "api_key__prefix", "api_key_id"] if by == "api_key" else [field]

    def read(source: reader.Source):
        return list(source.rows.values(*group).annotate(**reader.totals(rollup=source.rollup)).order_by())

    merged: dict = {}
    for rows in reader.read_organization(organization, start, end, read):
        for r in rows:
            key = tuple(r[g] for g in group)
            merged[key] = {**{g: r[g] for g in group}, **reader.add([merged.get(key, {}), r])}
    rows = sorted(merged.values(), key=lambda r: (-r["cost_micros"], -r["requests"], r[field] is None, r[field] or ""))
    return [{"label": r[field] or "—", "detail": (f"{r['api_key__prefix']}…" if r.get("api_key__prefix") else ""),
             "requests": r["requests"], "images": r["images"], "cost_micros": r["cost_micros"]} for r in rows]


@dataclass(frozen=True)
class LogFilters:
    start: datetime | None = None
    end: datetime | None = None
    api_key_id: int | None = None
    model: str = ""
    provider: str = ""
    status: str = ""


def request_log(*, organization: Organization, filters: LogFilters):
    """The organization's ledger rows matching `filters`, newest first by (created_at, id): the order the
    (organization, -created_at) index serves, so a keyset page reads only its own rows."""
    rows = LedgerEntry.objects.for_organization(organization)
    if filters.start is not None:
        rows = rows.filter(created_at__gte=filters.start)
    if filters.end is not None:
        rows = rows.filter(created_at__lt=filters.end)
    if filters.api_key_id is not None:
        rows = rows.filter(api_key_id=filters.api_key_id)
    if filters.model:
        rows = rows.filter(model=filters.model)
    if filters.provider:
        rows = rows.filter(provider=filters.provider)
    if filters.status:
        rows = rows.filter(status=filters.status)
    return rows.order_by("-created_at", "-id")


def request_log_page(rows, *, after: tuple[datetime, int] | None, limit: int = 50) -> tuple[list, tuple | None]:
    """Keyset pagination over `request_log` rows: the `limit` rows older than the cursor `after` = (created_at, id),
    and the cursor of the next page (None on the last). No OFFSET, no COUNT(*)."""
    if after is not None:
        created_at, pk = after
        rows = rows.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=pk))
    page = list(rows.select_related("api_key")[:limit + 1])
    if len(page) > limit:
        page = page[:limit]
        return page, (page[-1].created_at, page[-1].pk)
    return page, None


def request_log_rows_for_export(rows):
    """The columns of the CSV export, as tuples, read in chunks (server-side cursor on PostgreSQL)."""
    return rows.values_list(
        "created_at", "request_id", "api_key__name", "model", "provider", "size", "quality", "n", "status",
        "error_code", "cost_micros", "latency_ms",
    ).iterator(chunk_size=2000)


def request_entry(*, organization: Organization, request_id: str) -> LedgerEntry | None:
    return (LedgerEntry.objects.for_organization(organization).select_related("api_key", "price")
            .filter(request_id=request_id).first())


def key_spend_limits(*, organization: Organization):
    """The organization's keys that have a monthly spend limit, with the limit."""
    from .models import KeySpendLimit

    return (KeySpendLimit.objects.for_organization(organization).filter(api_key__revoked_at__isnull=True)
            .select_related("api_key").order_by("api_key__name"))
