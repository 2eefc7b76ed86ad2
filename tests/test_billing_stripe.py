"""Stripe billing against the Stripe emulator, through the real stripe-python client: set-up, meter reporting under
faults (nothing lost, nothing doubled), reconciliation, webhooks, and the unpaid-organization policy."""
import json
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from billing import services as billing_services
from billing.models import (
    BillingAccount,
    BillingAlert,
    Discrepancy,
    Invoice,
    LedgerEntry,
    MeterReport,
    StripeEvent,
    StripeSetup,
)
from billing.selectors import current_price
from billing.stripe import gateway as stripe_gateway
from billing.stripe import reconciliation, reporting
from tests.emulators import stripe as stripe_emu
from tests.emulators.base import Fault


@pytest.fixture(scope="module")
def emu():
    with stripe_emu.emulator() as e:
        yield e


@pytest.fixture
def stripe_on(emu, settings, db):
    emu.reset()
    emu.state["rate_limit"] = None
    settings.STRIPE_API_KEY = stripe_emu.API_KEY
    settings.STRIPE_API_BASE = emu.url
    settings.STRIPE_WEBHOOK_SECRET = stripe_emu.WEBHOOK_SECRET
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.STRIPE_TIMEOUT_SECONDS = 1.0
    from django.core.cache import cache

    cache.delete_many(["billing:assign-lock"])
    return emu


def _usage(org, key, n_requests, *, n=1, at=None, monkeypatch=None):
    price = current_price(model="local-preview", size="256x256", quality="standard")
    for i in range(n_requests):
        billing_services.record_usage(organization=org, api_key=key, request_id=f"req_{org.pk}_{time.time_ns()}_{i}",
                                      status="succeeded", model="local-preview", provider="local", size="256x256",
                                      quality="standard", n=n, price=price, latency_ms=3)


def _ledger_total(org) -> int:
    return sum(LedgerEntry.objects.for_organization(org).values_list("cost_micros", flat=True))


def _stripe_total(emu, org) -> int:
    customer = BillingAccount.all_tenants_unsafe.get(organization=org).stripe_customer_id
    return int(stripe_emu.store(emu).total(customer=customer))


@pytest.fixture
def two_orgs(api_key, other_tenant, prices):
    return [(api_key[0].organization, api_key[0]), (other_tenant[0], other_tenant[1])]


def test_stripe_setup_is_idempotent(stripe_on):
    call_command("stripe_setup", verbosity=0)
    call_command("stripe_setup", verbosity=0)
    row = StripeSetup.objects.get()
    sc = stripe_gateway.client()
    assert len([m for m in sc.v1.billing.meters.list().data if m.event_name == row.meter_event_name]) == 1
    assert len(sc.v1.prices.list(params={"lookup_keys": [stripe_gateway.PRICE_LOOKUP_KEY]}).data) == 1
    price = sc.v1.prices.retrieve(row.price_id)
    assert price.recurring.usage_type == "metered" and price.recurring.meter == row.meter_id


def test_report_aggregates_and_totals_match_to_the_micro_dollar(stripe_on, two_orgs):
    for org, key in two_orgs:
        _usage(org, key, 7, n=3)
    assert reporting.ensure_customers() == 2
    stats = reporting.report_usage()
    assert stats.reports_created == 2 and stats.calls == 2 and stats.delivered == 2  # one call covers 7 requests
    for org, _ in two_orgs:
        assert _stripe_total(stripe_on, org) == _ledger_total(org) == 21_000
    again = reporting.report_usage()
    assert again.calls == 0
    out = __import__("io").StringIO()
    call_command("report_usage", stdout=out)
    assert "calls 0" in out.getvalue()


def test_stripe_down_for_a_while_then_back(stripe_on, two_orgs):
    for org, key in two_orgs:
        _usage(org, key, 3)
    reporting.ensure_customers()
    stripe_on.faults.set("meter_events", Fault(status=503))
    first = reporting.report_usage()
    assert first.delivered == 0 and first.deferred == 2
    assert all(r.next_attempt_at for r in MeterReport.all_tenants_unsafe.all())
    _usage(*two_orgs[0], 2)  # more usage while Stripe is down
    stripe_on.faults.clear()
    later = timezone.now() + timedelta(hours=2)
    reporting.report_usage(now=later)
    for org, _ in two_orgs:
        assert _stripe_total(stripe_on, org) == _ledger_total(org)


