"""The audit API (/v1/organization/usage/images, /v1/organization/costs, /v1/organization/usage/records) against the
live server: buckets, group_by, pagination that covers everything exactly once, totals equal to the ledger to the
micro-dollar, keyset pagination of records, 400s that name the parameter, tenant isolation, the query plan, and
Schemathesis on the three operations."""
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import httpx
import pytest
import requests
import schemathesis
from django.db import connection, transaction
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts import services as account_services
from accounts.models import ApiKey
from billing import cursors, recording
from billing import services as billing_services
from billing.models import LedgerEntry, Price
from billing.selectors import current_price
from billing.usage import audit as usage_queries

DAY = 86400
T0 = 1_700_000_000 - 1_700_000_000 % DAY  # 2023-11-14T00:00:00Z, a UTC midnight
ODD_PRICE = 333_333  # micro-USD: sums of it are not exact in binary floating point


def at(seconds: int, micros: int = 0) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC) + timedelta(microseconds=micros)


@pytest.fixture
def odd_price(prices):
    return Price.objects.create(model="audit-odd", size="1024x1024", quality="hd", unit_price_micros=ODD_PRICE,
                                effective_from=at(T0 - 365 * DAY))


@pytest.fixture
def ledger(monkeypatch):
    """record(org, key, when, ...) writes one ledger row through billing.services.record_usage at `when`."""
    counter = iter(range(1_000_000))

    def record(org, key, when: datetime, *, model="local-preview", size="256x256", quality="standard", n=1,
               status="succeeded", provider="local", price=None, error_code=""):
        if price is None and status == "succeeded":
            price = current_price(model=model, size=size, quality=quality)
        with monkeypatch.context() as patch:
            patch.setattr(recording, "timezone", SimpleNamespace(now=lambda: when))
            return billing_services.record_usage(
                organization=org, api_key=key, request_id=f"req_audit_{next(counter):06d}", status=status,
                model=model, provider=provider, size=size, quality=quality, n=n, price=price, latency_ms=7,
                error_code=error_code)

    return record


@pytest.fixture
def acme(api_key):
    key, raw = api_key
    ApiKey.all_tenants_unsafe.filter(pk=key.pk).update(rate_limit_rpm=1_000_000)
    second, _ = account_services.create_api_key(organization=key.organization, name="second key")
    return SimpleNamespace(org=key.organization, key=key, raw=raw, second=second)


def get(live_url, raw_key, path, params=None):
    response = httpx.get(f"{live_url}/v1/organization/{path}", params=params,
                         headers={"Authorization": f"Bearer {raw_key}"}, timeout=30)
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def ledger_sum(org, start: int, end: int, **filters) -> int:
    return sum(LedgerEntry.objects.for_organization(org).filter(
        created_at__gte=at(start), created_at__lt=at(end), **filters).values_list("cost_micros", flat=True))


def all_pages(live_url, raw_key, path, params) -> list[dict]:
    """Follow next_page until has_more is false; returns every bucket of every page."""
    buckets, page, pages = [], None, 0
    while True:
        body = ok(get(live_url, raw_key, path, {**params, **({"page": page} if page else {})}))
        assert body["object"] == "page"
        pages += 1
        assert pages < 100
        buckets += body["data"]
        if not body["has_more"]:
            assert body["next_page"] is None
            return buckets
        assert body["next_page"]
        page = body["next_page"]


# --- Buckets ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def three_days(acme, ledger, odd_price):
    """Rows over three UTC days: two keys, two models, two providers, two sizes, a failure and a refusal."""
    L = ledger
    L(acme.org, acme.key, at(T0 + 10), n=2)                                       # day 0: local-preview x2
    L(acme.org, acme.second, at(T0 + 3600), model="audit-odd", size="1024x1024", quality="hd",
      provider="stability", n=3, price=odd_price)                                # day 0: odd x3
    L(acme.org, acme.key, at(T0 + 7200), status="failed", error_code="upstream_error")  # day 0: failed
    L(acme.org, acme.key, at(T0 + DAY + 5), size="512x512")                        # day 1
    L(acme.org, acme.second, at(T0 + DAY + 60), model="audit-odd", size="1024x1024", quality="hd",
      provider="stability", n=1, price=odd_price)                                # day 1
    L(acme.org, acme.second, at(T0 + 2 * DAY + DAY - 1), status="refused", error_code="content_policy_violation")
    return acme


