"""The Stripe emulator, driven through the real stripe-python StripeClient (no database)."""
import json
import threading
import time
import types

import pytest
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.emulators import stripe as stripe_emu
from tests.emulators.base import Fault, serve

DAY = 86400


@pytest.fixture(scope="module")
def emu():
    with stripe_emu.emulator() as em:
        yield em


@pytest.fixture(autouse=True)
def _clean(emu):
    emu.reset()
    yield
    emu.reset()


def make_client(emu, *, retries: int = 0, timeout: float = 5.0, api_key: str = stripe_emu.API_KEY):
    return stripe.StripeClient(api_key, base_addresses={"api": emu.url, "meter_events": emu.url},
                               max_network_retries=retries, http_client=stripe.RequestsClient(timeout=timeout))


@pytest.fixture
def client(emu):
    return make_client(emu)


def setup_billing(client, *, customers: int = 1, event_name: str = "image_generated"):
    meter = client.v1.billing.meters.create({
        "display_name": "Images", "event_name": event_name, "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
        "value_settings": {"event_payload_key": "value"}})
    product = client.v1.products.create({"name": "Imagegate usage"})
    price = client.v1.prices.create({
        "currency": "usd", "product": product.id, "unit_amount_decimal": "0.0001", "lookup_key": "imagegate_usage",
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id}})
    custs = [client.v1.customers.create({"email": f"c{i}@example.com", "metadata": {"org": str(i)}})
             for i in range(customers)]
    return types.SimpleNamespace(meter=meter, product=product, price=price, customer=custs[0], customers=custs)


def send(client, customer, value, identifier, *, timestamp=None, event_name="image_generated", options=None):
    params = {"event_name": event_name, "identifier": identifier,
              "payload": {"stripe_customer_id": customer, "value": str(value)}}
    if timestamp is not None:
        params["timestamp"] = timestamp
    return client.v1.billing.meter_events.create(params, options or {})


def meter_event_posts(emu):
    return [r for r in emu.requests if r.method == "POST" and r.path == "/v1/billing/meter_events"]


# ------------------------------------------------------------------------------------------------ objects


def test_catalogue_objects_and_lookups(emu, client):
    b = setup_billing(client)
    assert b.meter.id.startswith("mtr_test_") and b.meter.object == "billing.meter" and b.meter.status == "active"
    assert b.meter.default_aggregation.formula == "sum" and b.meter.livemode is False
    assert client.v1.billing.meters.retrieve(b.meter.id).event_name == "image_generated"
    assert [m.id for m in client.v1.billing.meters.list().data] == [b.meter.id]
    assert b.price.recurring.usage_type == "metered" and b.price.recurring.meter == b.meter.id
    assert b.price.unit_amount_decimal in ("0.0001", __import__("decimal").Decimal("0.0001"))
    assert b.price.lookup_key == "imagegate_usage" and b.price.type == "recurring"

    found = client.v1.prices.list({"lookup_keys": ["imagegate_usage"], "expand": ["data.product"]})
    assert [p.id for p in found.data] == [b.price.id] and found.data[0].product.name == "Imagegate usage"
    assert [p.id for p in client.v1.prices.list({"product": b.product.id}).data] == [b.price.id]
    assert client.v1.prices.list({"lookup_keys": ["nope"]}).data == []
    assert [p.id for p in client.v1.products.list().data] == [b.product.id]

    cus = client.v1.customers.retrieve(b.customer.id)
    assert cus.id.startswith("cus_") and cus.email == "c0@example.com" and cus.metadata["org"] == "0"
    updated = client.v1.customers.update(b.customer.id, {"name": "Acme", "metadata": {"plan": "pro"}})
    assert updated.name == "Acme" and updated.metadata["plan"] == "pro" and updated.metadata["org"] == "0"
    assert [c.id for c in client.v1.customers.list({"email": "c0@example.com"}).data] == [b.customer.id]

    # event_name unique among active meters; a lookup key belongs to one price unless transferred
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meters.create({"display_name": "Again", "event_name": "image_generated",
                                         "default_aggregation": {"formula": "sum"}})
    assert exc.value.param == "event_name"
    with pytest.raises(stripe.InvalidRequestError, match="already uses that lookup key"):
        client.v1.prices.create({"currency": "usd", "product": b.product.id, "unit_amount_decimal": "0.0002",
                                 "lookup_key": "imagegate_usage",
                                 "recurring": {"interval": "month", "usage_type": "metered", "meter": b.meter.id}})
    moved = client.v1.prices.create({"currency": "usd", "product": b.product.id, "unit_amount_decimal": "0.0002",
                                     "lookup_key": "imagegate_usage", "transfer_lookup_key": True,
                                     "recurring": {"interval": "month", "usage_type": "metered",
                                                   "meter": b.meter.id}})
    assert [p.id for p in client.v1.prices.list({"lookup_keys": ["imagegate_usage"]}).data] == [moved.id]
    # metered prices need a meter (usage records are gone); unknown parameters are refused; 12 decimals at most
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create({"currency": "usd", "product": b.product.id, "unit_amount_decimal": "1",
                                 "recurring": {"interval": "month", "usage_type": "metered"}})
    assert exc.value.param == "recurring[meter]"
    with pytest.raises(stripe.InvalidRequestError, match="Received unknown parameter: recurring\\[aggregate_usage\\]"):
        client.v1.prices.create({"currency": "usd", "product": b.product.id, "unit_amount_decimal": "1",
                                 "recurring": {"interval": "month", "usage_type": "metered", "meter": b.meter.id,
                                               "aggregate_usage": "sum"}})
    with pytest.raises(stripe.InvalidRequestError, match="12 decimal places"):
        client.v1.prices.create({"currency": "usd", "product": b.product.id,
                                 "unit_amount_decimal": "0.0000000000001",
                                 "recurring": {"interval": "month", "usage_type": "metered", "meter": b.meter.id}})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.retrieve("cus_missing")
    assert exc.value.http_status == 404 and exc.value.code == "resource_missing"


