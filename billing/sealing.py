"""The sealer: ledger rows are hashed into their organization's chain in batches, shortly after they are written.

Why. A chain whose head row is locked by every request's insert serialises all of one organization's requests,
across every process and host (measured in issue 9: 25 of 30 PostgreSQL sessions waiting on that lock at 50
concurrent requests). The request path now only INSERTs its ledger row; this module orders the new rows of each
organization (by id), gives each its sequence, previous hash and hash (billing/ledger.py) in a LedgerSeal row, and
moves the organization's head -- a few hundred rows per transaction, off the request path.

When. `seal_pending()` runs from Celery beat every LEDGER_SEAL_INTERVAL_SECONDS (5 s), inline in `manage.py
verify_ledger`, and in the embedded default (no Redis, so no beat: LEDGER_SEAL_INLINE) after each ledger write
commits. One sealer at a time: a PostgreSQL advisory lock (a second caller returns at once); SQLite's write lock.

Finding new rows. SealState.last_ledger_id is a watermark: every row with id <= it is sealed. Each pass seals every
visible row above it that has no seal (an anti-join on the seal's primary key), then moves the watermark to the
newest row older than SEAL_SETTLE_SECONDS, because a row with a lower id can commit after a higher one (the same
guard as the rollups, billing/rollups.py). `full=True` looks at every row (verify_ledger, and hourly from beat):
a row whose transaction stayed open longer than the settle time is still sealed, and `verify` reports any row that
waited longer than LEDGER_SEAL_MAX_LAG_SECONDS (60 s) for its seal as a fault.

Tamper evidence holds per organization as before, for sealed rows; a row waiting for the sealer (seconds) is
protected by the append-only trigger only, and `verify` lists how many wait.
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Min
from django.utils import timezone

from . import ledger
from .models import LedgerEntry, LedgerHead, LedgerSeal, SealState

log = logging.getLogger(__name__)

SEAL_SETTLE_SECONDS = 30
BATCH = 2000
_LOCK_ID = zlib.crc32(b"imagegate-ledger-sealer")


@dataclass
class SealStats:
    sealed: int = 0
    organizations: int = 0
    watermark: int = 0
    max_lag_ms: int = 0
    skipped: bool = False  # another sealer held the lock


def _try_lock() -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite: the write transaction (IMMEDIATE) serialises sealers
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_LOCK_ID])
        return bool(cursor.fetchone()[0])


def seal_pending(*, full: bool = False, now: datetime | None = None, batch: int = BATCH,
                 settle_seconds: int = SEAL_SETTLE_SECONDS) -> SealStats:
    """Seal every ledger row above the watermark (every row at all with `full`) that has no seal yet."""
    stats = SealStats()
    SealState.objects.get_or_create(pk=1)
    low = 0
    while True:
        with transaction.atomic():
            if not _try_lock():
                stats.skipped = True
                return stats
            state = SealState.objects.select_for_update().get(pk=1)
            if not full:
                low = max(low, state.last_ledger_id)
            rows = list(LedgerEntry.all_tenants_unsafe.filter(id__gt=low, seal__isnull=True).order_by("id")[:batch])
            if rows:
                lag_ms = _seal(rows)
                stats.sealed += len(rows)
                stats.organizations += len({r.organization_id for r in rows})
                stats.max_lag_ms = max(stats.max_lag_ms, lag_ms)
                low = rows[-1].id
            done = len(rows) < batch
            moved = []
            if state.max_lag_ms < stats.max_lag_ms:
                state.max_lag_ms = stats.max_lag_ms
                moved.append("max_lag_ms")
            if done:
                horizon = (now or timezone.now()) - timedelta(seconds=settle_seconds)
                settled = (LedgerEntry.all_tenants_unsafe.filter(id__gt=state.last_ledger_id, created_at__lt=horizon)
                           .order_by("-id").values_list("id", flat=True).first())
                if settled is not None and not LedgerEntry.all_tenants_unsafe.filter(
                        id__gt=state.last_ledger_id, id__lte=settled, seal__isnull=True).exists():
                    state.last_ledger_id = settled
                    moved.append("last_ledger_id")
                state.sealed_at = timezone.now()
                moved.append("sealed_at")
            if moved:
                state.save(update_fields=moved)
            stats.watermark = state.last_ledger_id
        if done:
            return stats


def _seal(rows: list[LedgerEntry]) -> int:
    """Seal `rows` (id order) onto their organizations' chains; returns the longest wait among them (ms)."""
    org_ids = sorted({r.organization_id for r in rows})
    LedgerHead.all_tenants_unsafe.bulk_create([LedgerHead(organization_id=o) for o in org_ids], ignore_conflicts=True)
    locked = LedgerHead.all_tenants_unsafe.select_for_update().filter(organization_id__in=org_ids)
    heads = {h.organization_id: h for h in locked}
    now = timezone.now()
    seals, lag = [], 0
    for row in rows:
        head = heads[row.organization_id]
        sequence = head.sequence + 1
        values = ledger.row_values(row, sequence=sequence)
        entry_hash = ledger.digest(values, head.last_hash)
        seals.append(LedgerSeal(entry_id=row.id, organization_id=row.organization_id, sequence=sequence,
                                prev_hash=head.last_hash, entry_hash=entry_hash, sealed_at=now))
        head.sequence, head.last_hash = sequence, entry_hash
        lag = max(lag, int((now - row.created_at).total_seconds() * 1000))
    LedgerSeal.all_tenants_unsafe.bulk_create(seals)
    LedgerHead.all_tenants_unsafe.bulk_update(list(heads.values()), ["sequence", "last_hash"])
    return lag


