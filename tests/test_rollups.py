"""Usage rollups: the refresh is idempotent and incremental, equals the ledger per organization, day, key, model,
provider and status, leaves unsettled rows to the next run; the dashboard's totals (rollups + the ledger above the
watermark) equal the ledger exactly; the beat task and the admin totals use it."""
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from billing import recording, rollups, selectors
from billing import services as billing_services
from billing.models import LedgerEntry, RollupState, UsageRollup
from billing.selectors import clear_price_cache, current_price

UTC = UTC
LATER = datetime(2025, 4, 1, tzinfo=UTC)  # "now" for refreshes: everything of March has settled


def at(day, hour=12, minute=0):
    return datetime(2025, 3, day, hour, minute, tzinfo=UTC)


def record(monkeypatch, org, key, request_id, when, *, n=1, status="succeeded", provider="local",
           size="256x256"):
    clear_price_cache()
    price = current_price(model="local-preview", size=size, quality="standard")
    with monkeypatch.context() as m:
        m.setattr(recording.timezone, "now", lambda: when)
        return billing_services.record_usage(
            organization=org, api_key=key, request_id=request_id, status=status, model="local-preview",
            provider=provider, size=size, quality="standard", n=n, price=price, latency_ms=5,
            error_code="" if status == "succeeded" else "upstream_error")


@pytest.fixture
def traffic(monkeypatch, api_key, other_tenant):
    org, key = api_key[0].organization, api_key[0]
    other_org, other_key, _ = other_tenant
    i = 0
    for day in (3, 4, 5):
        for hour in (0, 11, 23):
            for k, provider, status, n in ((key, "local", "succeeded", 2), (None, "openai", "succeeded", 1),
                                           (key, "local", "failed", 1), (key, "openai", "succeeded", 3)):
                i += 1
                record(monkeypatch, org, k, f"req_{i}", at(day, hour, 7), n=n, status=status, provider=provider)
        i += 1
        record(monkeypatch, other_org, other_key, f"req_{i}", at(day, 9), n=4)
    return org, key, other_org, other_key


def ledger_groups():
    rows = (LedgerEntry.all_tenants_unsafe.annotate(day=TruncDate("created_at", tzinfo=UTC))
            .values("organization_id", "day", "api_key_id", "model", "provider", "status")
            .annotate(requests=Count("id"), images=Sum("n"), cost_micros=Sum("cost_micros")).order_by())
    return {tuple(r[d] for d in rollups.DIMENSIONS): (r["requests"], r["images"], r["cost_micros"]) for r in rows}


def rollup_groups():
    return {tuple(getattr(r, d) for d in rollups.DIMENSIONS): (r.requests, r.images, r.cost_micros)
            for r in UsageRollup.all_tenants_unsafe.all()}


def test_refresh_equals_ledger_and_is_idempotent(traffic):
    stats = rollups.refresh_rollups(now=LATER)
    assert stats.rows == LedgerEntry.all_tenants_unsafe.count() == 39
    assert rollup_groups() == ledger_groups()
    assert any(key[2] is None for key in rollup_groups())  # keyless requests are a group of their own
    assert RollupState.objects.get().last_ledger_id == LedgerEntry.all_tenants_unsafe.order_by("-id").first().pk
    again = rollups.refresh_rollups(now=LATER)
    assert again.rows == 0 and again.batches == 0
    assert rollup_groups() == ledger_groups()


def test_refresh_is_incremental_in_batches(traffic, monkeypatch):
    org, key, _, _ = traffic
    stats = rollups.refresh_rollups(now=LATER, batch=5)
    assert stats.batches == 8 and stats.rows == 39
    record(monkeypatch, org, key, "req_more_1", at(5, 23, 59), n=1)  # adds to an existing group
    record(monkeypatch, org, key, "req_more_2", at(6, 1), n=1)  # a new day
    stats = rollups.refresh_rollups(now=LATER, batch=5)
    assert stats.rows == 2 and stats.batches == 1
    assert rollup_groups() == ledger_groups()