def test_auth_and_unknown_url(emu):
    with pytest.raises(stripe.AuthenticationError, match="Invalid API Key provided"):
        make_client(emu, api_key="sk_test_wrong_key_123456").v1.customers.list()
    with pytest.raises(stripe.InvalidRequestError, match="Unrecognized request URL"):
        make_client(emu).raw_request("get", "/v1/usage_records")


def test_default_http_client_works(emu):
    """The billing code may not pass an http_client: the SDK's default one talks to the emulator too."""
    client = stripe.StripeClient(stripe_emu.API_KEY, base_addresses={"api": emu.url, "meter_events": emu.url},
                                 max_network_retries=1)
    assert client.v1.customers.create({"email": "x@example.com"}).email == "x@example.com"


# ------------------------------------------------------------------------------------------------ meter events


def test_meter_events_accepted_and_counted(emu, client):
    b = setup_billing(client, customers=2)
    ev = send(client, b.customer.id, 1500, "gen_1")
    assert ev.object == "billing.meter_event" and ev.identifier == "gen_1" and ev.livemode is False
    assert ev.payload["value"] == "1500" and ev.payload["stripe_customer_id"] == b.customer.id
    assert abs(ev.timestamp - time.time()) < 5
    send(client, b.customer.id, 500, "gen_2")
    send(client, b.customers[1].id, 7, "gen_3")

    st = stripe_emu.store(emu)
    assert st.total(customer=b.customer.id) == 2000
    assert st.total(meter=b.meter.id) == 2007 and st.total(meter="image_generated") == 2007
    assert st.totals_by_customer() == {b.customer.id: 2000, b.customers[1].id: 7}
    assert st.totals_by_meter(customer=b.customers[1].id) == {b.meter.id: 7}
    assert [e["identifier"] for e in st.events()] == ["gen_1", "gen_2", "gen_3"]
    assert st.call_count("meter_events") == 3
    # every POST carried an Idempotency-Key and the pinned Stripe-Version
    posts = meter_event_posts(emu)
    assert all(r.headers.get("idempotency-key") and r.headers.get("stripe-version") for r in posts)
    assert len({r.headers["idempotency-key"] for r in posts}) == 3
    assert b"payload[stripe_customer_id]=" in posts[0].body
    # the HTTP inspection view agrees
    import httpx
    usage = httpx.get(f"{emu.url}/_emulator/usage", params={"customer": b.customer.id}).json()
    assert usage["total"] == 2000


