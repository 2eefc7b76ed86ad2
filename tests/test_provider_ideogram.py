"""IdeogramProvider against the Ideogram emulator over loopback: the shared aiohttp transport, no mocks, no database.

Covers the multipart request (Api-Key, resolution, rendering speed from our quality, num_images, seed, style_type),
the short-lived image links downloaded at once with a size cap and without our key, refusals (422 and
is_image_safe false), 429 with Retry-After, and every other error mapping."""
import asyncio

import pytest

from billing.price_list import PRICE_LIST
from generation import catalog
from generation.providers import ideogram as adapter
from generation.providers.base import (
    ContentRefused,
    ImageRequest,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from generation.providers.ideogram import IdeogramProvider
from tests.emulators.base import Fault, free_port, make_png
from tests.emulators.ideogram import API_KEY, RESOLUTIONS, emulator
from tests.emulators.openai import recorded_form


@pytest.fixture(scope="module")
def ideogram_server():
    with emulator() as emu:
        yield emu


@pytest.fixture
def emu(ideogram_server):
    ideogram_server.reset()
    yield ideogram_server
    ideogram_server.reset()


def provider_for(emu, **kwargs) -> IdeogramProvider:
    kwargs.setdefault("api_key", API_KEY)
    kwargs.setdefault("timeout", 5.0)
    return IdeogramProvider(base_url=emu.url, **kwargs)


def run(provider: IdeogramProvider, request: ImageRequest):
    async def go():
        try:
            return await provider.run(request)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def req(prompt="a poster that says HELLO", size="1024x1024", quality="medium", **kwargs) -> ImageRequest:
    kwargs.setdefault("n", 1)
    return ImageRequest(model="ideogram-v3", prompt=prompt, size=size, quality=quality, **kwargs)


def posts(emu):
    return [r for r in emu.requests if r.method == "POST"]


def downloads(emu):
    return [r for r in emu.requests if r.method == "GET"]


# --- Success ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quality,speed,price", [("low", "TURBO", 30_000), ("medium", "DEFAULT", 60_000),
                                                 ("high", "QUALITY", 90_000)])
def test_generates_n_images_with_the_rendering_speed_of_our_quality(emu, quality, speed, price):
    result = run(provider_for(emu), req(quality=quality, size="1312x736", n=3, seed=11, style="design"))
    assert [i.data for i in result.images] == [make_png(f"ideogram|a poster that says HELLO|{11 + i}", 64, 36)
                                               for i in range(3)]
    assert all(i.revised_prompt == "A detailed, well-composed image: a poster that says HELLO" for i in result.images)
    (sent,) = posts(emu)
    assert sent.path == "/v1/ideogram-v3/generate" and sent.headers["api-key"] == API_KEY
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    fields, files = recorded_form(sent)
    assert files == {}
    assert fields == {"prompt": ["a poster that says HELLO"], "resolution": ["1312x736"], "rendering_speed": [speed],
                      "num_images": ["3"], "seed": ["11"], "style_type": ["DESIGN"]}
    assert len(downloads(emu)) == 3 and not any("api-key" in d.headers for d in downloads(emu))
    assert result.upstream_cost_micros == 3 * price


def test_optional_fields_are_left_out(emu):
    run(provider_for(emu), req())
    fields, _ = recorded_form(posts(emu)[0])
    assert set(fields) == {"prompt", "resolution", "rendering_speed", "num_images"}


def test_catalog_adapter_emulator_and_price_list_agree():
    spec = catalog.MODELS["ideogram-v3"]
    assert spec.sizes == adapter.SIZES and set(adapter.SIZES) <= set(RESOLUTIONS)
    assert spec.qualities == tuple(adapter.RENDERING_SPEEDS) and spec.styles == tuple(adapter.STYLE_TYPES)
    assert spec.native_max_n == adapter.MAX_N == 8
    prices = {(m, s, q): micros for m, s, q, micros, _ in PRICE_LIST}
    for size in spec.sizes:
        for quality, upstream in adapter.PRICES_MICROS.items():
            assert prices[("ideogram-v3", size, quality)] == round(upstream * 1.1)


# --- Refused before any call ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change,words", [
    ({"size": "1024x1536"}, "1312x736"), ({"quality": "standard"}, "low, medium, high"),
    ({"style": "anime"}, "realistic"), ({"n": 9}, "1 to 8"), ({"mode": "edit"}, "generation only"),
])
def test_what_ideogram_cannot_do_is_refused_before_any_call(emu, change, words):
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider_for(emu), req(**change))
    assert words in info.value.message
    assert emu.requests == []