def test_unsettled_rows_wait_for_the_next_refresh(traffic, monkeypatch):
    org, key, _, _ = traffic
    first_young = record(monkeypatch, org, key, "req_young", at(6, 12, 0))
    record(monkeypatch, org, key, "req_old_after", at(6, 11, 0))  # higher id, older stamp: stays behind the young row
    stats = rollups.refresh_rollups(now=at(6, 12, 0) + timedelta(seconds=30))
    assert stats.watermark == first_young.pk - 1
    assert not UsageRollup.all_tenants_unsafe.filter(day=at(6).date()).exists()
    rollups.refresh_rollups(now=at(6, 12, 0) + timedelta(seconds=61))
    assert rollup_groups() == ledger_groups()


def ledger_summary(org, start, end):
    t = LedgerEntry.objects.for_organization(org).filter(created_at__gte=start, created_at__lt=end).aggregate(
        requests=Count("id"), images=Sum("n", filter=Q(status="succeeded")), cost=Sum("cost_micros"))
    return selectors.UsageSummary(t["requests"] or 0, t["images"] or 0, t["cost"] or 0)


def dashboard_reads(org, start, end):
    return (selectors.usage_between(organization=org, start=start, end=end),
            selectors.daily_usage(organization=org, start=start, end=end),
            [selectors.usage_breakdown(organization=org, start=start, end=end, by=by)
             for by in ("model", "provider", "api_key")])


def test_dashboard_totals_equal_the_ledger_with_a_tail_above_the_watermark(traffic, monkeypatch):
    org, key, _, _ = traffic
    ranges = [(at(1, 0), at(8, 0)), (at(3, 0), at(6, 0)), (at(3, 11), at(5, 12)), (at(4, 5), at(4, 20))]
    before = {r: dashboard_reads(org, *r) for r in ranges}  # watermark 0: the ledger alone
    rollups.refresh_rollups(now=LATER)
    assert {r: dashboard_reads(org, *r) for r in ranges} == before
    # the tail: rows above the watermark, in days that are rolled up and in a new day
    record(monkeypatch, org, key, "req_tail_1", at(4, 13), n=5)
    record(monkeypatch, org, None, "req_tail_2", at(5, 23, 30), n=1, provider="openai")
    record(monkeypatch, org, key, "req_tail_3", at(6, 2), n=2, status="failed")
    for start, end in ranges:
        usage, days, breakdowns = dashboard_reads(org, start, end)
        assert usage == ledger_summary(org, start, end)
        assert sum(d["cost_micros"] for d in days) == usage.cost_micros
        assert sum(d["requests"] for d in days) == usage.requests
        for rows in breakdowns:
            assert sum(r["requests"] for r in rows) == usage.requests
            assert sum(r["images"] for r in rows) == usage.images
            assert sum(r["cost_micros"] for r in rows) == usage.cost_micros
    whole = dashboard_reads(org, at(1, 0), at(8, 0))
    day4 = next(d for d in whole[1] if d["day"] == at(4).date())
    assert day4 == {"day": at(4).date(), **{k: v for k, v in zip(
        ("requests", "images", "cost_micros"), ledger_summary(org, at(4, 0), at(5, 0)).__dict__.values())}}
    by_key = {r["label"]: r for r in whole[2][2]}
    assert by_key["—"]["requests"] == 10  # nine rolled up, one in the tail
    # after the next refresh the same numbers come from the rollups
    rollups.refresh_rollups(now=LATER)
    assert dashboard_reads(org, at(1, 0), at(8, 0)) == whole
    # month to date and usage_since (open end) too
    mtd = selectors.usage_since(organization=org, since=at(1, 0))
    assert mtd == ledger_summary(org, at(1, 0), LATER + timedelta(days=1000))


def audit_reads(org, key, start, end):
    from billing.usage import audit

    window = {"organization": org, "start_time": audit.to_unix(start), "end_time": audit.to_unix(end),
              "bucket_width": "1d", "limit": 31}
    reads = []
    for group_by in ([], ["model"], ["api_key", "provider"], ["size"]):
        reads.append(audit.usage_images_page(**window, group_by=group_by).as_json())
        reads.append(audit.costs_page(**window, group_by=group_by).as_json())
    reads.append(audit.costs_page(**window, group_by=["provider"], api_key_ids=[key.pk]).as_json())
    return reads