def test_duplicate_identifier_rejected_like_stripe(emu, client):
    b = setup_billing(client)
    send(client, b.customer.id, 10, "gen_dup")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        send(client, b.customer.id, 10, "gen_dup")
    err = exc.value
    assert err.http_status == 400 and "already exists" in err.user_message
    assert err.user_message == "An event already exists with identifier gen_dup."
    assert err.headers["stripe-should-retry"] == "false"
    assert err.json_body["error"]["type"] == "invalid_request_error"
    assert stripe_emu.store(emu).total() == 10
    assert stripe_emu.store(emu).rejections["duplicate"] == 1


def test_meter_event_validation(emu, client):
    b = setup_billing(client)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        send(client, b.customer.id, 1, "a", event_name="no_such_meter")
    assert exc.value.param == "event_name"
    with pytest.raises(stripe.InvalidRequestError, match="No such customer: 'cus_ghost'") as exc:
        send(client, "cus_ghost", 1, "b")
    assert exc.value.code == "resource_missing"
    for bad in ("1.5", "abc", ""):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            send(client, b.customer.id, bad, f"c{bad}")
        assert exc.value.param == "payload[value]"
    with pytest.raises(stripe.InvalidRequestError, match="at most 100 characters") as exc:
        send(client, b.customer.id, 1, "x" * 101)
    assert exc.value.param == "identifier"
    send(client, b.customer.id, 1, "x" * 100)
    with pytest.raises(stripe.InvalidRequestError, match="Missing required param: event_name"):
        client.v1.billing.meter_events.create({"payload": {"stripe_customer_id": b.customer.id, "value": "1"}})
    # a deactivated meter no longer takes events
    client.v1.billing.meters.deactivate(b.meter.id)
    with pytest.raises(stripe.InvalidRequestError):
        send(client, b.customer.id, 1, "after_deactivate")
    assert stripe_emu.store(emu).total() == 1


def test_timestamp_window_35_days_past_5_minutes_future(emu, client):
    b = setup_billing(client)
    now = 1_800_000_000
    emu.state["now"] = now
    send(client, b.customer.id, 1, "past_ok", timestamp=now - 35 * DAY + 60)
    send(client, b.customer.id, 1, "future_ok", timestamp=now + 299)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        send(client, b.customer.id, 1, "past_bad", timestamp=now - 35 * DAY - 1)
    assert exc.value.code == "timestamp_too_far_in_past" and exc.value.param == "timestamp"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        send(client, b.customer.id, 1, "future_bad", timestamp=now + 301)
    assert exc.value.code == "timestamp_in_future"
    # a 36-day outage: usage recorded at the start can no longer be reported
    emu.state["now"] = now + 36 * DAY
    with pytest.raises(stripe.InvalidRequestError, match="35 days"):
        send(client, b.customer.id, 1, "stale", timestamp=now)
    assert stripe_emu.store(emu).total() == 2