@dataclass(frozen=True)
class SealLag:
    unsealed: int
    oldest_age_seconds: float  # 0.0 when nothing waits
    max_observed_lag_seconds: float


def seal_lag(*, now: datetime | None = None) -> SealLag:
    """How many rows wait for the sealer, how long the oldest has waited, the longest wait seen (metrics, bench)."""
    now = now or timezone.now()
    waiting = LedgerEntry.all_tenants_unsafe.filter(seal__isnull=True).aggregate(n=Count("id"),
                                                                                 oldest=Min("created_at"))
    state = SealState.objects.filter(pk=1).first()
    oldest = (now - waiting["oldest"]).total_seconds() if waiting["oldest"] else 0.0
    return SealLag(unsealed=waiting["n"], oldest_age_seconds=max(0.0, oldest),
                   max_observed_lag_seconds=(state.max_lag_ms / 1000) if state else 0.0)


def backlog(*, now: datetime | None = None) -> tuple[int, float]:
    """(rows waiting for the sealer, seconds the oldest has waited; 0.0 when none) for /metrics: only rows above the
    watermark are looked at (every row at or below it is sealed; a row that committed late below it is the hourly
    full pass's, and `verify_ledger`'s), so a scrape reads seconds' worth of rows through the primary key."""
    now = now or timezone.now()
    watermark = SealState.objects.filter(pk=1).values_list("last_ledger_id", flat=True).first() or 0
    waiting = LedgerEntry.all_tenants_unsafe.filter(id__gt=watermark, seal__isnull=True).aggregate(
        n=Count("id"), oldest=Min("created_at"))
    oldest = (now - waiting["oldest"]).total_seconds() if waiting["oldest"] else 0.0
    return waiting["n"], max(0.0, oldest)


def after_ledger_write() -> None:
    """Called on commit of every ledger write: in the embedded default (no beat) seal right away."""
    if settings.LEDGER_SEAL_INLINE:
        try:
            seal_pending()
        except Exception:  # sealing again later (or verify_ledger) catches up; never fail a request for it
            log.exception("Inline ledger sealing failed")


# --- Verification -----------------------------------------------------------------------------------------------------

@dataclass
class Verification:
    rows: int = 0
    organizations: int = 0
    waiting: int = 0  # rows not sealed yet, within the allowed lag
    breaks: list[ledger.Break] = field(default_factory=list)


def verify(*, organization_id: int | None = None, seal_first: bool = True, now: datetime | None = None,
           chunk: int = 5000) -> Verification:
    """Check every organization's chain: each seal's hash against its row's content, the sequence without gaps, the
    head against the last seal, and no row waiting longer than LEDGER_SEAL_MAX_LAG_SECONDS for its seal."""
    if seal_first:
        seal_pending(full=True)
    result = Verification()
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":  # one snapshot: a concurrent sealer cannot confuse us
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        now = now or timezone.now()
        heads = {h.organization_id: h for h in LedgerHead.all_tenants_unsafe.all()}
        org_ids = (set(LedgerSeal.all_tenants_unsafe.values_list("organization_id", flat=True).distinct()) | set(heads)
                   | set(LedgerEntry.all_tenants_unsafe.values_list("organization_id", flat=True).distinct()))
        if organization_id is not None:
            org_ids &= {organization_id}
        for org_id in sorted(org_ids):
            head = heads.get(org_id)
            pairs = _sealed_rows(org_id, chunk)
            counted = [0]

            def counting(it, counted=counted):
                for pair in it:
                    counted[0] += pair[1] is not None
                    yield pair

            result.breaks += ledger.verify_chain(org_id, counting(pairs), head.sequence if head else None,
                                                 head.last_hash if head else None)
            result.rows += counted[0]
        result.organizations = len(org_ids)
        waiting = LedgerEntry.all_tenants_unsafe.filter(seal__isnull=True)
        if organization_id is not None:
            waiting = waiting.filter(organization_id=organization_id)
        limit = timedelta(seconds=settings.LEDGER_SEAL_MAX_LAG_SECONDS)
        for row in waiting.order_by("id").only("id", "organization_id", "request_id", "created_at").iterator():
            age = now - row.created_at
            if age > limit:
                result.breaks.append(ledger.Break(row.organization_id, None, row.request_id,
                                                  f"unsealed for {age.total_seconds():.0f} s, more than "
                                                  f"LEDGER_SEAL_MAX_LAG_SECONDS ({limit.total_seconds():.0f} s)"))
            else:
                result.waiting += 1
            result.rows += 1
    return result


def _sealed_rows(org_id: int, chunk: int):
    """(seal, entry or None if the row is gone) in sequence order, read `chunk` seals at a time."""
    after = 0
    while True:
        seals = list(LedgerSeal.all_tenants_unsafe.filter(organization_id=org_id, sequence__gt=after)
                     .order_by("sequence")[:chunk])
        if not seals:
            return
        entries = LedgerEntry.all_tenants_unsafe.in_bulk([s.entry_id for s in seals])
        for seal in seals:
            yield seal, entries.get(seal.entry_id)
        after = seals[-1].sequence
