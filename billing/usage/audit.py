"""Reads for the audit API (/v1/organization/usage/images, /v1/organization/costs, /v1/organization/usage/records).

Everything here is scoped to one organization through `LedgerEntry.objects.for_organization(org)` and works on the
ledger's integer micro-USD; the float USD values the API shows are derived from those integers at the edge
(`billing.money.exact_decimal`), and `value_micros` is shown next to them so an audit can match the ledger to
the micro-dollar.

Buckets. A bucket of width 1m / 1h / 1d starts at a multiple of its width since the Unix epoch (UTC: days start at
00:00 UTC). Rows are counted only inside the requested range [start_time, end_time), so the first and the last
bucket shown are clipped to the range: the buckets of a range partition it, and the sum over every bucket of every
page is exactly the ledger's sum over the range. Empty buckets are returned with `results: []` (as OpenAI does).

Cursors (bucket pages and record positions) are billing/cursors.py's.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from django.db.models import Q
from django.db.models.functions import TruncDay, TruncHour, TruncMinute

from accounts.models import ApiKey, Organization
from billing import cursors, money
from billing.models import LedgerEntry
from billing.usage import reader

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

BUCKET_SECONDS = {"1m": 60, "1h": 3600, "1d": 86400}
BUCKET_TRUNC = {"1m": TruncMinute, "1h": TruncHour, "1d": TruncDay}
# OpenAI's defaults and maxima for `limit` (buckets per page), per bucket width.
BUCKET_LIMIT_DEFAULT = {"1m": 60, "1h": 24, "1d": 7}
BUCKET_LIMIT_MAX = {"1m": 1440, "1h": 168, "1d": 31}

# group_by value -> ledger columns it groups on.
IMAGES_GROUP_BY = {"model": ("model",), "api_key": ("api_key_id",), "provider": ("provider",), "size": ("size",)}
COSTS_GROUP_BY = {**IMAGES_GROUP_BY, "line_item": ("model", "size", "quality")}

RECORDS_LIMIT_DEFAULT = 100
RECORDS_LIMIT_MAX = 1000


def amount(micros: int) -> dict:
    """An API amount: {"value": Decimal USD with exactly 6 decimals (a JSON number, billing/money.py's exact form),
    "value_micros": int, "currency": "usd"}."""
    return {"value": money.exact_decimal(micros), "value_micros": int(micros), "currency": "usd"}


def to_datetime(unix_seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=unix_seconds)


def to_unix(moment: datetime) -> int:
    return int((moment - EPOCH) // timedelta(seconds=1))


# --- Buckets ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BucketPage:
    buckets: list[dict]
    has_more: bool
    next_page: str | None

    def as_json(self) -> dict:
        return {"object": "page", "data": self.buckets, "has_more": self.has_more, "next_page": self.next_page}


def _bucket_page(*, kind: str, organization: Organization, start_time: int, end_time: int, bucket_width: str,
                 group_by: list[str], limit: int, page: str | None, api_key_ids: list[int] | None,
                 models: list[str] | None) -> BucketPage:
    width = BUCKET_SECONDS[bucket_width]
    first = start_time - start_time % width  # aligned start of the first bucket of the range
    cursor = first
    if page is not None:
        cursor = cursors.decode_page(page, bucket_width)
        if cursor % width or cursor < first or cursor >= end_time:
            raise cursors.BadCursor("This page cursor does not belong to this start_time/end_time.")
    starts = []
    at = cursor
    while at < end_time and len(starts) < limit:
        starts.append(at)
        at += width
    has_more = at < end_time
    page_from, page_to = max(starts[0], start_time), min(at, end_time)

    lookups = {}
    if kind == "costs":
        lookups["status"] = LedgerEntry.Status.SUCCEEDED  # failures cost 0 (a CHECK constraint says so)
    if api_key_ids is not None:
        lookups["api_key_id__in"] = api_key_ids
    if models is not None:
        lookups["model__in"] = models
    groups = IMAGES_GROUP_BY if kind == "images" else COSTS_GROUP_BY
    columns = list(dict.fromkeys(col for name in group_by for col in groups[name]))
    trunc = BUCKET_TRUNC[bucket_width]("created_at", tzinfo=UTC)

    def read(source: reader.Source) -> list[dict]:
        if source.rollup:
            rows = source.rows.values("day", *columns).annotate(**reader.totals(rollup=True)).order_by()
            return [{**row, "bucket": datetime.combine(row.pop("day"), time.min, tzinfo=UTC)} for row in rows]
        return list(source.rows.annotate(bucket=trunc).values("bucket", *columns)
                    .annotate(**reader.totals(rollup=False)).order_by())

    page_start, page_end = to_datetime(page_from), to_datetime(page_to)
    if bucket_width == "1d" and set(columns) <= reader.ROLLUP_COLUMNS:  # whole UTC days: the rollups answer
        parts = reader.read_organization(organization, page_start, page_end, read, local_days=False, **lookups)
    else:
        parts = [read(reader.Source(False, LedgerEntry.objects.for_organization(organization).filter(
            created_at__gte=page_start, created_at__lt=page_end, **lookups)))]
    merged: dict[tuple, dict] = {}
    for rows in parts:
        for row in rows:
            key = (row["bucket"], *(row[c] for c in columns))
            merged[key] = {**row, **reader.add([merged.get(key, {}), row])}
    aggregated = [merged[key] for key in sorted(merged, key=lambda k: tuple((v is None, v or "") if i else v
                                                                            for i, v in enumerate(k)))]

    key_names: dict[int, str] = {}
    if "api_key_id" in columns:
        ids = {row["api_key_id"] for row in aggregated if row["api_key_id"] is not None}
        key_names = dict(ApiKey.objects.for_organization(organization).filter(pk__in=ids)
                         .values_list("pk", "name"))

    results: dict[int, list[dict]] = {start: [] for start in starts}
    for row in aggregated:
        bucket_start = to_unix(row["bucket"])
        result = _result(kind, row, group_by, key_names)
        results[bucket_start].append(result)
    buckets = [{"object": "bucket", "start_time": max(start, start_time), "end_time": min(start + width, end_time),
                "results": results[start]} for start in starts]
    return BucketPage(buckets, has_more, cursors.encode_page(bucket_width, at) if has_more else None)


def _result(kind: str, row: dict, group_by: list[str], key_names: dict[int, str]) -> dict:
    grouped = set(group_by)
    api_key_id = row.get("api_key_id") if "api_key" in grouped else None
    common = {
        "model": row["model"] if "model" in grouped else None,
        "api_key_id": api_key_id,
        "api_key_name": key_names.get(api_key_id) if api_key_id is not None else None,
        "provider": row["provider"] if "provider" in grouped else None,
        "size": row["size"] if "size" in grouped else None,
    }
    if kind == "images":
        return {"object": "organization.usage.images.result", "images": int(row["images"]),
                "num_model_requests": int(row["requests"]), **common}
    line_item = " ".join((row["model"], row["size"], row["quality"])) if "line_item" in grouped else None
    return {"object": "organization.costs.result", "amount": amount(row["cost_micros"]), "line_item": line_item,
            **common}


def usage_images_page(*, organization: Organization, start_time: int, end_time: int, bucket_width: str = "1d",
                      group_by: list[str] = (), limit: int | None = None, page: str | None = None,
                      api_key_ids: list[int] | None = None, models: list[str] | None = None) -> BucketPage:
    """Images made (succeeded rows' n) and requests (every ledger row) per bucket, optionally grouped."""
    return _bucket_page(kind="images", organization=organization, start_time=start_time, end_time=end_time,
                        bucket_width=bucket_width, group_by=list(group_by),
                        limit=limit or BUCKET_LIMIT_DEFAULT[bucket_width], page=page, api_key_ids=api_key_ids,
                        models=models)


def costs_page(*, organization: Organization, start_time: int, end_time: int, bucket_width: str = "1d",
               group_by: list[str] = (), limit: int | None = None, page: str | None = None,
               api_key_ids: list[int] | None = None, models: list[str] | None = None) -> BucketPage:
    """Money charged (sum of cost_micros) per bucket, optionally grouped."""
    return _bucket_page(kind="costs", organization=organization, start_time=start_time, end_time=end_time,
                        bucket_width=bucket_width, group_by=list(group_by),
                        limit=limit or BUCKET_LIMIT_DEFAULT[bucket_width], page=page, api_key_ids=api_key_ids,
                        models=models)


# --- Per-request records ---------------------------------------------------------------------------------------------

def records_queryset(*, organization: Organization, start_time: int | None = None, end_time: int | None = None,
                     model: str | None = None, provider: str | None = None, status: str | None = None,
                     api_key_id: int | None = None, after: tuple[datetime, int] | None = None):
    """The organization's ledger rows, newest first by (created_at, id), after a keyset cursor.

    The keyset condition `created_at < c OR (created_at = c AND id < i)` with ORDER BY created_at DESC, id DESC
    walks the (organization, -created_at) index from the cursor on, so page 1,000 costs what page 1 costs."""
    rows = LedgerEntry.objects.for_organization(organization)
    if start_time is not None:
        rows = rows.filter(created_at__gte=to_datetime(start_time))
    if end_time is not None:
        rows = rows.filter(created_at__lt=to_datetime(end_time))
    if model is not None:
        rows = rows.filter(model=model)
    if provider is not None:
        rows = rows.filter(provider=provider)
    if status is not None:
        rows = rows.filter(status=status)
    if api_key_id is not None:  # a key of another organization simply matches nothing (the rows are scoped)
        rows = rows.filter(api_key_id=api_key_id)
    if after is not None:
        created_at, row_id = after
        rows = rows.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=row_id))
    return rows.order_by("-created_at", "-id")