def test_one_concurrent_call_per_customer_per_meter(emu, client):
    b = setup_billing(client, customers=6)
    emu.state["meter_event_delay"] = 0.3
    emu.state["rate_limit"] = None

    def burst(customers, tag):
        barrier = threading.Barrier(len(customers))
        results = [None] * len(customers)

        def worker(i, customer):
            barrier.wait()
            try:
                send(client, customer, 1, f"{tag}-{customer}-{i}")
                results[i] = "ok"
            except stripe.RateLimitError as exc:
                results[i] = exc
        threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(customers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        return results

    same = burst([b.customer.id] * 6, "same")
    limited = [r for r in same if isinstance(r, stripe.RateLimitError)]
    assert same.count("ok") >= 1 and limited, same
    assert same.count("ok") + len(limited) == 6
    assert limited[0].http_status == 429 and limited[0].error.code == "rate_limit"
    assert "stripe-should-retry" not in limited[0].headers
    st = stripe_emu.store(emu)
    assert st.total(customer=b.customer.id) == same.count("ok")
    assert st.max_concurrency(customer=b.customer.id, meter=b.meter.id) >= 2
    assert st.rejections["concurrency"] == len(limited)

    others = burst([c.id for c in b.customers], "others")  # six different customers at once: no collisions
    assert others == ["ok"] * 6
    assert all(st.max_concurrency(customer=c.id) == 1 for c in b.customers[1:])


def test_global_test_mode_rate_limit(emu, client):
    emu.state["rate_limit"] = 3
    outcomes = []
    for _ in range(6):
        try:
            client.v1.customers.list()
            outcomes.append("ok")
        except stripe.RateLimitError as exc:
            outcomes.append(exc)
    assert outcomes[:3] == ["ok"] * 3 and isinstance(outcomes[3], stripe.RateLimitError)
    assert outcomes[3].error.code == "rate_limit" and "rate limit" in outcomes[3].user_message
    time.sleep(1.05)
    client.v1.customers.list()


# ------------------------------------------------------------------------------------------------ summaries


def test_event_summaries_sum_grouping_alignment_and_cancellation(emu, client):
    b = setup_billing(client)
    day = 1_800_000_000 // DAY * DAY
    emu.state["now"] = day + 12 * 3600
    cus, mtr = b.customer.id, b.meter.id
    send(client, cus, 5, "h1a", timestamp=day + 3600 + 10)
    send(client, cus, 7, "h1b", timestamp=day + 3600 + 100)
    send(client, cus, 11, "h3", timestamp=day + 3 * 3600)
    send(client, cus, 13, "yesterday", timestamp=day - DAY + 5)
    other = client.v1.customers.create({"email": "other@example.com"})
    send(client, other.id, 1000, "other", timestamp=day + 3600)
    summaries = client.v1.billing.meters.event_summaries

    whole = summaries.list(mtr, {"customer": cus, "start_time": day, "end_time": day + DAY})
    assert whole.object == "list" and len(whole.data) == 1
    s = whole.data[0]
    assert s.object == "billing.meter_event_summary" and s.aggregated_value == 23.0
    assert isinstance(s.aggregated_value, float) and (s.start_time, s.end_time, s.meter) == (day, day + DAY, mtr)
    assert s.id.startswith("mtrusg_test_")
    # end is exclusive, start inclusive
    assert summaries.list(mtr, {"customer": cus, "start_time": day + 3600,
                                "end_time": day + 3 * 3600}).data[0].aggregated_value == 12.0
    # an empty range still has one summary, valued 0
    assert summaries.list(mtr, {"customer": cus, "start_time": day + 6 * 3600,
                                "end_time": day + 7 * 3600}).data[0].aggregated_value == 0.0

    hourly = summaries.list(mtr, {"customer": cus, "start_time": day, "end_time": day + DAY,
                                  "value_grouping_window": "hour"})
    assert [(x.start_time - day, x.end_time - day, x.aggregated_value) for x in hourly.data] == [
        (3 * 3600, 4 * 3600, 11.0), (3600, 7200, 12.0)]
    daily = summaries.list(mtr, {"customer": cus, "start_time": day - DAY, "end_time": day + DAY,
                                 "value_grouping_window": "day"})
    assert [(x.start_time, x.aggregated_value) for x in daily.data] == [(day, 23.0), (day - DAY, 13.0)]
    # pagination: stripe-python's auto-paging walks every page
    page = summaries.list(mtr, {"customer": cus, "start_time": day, "end_time": day + DAY,
                                "value_grouping_window": "hour", "limit": 1})
    assert len(page.data) == 1 and page.has_more is True
    assert [x.aggregated_value for x in page.auto_paging_iter()] == [11.0, 12.0]

    for bad in ({"start_time": day + 30, "end_time": day + DAY},
                {"start_time": day, "end_time": day + DAY - 1}):
        with pytest.raises(stripe.InvalidRequestError, match="minute boundaries"):
            summaries.list(mtr, {"customer": cus, **bad})
    with pytest.raises(stripe.InvalidRequestError, match="hour boundaries"):
        summaries.list(mtr, {"customer": cus, "start_time": day + 60, "end_time": day + DAY,
                             "value_grouping_window": "hour"})
    with pytest.raises(stripe.InvalidRequestError, match="Missing required param: customer"):
        summaries.list(mtr, {"start_time": day, "end_time": day + DAY})

    # a cancelled event stops counting; cancellation is possible within 24 h of receipt only, once
    adj = client.v1.billing.meter_event_adjustments.create({"event_name": "image_generated", "type": "cancel",
                                                            "cancel": {"identifier": "h1b"}})
    assert adj.object == "billing.meter_event_adjustment" and adj.cancel.identifier == "h1b"
    assert summaries.list(mtr, {"customer": cus, "start_time": day,
                                "end_time": day + DAY}).data[0].aggregated_value == 16.0
    assert stripe_emu.store(emu).total(customer=cus) == 29
    with pytest.raises(stripe.InvalidRequestError, match="already been cancelled"):
        client.v1.billing.meter_event_adjustments.create({"event_name": "image_generated", "type": "cancel",
                                                          "cancel": {"identifier": "h1b"}})
    emu.state["now"] = day + 12 * 3600 + DAY + 1
    with pytest.raises(stripe.InvalidRequestError, match="24 hours"):
        client.v1.billing.meter_event_adjustments.create({"event_name": "image_generated", "type": "cancel",
                                                          "cancel": {"identifier": "h3"}})


# ------------------------------------------------------------------------------------------------ idempotency


def test_idempotent_replay_and_mismatch(emu, client):
    b = setup_billing(client)
    first = send(client, b.customer.id, 3, "idem_1", options={"idempotency_key": "key-1"})
    again = send(client, b.customer.id, 3, "idem_1", options={"idempotency_key": "key-1"})
    assert again.identifier == first.identifier and again.created == first.created
    assert again.last_response.headers["idempotent-replayed"] == "true"
    assert again.last_response.idempotency_key == "key-1"
    assert "idempotent-replayed" not in first.last_response.headers
    with pytest.raises(stripe.IdempotencyError, match="same parameters"):
        send(client, b.customer.id, 4, "idem_1", options={"idempotency_key": "key-1"})
    assert stripe_emu.store(emu).total() == 3 and len(stripe_emu.store(emu).events()) == 1


# ------------------------------------------------------------------------------------------------ faults


def test_injected_faults_surface_as_stripe_errors(emu, client):
    b = setup_billing(client)
    emu.faults.set("meter_events", Fault(status=429, times=1))
    with pytest.raises(stripe.RateLimitError) as exc:
        send(client, b.customer.id, 1, "f1")
    assert exc.value.http_status == 429 and exc.value.error.code == "rate_limit"

    emu.faults.set("meter_events", Fault(status=500, times=1))
    with pytest.raises(stripe.APIError) as exc:
        send(client, b.customer.id, 1, "f2")
    assert exc.value.http_status == 500 and exc.value.headers["stripe-should-retry"] == "true"
    emu.faults.set("*", Fault(status=503, times=1))
    with pytest.raises(stripe.APIError):
        client.v1.customers.list()

    quick = make_client(emu, timeout=0.4)
    emu.faults.set("event_summaries", Fault(delay=1.0, times=1))
    with pytest.raises(stripe.APIConnectionError):
        quick.v1.billing.meters.event_summaries.list(b.meter.id, {"customer": b.customer.id, "start_time": 0,
                                                                  "end_time": 60})
    emu.faults.set("meter_events", Fault(delay=1.0, times=1))
    with pytest.raises(stripe.APIConnectionError):
        send(quick, b.customer.id, 1, "f3")
    time.sleep(0.9)  # the abandoned call wakes, sees its client gone, and executes nothing
    assert stripe_emu.store(emu).total() == 0
    send(client, b.customer.id, 1, "f3")  # nothing was recorded for f3: the identifier is still free
    assert stripe_emu.store(emu).total() == 1


def test_sdk_retries_5xx_and_timeouts_with_the_same_idempotency_key(emu, client):
    b = setup_billing(client)
    retrying = make_client(emu, retries=2, timeout=0.5)

    emu.faults.set("meter_events", Fault(status=500, times=1))
    send(retrying, b.customer.id, 5, "r1")
    posts = meter_event_posts(emu)
    assert len(posts) == 2 and posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]

    emu.requests.clear()
    emu.faults.set("meter_events", Fault(delay=1.2, times=1))
    send(retrying, b.customer.id, 7, "r2")
    posts = meter_event_posts(emu)
    assert len(posts) == 2 and posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]

    st = stripe_emu.store(emu)
    assert [(e["identifier"], e["value"]) for e in st.events()] == [("r1", 5), ("r2", 7)]


