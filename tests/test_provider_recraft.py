"""RecraftProvider against the Recraft emulator over loopback: the shared aiohttp transport, no mocks, no database.

Covers what is sent (path, bearer token, body), images from b64_json and from URLs, the upstream cost from
`credits`, sizes and styles per model, what is refused before any call, SVG refused, and every error mapping."""
import asyncio

import pytest

from billing.price_list import PRICE_LIST
from generation import catalog
from generation.providers import recraft as adapter
from generation.providers.base import (
    ContentRefused,
    ImageRequest,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from generation.providers.recraft import RecraftProvider
from tests.emulators.base import Fault, free_port, make_png
from tests.emulators.recraft import API_KEY, emulator, recorded_json
from tests.emulators.recraft import MODELS as EMULATED

CATALOG_MODELS = ("recraftv3", "recraftv4", "recraftv4_pro", "recraftv4_1", "recraftv4_1_pro")


@pytest.fixture(scope="module")
def recraft_server():
    with emulator() as emu:
        yield emu


@pytest.fixture
def emu(recraft_server):
    recraft_server.reset()
    yield recraft_server
    recraft_server.reset()


def provider_for(emu, **kwargs) -> RecraftProvider:
    kwargs.setdefault("api_key", API_KEY)
    kwargs.setdefault("timeout", 5.0)
    return RecraftProvider(base_url=emu.url, **kwargs)


def run(provider: RecraftProvider, request: ImageRequest):
    async def go():
        try:
            return await provider.run(request)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def req(model="recraftv4_1", prompt="two race cars on a track", size=None, **kwargs) -> ImageRequest:
    kwargs.setdefault("n", 1)
    kwargs.setdefault("quality", "standard")
    return ImageRequest(model=model, prompt=prompt, size=size or catalog.MODELS[model].default_size, **kwargs)


def _thumb(size):
    w, h = (int(v) for v in size.split("x"))
    scale = 64 / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


# --- Success ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", CATALOG_MODELS)
def test_generates_n_images_and_sends_the_documented_request(emu, model):
    size = catalog.MODELS[model].sizes[-1]
    result = run(provider_for(emu), req(model=model, size=size, n=3, prompt="a fox"))
    assert [i.data for i in result.images] == [make_png(f"{model}|a fox|{i}", *_thumb(size)) for i in range(3)]
    assert all(i.content_type == "image/png" for i in result.images)
    (sent,) = emu.requests
    assert (sent.method, sent.path) == ("POST", "/v1/images/generations")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert recorded_json(sent) == {"prompt": "a fox", "model": model, "n": 3, "size": size,
                                   "response_format": "b64_json"}
    # Recraft reports the API units it charged (1,000 = $1): that is the upstream cost.
    assert result.upstream_cost_micros == EMULATED[model][1] * 3 * 1_000 == adapter.MODELS[model].price_micros * 3


def test_v3_takes_its_raster_style_families(emu):
    run(provider_for(emu), req(model="recraftv3", style="digital_illustration"))
    assert recorded_json(emu.requests[0])["style"] == "digital_illustration"


def test_image_urls_are_downloaded_without_our_token(emu):
    emu.faults.set("generate", Fault(kind="url"))
    result = run(provider_for(emu), req(n=2))
    assert len(result.images) == 2 and all(i.content_type == "image/png" for i in result.images)
    downloads = [r for r in emu.requests if r.method == "GET"]
    assert len(downloads) == 2 and all("authorization" not in r.headers for r in downloads)


def test_cost_falls_back_to_the_list_price_without_credits(emu):
    emu.faults.set("generate", Fault(kind="no_credits"))
    assert run(provider_for(emu), req(model="recraftv4_pro", n=2)).upstream_cost_micros == 500_000


def test_catalog_adapter_and_price_list_agree():
    prices = {(m, s, q): micros for m, s, q, micros, _ in PRICE_LIST}
    for model_id in CATALOG_MODELS:
        spec, model = catalog.MODELS[model_id], adapter.MODELS[model_id]
        assert spec.sizes == model.sizes == tuple(EMULATED[model_id][0].values())
        assert spec.styles == model.styles and spec.max_prompt_chars == model.max_prompt_chars
        assert spec.native_max_n == adapter.MAX_N == 6
        for size in spec.sizes:
            assert prices[(model_id, size, "standard")] == round(model.price_micros * 1.1)
    assert not any(m.endswith("_vector") for m in catalog.MODELS)


# --- Refused before any call ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change,words", [
    ({"model": "recraftv3", "size": "1344x768"}, "1820x1024"),
    ({"model": "recraftv4", "style": "realistic_image"}, "takes no style"),
    ({"model": "recraftv3", "style": "vector_illustration"}, "logo_raster"),
    ({"n": 7}, "1 to 6"),
    ({"mode": "edit"}, "generation only"),
    ({"quality": "hd"}, "no quality"),
    ({"model": "recraftv4_vector", "size": "1024x1024"}, "recraftv4_1"),
    ({"model": "recraftv3", "prompt": "x" * 1001}, "1000 characters"),
])
def test_what_recraft_cannot_do_is_refused_before_any_call(emu, change, words):
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider_for(emu), req(**change))
    assert words in info.value.message
    assert emu.requests == []


