"""The customer dashboard: usage over a date range (totals, per-day chart, breakdowns), the request log (filters,
keyset pagination), one request's detail, the streamed CSV export, and tenant isolation throughout."""
import csv
import io
import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import AsyncClient
from django.urls import reverse
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Membership
from billing import recording
from billing import services as billing_services
from billing.models import LedgerEntry
from billing.selectors import LogFilters, clear_price_cache, current_price, request_log
from generation.models import ProviderAttempt
from generation.pipeline import storage

UTC = UTC
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


def at(day: int, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, second, tzinfo=UTC)


def _record(monkeypatch, org, key, request_id, when, *, n=1, status="succeeded", model="local-preview",
            size="256x256", provider="local", error_code="", latency_ms=5):
    clear_price_cache()
    price = current_price(model=model, size=size, quality="standard")
    assert price is not None
    with monkeypatch.context() as m:
        m.setattr(recording.timezone, "now", lambda: when)
        return billing_services.record_usage(
            organization=org, api_key=key, request_id=request_id, status=status, model=model, provider=provider,
            size=size, quality="standard", n=n, price=price, latency_ms=latency_ms, error_code=error_code)


@pytest.fixture
def signed_in(client, user, organization):
    client.force_login(user)
    return client


@pytest.fixture
def second_key(organization, prices):
    return account_services.create_api_key(organization=organization, name="batch key")[0]


@pytest.fixture
def usage(monkeypatch, api_key, second_key, other_tenant):
    """March 2025: three days of this org's traffic, rows either side of the range, and the rival's rows."""
    org, key = api_key[0].organization, api_key[0]
    other_org, other_key, _ = other_tenant
    _record(monkeypatch, org, key, "req_feb", at(1) - timedelta(hours=13), n=5)        # Feb 28: before the range
    _record(monkeypatch, org, key, "req_d1a", at(1, 0, 0, 0), n=2)                     # $0.002
    _record(monkeypatch, org, key, "req_d1b", at(1, 23, 59, 59), n=1)                  # $0.001
    _record(monkeypatch, org, second_key, "req_d3a", at(3, 9), n=1, model="sdxl-1.0", size="1024x1024",
            provider="stability")                                                       # $0.011
    _record(monkeypatch, org, key, "req_d3b", at(3, 10), n=1, status="failed", error_code="upstream_error",
            provider="stability", model="sdxl-1.0", size="1024x1024")                   # $0
    _record(monkeypatch, org, key, "req_apr", at(4, 0, 0, 0), n=7)                      # after the range
    _record(monkeypatch, other_org, other_key, "req_rival", at(2), n=9, model="sdxl-1.0", size="1024x1024",
            provider="stability")
    org.api_keys_prefix = {key.name: key.prefix, second_key.name: second_key.prefix}
    return org


def test_overview_without_usage_says_what_to_do_next(signed_in, organization):
    html = signed_in.get(reverse("dashboard")).content.decode()
    assert 'data-testid="chart-empty"' in html and 'data-testid="first-key-cta"' in html
    assert "Create an API key" in html and "chart.umd.min.js" not in html


# --- Overview ------------------------------------------------------------------------------------------------------