def test_process_then_drop_records_the_event_but_the_client_times_out(emu, client):
    b = setup_billing(client)
    quick = make_client(emu, timeout=0.5)
    emu.faults.set("meter_events", Fault(kind="process_then_drop", times=1))
    with pytest.raises(stripe.APIConnectionError):
        send(quick, b.customer.id, 9, "lost_answer")
    st = stripe_emu.store(emu)
    assert st.total(customer=b.customer.id) == 9  # Stripe committed it
    # a later re-send (new request, new Idempotency-Key) learns it was delivered
    with pytest.raises(stripe.InvalidRequestError, match="already exists") as exc:
        send(client, b.customer.id, 9, "lost_answer")
    assert exc.value.headers["stripe-should-retry"] == "false"

    # with SDK retries the same key is replayed: success, still one event
    retrying = make_client(emu, retries=1, timeout=0.5)
    emu.faults.set("meter_events", Fault(kind="process_then_drop", times=1))
    ev = send(retrying, b.customer.id, 4, "dropped_then_retried")
    assert ev.last_response.headers["idempotent-replayed"] == "true"
    assert st.total(customer=b.customer.id) == 13


def test_process_then_500(emu, client):
    b = setup_billing(client)
    emu.faults.set("meter_events", Fault(kind="process_then_500", times=1))
    with pytest.raises(stripe.APIError) as exc:
        send(client, b.customer.id, 2, "p500")
    assert exc.value.http_status == 500
    assert stripe_emu.store(emu).total() == 2
    emu.faults.set("meter_events", Fault(kind="process_then_500", times=1))
    ev = send(make_client(emu, retries=1), b.customer.id, 3, "p500_retried")
    assert ev.last_response.headers["idempotent-replayed"] == "true"
    assert stripe_emu.store(emu).total() == 5 and len(meter_event_posts(emu)) == 3


