"""Reads for the audit API (/v1/organization/usage/images, /v1/organization/costs, /v1/organization/usage/records).

Everything here is scoped to one organization through `LedgerEntry.objects.for_organization(org)` and works on the
ledger's integer micro-USD; the float USD values the API shows are derived from those integers at the edge
(`billing.money.exact_decimal`), and `value_micros` is shown next to them so an audit can match the ledger to
the micro-dollar.

Buckets. A bucket of width 1m / 1h / 1d starts at a multiple of its width since the Unix epoch (UTC: days start at
00:00 UTC). Rows are counted only inside the requested range [start_time, end_time), so the first and the last
bucket shown are clipped to the range: the buckets of a range partition it, and the sum over every bucket of every
page is exactly the ledger's sum over the range. Empty buckets are returned with `results: []` (as OpenAI does).

Cursors are opaque to clients (URL-safe base64 without padding) and versioned:
  * bucket pages:  "b1:<bucket width>:<unix start of the next bucket>"
  * record pages:  "r1:<created_at in unix microseconds>:<ledger row id>" (the last row of the page)
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay, TruncHour, TruncMinute

from accounts.models import ApiKey, Organization
from billing import money
from billing.models import LedgerEntry

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


class BadCursor(ValueError):
    """A `page` / `after` cursor that this server did not produce for this query."""


def amount(micros: int) -> dict:
    """An API amount: {"value": Decimal USD with exactly 6 decimals (a JSON number, billing/money.py's exact form),
    "value_micros": int, "currency": "usd"}."""
    return {"value": money.exact_decimal(micros), "value_micros": int(micros), "currency": "usd"}


def to_datetime(unix_seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=unix_seconds)


def to_unix(moment: datetime) -> int:
    return int((moment - EPOCH) // timedelta(seconds=1))


def _b64encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _b64decode(token: str) -> str:
    if not token or len(token) > 200 or not all(c.isalnum() or c in "-_" for c in token):
        raise BadCursor("malformed")
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise BadCursor("malformed") from exc


# --- Buckets ---------------------------------------------------------------------------------------------------------

def encode_page(bucket_width: str, next_start: int) -> str:
    return _b64encode(f"b1:{bucket_width}:{next_start}")


def decode_page(token: str, bucket_width: str) -> int:
    parts = _b64decode(token).split(":")
    if len(parts) != 3 or parts[0] != "b1" or not parts[2].isdigit() or len(parts[2]) > 15:
        raise BadCursor("malformed")
    if parts[1] != bucket_width:
        raise BadCursor("This page cursor was made for another bucket_width.")
    return int(parts[2])


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
        cursor = decode_page(page, bucket_width)
        if cursor % width or cursor < first or cursor >= end_time:
            raise BadCursor("This page cursor does not belong to this start_time/end_time.")
    starts = []
    at = cursor
    while at < end_time and len(starts) < limit:
        starts.append(at)
        at += width
    has_more = at < end_time
    page_from, page_to = max(starts[0], start_time), min(at, end_time)

    rows = LedgerEntry.objects.for_organization(organization).filter(
        created_at__gte=to_datetime(page_from), created_at__lt=to_datetime(page_to))
    if kind == "costs":
        rows = rows.filter(status=LedgerEntry.Status.SUCCEEDED)  # failures cost 0 (a CHECK constraint says so)
    if api_key_ids is not None:
        rows = rows.filter(api_key_id__in=api_key_ids)
    if models is not None:
        rows = rows.filter(model__in=models)
    groups = IMAGES_GROUP_BY if kind == "images" else COSTS_GROUP_BY
    columns = list(dict.fromkeys(col for name in group_by for col in groups[name]))
    trunc = BUCKET_TRUNC[bucket_width]("created_at", tzinfo=UTC)
    if kind == "images":
        aggregates = {"images": Sum("n", filter=Q(status=LedgerEntry.Status.SUCCEEDED), default=0),
                      "requests": Count("id")}
    else:
        aggregates = {"cost": Sum("cost_micros", default=0)}
    aggregated = (rows.annotate(bucket=trunc).values("bucket", *columns).annotate(**aggregates)
                  .order_by("bucket", *columns))

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
    return BucketPage(buckets, has_more, encode_page(bucket_width, at) if has_more else None)


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
    return {"object": "organization.costs.result", "amount": amount(row["cost"]), "line_item": line_item, **common}


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

def encode_record_cursor(created_at: datetime, row_id: int) -> str:
    micros = (created_at - EPOCH) // timedelta(microseconds=1)
    return _b64encode(f"r1:{micros}:{row_id}")


def decode_record_cursor(token: str) -> tuple[datetime, int]:
    parts = _b64decode(token).split(":")
    if (len(parts) != 3 or parts[0] != "r1" or not parts[1].isdigit() or not parts[2].isdigit()
            or len(parts[1]) > 18 or len(parts[2]) > 18):
        raise BadCursor("malformed")
    micros, row_id = int(parts[1]), int(parts[2])
    if micros > 32503680000 * 1_000_000 or row_id > 2**63 - 1:
        raise BadCursor("malformed")
    return EPOCH + timedelta(microseconds=micros), row_id


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
    position = decode_record_cursor(cursor) if cursor is not None else None
    rows = list(records_queryset(organization=organization, after=position, **filters)
                .select_related("api_key")[:limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_record_cursor(rows[-1].created_at, rows[-1].pk) if has_more else None
    return {"object": "list", "data": [_record(r) for r in rows], "has_more": has_more, "next_cursor": next_cursor}
