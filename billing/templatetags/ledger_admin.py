"""The ledger admin's date drill-down, answered from the usage rollups.

Django's date hierarchy asks the changelist queryset for the distinct months (or days) of every filtered row: over
an organization's millions of ledger rows that is the slowest query of the page. When every filter is a rollup
dimension (organization, model, provider, status), the same answer comes from the rollups plus the ledger rows above
the watermark (billing/usage/reader.py); Django's own code builds the links. Any other filter falls back to Django's
query.
"""
from datetime import UTC, datetime, time

from django import template
from django.contrib.admin.templatetags import admin_list
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.db.models import Max, Min

register = template.Library()

DATE_PARAMS = {"created_at__year": "day__year", "created_at__month": "day__month", "created_at__day": "day__day"}


def _midnight(day):
    return datetime.combine(day, time.min, tzinfo=UTC)


class _RollupDates:
    """Stands in for the changelist queryset in Django's date_hierarchy(): aggregate(first=, last=) and datetimes()."""

    def __init__(self, rollups, tail):
        self.rollups, self.tail = rollups, tail

    def aggregate(self, **_):
        r = self.rollups.aggregate(first=Min("day"), last=Max("day"))
        t = self.tail.aggregate(first=Min("created_at"), last=Max("created_at"))
        firsts = [v for v in (r["first"] and _midnight(r["first"]), t["first"]) if v]
        lasts = [v for v in (r["last"] and _midnight(r["last"]), t["last"]) if v]
        return {"first": min(firsts) if firsts else None, "last": max(lasts) if lasts else None}

    def datetimes(self, field_name, kind):
        found = {_midnight(d) for d in self.rollups.dates("day", kind)}
        found |= set(self.tail.datetimes("created_at", kind))
        return sorted(found)

    dates = datetimes


class _ChangeListView:
    def __init__(self, cl, queryset):
        self._cl, self.queryset = cl, queryset

    def __getattr__(self, name):
        return getattr(self._cl, name)


def ledger_date_hierarchy(cl):
    from billing.usage import reader

    date_lookups = {DATE_PARAMS[name]: value for name, value in cl.params.items() if name in DATE_PARAMS}
    lookups = reader.changelist_lookups({k: v for k, v in cl.params.items() if k not in DATE_PARAMS})
    sources = None if lookups is None else reader.changelist_sources(lookups, cl.queryset, reader.watermark())
    if sources is None:
        return admin_list.date_hierarchy(cl)
    rollups, tail = sources
    return admin_list.date_hierarchy(_ChangeListView(cl, _RollupDates(rollups.rows.filter(**date_lookups), tail.rows)))


@register.tag(name="ledger_date_hierarchy")
def ledger_date_hierarchy_tag(parser, token):
    return InclusionAdminNode(parser, token, func=ledger_date_hierarchy, template_name="date_hierarchy.html",
                              takes_context=False)
