"""The one reader of usage totals: the rollups for what they hold, the ledger for the rest, read as one view.

UsageRollup holds exactly the ledger rows with id <= the watermark (billing/rollups.py), summed per organization, UTC
day, API key, model, provider and status. Totals over a set of ledger rows are the sum of

  * the rollup rows of the whole UTC days inside the range (the ledger rows up to the watermark),
  * the ledger rows of those days above the watermark (the tail: seconds old, a few rows), and
  * the ledger rows of the partial days at the edges of the range,

and `consistent()` makes those reads one view: the rollups and the watermark move together (one transaction per
refresh batch), so when the watermark is the same after the reads as before, the rollup rows read were exactly those
of that watermark. The ledger only grows, so its reads are exact anyway.

Every total has the same three names, whichever table it came from: `requests` (ledger rows), `images` (the n of
succeeded rows) and `cost_micros` (integer micro-USD). The readers: billing/selectors.py (the dashboard),
billing/usage/audit.py (the audit API's daily buckets), billing/admin.py (the ledger changelist's totals) and
billing/templatetags/ledger_admin.py (its date drill-down).
"""
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import TypeVar

from django.db import connection
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from accounts.models import Organization
from billing.models import LedgerEntry, UsageRollup
from billing.rollups import watermark

T = TypeVar("T")

# Ledger columns the rollups keep, so a filter or a grouping on them can be answered from the rollups.
ROLLUP_COLUMNS = frozenset({"organization_id", "api_key_id", "model", "provider", "status"})

# The ledger changelist's query parameters that are rollup columns (staff filter by organization, model, provider and
# status); the page number and the order do not change the set of rows.
CHANGELIST_FILTERS = {"organization__id__exact": "organization_id", "model": "model", "provider": "provider",
                      "status__exact": "status", "status": "status"}
CHANGELIST_SET_NEUTRAL = {"o", "p", "_changelist_filters"}

TOTALS = ("requests", "images", "cost_micros")


def totals(*, rollup: bool) -> dict:
    """The aggregate expressions for `requests`, `images` and `cost_micros` over rollup rows or ledger rows."""
    succeeded = Q(status=LedgerEntry.Status.SUCCEEDED)
    if rollup:
        return {"requests": Sum("requests", default=0), "images": Sum("images", filter=succeeded, default=0),
                "cost_micros": Sum("cost_micros", default=0)}
    return {"requests": Count("id"), "images": Sum("n", filter=succeeded, default=0),
            "cost_micros": Sum("cost_micros", default=0)}


@dataclass(frozen=True)
class Source:
    """One part of a usage read: `rows` is a UsageRollup queryset when `rollup`, else a LedgerEntry queryset."""

    rollup: bool
    rows: QuerySet

    def totals(self) -> dict:
        """{"requests", "images", "cost_micros"} over this part, as ints."""
        found = self.rows.order_by().aggregate(**totals(rollup=self.rollup))
        return {name: int(found[name] or 0) for name in TOTALS}


def consistent(read: Callable[[int], T]) -> T:
    """`read(watermark)`, repeated until the watermark did not move while it ran (module docstring)."""
    while True:
        mark = watermark()
        result = read(mark)
        if mark <= 0 or watermark() == mark:
            return result


def add(parts: Iterable[dict]) -> dict:
    """The sum of several {"requests", "images", "cost_micros"} dicts."""
    summed = dict.fromkeys(TOTALS, 0)
    for part in parts:
        for name in TOTALS:
            summed[name] += int(part.get(name) or 0)
    return summed


def _midnight(day) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def organization_sources(organization: Organization, start: datetime, end: datetime | None, mark: int, *,
                         local_days: bool = True, **lookups) -> list[Source]:
    """The parts that together hold exactly the organization's ledger rows with start <= created_at < end (no end:
    up to now) matching `lookups` (on ROLLUP_COLUMNS only, e.g. model__in=[...]).

    With `local_days` the caller groups by the current time zone's days, which the rollups' UTC days answer only
    when that zone is UTC; otherwise (or with nothing rolled up, or no whole day in the range) it is the ledger."""
    ledger = LedgerEntry.objects.for_organization(organization).filter(created_at__gte=start, **lookups)
    if end is not None:
        ledger = ledger.filter(created_at__lt=end)
    if mark <= 0 or (local_days and timezone.get_current_timezone_name() not in ("UTC", "Etc/UTC")):
        return [Source(False, ledger)]
    first = start.astimezone(UTC).date()
    if start.astimezone(UTC) != _midnight(first):
        first += timedelta(days=1)
    last = (end if end is not None else timezone.now()).astimezone(UTC).date()  # the days before `last` are whole
    if first >= last:
        return [Source(False, ledger)]
    low, high = _midnight(first), _midnight(last)
    rollups = UsageRollup.objects.for_organization(organization).filter(day__gte=first, day__lt=last, **lookups)
    tail = LedgerEntry.objects.for_organization(organization).filter(created_at__gte=low, created_at__lt=high,
                                                                     id__gt=mark, **lookups)
    edges = ledger.filter(Q(created_at__lt=low) | Q(created_at__gte=high))
    return [Source(True, rollups), Source(False, tail), Source(False, edges)]


def read_organization(organization: Organization, start: datetime, end: datetime | None,
                      read: Callable[[Source], T], **options) -> list[T]:
    """[read(source) for each part of organization_sources(...)], as one consistent view."""
    return consistent(lambda mark: [read(source) for source in
                                    organization_sources(organization, start, end, mark, **options)])


def changelist_lookups(params) -> dict | None:
    """The rollup lookups equivalent to the ledger changelist's query parameters, or None when a parameter is not a
    rollup column (a search, an endpoint, a date range: those are answered from the ledger)."""
    lookups = {}
    for name, value in params.items():
        if name in CHANGELIST_SET_NEUTRAL:
            continue
        if name not in CHANGELIST_FILTERS or not value:
            return None
        lookups[CHANGELIST_FILTERS[name]] = value
    return lookups


def changelist_sources(lookups: dict, ledger: QuerySet, mark: int) -> tuple[Source, Source] | None:
    """Every organization's rollups matching `lookups` and the changelist's own ledger rows above the watermark (the
    staff view spans tenants: UsageRollup.all_tenants_unsafe); None where the rollups cannot answer."""
    if connection.vendor != "postgresql" or mark <= 0:
        return None
    return (Source(True, UsageRollup.all_tenants_unsafe.filter(**lookups)),
            Source(False, ledger.order_by().filter(id__gt=mark)))


def changelist_totals(params, ledger: QuerySet) -> dict | None:
    """{"requests", "images", "cost_micros"} of the ledger changelist's filtered rows without COUNT(*) over the
    ledger, or None when the rollups cannot answer (changelist_lookups, changelist_sources)."""
    lookups = changelist_lookups(params)
    if lookups is None:
        return None

    def read(mark):
        sources = changelist_sources(lookups, ledger, mark)
        return None if sources is None else add(source.totals() for source in sources)

    return consistent(read)