def test_429_storm(stripe_on, two_orgs):
    org, key = two_orgs[0]
    _usage(org, key, 4)
    reporting.ensure_customers()
    stripe_on.faults.set("meter_events", Fault(status=429, times=5))
    now = timezone.now()
    for i in range(8):
        reporting.report_usage(now=now + timedelta(hours=i + 1))
    assert _stripe_total(stripe_on, org) == _ledger_total(org) == 4_000
    assert MeterReport.all_tenants_unsafe.get().attempts == 6


def test_lost_answer_after_stripe_committed_is_not_billed_twice(stripe_on, two_orgs):
    """The worker's call reached Stripe but the answer never came back (as if killed between sending and
    marking): the resend carries the same identifier, Stripe refuses the duplicate, the report is delivered."""
    org, key = two_orgs[0]
    _usage(org, key, 5)
    reporting.ensure_customers()
    stripe_on.faults.set("meter_events", Fault(kind="process_then_drop", times=1))
    first = reporting.report_usage()
    assert first.delivered == 0 and _stripe_total(stripe_on, org) == 5_000  # Stripe has it; we don't know yet
    second = reporting.report_usage(now=timezone.now() + timedelta(hours=1))
    assert second.duplicates == 1 and second.delivered == 1
    assert _stripe_total(stripe_on, org) == _ledger_total(org) == 5_000
    assert MeterReport.all_tenants_unsafe.get().status == "delivered"


def test_process_then_500_is_not_doubled(stripe_on, two_orgs):
    org, key = two_orgs[0]
    _usage(org, key, 2)
    reporting.ensure_customers()
    stripe_on.faults.set("meter_events", Fault(kind="process_then_500", times=1))
    reporting.report_usage()
    reporting.report_usage(now=timezone.now() + timedelta(hours=1))
    assert _stripe_total(stripe_on, org) == _ledger_total(org) == 2_000