# ------------------------------------------------------------------------------------------------ checkout


def test_checkout_and_portal_sessions(emu, client):
    b = setup_billing(client)
    session = client.v1.checkout.sessions.create({
        "mode": "subscription", "customer": b.customer.id, "line_items": [{"price": b.price.id}],
        "success_url": "https://app.example/ok", "cancel_url": "https://app.example/cancel",
        "client_reference_id": "org_1", "subscription_data": {"metadata": {"org": "org_1"}}})
    assert session.id.startswith("cs_test_") and session.object == "checkout.session"
    assert session.url.startswith(emu.url + "/c/pay/") and session.status == "open"
    assert session.mode == "subscription" and session.customer == b.customer.id
    assert client.v1.checkout.sessions.retrieve(session.id, {"expand": ["line_items"]}).line_items.data[0] \
        .price.id == b.price.id
    import httpx
    assert httpx.get(session.url).status_code == 200

    with pytest.raises(stripe.InvalidRequestError, match="Quantity should not be specified") as exc:
        client.v1.checkout.sessions.create({"mode": "subscription", "customer": b.customer.id,
                                            "line_items": [{"price": b.price.id, "quantity": 1}],
                                            "success_url": "https://app.example/ok"})
    assert exc.value.param == "line_items[0][quantity]"
    with pytest.raises(stripe.InvalidRequestError, match="only specify one of"):
        client.v1.checkout.sessions.create({"mode": "subscription", "customer": b.customer.id,
                                            "customer_email": "a@b.c", "line_items": [{"price": b.price.id}]})

    portal = client.v1.billing_portal.sessions.create({"customer": b.customer.id,
                                                       "return_url": "https://app.example/billing"})
    assert portal.object == "billing_portal.session" and portal.url.startswith(emu.url + "/p/session/")
    assert portal.return_url == "https://app.example/billing"
    with pytest.raises(stripe.InvalidRequestError, match="No such customer"):
        client.v1.billing_portal.sessions.create({"customer": "cus_nope"})


# ------------------------------------------------------------------------------------------------ webhooks


