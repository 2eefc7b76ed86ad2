"""Routing and failover: health-ordered candidates, circuit breaker, price order, explicit provider, audit trail."""
import asyncio
import time

import openai
import pytest

from generation import catalog
from generation.models import ProviderAttempt
from generation.pipeline import health, router
from generation.providers import base as pb
from tests.test_api_errors import ScriptedProvider, inject  # noqa: F401  (fixture)

SDXL = catalog.get_model("sdxl-1.0")  # served by stability and replicate
REQ = pb.ImageRequest(model="sdxl-1.0", prompt="x", n=1, size="1024x1024", quality="standard")


async def _call(provider, request):
    return await provider.run(request)


def _route(providers, book, explicit=None, attempts=None):
    attempts = [] if attempts is None else attempts
    result, name = asyncio.run(router.route(spec=SDXL, request=REQ, providers=providers, health=book,
                                            explicit=explicit, call=_call, attempts=attempts))
    return name, attempts


@pytest.fixture
def book():
    b = health.HealthBook()
    asyncio.run(b.reset())
    return b


def test_cheapest_healthy_provider_first(book):
    providers = {"stability": ScriptedProvider("stability", cost=9000),
                 "replicate": ScriptedProvider("replicate", cost=4000)}
    name, attempts = _route(providers, book)
    assert name == "replicate" and [a.provider for a in attempts] == ["replicate"]


@pytest.mark.parametrize("fault", [pb.UpstreamUnavailable("503"), pb.UpstreamTimeout("slow"),
                                   pb.UpstreamRateLimited("429")])
def test_retryable_failure_fails_over(book, fault):
    providers = {"stability": ScriptedProvider("stability", cost=9000),
                 "replicate": ScriptedProvider("replicate", cost=4000, fail=fault)}
    name, attempts = _route(providers, book)
    assert name == "stability"
    assert [(a.provider, a.status) for a in attempts] == [("replicate", "failed"), ("stability", "succeeded")]
    assert attempts[0].error_type == type(fault).__name__


@pytest.mark.parametrize("fault", [pb.ContentRefused("nope"), pb.UpstreamInvalidRequest("bad width")])
def test_refusals_and_validation_errors_do_not_fail_over(book, fault):
    second = ScriptedProvider("stability", cost=9000)
    providers = {"stability": second, "replicate": ScriptedProvider("replicate", cost=4000, fail=fault)}
    attempts = []
    with pytest.raises(type(fault)):
        _route(providers, book, attempts=attempts)
    assert second.calls == [] and len(attempts) == 1


def test_explicit_provider_is_honoured_even_when_dearer_or_open(book):
    providers = {"stability": ScriptedProvider("stability", cost=9000),
                 "replicate": ScriptedProvider("replicate", cost=4000)}
    assert _route(providers, book, explicit="stability")[0] == "stability"
    for _ in range(health.FAILURE_THRESHOLD):
        asyncio.run(book.record("stability", ok=False, latency_ms=10))
    assert _route(providers, book, explicit="stability")[0] == "stability"
    with pytest.raises(pb.UpstreamUnavailable):
        _route({"replicate": providers["replicate"]}, book, explicit="stability")


def test_one_failure_degrades_a_provider_behind_a_healthy_one(book):
    flaky = ScriptedProvider("replicate", cost=1, fail=pb.UpstreamUnavailable("down"))
    steady = ScriptedProvider("stability", cost=9000)
    providers = {"stability": steady, "replicate": flaky}
    assert _route(providers, book)[0] == "stability"  # cheaper replicate tried first, failed over
    flaky.fail = None
    assert _route(providers, book)[0] == "stability"  # replicate is now degraded: the healthy one goes first
    assert len(flaky.calls) == 1