def test_audit_api_daily_buckets_from_rollups_equal_the_ledgers(traffic, monkeypatch):
    """/v1/organization/usage/images and /costs with bucket_width=1d read through the same reader: whole UTC days
    from the rollups, the tail and the clipped edges from the ledger, bucket for bucket what the ledger alone says."""
    org, key, _, _ = traffic
    ranges = [(at(1, 0), at(8, 0)), (at(3, 11), at(5, 12))]
    before = {r: audit_reads(org, key, *r) for r in ranges}  # watermark 0: the ledger alone
    assert any(bucket["results"] for page in before[ranges[0]] for bucket in page["data"])
    rollups.refresh_rollups(now=LATER)
    assert {r: audit_reads(org, key, *r) for r in ranges} == before
    record(monkeypatch, org, key, "req_audit_tail", at(4, 13), n=5)  # above the watermark, in a rolled-up day
    rollups.refresh_rollups(now=at(4, 13))  # nothing new settles: the row stays in the tail
    with_tail = audit_reads(org, key, *ranges[0])
    day4 = next(b for b in with_tail[0]["data"] if b["start_time"] == int(at(4, 0).timestamp()))
    assert day4["results"][0]["images"] == ledger_summary(org, at(4, 0), at(5, 0)).images
    rollups.refresh_rollups(now=LATER)
    assert audit_reads(org, key, *ranges[0]) == with_tail


def test_beat_task_runs_the_refresh(traffic):
    from billing.tasks import refresh_rollups

    assert settings.CELERY_BEAT_SCHEDULE["refresh-rollups"]["task"] == "billing.tasks.refresh_rollups"
    result = refresh_rollups.apply().get()
    assert result["rows"] == 39
    assert rollup_groups() == ledger_groups()


def test_management_command(traffic):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("refresh_rollups", stdout=out)
    assert "rolled up 39 ledger rows" in out.getvalue()


def test_admin_totals_from_rollups_are_exact(traffic, client, monkeypatch, django_user_model):
    org, key, _, _ = traffic
    rollups.refresh_rollups(now=LATER)
    record(monkeypatch, org, key, "req_tail_admin", at(4, 13), n=5)
    admin = django_user_model.objects.create_superuser(email="staff@example.com", password="x" * 20)
    client.force_login(admin)
    monkeypatch.setattr(settings, "ADMIN_REQUIRE_MFA", False, raising=False)
    response = client.get("/admin/billing/ledgerentry/", {"organization__id__exact": org.pk,
                                                          "status__exact": "succeeded", "provider": "local"})
    assert response.status_code == 200
    totals = response.context["ledger_totals"]
    expected = LedgerEntry.objects.for_organization(org).filter(status="succeeded", provider="local").aggregate(
        rows=Count("id"), images=Sum("n"), cost=Sum("cost_micros"))
    assert (totals["requests"], totals["images"], totals["cost_micros"]) == (expected["rows"], expected["images"],
                                                                         expected["cost"])
    assert response.context["cl"].result_count == expected["rows"]


@pytest.mark.parametrize("params", [{}, {"created_at__year": "2025"}, {"created_at__year": "2025",
                                                                       "created_at__month": "3"}])
def test_admin_date_drilldown_from_rollups_matches_djangos(traffic, client, monkeypatch, django_user_model, params):
    from django.contrib.admin.templatetags import admin_list

    from billing.templatetags.ledger_admin import ledger_date_hierarchy

    org, key, _, _ = traffic
    rollups.refresh_rollups(now=LATER)
    record(monkeypatch, org, key, "req_tail_dates", datetime(2025, 4, 2, 8, tzinfo=UTC))  # above the watermark
    admin = django_user_model.objects.create_superuser(email="staff@example.com", password="x" * 20)
    client.force_login(admin)
    monkeypatch.setattr(settings, "ADMIN_REQUIRE_MFA", False, raising=False)
    response = client.get("/admin/billing/ledgerentry/", {"organization__id__exact": org.pk, **params})
    assert response.status_code == 200
    cl = response.context["cl"]
    ours, django = ledger_date_hierarchy(cl), admin_list.date_hierarchy(cl)
    assert [c.get("title") for c in ours["choices"]] == [c.get("title") for c in django["choices"]]
    assert [c.get("link") for c in ours["choices"]] == [c.get("link") for c in django["choices"]]
    assert ours["choices"]