def test_webhook_helpers_objects_and_signatures(emu, client):
    b = setup_billing(client)
    session = client.v1.checkout.sessions.create({
        "mode": "subscription", "customer": b.customer.id, "line_items": [{"price": b.price.id}],
        "success_url": "https://app.example/ok", "subscription_data": {"metadata": {"org": "org_1"}}})
    created, completed = stripe_emu.complete_checkout(emu, session.id)
    assert completed["type"] == "checkout.session.completed" and created["type"] == "customer.subscription.created"
    cs = completed["data"]["object"]
    assert cs["status"] == "complete" and cs["customer"] == b.customer.id and cs["subscription"]
    sub = client.v1.subscriptions.retrieve(cs["subscription"])
    assert sub.status == "active" and sub.customer == b.customer.id and sub.metadata["org"] == "org_1"
    item = sub["items"].data[0]
    assert item.price.id == b.price.id and item.quantity is None and item.current_period_end > item.current_period_start
    assert [s.id for s in client.v1.subscriptions.list({"customer": b.customer.id}).data] == [sub.id]
    assert client.v1.checkout.sessions.retrieve(session.id).subscription == sub.id

    # usage in the period becomes the invoice: 25,000 units × 0.0001 ¢ = 2.5 ¢ → 3 ¢ (half-up)
    send(client, b.customer.id, 20_000, "u1")
    send(client, b.customer.id, 5_000, "u2")
    inv = stripe_emu.create_invoice(emu, sub.id, period_start=item.current_period_start,
                                    period_end=item.current_period_start + 3600)
    assert inv["amount_due"] == 3 and inv["lines"]["data"][0]["quantity"] == 25_000
    finalized = stripe_emu.invoice_finalized(emu, inv["id"])
    fin = finalized["data"]["object"]
    assert fin["status"] == "open" and fin["hosted_invoice_url"].startswith(emu.url)
    failed = stripe_emu.invoice_payment_failed(emu, inv["id"])
    assert failed["type"] == "invoice.payment_failed" and client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    paid = stripe_emu.invoice_paid(emu, inv["id"])
    got = client.v1.invoices.retrieve(inv["id"])
    assert got.status == "paid" and got.amount_paid == 3 and got.customer == b.customer.id
    assert got.parent.subscription_details.subscription == sub.id
    assert got.lines.data[0].pricing.price_details.price == b.price.id
    assert (got.period_start, got.period_end) == (item.current_period_start, item.current_period_start + 3600)
    assert [i.id for i in client.v1.invoices.list({"subscription": sub.id}).data] == [inv["id"]]
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    updated = stripe_emu.subscription_updated(emu, sub.id, cancel_at_period_end=True)
    assert updated["data"]["previous_attributes"] == {"cancel_at_period_end": False}
    deleted = stripe_emu.subscription_deleted(emu, sub.id)
    assert deleted["data"]["object"]["status"] == "canceled"
    assert client.v1.events.retrieve(paid["id"]).type == "invoice.paid"

    # signatures: verified by stripe-python; forged and stale ones are refused
    payload = json.dumps(paid)
    event = stripe.Webhook.construct_event(payload, stripe_emu.sign(payload), stripe_emu.WEBHOOK_SECRET)
    assert event.type == "invoice.paid" and event.data.object.id == inv["id"]
    assert client.construct_event(payload, stripe_emu.sign(payload), stripe_emu.WEBHOOK_SECRET).id == paid["id"]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stripe_emu.sign(payload, secret="whsec_forged"),
                                       stripe_emu.WEBHOOK_SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stripe_emu.sign(payload, t=int(time.time()) - 301),
                                       stripe_emu.WEBHOOK_SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload + " ", stripe_emu.sign(payload), stripe_emu.WEBHOOK_SECRET)


def test_deliver_posts_a_signed_event(emu, client):
    received = []

    async def hook(request: Request):
        body = await request.body()
        try:
            event = stripe.Webhook.construct_event(body, request.headers.get("stripe-signature"),
                                                   stripe_emu.WEBHOOK_SECRET)
        except stripe.SignatureVerificationError:
            return JSONResponse({"ok": False}, status_code=400)
        received.append(event.id)
        return JSONResponse({"ok": True})

    b = setup_billing(client)
    event = stripe_emu.subscription_created(emu, b.customer.id, b.price.id)
    with serve(Starlette(routes=[Route("/webhook", hook, methods=["POST"])])) as receiver:
        url = receiver.url + "/webhook"
        assert stripe_emu.deliver(url, event).status_code == 200
        assert stripe_emu.deliver(url, event, secret="whsec_wrong").status_code == 400
        assert stripe_emu.deliver(url, event, t=int(time.time()) - 600).status_code == 400
    assert received == [event["id"]]
