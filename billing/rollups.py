"""Usage rollups: the ledger summed per organization, UTC day, API key, model, provider and status.

`refresh_rollups` reads the ledger rows above the watermark (RollupState.last_ledger_id) in id order, a batch at a
time; each batch is aggregated in SQL (GROUP BY over the batch's id range), added into UsageRollup (PostgreSQL:
INSERT ... ON CONFLICT DO UPDATE SET requests = rollup.requests + excluded.requests, ...), and the watermark moves to
the batch's last id -- all in one transaction, with the state row locked (SELECT ... FOR UPDATE), so two refreshes
never run a batch twice and a crash never leaves counts without the watermark that says they are there: re-running
never double counts.

Late commits. Ledger ids come from a sequence when the row is INSERTed, but rows become visible when their
transaction commits, so a row with a lower id can commit after a row with a higher one. If the watermark moved past
an id whose row was still uncommitted, that row would never be rolled up. The guard chosen: settle time. A batch
only reaches up to the last id *before the first row younger than ROLLUP_SETTLE_SECONDS (60 s)*; the rows of the
batch are all older than that. A row's `created_at` is stamped just before the one short statement that inserts it
(billing/recording.py: the ledger, outbox and attempt rows of a batch of requests), so any row with a lower
id than a 60-second-old row was inserted earlier still and has long since committed -- the assumption is that no
ledger-writing transaction stays open for more than half the settle time (30 s: a lower id was drawn before the
60-second-old row's INSERT, at most 30 s after its stamp, and commits within 30 s of that). (Tracking gaps --
remembering missing ids below the watermark and re-checking them -- would not need the assumption, but ids are
also skipped for good by rolled-back inserts, so the gap list must itself expire by age: the same assumption, more
code.) The price is that rollups lag the ledger by a minute or so,
which readers never see: they read the rollups for the rows up to the watermark and the ledger for the rows above.

Days are UTC (settings.TIME_ZONE is UTC); readers use the rollups only when the current time zone is UTC too.
"""
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Count, F, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from .models import LedgerEntry, RollupState, UsageRollup

ROLLUP_SETTLE_SECONDS = 60
DIMENSIONS = ("organization_id", "day", "api_key_id", "model", "provider", "status")
MEASURES = ("requests", "images", "cost_micros", "upstream_cost_micros")


@dataclass
class RefreshStats:
    batches: int = 0
    rows: int = 0
    groups: int = 0
    watermark: int = 0


def watermark() -> int:
    """Every ledger row with id <= this is in the rollups (0 before the first refresh)."""
    return RollupState.objects.filter(pk=1).values_list("last_ledger_id", flat=True).first() or 0


def refresh_rollups(*, batch: int = 50_000, settle_seconds: int = ROLLUP_SETTLE_SECONDS, now=None,
                    max_batches: int | None = None) -> RefreshStats:
    """Roll up every settled ledger row above the watermark, `batch` rows per transaction."""
    stats = RefreshStats()
    RollupState.objects.get_or_create(pk=1)
    horizon = (now or timezone.now()) - timedelta(seconds=settle_seconds)
    while max_batches is None or stats.batches < max_batches:
        with transaction.atomic():
            state = RollupState.objects.select_for_update().get(pk=1)
            low = state.last_ledger_id
            high = _batch_end(low, batch, horizon)
            if high is None or high <= low:
                stats.watermark = low
                break
            rows, groups = _roll_up(low, high)
            state.last_ledger_id = high
            state.refreshed_at = timezone.now()
            state.save(update_fields=["last_ledger_id", "refreshed_at"])
        stats.batches += 1
        stats.rows += rows
        stats.groups += groups
        stats.watermark = high
    return stats


def _batch_end(low: int, batch: int, horizon) -> int | None:
    """The last id of the next `batch` rows above `low`, cut before the first row not older than `horizon`."""
    table = LedgerEntry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT MAX(id), MIN(CASE WHEN created_at >= %s THEN id END) FROM "
            f"(SELECT id, created_at FROM {table} WHERE id > %s ORDER BY id LIMIT %s) AS nxt",
            [horizon, low, batch],
        )
        last, first_young = cursor.fetchone()
    if last is None:
        return None
    return first_young - 1 if first_young is not None else last


def _roll_up(low: int, high: int) -> tuple[int, int]:
    """Add the ledger rows low < id <= high into the rollups; return (rows, groups)."""
    if connection.vendor == "postgresql":
        return _roll_up_postgresql(low, high)
    return _roll_up_portable(low, high)


def _roll_up_postgresql(low: int, high: int) -> tuple[int, int]:
    ledger, rollup = LedgerEntry._meta.db_table, UsageRollup._meta.db_table
    dims = ", ".join(DIMENSIONS)
    measures = ", ".join(MEASURES)
    updates = ", ".join(f"{m} = {rollup}.{m} + EXCLUDED.{m}" for m in MEASURES)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH batch AS (
                SELECT organization_id, (created_at AT TIME ZONE 'UTC')::date AS day, api_key_id, model, provider,
                       status, COUNT(*) AS requests, COALESCE(SUM(n), 0) AS images,
                       COALESCE(SUM(cost_micros), 0) AS cost_micros,
                       COALESCE(SUM(upstream_cost_micros), 0) AS upstream_cost_micros
                FROM {ledger} WHERE id > %s AND id <= %s
                GROUP BY 1, 2, 3, 4, 5, 6
            ), upserted AS (
                INSERT INTO {rollup} ({dims}, {measures})
                SELECT {dims}, {measures} FROM batch
                ON CONFLICT ({dims}) DO UPDATE SET {updates}
                RETURNING 1
            )
            SELECT (SELECT COALESCE(SUM(requests), 0) FROM batch), (SELECT COUNT(*) FROM upserted)
            """,
            [low, high],
        )
        rows, groups = cursor.fetchone()
    return int(rows), int(groups)


def _roll_up_portable(low: int, high: int) -> tuple[int, int]:
    """Any database (SQLite in development): aggregate with the ORM, add group by group."""
    groups = (LedgerEntry.all_tenants_unsafe.filter(id__gt=low, id__lte=high)
              .annotate(day=TruncDate("created_at", tzinfo=timezone.get_fixed_timezone(0)))
              .values("organization_id", "day", "api_key_id", "model", "provider", "status")
              .annotate(requests=Count("id"), images=Coalesce(Sum("n"), 0),
                        cost_micros_sum=Coalesce(Sum("cost_micros"), 0),
                        upstream_sum=Coalesce(Sum("upstream_cost_micros"), 0))
              .order_by())
    rows = count = 0
    for g in groups:
        key = {d: g[d] for d in DIMENSIONS}
        add = {"requests": g["requests"], "images": g["images"], "cost_micros": g["cost_micros_sum"],
               "upstream_cost_micros": g["upstream_sum"]}
        updated = UsageRollup.all_tenants_unsafe.filter(**key).update(**{m: F(m) + v for m, v in add.items()})
        if not updated:
            UsageRollup.all_tenants_unsafe.create(**key, **add)
        rows += g["requests"]
        count += 1
    return rows, count