def test_overview_range_totals_chart_and_breakdowns(signed_in, usage):
    response = signed_in.get(reverse("dashboard"), {"from": "2025-03-01", "to": "2025-03-03"})
    assert response.status_code == 200
    ctx = response.context
    assert (ctx["range_usage"].requests, ctx["range_usage"].images, ctx["range_usage"].cost_micros) == (4, 4, 14_000)
    assert [(d["day"].day, d["requests"], d["images"], d["cost_micros"]) for d in ctx["days"]] == [
        (1, 2, 3, 3_000), (2, 0, 0, 0), (3, 2, 1, 11_000)]
    breakdowns = {b["id"]: b["rows"] for b in ctx["breakdowns"]}
    assert [(r["label"], r["requests"], r["images"], r["cost_micros"]) for r in breakdowns["by-model"]] == [
        ("sdxl-1.0", 2, 1, 11_000), ("local-preview", 2, 3, 3_000)]
    assert [(r["label"], r["requests"], r["cost_micros"]) for r in breakdowns["by-provider"]] == [
        ("stability", 2, 11_000), ("local", 2, 3_000)]
    assert [(r["label"], r["requests"], r["images"], r["cost_micros"]) for r in breakdowns["by-key"]] == [
        ("batch key", 1, 1, 11_000), ("test key", 3, 3, 3_000)]
    html = response.content.decode()
    assert '<span class="value" id="range-spend">$0.014</span>' in html
    # The charts' data (json_script, drawn by static/js/charts.js): one value per day, stacked by model and by key.
    chart = ctx["chart_data"]
    assert chart["days"] == ["2025-03-01", "2025-03-02", "2025-03-03"]
    assert chart["totals"] == {"cost_micros": [3_000, 0, 11_000], "images": [3, 0, 1]}
    assert chart["by"]["model"] == [
        {"label": "sdxl-1.0", "cost_micros": [0, 0, 11_000], "images": [0, 0, 1]},
        {"label": "local-preview", "cost_micros": [3_000, 0, 0], "images": [3, 0, 0]}]
    assert [s["label"] for s in chart["by"]["api_key"]] == [
        f"batch key ({usage.api_keys_prefix['batch key']}…)", f"test key ({usage.api_keys_prefix['test key']}…)"]
    assert '<script id="chart-data" type="application/json">' in html and "<script>" not in html
    assert "Rival" not in html and "req_rival" not in html