# --- Errors -----------------------------------------------------------------------------------------------------------


def test_a_refused_prompt_is_a_refusal(emu):
    with pytest.raises(ContentRefused) as info:
        run(provider_for(emu), req(prompt="a forbidden-upstream scene"))
    assert "inappropriate" in info.value.message and not info.value.retryable


def test_429_is_rate_limited_with_retry_after(emu):
    emu.faults.set("generate", Fault(status=429))
    with pytest.raises(UpstreamRateLimited) as info:
        run(provider_for(emu), req())
    assert info.value.retry_after_seconds == 2.0 and "Too Many Requests" in info.value.message


def test_a_bad_token_is_the_gateways_problem(emu):
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu, api_key="wrong"), req())
    assert "request unauthorized" in info.value.message and "token" in info.value.message


def test_recraft_validation_passes_its_reason(emu):
    emu.faults.set("generate", Fault(status=400, body={"code": "invalid_request", "message": "size is invalid"}))
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider_for(emu), req())
    assert "size is invalid" in info.value.message


@pytest.mark.parametrize("status,error", [(500, UpstreamUnavailable), (502, UpstreamUnavailable),
                                          (504, UpstreamTimeout), (402, UpstreamUnavailable)])
def test_server_and_account_errors(emu, status, error):
    emu.faults.set("generate", Fault(status=status))
    with pytest.raises(error):
        run(provider_for(emu), req())


def test_a_wrong_path_is_unavailable(emu):
    provider = RecraftProvider(api_key=API_KEY, base_url=emu.url + "/wrong", timeout=5.0)
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider, req())
    assert "404 page not found" in info.value.message


@pytest.mark.parametrize("kind,words", [
    ("malformed", "not JSON"), ("wrong_count", "returned 1 images for n=2"), ("svg", "SVG"),
    ("bad_image", "not PNG, JPEG or WebP"), ("bad_base64", "invalid base64"), ("no_data", "no `data` list"),
])
def test_malformed_answers_are_unavailable(emu, kind, words):
    emu.faults.set("generate", Fault(kind=kind))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu), req(n=2))
    assert words in info.value.message


def test_a_download_over_the_cap_or_failing_is_unavailable(emu):
    emu.faults.set("generate", Fault(kind="url"))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu, max_image_bytes=50), req())
    assert "larger than" in info.value.message
    emu.faults.set("generate", Fault(kind="url"))
    emu.faults.set("download", Fault(status=403))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu), req())
    assert "HTTP 403" in info.value.message


def test_a_slow_answer_times_out(emu):
    emu.faults.set("generate", Fault(delay=2.0))
    with pytest.raises(UpstreamTimeout):
        run(provider_for(emu, timeout=0.3), req())


def test_an_unreachable_upstream_is_unavailable():
    provider = RecraftProvider(api_key=API_KEY, base_url=f"http://127.0.0.1:{free_port()}", timeout=2.0)
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider, req())
    assert "could not reach recraft" in info.value.message


def test_the_emulator_is_as_strict_as_recraft(emu):
    provider = provider_for(emu)

    async def post(payload):
        try:
            reply = await provider.transport.request("POST", emu.url + "/v1/images/generations", json=payload,
                                                     headers={"Authorization": f"Bearer {API_KEY}"})
            return reply.status, reply.json()
        finally:
            await provider.aclose()

    assert asyncio.run(post({"prompt": "x", "model": "recraftv4", "style": "any"}))[0] == 400
    assert asyncio.run(post({"prompt": "x", "model": "recraftv4", "size": "1820x1024"}))[0] == 400
    assert asyncio.run(post({"prompt": "x", "seed": 3}))[1]["message"] == 'unknown field "seed"'
    status, body = asyncio.run(post({"prompt": "x", "model": "recraftv3", "size": "16:9", "response_format":
                                     "b64_json"}))
    assert status == 200 and body["credits"] == 40 and len(body["data"]) == 1