# --- Refusals ---------------------------------------------------------------------------------------------------------


def test_a_prompt_that_fails_the_safety_check_is_a_refusal(emu):
    with pytest.raises(ContentRefused) as info:
        run(provider_for(emu), req(prompt="a forbidden-upstream scene"))
    assert "safety check" in info.value.message and not info.value.retryable


def test_an_unsafe_image_is_a_refusal_and_nothing_is_downloaded(emu):
    with pytest.raises(ContentRefused) as info:
        run(provider_for(emu), req(prompt="a forbidden-output scene", n=2))
    assert "2 of 2" in info.value.message
    assert downloads(emu) == []


# --- Errors -----------------------------------------------------------------------------------------------------------


def test_429_is_rate_limited_with_retry_after(emu):
    emu.faults.set("generate", Fault(status=429))
    with pytest.raises(UpstreamRateLimited) as info:
        run(provider_for(emu), req())
    assert info.value.retry_after_seconds == 3.0 and "Too many requests" in info.value.message


def test_a_bad_key_is_the_gateways_problem(emu):
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu, api_key="wrong"), req())
    assert "gateway's key" in info.value.message


def test_ideogram_validation_passes_its_reason(emu):
    emu.faults.set("generate", Fault(status=400, body={"error": "Invalid input: prompt too long."}))
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider_for(emu), req())
    assert "prompt too long" in info.value.message


@pytest.mark.parametrize("status,error", [(500, UpstreamUnavailable), (503, UpstreamUnavailable),
                                          (504, UpstreamTimeout), (402, UpstreamUnavailable)])
def test_server_and_account_errors(emu, status, error):
    emu.faults.set("generate", Fault(status=status))
    with pytest.raises(error):
        run(provider_for(emu), req())


@pytest.mark.parametrize("kind,words", [("malformed", "not JSON"), ("wrong_count", "returned 1 images for n=2"),
                                        ("no_url", "has no url"), ("no_data", "no `data` list")])
def test_malformed_answers_are_unavailable(emu, kind, words):
    emu.faults.set("generate", Fault(kind=kind))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu), req(n=2))
    assert words in info.value.message


@pytest.mark.parametrize("fault,words", [(Fault(kind="expired"), "HTTP 403"), (Fault(kind="bad_image"), "not PNG"),
                                         (Fault(kind="huge"), "larger than")])
def test_download_failures_are_unavailable(emu, fault, words):
    emu.state["huge_bytes"] = 100_000
    emu.faults.set("download", fault)
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu, max_image_bytes=50_000), req())
    assert words in info.value.message


def test_an_expired_link_is_unavailable(emu):
    emu.state["url_ttl"] = -1.0  # the link has expired by the time it is fetched
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu), req())
    assert "HTTP 403" in info.value.message


def test_a_slow_answer_or_download_times_out(emu):
    emu.faults.set("generate", Fault(delay=2.0))
    with pytest.raises(UpstreamTimeout):
        run(provider_for(emu, timeout=0.3), req())
    emu.faults.set("download", Fault(delay=2.0))
    with pytest.raises(UpstreamTimeout):
        run(provider_for(emu, timeout=0.5), req())


def test_an_unreachable_upstream_is_unavailable():
    provider = IdeogramProvider(api_key=API_KEY, base_url=f"http://127.0.0.1:{free_port()}", timeout=2.0)
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider, req())
    assert "could not reach ideogram" in info.value.message


def test_the_emulator_is_as_strict_as_ideogram(emu):
    provider = provider_for(emu)
    url = emu.url + "/v1/ideogram-v3/generate"

    async def post(**kwargs):
        try:
            reply = await provider.transport.request("POST", url, headers={"Api-Key": API_KEY}, **kwargs)
            return reply.status, reply.json()
        finally:
            await provider.aclose()

    # form-urlencoded is not multipart: refused
    assert asyncio.run(post(data={"prompt": "x"}))[0] == 400
    assert asyncio.run(post(data={"prompt": "x", "resolution": "1024x1024", "aspect_ratio": "1x1"}, files=[]))[0] \
        == 400
    assert asyncio.run(post(data={"prompt": "x", "num_images": "9"}, files=[]))[0] == 400
    assert asyncio.run(post(data={"prompt": "x", "rendering_speed": "FAST"}, files=[]))[0] == 400
    status, body = asyncio.run(post(data={"prompt": "x", "aspect_ratio": "16x9", "magic_prompt": "OFF"}, files=[]))
    assert status == 200 and body["data"][0]["resolution"] == "1312x736" and body["data"][0]["prompt"] == "x"