def test_images_usage_daily_buckets(live_url, three_days):
    body = ok(get(live_url, three_days.raw, "usage/images", {"start_time": T0, "end_time": T0 + 3 * DAY}))
    assert body["has_more"] is False and body["next_page"] is None
    assert [(b["object"], b["start_time"], b["end_time"]) for b in body["data"]] == [
        ("bucket", T0, T0 + DAY), ("bucket", T0 + DAY, T0 + 2 * DAY), ("bucket", T0 + 2 * DAY, T0 + 3 * DAY)]
    results = [b["results"] for b in body["data"]]
    assert results[0] == [{"object": "organization.usage.images.result", "images": 5, "num_model_requests": 3,
                           "model": None, "api_key_id": None, "api_key_name": None, "provider": None, "size": None}]
    assert (results[1][0]["images"], results[1][0]["num_model_requests"]) == (2, 2)
    # a refused request is a request, but no image
    assert (results[2][0]["images"], results[2][0]["num_model_requests"]) == (0, 1)


def test_images_usage_group_by_model_api_key_provider_size(live_url, three_days):
    acme = three_days
    body = ok(get(live_url, acme.raw, "usage/images", [("start_time", T0), ("end_time", T0 + DAY),
                                                       ("group_by", "model"), ("group_by", "api_key,provider")]))
    rows = {(r["model"], r["api_key_id"], r["provider"]): r for r in body["data"][0]["results"]}
    assert set(rows) == {("local-preview", acme.key.pk, "local"), ("audit-odd", acme.second.pk, "stability")}
    assert rows["local-preview", acme.key.pk, "local"]["images"] == 2
    assert rows["local-preview", acme.key.pk, "local"]["num_model_requests"] == 2  # the failure too
    assert rows["local-preview", acme.key.pk, "local"]["api_key_name"] == "test key"
    assert rows["audit-odd", acme.second.pk, "stability"]["images"] == 3
    assert rows["audit-odd", acme.second.pk, "stability"]["api_key_name"] == "second key"
    assert all(r["size"] is None for r in rows.values())

    by_size = ok(get(live_url, acme.raw, "usage/images", {"start_time": T0, "end_time": T0 + 2 * DAY,
                                                          "group_by": "size"}))
    day1 = {r["size"]: r["images"] for r in by_size["data"][1]["results"]}
    assert day1 == {"512x512": 1, "1024x1024": 1}


def test_images_usage_filters_by_key_and_model(live_url, three_days):
    acme = three_days
    body = ok(get(live_url, acme.raw, "usage/images", {"start_time": T0, "end_time": T0 + 2 * DAY,
                                                       "api_key_ids": acme.second.pk}))
    assert [b["results"][0]["images"] for b in body["data"]] == [3, 1]
    body = ok(get(live_url, acme.raw, "usage/images", [("start_time", T0), ("end_time", T0 + 2 * DAY),
                                                       ("models", "local-preview")]))
    assert [b["results"][0]["images"] for b in body["data"]] == [2, 1]


def test_costs_amounts_are_exact_and_grouped(live_url, three_days):
    acme = three_days
    body = ok(get(live_url, acme.raw, "costs", {"start_time": T0, "end_time": T0 + 3 * DAY}))
    amounts = [b["results"][0]["amount"] if b["results"] else None for b in body["data"]]
    assert (amounts[0]["value_micros"], amounts[0]["currency"]) == (2000 + 3 * ODD_PRICE, "usd")
    assert Decimal(str(amounts[0]["value"])) == Decimal(2000 + 3 * ODD_PRICE) / 10**6  # 1.001999, to the micro
    assert amounts[1]["value_micros"] == 1000 + ODD_PRICE
    assert amounts[2] is None  # day 2 only had a refusal: nothing charged, no result
    assert body["data"][0]["results"][0]["object"] == "organization.costs.result"
    total = sum(b["results"][0]["amount"]["value_micros"] for b in body["data"] if b["results"])
    assert total == ledger_sum(acme.org, T0, T0 + 3 * DAY) == 3000 + 4 * ODD_PRICE

    items = ok(get(live_url, acme.raw, "costs", {"start_time": T0, "end_time": T0 + DAY, "group_by": "line_item"}))
    lines = {r["line_item"]: r["amount"]["value_micros"] for r in items["data"][0]["results"]}
    assert lines == {"local-preview 256x256 standard": 2000, "audit-odd 1024x1024 hd": 3 * ODD_PRICE}