def test_overview_defaults_to_this_month_and_reports_bad_dates(signed_in, monkeypatch, api_key):
    org = api_key[0].organization
    now = timezone.now()
    _record(monkeypatch, org, api_key[0], "req_now", now, n=3)
    response = signed_in.get(reverse("dashboard"))
    assert response.context["date_from"] == timezone.localdate().replace(day=1)
    assert response.context["date_to"] == timezone.localdate()
    assert response.context["range_usage"].images == 3 and response.context["usage"].images == 3
    response = signed_in.get(reverse("dashboard"), {"from": "nonsense", "to": "2025-01-01"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Enter a date as YYYY-MM-DD" in html and "after the end date" in html
    assert response.context["date_from"] == timezone.localdate().replace(day=1)


# --- Request log ---------------------------------------------------------------------------------------------------

def _ids(response):
    return [e.request_id for e in response.context["entries"]]


def test_log_lists_newest_first_and_filters(signed_in, usage, second_key, other_tenant):
    url = reverse("request-log")
    assert _ids(signed_in.get(url)) == ["req_apr", "req_d3b", "req_d3a", "req_d1b", "req_d1a", "req_feb"]
    assert _ids(signed_in.get(url, {"date_from": "2025-03-01", "date_to": "2025-03-03"})) == [
        "req_d3b", "req_d3a", "req_d1b", "req_d1a"]
    assert _ids(signed_in.get(url, {"from": "2025-03-02", "to": "2025-03-31"})) == ["req_apr", "req_d3b", "req_d3a"]
    assert _ids(signed_in.get(url, {"key": second_key.pk})) == ["req_d3a"]
    assert _ids(signed_in.get(url, {"model": "sdxl-1.0"})) == ["req_d3b", "req_d3a"]
    assert _ids(signed_in.get(url, {"provider": "local"})) == ["req_apr", "req_d1b", "req_d1a", "req_feb"]
    assert _ids(signed_in.get(url, {"status": "failed"})) == ["req_d3b"]
    assert _ids(signed_in.get(url, {"status": "succeeded", "provider": "stability"})) == ["req_d3a"]
    page = signed_in.get(url).content.decode()
    assert f'href="{reverse("request-detail", args=["req_d3a"])}"' in page
    assert "req_rival" not in page and "rival key" not in page
    # Another tenant's key is not a valid choice: an error, never its rows.
    response = signed_in.get(url, {"key": other_tenant[1].pk})
    assert response.status_code == 400 and _ids(response) == []
    assert signed_in.get(url, {"status": "bogus"}).status_code == 400
    assert signed_in.get(url, {"after": "not-a-cursor"}).status_code == 400


def _older_link(response):
    match = re.search(r'<a class="next" rel="next" href="([^"]+)">Older', response.content.decode())
    return unescape(match.group(1)) if match else None


def test_keyset_pagination_walks_every_row_once_newest_first(signed_in, monkeypatch, api_key, other_tenant):
    org, key = api_key[0].organization, api_key[0]
    base = at(10)
    # 123 rows; groups of three share a timestamp, so the cursor's id tie-break matters across page boundaries.
    for i in range(123):
        _record(monkeypatch, org, key, f"req_{i:03d}", base + timedelta(seconds=i // 3))
    _record(monkeypatch, other_tenant[0], other_tenant[1], "req_rival", base + timedelta(seconds=5))
    expected = list(LedgerEntry.objects.for_organization(org).order_by("-created_at", "-id")
                    .values_list("request_id", flat=True))
    seen, pages = [], 0
    next_url = reverse("request-log")
    while next_url:
        response = signed_in.get(next_url)
        assert response.status_code == 200
        seen += _ids(response)
        pages += 1
        next_url = _older_link(response)
    assert pages == 3 and seen == expected and len(set(seen)) == 123
    # Filters survive paging.
    first = signed_in.get(reverse("request-log"), {"status": "succeeded", "provider": "local"})
    assert "status=succeeded" in _older_link(first) and "provider=local" in _older_link(first)
    assert "← Newest" in signed_in.get(_older_link(first)).content.decode()


def test_log_page_query_uses_the_org_time_index(api_key):
    org = api_key[0].organization
    rows = request_log(organization=org, filters=LogFilters(status="succeeded"))
    page = rows.filter(created_at__lt=timezone.now())[:51]
    sql, params = page.query.sql_with_params()
    assert "OFFSET" not in sql.upper() and "COUNT(" not in sql.upper()
    assert connection.vendor == "postgresql", "the suite runs on PostgreSQL (make test)"
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        # A few-row table makes any index plus a sort look as cheap: ask whether the order comes from the index.
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(r[0] for r in cursor.fetchall())
    # An (organization, [status,] -created_at) index: which one the planner takes depends on the statistics.
    assert "Seq Scan" not in plan and ("ledger_org_time" in plan or "ledger_org_status_time" in plan), plan


# --- Detail --------------------------------------------------------------------------------------------------------

@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


def test_detail_shows_parameters_attempts_and_live_images(signed_in, monkeypatch, api_key, other_tenant, media):
    org, key = api_key[0].organization, api_key[0]
    _record(monkeypatch, org, key, "req_detail", timezone.now(), n=2, model="sdxl-1.0", size="1024x1024",
            provider="stability", latency_ms=4321)
    started = timezone.now()
    ProviderAttempt.all_tenants_unsafe.create(organization=org, request_id="req_detail", attempt=1,
                                              provider="replicate",
                                    model="sdxl-1.0", status="failed", error_type="timeout",
                                    error="upstream timed out", latency_ms=3000, started_at=started)
    ProviderAttempt.all_tenants_unsafe.create(organization=org, request_id="req_detail", attempt=2,
                                              provider="stability",
                                    model="sdxl-1.0", status="succeeded", latency_ms=1200, started_at=started)
    ProviderAttempt.all_tenants_unsafe.create(organization=other_tenant[0], request_id="req_detail", attempt=9,
                                    provider="secret-upstream", model="x", status="failed", started_at=started)
    live = storage.store_image(organization_id=org.pk, request_id="req_detail", index=0, data=PNG,
                               content_type="image/png")
    expired = storage.store_image(organization_id=org.pk, request_id="req_detail", index=1, data=PNG,
                                  content_type="image/png")
    type(expired).all_tenants_unsafe.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = signed_in.get(reverse("request-detail", args=["req_detail"]))
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("sdxl-1.0", "1024x1024", "standard", "stability", "$0.022", "$0.011 per image", "4321 ms",
                 "test key", key.prefix, "<code>generations</code>", "upstream timed out", "replicate"):
        assert text in html, text
    assert [a.attempt for a in response.context["attempts"]] == [1, 2]
    assert "secret-upstream" not in html
    images = response.context["images"]
    assert [i["stored"].pk for i in images] == [live.pk]
    assert f'<img src="{images[0]["url"]}"' in html
    image = signed_in.get(images[0]["url"])
    assert image.status_code == 200 and image["Content-Type"] == "image/png"


def test_detail_of_a_failed_request_without_attempts_or_images(signed_in, usage):
    response = signed_in.get(reverse("request-detail", args=["req_d3b"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "upstream_error" in html and "No upstream call" in html
    assert "This request made no images." in html and 'id="detail-images">0<' in html


def test_other_organizations_request_is_404_and_absent(signed_in, usage):
    assert signed_in.get(reverse("request-detail", args=["req_rival"])).status_code == 404
    assert signed_in.get(reverse("request-detail", args=["req_nonexistent"])).status_code == 404
    assert "req_rival" not in signed_in.get(reverse("request-log")).content.decode()
    body = b"".join(signed_in.get(reverse("request-export")).streaming_content).decode()
    assert "req_rival" not in body


# --- CSV export ----------------------------------------------------------------------------------------------------

def test_csv_export_streams_the_filtered_log(signed_in, usage):
    response = signed_in.get(reverse("request-export"), {"from": "2025-03-01", "to": "2025-03-03"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.match(r'attachment; filename="imagegate-requests-acme-\d{8}-\d{6}\.csv"', response["Content-Disposition"])
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["created_at", "request_id", "api_key", "model", "provider", "size", "quality", "n", "status",
                       "error_code", "cost_micros", "cost_usd", "latency_ms"]
    assert [r[1] for r in rows[1:]] == ["req_d3b", "req_d3a", "req_d1b", "req_d1a"]
    assert rows[2] == ["2025-03-03T09:00:00+00:00", "req_d3a", "batch key", "sdxl-1.0", "stability", "1024x1024",
                       "standard", "1", "succeeded", "", "11000", "0.011000", "5"]
    assert rows[1][8:11] == ["failed", "upstream_error", "0"]
    filtered = signed_in.get(reverse("request-export"), {"status": "failed"})
    assert [r[1] for r in csv.reader(io.StringIO(b"".join(filtered.streaming_content).decode()))][1:] == ["req_d3b"]
    assert signed_in.get(reverse("request-export"), {"date_from": "yesterday"}).status_code == 400


def test_csv_export_streams_in_chunks_under_asgi(user, usage):
    async def fetch():
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.get(reverse("request-export"))
        chunks = [chunk async for chunk in response.streaming_content]
        return response, chunks

    response, chunks = async_to_sync(fetch)()
    assert response.status_code == 200 and response.is_async
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode())))
    assert rows[0][0] == "created_at" and len(rows) == 7 and "req_rival" not in {r[1] for r in rows}


# --- Access --------------------------------------------------------------------------------------------------------

def test_members_see_usage_and_anonymous_users_are_sent_to_log_in(client, usage, db):
    member, _ = account_services.get_or_create_user(email="member@example.com", password="member horse battery")
    Membership.all_tenants_unsafe.create(organization=usage, user=member, role=Membership.Role.MEMBER)
    for name, args in [("dashboard", []), ("request-log", []), ("request-detail", ["req_d1a"]),
                       ("request-export", [])]:
        response = client.get(reverse(name, args=args))
        assert response.status_code == 302 and reverse("account_login") in response.url
    client.force_login(member)
    assert client.get(reverse("dashboard"), {"from": "2025-03-01", "to": "2025-03-03"}).context[
        "range_usage"].cost_micros == 14_000
    assert "req_d1a" in client.get(reverse("request-log")).content.decode()
    assert client.get(reverse("request-detail", args=["req_d1a"])).status_code == 200
    assert b"req_d1a" in b"".join(client.get(reverse("request-export")).streaming_content)
    assert 'href="/dashboard/requests/">Requests</a>' in client.get(reverse("dashboard")).content.decode()
