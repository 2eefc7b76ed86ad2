"""End users (issue 14 item 5): OpenAI's `user` and `safety_identifier` are recorded on the ledger row, can be
grouped by in the usage API, reach upstreams only as a stable keyed hash, and an organization's monthly limit per
end user holds exactly under concurrency, as the other limits do. The official SDK is the client."""
import concurrent.futures
import time

import httpx
import openai
import pytest
from django.db import connection

from billing import sealing, spend
from billing import services as billing_services
from billing.models import LedgerEntry
from billing.selectors import current_price
from generation import providers
from tests.emulators import openai as openai_emu
from tests.emulators.openai import recorded_json


@pytest.fixture(scope="module")
def upstream():
    with openai_emu.emulator(retired=()) as emu:  # OpenAI as it was before the dall-e retirement
        yield emu


@pytest.fixture
def openai_upstream(upstream, settings, live_url):
    upstream.reset()
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = openai_emu.API_KEY, upstream.url + "/v1"
    providers.reset_registry()
    yield upstream
    providers.reset_registry()


def _rows(organization):
    return list(LedgerEntry.objects.for_organization(organization).order_by("id"))


def test_user_and_safety_identifier_are_recorded_on_the_ledger(openai_client, api_key):
    openai_client.images.generate(model="local-preview", prompt="fox", user="alice@example.com")
    openai_client.images.generate(model="local-preview", prompt="fox", user="ignored",
                                  extra_body={"safety_identifier": "bob"})
    openai_client.images.generate(model="local-preview", prompt="fox")
    with pytest.raises(openai.BadRequestError):
        openai_client.images.generate(model="local-preview", prompt="fox", size="3x3", user="carol")
    assert [(r.status, r.end_user) for r in _rows(api_key[0].organization)] == [
        ("succeeded", "alice@example.com"), ("succeeded", "bob"), ("succeeded", ""), ("invalid", "carol")]


def test_a_too_long_safety_identifier_is_refused(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt="fox", extra_body={"safety_identifier": "x" * 257})
    assert info.value.body["param"] == "safety_identifier"
    assert info.value.body["code"] == "string_above_max_length"


def test_the_end_user_is_part_of_the_rows_hash(openai_client, api_key):
    """Editing the recorded end user (to move spend from one end user to another) breaks the chain."""
    openai_client.images.generate(model="local-preview", prompt="fox", user="alice")
    openai_client.images.generate(model="local-preview", prompt="fox")
    assert sealing.verify().breaks == []
    row = _rows(api_key[0].organization)[0]
    with connection.cursor() as cursor:  # around the append-only trigger, as only a superuser could
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute("UPDATE billing_ledgerentry SET end_user = 'mallory' WHERE id = %s", [row.pk])
        finally:
            cursor.execute("SET session_replication_role = DEFAULT")
    assert sealing.verify().breaks != []


def test_upstreams_get_a_stable_keyed_hash_not_the_identifier(openai_upstream, openai_client, api_key,
                                                              other_tenant, live_url):
    openai_client.images.generate(model="dall-e-3", prompt="fox", user="alice@example.com",
                                  response_format="b64_json")
    openai_client.images.generate(model="dall-e-3", prompt="fox", user="alice@example.com",
                                  response_format="b64_json")
    _, _, rival_raw = other_tenant
    rival = openai.OpenAI(base_url=f"{live_url}/v1", api_key=rival_raw, max_retries=0)
    rival.images.generate(model="dall-e-3", prompt="fox", user="alice@example.com", response_format="b64_json")
    sent = [recorded_json(r)["user"] for r in openai_upstream.requests]
    assert sent[0] == sent[1] != sent[2]  # stable per organization, different across organizations
    assert all(len(s) == 32 and "alice" not in s and "example" not in s for s in sent)
    assert sent[0] == spend.end_user_pseudonym(api_key[0].organization.pk, "alice@example.com")


def test_usage_api_groups_by_end_user(openai_client, api_key):
    for user, n in (("alice", 2), ("bob", 1), ("alice", 1)):
        openai_client.images.generate(model="local-preview", prompt="fox", n=n, user=user)
    openai_client.images.generate(model="local-preview", prompt="fox")
    now = int(time.time())
    query = {"start_time": now - 3600, "end_time": now + 60, "group_by": "user", "bucket_width": "1d"}
    images = openai_client.get("/organization/usage/images", cast_to=httpx.Response,
                               options={"params": query}).json()
    results = {r["user"]: r["images"] for b in images["data"] for r in b["results"]}
    assert results == {"alice": 3, "bob": 1, None: 1}
    costs = openai_client.get("/organization/costs", cast_to=httpx.Response, options={"params": query}).json()
    by_user = {r["user"]: r["amount"]["value_micros"] for b in costs["data"] for r in b["results"]}
    unit = current_price(model="local-preview", size="1024x1024", quality="standard").unit_price_micros
    assert by_user["alice"] == 3 * unit and by_user["bob"] == unit
    records = openai_client.get("/organization/usage/records", cast_to=httpx.Response).json()
    assert {r["user"] for r in records["data"]} == {"alice", "bob", None}


def test_the_per_end_user_limit_holds_exactly_under_concurrency(live_url, api_key):
    """12 concurrent requests of one end user against a limit worth 5 images: exactly 5 succeed; another end user
    and requests that name none are not limited by it."""
    organization, raw = api_key[0].organization, api_key[1]
    unit = current_price(model="local-preview", size="256x256", quality="standard").unit_price_micros
    billing_services.set_end_user_spend_limit(organization=organization, monthly_limit_micros=5 * unit)
    client = openai.OpenAI(base_url=f"{live_url}/v1", api_key=raw, max_retries=0, timeout=60)

    def one(user):
        try:
            client.images.generate(model="local-preview", prompt="fox", size="256x256", user=user)
            return "ok"
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "insufficient_quota" and "end user 'alice'" in exc.body["message"]
            return "refused"

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(one, ["alice"] * 12))
    assert outcomes.count("ok") == 5 and outcomes.count("refused") == 7
    assert one("bob") == "ok" and one(None) == "ok"
    charged = [r for r in _rows(organization) if r.status == "succeeded"]
    assert sum(r.cost_micros for r in charged if r.end_user == "alice") == 5 * unit
    billing_services.set_end_user_spend_limit(organization=organization, monthly_limit_micros=None)
    assert one("alice") == "ok"


def test_the_billing_page_sets_the_end_user_limit(client, user, organization):
    client.force_login(user)
    response = client.post("/dashboard/billing/", {"end_user_limit_usd": "2.50"})
    assert response.status_code == 302
    from billing.selectors import billing_account

    assert billing_account(organization=organization).end_user_monthly_limit_micros == 2_500_000
    page = client.get("/dashboard/billing/").content.decode()
    assert 'data-testid="end-user-limit-form"' in page and 'name="end_user_limit_usd" value="2.5"' in page
    assert client.post("/dashboard/billing/", {"end_user_limit_usd": "-1"}).status_code == 200  # form error