@pytest.mark.parametrize("width,seconds,limit", [("1h", 3600, 5), ("1m", 60, 7), ("1d", DAY, 1)])
def test_bucket_pages_chain_covers_the_range_exactly_once(live_url, acme, ledger, odd_price, width, seconds, limit):
    rng = random.Random(width)
    start = T0 + 1800 + 17  # not aligned: the first bucket is clipped to start_time
    span = {"1h": 30 * 3600, "1m": 40 * 60, "1d": 4 * DAY}[width]
    end = start + span - 29  # not aligned either
    for i in range(60):
        when = at(rng.randrange(start - seconds, end + seconds), rng.randrange(1_000_000))  # some outside the range
        key = acme.key if i % 2 else acme.second
        if i % 3:
            ledger(acme.org, key, when, model="audit-odd", size="1024x1024", quality="hd", price=odd_price,
                   n=rng.randint(1, 4), provider="stability")
        else:
            ledger(acme.org, key, when, n=rng.randint(1, 3), status=rng.choice(["succeeded", "failed"]))
    for group_by in ([], ["model", "api_key"]):
        params = {"start_time": start, "end_time": end, "bucket_width": width, "limit": limit,
                  **({"group_by": ",".join(group_by)} if group_by else {})}
        buckets = all_pages(live_url, acme.raw, "costs", params)
        assert buckets[0]["start_time"] == start and buckets[-1]["end_time"] == end
        for before, after in zip(buckets, buckets[1:]):
            assert before["end_time"] == after["start_time"]  # contiguous: no gap, no bucket twice
        assert all(b["end_time"] - b["start_time"] <= seconds for b in buckets)
        total = sum(r["amount"]["value_micros"] for b in buckets for r in b["results"])
        assert total == ledger_sum(acme.org, start, end) > 0
        for b in buckets:  # every bucket equals the ledger over its own span
            assert sum(r["amount"]["value_micros"] for r in b["results"]) == ledger_sum(
                acme.org, b["start_time"], b["end_time"])
        images = all_pages(live_url, acme.raw, "usage/images", params)
        assert sum(r["images"] for b in images for r in b["results"]) == sum(
            LedgerEntry.objects.for_organization(acme.org).filter(
                created_at__gte=at(start), created_at__lt=at(end), status="succeeded").values_list("n", flat=True))
        requests = LedgerEntry.objects.for_organization(acme.org).filter(created_at__gte=at(start),
                                                                          created_at__lt=at(end)).count()
        assert sum(r["num_model_requests"] for b in images for r in b["results"]) == requests


def test_bucket_limit_defaults_follow_openai(live_url, acme):
    for width, default in (("1d", 7), ("1h", 24), ("1m", 60)):
        body = ok(get(live_url, acme.raw, "usage/images", {"start_time": T0, "end_time": T0 + 10_000 * DAY,
                                                           "bucket_width": width}))
        assert len(body["data"]) == default and body["has_more"] is True
    body = ok(get(live_url, acme.raw, "costs", {"start_time": T0, "end_time": T0 + 3 * DAY}))
    assert len(body["data"]) == 3 and body["has_more"] is False
    assert all(b["results"] == [] for b in body["data"])


def test_end_time_defaults_to_now(live_url, acme, ledger):
    now = int(datetime.now(UTC).timestamp())
    ledger(acme.org, acme.key, at(now - 30), n=4)
    body = ok(get(live_url, acme.raw, "usage/images", {"start_time": now - 120, "bucket_width": "1m"}))
    assert sum(r["images"] for b in body["data"] for r in b["results"]) == 4
    assert body["data"][-1]["end_time"] <= now + 5