def test_concurrent_passes_keep_one_call_per_customer(transactional_db, stripe_on, two_orgs):
    for org, key in two_orgs:
        _usage(org, key, 3)
    reporting.ensure_customers()
    stripe_on.state["meter_event_delay"] = 0.3
    threads = [threading.Thread(target=reporting.report_usage) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store = stripe_emu.store(stripe_on)
    for org, _ in two_orgs:
        customer = BillingAccount.all_tenants_unsafe.get(organization=org).stripe_customer_id
        assert store.max_concurrency(customer=customer, meter=StripeSetup.objects.get().meter_id) == 1
        assert _stripe_total(stripe_on, org) == _ledger_total(org)


def test_catch_up_after_a_34_day_outage_and_an_alert_beyond_35(stripe_on, two_orgs, monkeypatch):
    org, key = two_orgs[0]
    real_now = timezone.now()
    stripe_on.state["now"] = int((real_now - timedelta(days=60)).timestamp())  # the meter predates the usage
    stripe_gateway.setup()
    del stripe_on.state["now"]
    monkeypatch.setattr("billing.recording.timezone.now", lambda: real_now - timedelta(days=34))
    _usage(org, key, 2)
    monkeypatch.setattr("billing.recording.timezone.now", lambda: real_now - timedelta(days=36))
    _usage(org, key, 1)
    monkeypatch.undo()
    reporting.ensure_customers()
    stats = reporting.report_usage()
    assert stats.delivered == 1 and stats.expired == 1
    assert _stripe_total(stripe_on, org) == 2_000
    alert = BillingAlert.all_tenants_unsafe.get()
    assert alert.kind == "usage_too_old_for_stripe" and "Invoice it manually" in alert.message


def test_reconciliation_finds_differences(stripe_on, two_orgs):
    org, key = two_orgs[0]
    past = timezone.now() - timedelta(hours=3)
    stripe_on.state["now"] = int((past - timedelta(hours=1)).timestamp())
    stripe_gateway.setup()
    del stripe_on.state["now"]
    import billing.recording as bs

    original = bs.timezone.now
    bs.timezone.now = lambda: past
    try:
        _usage(org, key, 4)
    finally:
        bs.timezone.now = original
    reporting.ensure_customers()
    reporting.report_usage()
    stats = reconciliation.reconcile()
    assert stats.windows_checked >= 1 and stats.discrepancies == 0
    # Someone sends an extra event to Stripe outside our reporting: reconciliation must catch it.
    sc = stripe_gateway.client()
    customer = BillingAccount.all_tenants_unsafe.get(organization=org).stripe_customer_id
    sc.v1.billing.meter_events.create(params={
        "event_name": StripeSetup.objects.get().meter_event_name, "identifier": "rogue-1",
        "payload": {"stripe_customer_id": customer, "value": "999"}, "timestamp": int(past.timestamp())})
    call_command("reconcile_billing", verbosity=0)
    gap = Discrepancy.all_tenants_unsafe.get()
    assert (gap.ledger_micros, gap.stripe_micros) == (4_000, 4_999)


# --- Webhooks --------------------------------------------------------------------------------------------------------

def _post_event(client, event, *, secret=stripe_emu.WEBHOOK_SECRET, t=None):
    payload = json.dumps(event)
    return client.post(reverse("stripe-webhook"), data=payload, content_type="application/json",
                       HTTP_STRIPE_SIGNATURE=stripe_emu.sign(payload, secret=secret, t=t))


@pytest.fixture
def customer(stripe_on, api_key):
    org = api_key[0].organization
    account = stripe_gateway.ensure_customer(org)
    setup = stripe_gateway.setup()
    return org, account.stripe_customer_id, setup.price_id


def test_forged_or_stale_signatures_change_nothing(client, customer, stripe_on):
    org, cus, price = customer
    event = stripe_emu.subscription_created(stripe_on, cus, price)
    assert _post_event(client, event, secret="whsec_wrong").status_code == 400
    assert _post_event(client, event, t=int(time.time()) - 600).status_code == 400
    assert StripeEvent.objects.count() == 0
    assert BillingAccount.all_tenants_unsafe.get(organization=org).subscription_status == ""


def test_subscription_lifecycle_and_duplicates(client, customer, stripe_on):
    org, cus, price = customer
    created = stripe_emu.subscription_created(stripe_on, cus, price)
    assert _post_event(client, created).status_code == 200
    assert _post_event(client, created).content == b"duplicate"
    assert StripeEvent.objects.count() == 1
    account = BillingAccount.all_tenants_unsafe.get(organization=org)
    assert account.subscription_status == "active" and account.stripe_subscription_id == created["data"]["object"]["id"]


def test_out_of_order_events_keep_the_newest_state(client, customer, stripe_on):
    org, cus, price = customer
    created = stripe_emu.subscription_created(stripe_on, cus, price)
    updated = stripe_emu.subscription_updated(stripe_on, created["data"]["object"]["id"], status="past_due")
    created["created"], updated["created"] = 1_000, 2_000
    _post_event(client, updated)
    _post_event(client, created)  # older, arrives late
    account = BillingAccount.all_tenants_unsafe.get(organization=org)
    assert account.subscription_status == "past_due" and account.past_due_since is not None


def test_invoices_are_mirrored(client, customer, stripe_on, user):
    org, cus, price = customer
    sub = stripe_emu.subscription_created(stripe_on, cus, price)
    _post_event(client, sub)
    invoice = stripe_emu.create_invoice(stripe_on, sub["data"]["object"]["id"], amount_due=1234)
    _post_event(client, stripe_emu.invoice_finalized(stripe_on, invoice["id"]))
    _post_event(client, stripe_emu.invoice_paid(stripe_on, invoice["id"]))
    row = Invoice.objects.for_organization(org).get()
    assert row.status == "paid" and row.amount_due == 1234
    client.force_login(user)
    page = client.get(reverse("billing"))
    assert page.status_code == 200 and row.number.encode() in page.content and b"$12.34" in page.content


def test_unpaid_organizations_are_refused_but_can_still_reach_billing(client, customer, stripe_on, live_url,
                                                                        openai_client, user):
    org, cus, price = customer
    sub = stripe_emu.subscription_created(stripe_on, cus, price)
    _post_event(client, sub)
    _post_event(client, stripe_emu.subscription_updated(stripe_on, sub["data"]["object"]["id"], status="unpaid"))
    import openai

    with pytest.raises(openai.RateLimitError) as info:
        openai_client.images.generate(model="local-preview", prompt="x", size="256x256")
    assert info.value.code == "insufficient_quota" and "unpaid" in info.value.message
    client.force_login(user)
    page = client.get(reverse("billing"))
    assert page.status_code == 200 and b"unpaid" in page.content


def test_free_allowance_before_subscribing(customer, settings, openai_client):
    settings.FREE_TIER_MONTHLY_MICROS = 2_000
    import openai

    for _ in range(2):
        openai_client.images.generate(model="local-preview", prompt="x", size="256x256", response_format="b64_json")
    with pytest.raises(openai.RateLimitError) as info:
        openai_client.images.generate(model="local-preview", prompt="x", size="256x256", response_format="b64_json")
    assert info.value.code == "insufficient_quota"


def test_checkout_and_portal_buttons_redirect_to_stripe(client, customer, user, stripe_on):
    client.force_login(user)
    response = client.post(reverse("billing-checkout"))
    assert response.status_code == 302 and response.url.startswith(stripe_on.url)
    response = client.post(reverse("billing-portal"))
    assert response.status_code == 302 and response.url.startswith(stripe_on.url)


def test_billing_page_without_stripe(client, user, organization):
    client.force_login(user)
    page = client.get(reverse("billing"))
    assert b'data-testid="stripe-off"' in page.content


def test_concurrent_requests_at_the_spend_limit_then_reported_exactly(transactional_db, stripe_on, live_url,
                                                                       api_key, settings):
    """Many concurrent requests against a spend limit, then a reporting pass: the limit holds (overshoot at most one
    request) and Stripe's total equals the ledger's to the micro-dollar."""
    from concurrent.futures import ThreadPoolExecutor

    import openai

    org = api_key[0].organization
    stripe_gateway.setup()
    account = stripe_gateway.ensure_customer(org)
    BillingAccount.all_tenants_unsafe.filter(pk=account.pk).update(subscription_status="active")
    billing_services.set_spend_limit(organization=org, monthly_limit_micros=7_500)

    def one(i):
        client = openai.OpenAI(base_url=f"{live_url}/v1", api_key=api_key[1], max_retries=0)
        try:
            client.images.generate(model="local-preview", prompt=f"p{i}", size="256x256", response_format="b64_json")
            return "ok"
        except openai.RateLimitError as exc:
            return exc.code

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(one, range(20)))
    assert outcomes.count("ok") == 7 and set(outcomes) == {"ok", "insufficient_quota"}
    reporting.report_usage()
    assert _stripe_total(stripe_on, org) == _ledger_total(org) == 7_000