def test_circuit_opens_after_consecutive_failures_then_half_opens(book, monkeypatch):
    flaky = ScriptedProvider("replicate", cost=1, fail=pb.UpstreamUnavailable("down"))
    for _ in range(health.FAILURE_THRESHOLD):
        with pytest.raises(pb.UpstreamUnavailable):
            _route({"replicate": flaky}, book)
    assert len(flaky.calls) == health.FAILURE_THRESHOLD
    states = asyncio.run(book.read(["replicate"]))
    assert states["replicate"].state(time.time()) == health.OPEN
    with pytest.raises(router.NoHealthyProvider):  # open: refused without calling the upstream
        _route({"replicate": flaky}, book)
    assert len(flaky.calls) == health.FAILURE_THRESHOLD
    steady = ScriptedProvider("stability", cost=9000)
    assert _route({"replicate": flaky, "stability": steady}, book)[0] == "stability"
    # After the cooldown one trial goes through; its success closes the circuit.
    later = time.time() + health.COOLDOWN + 1
    monkeypatch.setattr(router.time, "time", lambda: later)
    monkeypatch.setattr(health.time, "time", lambda: later)
    flaky.fail = None
    assert _route({"replicate": flaky}, book)[0] == "replicate"
    assert asyncio.run(book.read(["replicate"]))["replicate"].state(later) == health.CLOSED


def test_all_circuits_open_is_a_503_kind_of_error(book):
    providers = {"stability": ScriptedProvider("stability"), "replicate": ScriptedProvider("replicate")}
    for name in providers:
        for _ in range(health.FAILURE_THRESHOLD):
            asyncio.run(book.record(name, ok=False, latency_ms=5))
    with pytest.raises(router.NoHealthyProvider):
        _route(providers, book)


def test_health_is_shared_across_processes_through_redis(settings):
    assert settings.REDIS_URL, "the suite runs with Redis"
    a, b = health.HealthBook(), health.HealthBook()  # two processes' views of the same Redis
    asyncio.run(a.reset())
    for _ in range(health.FAILURE_THRESHOLD):
        asyncio.run(a.record("stability", ok=False, latency_ms=100))
    seen = asyncio.run(b.read(["stability"]))["stability"]
    assert seen.consecutive_failures == health.FAILURE_THRESHOLD and seen.state(time.time()) == health.OPEN
    assert seen.error_rate > 0.5 and seen.latency_ms == pytest.approx(100)


def test_concurrent_records_are_not_lost(book):
    async def many():
        await asyncio.gather(*[book.record("replicate", ok=False, latency_ms=1) for _ in range(50)])
    asyncio.run(many())
    assert asyncio.run(book.read(["replicate"]))["replicate"].consecutive_failures == 50


def test_failover_through_the_api_records_every_attempt(openai_client, api_key, inject):  # noqa: F811
    inject(ScriptedProvider("replicate", cost=1, fail=pb.UpstreamUnavailable("HTTP 502 from replicate")))
    from generation import providers as registry_module

    registry_module._registry["stability"] = ScriptedProvider("stability", cost=9000)
    raw = openai_client.images.with_raw_response.generate(model="sdxl-1.0", prompt="failover",
                                                          response_format="b64_json")
    assert raw.headers["x-provider"] == "stability"
    request_id = raw.headers["x-request-id"]
    rows = list(ProviderAttempt.objects.for_organization(api_key[0].organization).filter(request_id=request_id))
    assert [(r.provider, r.status) for r in rows] == [("replicate", "failed"), ("stability", "succeeded")]
    assert "HTTP 502" in rows[0].error


def test_every_provider_failing_ends_in_502_and_costs_nothing(openai_client, api_key, inject):  # noqa: F811
    inject(ScriptedProvider("replicate", fail=pb.UpstreamUnavailable("down")))
    from generation import providers as registry_module

    registry_module._registry["stability"] = ScriptedProvider("stability", fail=pb.UpstreamTimeout("slow"))
    with pytest.raises(openai.InternalServerError) as info:
        openai_client.images.generate(model="sdxl-1.0", prompt="x")
    assert info.value.status_code in (502, 504)
    from billing.models import LedgerEntry

    row = LedgerEntry.objects.for_organization(api_key[0].organization).get()
    assert row.cost_micros == 0 and row.status == "failed"