# --- Records ---------------------------------------------------------------------------------------------------------

def test_records_cursor_pagination_returns_every_row_once_newest_first(live_url, acme, ledger):
    rng = random.Random(7)
    for i in range(250):
        # groups of rows share a created_at to the microsecond: the id breaks the tie
        when = at(T0 + (i // 3) * 60, 123_456 if i % 3 else 0)
        ledger(acme.org, acme.key if rng.random() < 0.5 else acme.second, when, n=rng.randint(1, 3))
    seen, cursor, pages = [], None, 0
    while True:
        body = ok(get(live_url, acme.raw, "usage/records", {"limit": 100, **({"cursor": cursor} if cursor else {})}))
        assert body["object"] == "list"
        pages += 1
        seen += body["data"]
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        cursor = body["next_cursor"]
    assert pages == 3 and [len(p) for p in (seen[:100], seen[100:200], seen[200:])] == [100, 100, 50]
    expected = list(LedgerEntry.objects.for_organization(acme.org).order_by("-created_at", "-id")
                    .values_list("request_id", flat=True))
    assert [r["id"] for r in seen] == expected  # each once, in (created_at, id) descending order
    assert sum(r["cost"]["value_micros"] for r in seen) == ledger_sum(acme.org, 0, T0 + 10 * DAY)
    first = seen[0]
    row = LedgerEntry.objects.for_organization(acme.org).get(request_id=first["id"])
    key = acme.key if row.api_key_id == acme.key.pk else acme.second
    assert first == {
        "object": "organization.usage.record", "id": row.request_id, "created": int(row.created_at.timestamp()),
        "created_at_us": int(row.created_at.timestamp()) * 1_000_000 + row.created_at.microsecond,
        "endpoint": "generations", "model": "local-preview", "provider": "local", "size": "256x256",
        "quality": "standard", "n": row.n, "status": "succeeded", "error_code": None,
        "cost": {"value": row.cost_micros / 1e6, "value_micros": row.cost_micros, "currency": "usd"},
        "unit_price_micros": 1000, "latency_ms": 7,
        "api_key": {"id": key.pk, "name": key.name, "prefix": key.prefix}}


def test_records_filters(live_url, three_days):
    acme = three_days

    def ids(**params):
        return [r["id"] for r in ok(get(live_url, acme.raw, "usage/records", params))["data"]]

    everything = ids()
    assert len(everything) == 6
    assert len(ids(model="audit-odd")) == 2
    assert len(ids(provider="stability")) == 2
    assert len(ids(status="failed")) == 1 and len(ids(status="refused")) == 1
    assert len(ids(api_key_id=acme.second.pk)) == 3
    assert len(ids(start_time=T0 + DAY, end_time=T0 + 2 * DAY)) == 2
    assert len(ids(start_time=T0 + DAY)) == 3
    assert len(ids(model="audit-odd", api_key_id=acme.key.pk)) == 0
    failed = ok(get(live_url, acme.raw, "usage/records", {"status": "failed"}))["data"][0]
    assert failed["error_code"] == "upstream_error" and failed["cost"]["value_micros"] == 0
    # the cursor carries the position only: the same filters page on
    page1 = ok(get(live_url, acme.raw, "usage/records", {"limit": 2, "provider": "local"}))
    page2 = ok(get(live_url, acme.raw, "usage/records", {"limit": 2, "provider": "local",
                                                         "cursor": page1["next_cursor"]}))
    assert [r["id"] for r in page1["data"] + page2["data"]] == ids(provider="local")


def test_records_query_walks_the_org_time_index(acme, ledger):
    for i in range(20):
        ledger(acme.org, acme.key, at(T0 + i))
    rows = usage_queries.records_queryset(organization=acme.org, after=(at(T0 + 10), 10**9))[:100]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a 20-row table would be scanned otherwise
        # A few-row table makes any index plus a sort look as cheap: ask whether the order comes from the index.
        cursor.execute("SET LOCAL enable_sort = off")
        plan = rows.explain()
    assert "ledger_org_time" in plan, plan
    assert "Seq Scan" not in plan, plan


# --- Errors and isolation --------------------------------------------------------------------------------------------

BAD = [
    ("usage/images", {}, "start_time", "missing_required_parameter"),
    ("usage/images", {"start_time": "yesterday"}, "start_time", "invalid_parameter"),
    ("usage/images", {"start_time": "-5"}, "start_time", "invalid_parameter"),
    ("usage/images", {"start_time": T0, "end_time": T0}, "end_time", "invalid_parameter"),
    ("usage/images", {"start_time": T0, "bucket_width": "1w"}, "bucket_width", "invalid_parameter"),
    ("usage/images", {"start_time": T0, "group_by": "line_item"}, "group_by", "invalid_parameter"),
    ("costs", {"start_time": T0, "group_by": "model,colour"}, "group_by", "invalid_parameter"),
    ("costs", {"start_time": T0, "limit": 32}, "limit", "invalid_parameter"),
    ("costs", {"start_time": T0, "bucket_width": "1h", "limit": 169}, "limit", "invalid_parameter"),
    ("costs", {"start_time": T0, "limit": 0}, "limit", "invalid_parameter"),
    ("costs", {"start_time": T0, "page": "not-a-cursor"}, "page", "invalid_parameter"),
    ("costs", {"start_time": T0, "page": cursors.encode_page("1h", T0)}, "page", "invalid_parameter"),
    ("costs", {"start_time": T0, "end_time": T0 + DAY, "page": cursors.encode_page("1d", T0 + 5 * DAY)},
     "page", "invalid_parameter"),
    ("costs", {"start_time": T0, "api_key_ids": "key_abc"}, "api_key_ids", "invalid_parameter"),
    ("costs", {"start_time": T0, "end_tme": T0}, "end_tme", "unknown_parameter"),
    ("costs", [("start_time", T0), ("start_time", T0 + 1)], "start_time", "invalid_parameter"),
    ("usage/records", {"limit": 1001}, "limit", "invalid_parameter"),
    ("usage/records", {"limit": 0}, "limit", "invalid_parameter"),
    ("usage/records", {"status": "ok"}, "status", "invalid_parameter"),
    ("usage/records", {"cursor": "garbage!"}, "cursor", "invalid_parameter"),
    ("usage/records", {"cursor": cursors.encode_page("1d", T0)}, "cursor", "invalid_parameter"),
    ("usage/records", {"api_key_id": "1.5"}, "api_key_id", "invalid_parameter"),
    ("usage/records", {"model": "a\x00b"}, "model", "invalid_parameter"),
    ("usage/records", {"start_time": T0, "end_time": T0 - 1}, "end_time", "invalid_parameter"),
]


@pytest.mark.parametrize("path,params,param,code", BAD, ids=[f"{b[0]}-{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_parameters_are_400_naming_the_parameter(live_url, acme, path, params, param, code):
    response = get(live_url, acme.raw, path, params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert response.headers["x-request-id"].startswith("req_")


def test_messages_name_the_allowed_values(live_url, acme):
    message = get(live_url, acme.raw, "costs", {"start_time": T0, "bucket_width": "2h"}).json()["error"]["message"]
    assert "1m, 1h, 1d" in message
    message = get(live_url, acme.raw, "usage/images", {"start_time": T0, "group_by": "x"}).json()["error"]["message"]
    assert "model, api_key, provider, size" in message
    message = get(live_url, acme.raw, "usage/records", {"status": "x"}).json()["error"]["message"]
    assert "succeeded, failed, refused, invalid" in message


@pytest.mark.parametrize("path", ["usage/images", "costs", "usage/records"])
def test_a_key_is_needed(live_url, path):
    response = httpx.get(f"{live_url}/v1/organization/{path}", params={"start_time": T0})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_tenants_see_only_their_own_rows(live_url, three_days, other_tenant, ledger):
    acme = three_days
    other_org, other_key, other_raw = other_tenant
    ApiKey.all_tenants_unsafe.filter(pk=other_key.pk).update(rate_limit_rpm=1_000_000)
    ledger(other_org, other_key, at(T0 + 50), n=9)
    window = {"start_time": T0, "end_time": T0 + 3 * DAY}
    # the other organization sees its own row only
    theirs = ok(get(live_url, other_raw, "usage/records", {}))["data"]
    assert [r["api_key"]["id"] for r in theirs] == [other_key.pk]
    costs = ok(get(live_url, other_raw, "costs", {**window, "group_by": "api_key"}))
    assert [r["amount"]["value_micros"] for b in costs["data"] for r in b["results"]] == [9000]
    images = ok(get(live_url, other_raw, "usage/images", window))
    assert sum(r["images"] for b in images["data"] for r in b["results"]) == 9
    # asking for acme's key from the other organization finds nothing
    assert ok(get(live_url, other_raw, "usage/records", {"api_key_id": acme.key.pk}))["data"] == []
    assert all(b["results"] == [] for b in ok(get(live_url, other_raw, "costs",
                                                  {**window, "api_key_ids": acme.key.pk}))["data"])
    # and acme asking for the other organization's key finds nothing either
    assert ok(get(live_url, acme.raw, "usage/records", {"api_key_id": other_key.pk}))["data"] == []
    for path in ("costs", "usage/images"):
        assert all(b["results"] == [] for b in ok(get(live_url, acme.raw, path,
                                                      {**window, "api_key_ids": other_key.pk}))["data"])
    # acme's own totals do not include the other organization's $0.009
    costs = ok(get(live_url, acme.raw, "costs", window))
    assert sum(r["amount"]["value_micros"] for b in costs["data"] for r in b["results"]) == 3000 + 4 * ODD_PRICE
    records = ok(get(live_url, acme.raw, "usage/records", {"limit": 1000}))["data"]
    assert len(records) == 6 and {r["api_key"]["id"] for r in records} == {acme.key.pk, acme.second.pk}


# --- OpenAPI and Schemathesis ----------------------------------------------------------------------------------------

AUDIT_OPERATIONS = {"GET /v1/organization/usage/images": "usageImages", "GET /v1/organization/costs": "usageCosts",
                    "GET /v1/organization/usage/records": "listUsageRecords"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


def test_schema_documents_the_audit_endpoints(live_url):
    document = httpx.get(f"{live_url}/v1/openapi.json").json()
    for label, operation_id in AUDIT_OPERATIONS.items():
        method, path = label.split(" ")
        operation = document["paths"][path][method.lower()]
        assert operation["operationId"] == operation_id
        assert operation["security"] == [{"bearerAuth": []}]
        assert {"200", "400", "401", "429"} <= set(operation["responses"])
    images = document["paths"]["/v1/organization/usage/images"]["get"]["parameters"]
    names = {p["name"] for p in images if p["in"] == "query"}
    assert names == {"start_time", "end_time", "bucket_width", "group_by", "api_key_ids", "models", "limit", "page"}


def test_schemathesis_on_the_audit_endpoints(live_url, acme, ledger):
    for i in range(5):
        ledger(acme.org, acme.key, at(T0 + i * 3600))
    schema = schemathesis.openapi.from_url(f"{live_url}/v1/openapi.json")
    session = requests.Session()
    auth = {"Authorization": f"Bearer {acme.raw}"}
    executed, failures = Counter(), {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label not in AUDIT_OPERATIONS:
            continue
        for mode, budget in ((GenerationMode.POSITIVE, 80), (GenerationMode.NEGATIVE, 40)):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=budget, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def run(case):
                response = case.call(session=session, headers=auth, timeout=60)
                executed[operation.label, response.status_code] += 1
                try:
                    case.validate_response(response, checks=CHECKS, headers=auth)
                except FailureGroup as exc:
                    failures.setdefault(f"{operation.label} {response.status_code}",
                                        f"{case.as_curl_command()[:400]} -> {response.text[:300]}: "
                                        + "; ".join(f.title for f in exc.exceptions))

            run()
    print(dict(executed))
    assert {label for label, _ in executed} == set(AUDIT_OPERATIONS)
    assert not any(status >= 500 for _, status in executed), dict(executed)
    assert not failures, "\n".join(failures.values())