def _record(entry: LedgerEntry) -> dict:
    key = entry.api_key
    return {
        "object": "organization.usage.record",
        "id": entry.request_id,
        "created": to_unix(entry.created_at),
        "created_at_us": (entry.created_at - EPOCH) // timedelta(microseconds=1),
        "endpoint": entry.endpoint,
        "model": entry.model,
        "provider": entry.provider,
        "size": entry.size,
        "quality": entry.quality,
        "n": entry.n,
        "status": entry.status,
        "error_code": entry.error_code or None,
        "cost": amount(entry.cost_micros),
        "unit_price_micros": entry.unit_price_micros,
        "latency_ms": entry.latency_ms,
        "api_key": {"id": key.pk, "name": key.name, "prefix": key.prefix} if key is not None else None,
    }


def records_page(*, organization: Organization, limit: int = RECORDS_LIMIT_DEFAULT, cursor: str | None = None,
                 **filters) -> dict:
    """One page of per-request rows: {object: list, data, has_more, next_cursor}; pass next_cursor back as
    `cursor` for the next page (with the same filters)."""
    position = cursors.decode_position(cursor) if cursor is not None else None
    rows = list(records_queryset(organization=organization, after=position, **filters)
                .select_related("api_key")[:limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = cursors.encode_position(rows[-1].created_at, rows[-1].pk) if has_more else None
    return {"object": "list", "data": [_record(r) for r in rows], "has_more": has_more, "next_cursor": next_cursor}
