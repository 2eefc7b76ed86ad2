"""Signed webhooks for async image jobs (issue 14): endpoints through /v1/webhook_endpoints (official SDK) and the
dashboard page, deliveries to a real HTTP receiver on loopback (WEBHOOKS_ALLOW_PRIVATE_ADDRESSES on), verified with
the snippet docs/webhooks.md publishes, rotation's two signatures, retries with backoff, resend, and the address
guard. Jobs run in-process here (Celery eager); tests/test_image_jobs.py has a delivery made by a real worker."""
import json
import re
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Membership
from billing import spend
from billing.models import BillingAccount
from generation import tasks
from generation.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from generation.pipeline import webhooks
from tests import test_browser

ROOT = Path(__file__).resolve().parent.parent
ASYNC = {"Prefer": "respond-async"}
chromium = test_browser.page  # the browser tests' Chromium page fixture, registered here as `chromium`


def doc_verify():
    """The `verify` function of docs/webhooks.md, exactly as published."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    block = text.split("<!-- verify-snippet:start -->", 1)[1].split("<!-- verify-snippet:end -->", 1)[0]
    code = re.search(r"```python\n(.*?)```", block, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)  # noqa: S102 - our own documentation's snippet
    return namespace["verify"]


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers with the next queued reply (default 200)."""

    def __init__(self):
        self.received: list[dict] = []
        self.replies: list[tuple[int, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, headers = receiver.replies.pop(0) if receiver.replies else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def dev(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True


def register(client, url: str, **extra) -> dict:
    return client.post("/webhook_endpoints", cast_to=object, body={"url": url, **extra})


def async_job(client, **kwargs) -> dict:
    kwargs.setdefault("model", "local-preview")
    kwargs.setdefault("size", "256x256")
    kwargs.setdefault("response_format", "b64_json")
    raw = client.images.with_raw_response.generate(extra_headers=ASYNC, **kwargs)
    assert raw.http_response.status_code == 202
    return raw.http_response.json()


def test_endpoints_through_the_api(openai_client, other_tenant, settings):
    created = register(openai_client, "https://hooks.example.com/imagegate", description="prod",
                       enabled_events=["image.job.succeeded"])
    assert created["object"] == "webhook_endpoint" and created["id"].startswith("we_")
    assert created["secret"].startswith("whsec_") and created["enabled_events"] == ["image.job.succeeded"]
    listed = openai_client.get("/webhook_endpoints", cast_to=object)
    assert [e["id"] for e in listed["data"]] == [created["id"]] and "secret" not in listed["data"][0]
    one = openai_client.get(f"/webhook_endpoints/{created['id']}", cast_to=object)
    assert one["url"] == "https://hooks.example.com/imagegate" and "secret" not in one
    rotated = openai_client.post(f"/webhook_endpoints/{created['id']}/rotate_secret", cast_to=object)
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]

    rival = openai.OpenAI(base_url=str(openai_client.base_url), api_key=other_tenant[2], max_retries=0)
    with pytest.raises(openai.NotFoundError):
        rival.get(f"/webhook_endpoints/{created['id']}", cast_to=object)
    with pytest.raises(openai.NotFoundError):
        rival.delete(f"/webhook_endpoints/{created['id']}", cast_to=object)
    assert rival.get("/webhook_endpoints", cast_to=object)["data"] == []

    for body, param in (({"url": "http://hooks.example.com/x"}, "url"), ({"url": "not a url"}, "url"),
                        ({"url": "https://h.example.com", "enabled_events": ["image.created"]}, "enabled_events"),
                        ({"description": "no url"}, "url"), ({"url": "https://h.example.com", "x": 1}, "x")):
        with pytest.raises(openai.BadRequestError) as exc:
            openai_client.post("/webhook_endpoints", cast_to=object, body=body)
        assert exc.value.param == param, body

    deleted = openai_client.delete(f"/webhook_endpoints/{created['id']}", cast_to=object)
    assert deleted == {"id": created["id"], "object": "webhook_endpoint", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        openai_client.get(f"/webhook_endpoints/{created['id']}", cast_to=object)


def test_a_delivery_is_signed_and_the_documented_snippet_verifies_it(openai_client, api_key, receiver, dev):
    verify = doc_verify()
    endpoint = register(openai_client, receiver.url + "/hook")
    job = async_job(openai_client, prompt="a signed lighthouse")
    assert len(receiver.received) == 1
    got = receiver.received[0]
    body = json.loads(got["body"])
    assert got["path"] == "/hook" and got["headers"]["Content-Type"] == "application/json"
    assert body["type"] == "image.job.succeeded" and body["object"] == "event"
    assert body["id"].startswith("evt_") and got["headers"]["Imagegate-Event-Id"] == body["id"]
    assert body["data"]["object"]["id"] == job["id"] and body["data"]["object"]["status"] == "succeeded"
    assert body["data"]["object"]["data"][0]["b64_json"]
    header = got["headers"]["Imagegate-Signature"]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    assert verify(got["body"], header, [endpoint["secret"]])
    assert not verify(got["body"], header, ["whsec_wrong"])
    assert not verify(got["body"].replace(b"succeeded", b"failed"), header, [endpoint["secret"]])
    stale = f"t={int(time.time()) - 3600}," + header.split(",", 1)[1]
    assert not verify(got["body"], stale, [endpoint["secret"]])
    delivery = WebhookDelivery.objects.for_organization(api_key[0].organization).get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("succeeded", 1, 200)


def test_rotation_signs_with_both_secrets_for_a_day(openai_client, api_key, receiver, dev):
    verify = doc_verify()
    old = register(openai_client, receiver.url + "/hook", enabled_events=["image.job.failed"])
    new = openai_client.post(f"/webhook_endpoints/{old['id']}/rotate_secret", cast_to=object)
    org = api_key[0].organization
    BillingAccount.all_tenants_unsafe.update_or_create(organization=org, defaults={"monthly_spend_limit_micros": 1})
    spend.invalidate_limits()
    async_job(openai_client, prompt="over the limit")  # fails: insufficient_quota
    got = receiver.received[-1]
    assert json.loads(got["body"])["type"] == "image.job.failed"
    header = got["headers"]["Imagegate-Signature"]
    assert len(re.findall(r"v1=", header)) == 2
    assert verify(got["body"], header, [old["secret"]]) and verify(got["body"], header, [new["secret"]])

    WebhookEndpoint.objects.for_organization(org).update(previous_secret_expires_at=timezone.now())
    async_job(openai_client, prompt="over the limit again")
    header = receiver.received[-1]["headers"]["Imagegate-Signature"]
    assert len(re.findall(r"v1=", header)) == 1
    assert verify(receiver.received[-1]["body"], header, [new["secret"]])
    assert not verify(receiver.received[-1]["body"], header, [old["secret"]])
    assert len(receiver.received) == 2  # the endpoint takes only image.job.failed


def _make_due(org):
    WebhookDelivery.objects.for_organization(org).filter(status="pending").update(
        next_attempt_at=timezone.now() - timedelta(seconds=1))


def test_failed_deliveries_are_retried_with_backoff_for_three_days(openai_client, api_key, receiver, dev):
    org = api_key[0].organization
    register(openai_client, receiver.url + "/hook")
    receiver.replies = [(500, {}), (503, {})]
    before = timezone.now()
    async_job(openai_client, prompt="flaky receiver")
    delivery = WebhookDelivery.objects.for_organization(org).get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("pending", 1, 500)
    assert timedelta(seconds=29) < delivery.next_attempt_at - before < timedelta(seconds=40)
    assert tasks.retry_webhooks() == 0  # not due yet

    _make_due(org)
    assert tasks.retry_webhooks() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("pending", 2, 503)
    assert timedelta(seconds=59) < delivery.next_attempt_at - timezone.now() < timedelta(seconds=61)

    _make_due(org)
    tasks.retry_webhooks()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("succeeded", 3, 200)
    ids = {r["headers"]["Imagegate-Event-Id"] for r in receiver.received}
    assert len(receiver.received) == 3 and ids == {delivery.event_id}  # one event id for every attempt

    # Three days after the event, a failing delivery stops being retried.
    WebhookDelivery.objects.for_organization(org).update(status="pending")
    WebhookEvent.objects.for_organization(org).update(created_at=timezone.now() - timedelta(days=3))
    _make_due(org)
    receiver.replies = [(500, {})]
    tasks.retry_webhooks()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 4, None)
    assert [webhooks.backoff(n).total_seconds() for n in (1, 2, 3, 10, 20)] == [30, 60, 120, 15360, 21600]


def test_the_address_guard_of_image_fetching_holds_for_deliveries(openai_client, api_key, receiver, settings):
    org = api_key[0].organization
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = False
    register(openai_client, "https://localhost/hook")  # registered; where it points is checked when delivering
    async_job(openai_client, prompt="to loopback")
    delivery = WebhookDelivery.objects.for_organization(org).get()
    assert delivery.status == "pending" and delivery.response_code is None
    assert "loopback" in delivery.last_error

    # Even in development, a redirect to the cloud metadata address is refused after the redirect.
    settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True
    WebhookEndpoint.objects.for_organization(org).update(url=receiver.url + "/hook")
    receiver.replies = [(307, {"Location": "http://169.254.169.254/latest/meta-data/"})]
    _make_due(org)
    tasks.retry_webhooks()
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.response_code is None and len(receiver.received) == 1
    assert "redirects" in delivery.last_error and "169.254.169.254" in delivery.last_error


def test_the_dashboard_page_registers_shows_the_log_and_resends(client, user, organization, api_key, receiver, dev,
                                                             live_url):
    client.force_login(user)
    first = client.get("/dashboard/webhooks/")
    assert first.status_code == 200 and b"No endpoints yet" in first.content
    created = client.post("/dashboard/webhooks/", {"action": "create", "url": receiver.url + "/hook"})
    secret = re.search(rb'data-testid="webhook-secret">(whsec_[^<]+)<', created.content).group(1).decode()
    assert WebhookEndpoint.objects.for_organization(organization).get().secret == secret
    assert secret.encode() not in client.get("/dashboard/webhooks/").content  # shown once

    openai_client = openai.OpenAI(base_url=f"{live_url}/v1", api_key=api_key[1], max_retries=0)
    receiver.replies = [(500, {})]
    async_job(openai_client, prompt="for the log")
    log = client.get("/dashboard/webhooks/").content.decode()
    assert 'data-testid="response-code">500<' in log and "image.job.succeeded" in log
    delivery = WebhookDelivery.objects.for_organization(organization).get()
    resent = client.post("/dashboard/webhooks/", {"action": "resend", "delivery": delivery.pk})
    assert resent.status_code == 200 and 'data-testid="response-code">200<' in resent.content.decode()
    assert len(receiver.received) == 2
    assert {r["headers"]["Imagegate-Event-Id"] for r in receiver.received} == {delivery.event_id}

    refused = client.post("/dashboard/webhooks/", {"action": "create", "url": "ftp://example.com"})
    assert refused.status_code == 400 and b"https://" in refused.content

    member, _ = account_services.get_or_create_user(email="member@example.com", password="member horse battery")
    Membership.all_tenants_unsafe.create(organization=organization, user=member, role="member")
    client.force_login(member)
    assert client.get("/dashboard/webhooks/").status_code == 403  # members cannot see or manage endpoints


def test_the_webhooks_page_in_chromium(chromium, live_url, receiver, dev):
    """The page in a real browser: sign up, add an endpoint (the secret once), a failed delivery in the log, Resend."""
    page = chromium
    _assert_styled, _goto, _shot = test_browser._assert_styled, test_browser._goto, test_browser._shot

    _goto(page, "/accounts/signup/")
    page.fill('input[name="email"]', "hooks@example.com")
    page.fill('input[name="password1"]', "browser horse battery staple")
    page.fill('input[name="password2"]', "browser horse battery staple")
    page.fill('input[name="organization_name"]', "Hooks Co")
    page.locator('form:has(input[name="password1"]) [type="submit"]').click()
    page.wait_for_url(re.compile(r"/dashboard/$"))

    page.click('header nav a:has-text("Webhooks")')
    page.wait_for_url(re.compile(r"/dashboard/webhooks/$"))
    _assert_styled(page)
    page.fill('input[name="url"]', receiver.url + "/hook")
    page.click('button:has-text("Add endpoint")')
    secret = page.locator('[data-testid="webhook-secret"]').inner_text().strip()
    assert secret.startswith("whsec_")
    _shot(page, "webhooks-01-secret")

    page.click('header nav a:has-text("API keys")')  # a key, made as a customer makes one
    page.fill('input[name="name"]', "hooks")
    page.click('button:has-text("Create key")')
    raw_key = page.locator('[data-testid="new-key"]').inner_text().strip()
    receiver.replies = [(500, {})]
    async_job(openai.OpenAI(base_url=f"{live_url}/v1", api_key=raw_key, max_retries=0), prompt="for the browser")

    _goto(page, "/dashboard/webhooks/")
    assert page.locator('[data-testid="webhook-secret"]').count() == 0  # shown once
    row = page.locator('[data-testid="delivery-log"] tbody tr')
    assert row.count() == 1 and "image.job.succeeded" in row.inner_text() and "pending" in row.inner_text()
    assert row.locator('[data-testid="response-code"]').inner_text().strip() == "500"
    row.locator('button:has-text("Resend")').click()
    page.wait_for_load_state()
    row = page.locator('[data-testid="delivery-log"] tbody tr')
    assert row.locator('[data-testid="response-code"]').inner_text().strip() == "200"
    assert "succeeded" in row.locator("td").nth(3).inner_text()
    _shot(page, "webhooks-02-log")
    assert len(receiver.received) == 2
    assert doc_verify()(receiver.received[1]["body"], receiver.received[1]["headers"]["Imagegate-Signature"], [secret])