# A subscription's life as Stripe tells it: each step is an event; all carry the same `created` second, as events of
# one checkout do, so their order cannot be read from them.
LIFE = [("created", "incomplete"), ("updated", "active"), ("updated", "past_due"), ("deleted", "canceled")]


def _life_events(stripe_on, cus, price, upto: int) -> list[dict]:
    sub_event = stripe_emu.subscription_created(stripe_on, cus, price)
    sub_id = sub_event["data"]["object"]["id"]
    sub_event["data"]["object"]["status"] = "incomplete"
    events = [sub_event]
    for kind, status in LIFE[1:upto + 1]:
        if kind == "deleted":
            events.append(stripe_emu.subscription_deleted(stripe_on, sub_id))
        else:
            events.append(stripe_emu.subscription_updated(stripe_on, sub_id, status=status))
    if upto == 0:
        stripe_emu.subscription_updated(stripe_on, sub_id, status="incomplete")  # Stripe's state: still incomplete
    for event in events:
        event["created"] = 1_700_000_000
    return events


@pytest.mark.parametrize("earlier, later", [(i, j) for i in range(len(LIFE)) for j in range(len(LIFE)) if i < j])
@pytest.mark.parametrize("order", ["in order", "reversed"])
def test_every_pair_of_subscription_events_in_either_order_ends_at_stripes_state(client, customer, stripe_on,
                                                                               earlier, later, order):
    org, cus, price = customer
    events = _life_events(stripe_on, cus, price, later)
    pair = [events[earlier], events[later]]
    for event in (pair if order == "in order" else reversed(pair)):
        assert _post_event(client, event).status_code == 200
    account = BillingAccount.all_tenants_unsafe.get(organization=org)
    assert account.subscription_status == LIFE[later][1]  # what Stripe says now, whichever arrived last


def test_a_same_second_tie_while_stripe_is_unreachable_is_settled_by_reconciliation(client, customer, stripe_on,
                                                                                  settings):
    org, cus, price = customer
    created, active = _life_events(stripe_on, cus, price, 1)
    real_base = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # Stripe down: only the events' own copies are known
    _post_event(client, active)
    _post_event(client, created)  # same second, older state: cannot be ordered
    account = BillingAccount.all_tenants_unsafe.get(organization=org)
    assert account.subscription_status == "active" and account.subscription_state["_resync"]
    settings.STRIPE_API_BASE = real_base
    from billing.stripe.webhooks import resync_subscriptions

    assert resync_subscriptions() == 1
    account.refresh_from_db()
    assert account.subscription_status == "active" and "_resync" not in account.subscription_state
