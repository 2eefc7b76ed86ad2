"""GeminiProvider against the Gemini emulator over loopback: the shared aiohttp transport, no mocks, no database.

Covers what is sent (path, key header, generationConfig), size → (aspectRatio, imageSize) for every catalog size,
thought parts skipped, the upstream cost from usageMetadata or the published tokens, what is refused before any
call, and every error mapping (blocked prompt, blocked output, 429 with Google's retry delay, bad key, 404, 5xx,
malformed answers, timeouts, the size cap)."""
import asyncio
import base64
import json

import pytest

from billing.price_list import PRICE_LIST
from generation import catalog
from generation.providers import gemini as adapter
from generation.providers.base import (
    ContentRefused,
    ImageRequest,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from generation.providers.gemini import GeminiProvider
from tests.emulators.base import Fault, free_port
from tests.emulators.gemini import API_KEY, emulator, image_bytes, recorded_payload, thought_image

MODELS = ("gemini-3.1-flash-image", "gemini-3-pro-image")


@pytest.fixture(scope="module")
def gemini_server():
    with emulator() as emu:
        yield emu


@pytest.fixture
def emu(gemini_server):
    gemini_server.reset()
    yield gemini_server
    gemini_server.reset()


def provider_for(emu, **kwargs) -> GeminiProvider:
    kwargs.setdefault("api_key", API_KEY)
    kwargs.setdefault("timeout", 5.0)
    return GeminiProvider(base_url=emu.url, **kwargs)


def run(provider: GeminiProvider, request: ImageRequest):
    async def go():
        try:
            return await provider.run(request)
        finally:
            await provider.aclose()

    return asyncio.run(go())


async def _run_all(provider: GeminiProvider, requests: list[ImageRequest]):
    try:
        return await asyncio.gather(*(provider.run(r) for r in requests))
    finally:
        await provider.aclose()


def req(model="gemini-3.1-flash-image", prompt="a lighthouse at dusk", size="1024x1024", **kwargs) -> ImageRequest:
    kwargs.setdefault("n", 1)
    kwargs.setdefault("quality", "standard")
    return ImageRequest(model=model, prompt=prompt, size=size, **kwargs)


# --- Success ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("size,ratio,tier", [("1024x1024", "1:1", "1K"), ("2752x1536", "16:9", "2K"),
                                             ("3392x5056", "2:3", "4K")])
def test_generates_one_image_and_sends_the_documented_request(emu, model, size, ratio, tier):
    result = run(provider_for(emu), req(model=model, size=size, prompt="a red fox", seed=7))
    (image,) = result.images
    assert image.data == image_bytes(f"{model}|a red fox|{tier}", ratio)  # the final image, never a thought
    assert image.data != thought_image() and image.content_type == "image/png"
    (sent,) = emu.requests
    assert sent.path == f"/v1beta/models/{model}:generateContent"
    assert sent.headers["x-goog-api-key"] == API_KEY and "authorization" not in sent.headers
    assert recorded_payload(sent) == {
        "contents": [{"role": "user", "parts": [{"text": "a red fox"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": ratio,
                                                                                "imageSize": tier}, "seed": 7}}
    tokens = {"gemini-3.1-flash-image": {"1K": 1120, "2K": 1680, "4K": 2520},
              "gemini-3-pro-image": {"1K": 1120, "2K": 1120, "4K": 2000}}[model][tier]
    rate = {"gemini-3.1-flash-image": 60, "gemini-3-pro-image": 120}[model]  # micro-USD per image token
    assert result.upstream_cost_micros == tokens * rate


def test_without_a_seed_none_is_sent(emu):
    run(provider_for(emu), req())
    assert "seed" not in recorded_payload(emu.requests[0])["generationConfig"]


def test_cost_falls_back_to_the_published_tokens_without_usage_metadata(emu):
    emu.faults.set("generate", Fault(kind="no_usage"))
    assert run(provider_for(emu), req(size="2048x2048")).upstream_cost_micros == 1680 * 60
    provider = provider_for(emu)
    assert provider.upstream_cost_micros(req(model="gemini-3-pro-image", size="4096x4096", n=3)) == 3 * 240_000


def test_every_catalog_size_maps_to_a_size_the_upstream_takes(emu):
    """The catalog, the adapter's table and the emulator (Google's rules) agree on every size of both models."""
    for model in MODELS:
        spec = catalog.MODELS[model]
        assert spec.sizes == adapter.MODELS[model].sizes() == catalog.GEMINI_SIZES
        assert spec.native_max_n == 1 and spec.providers == ("gemini",)
        results = asyncio.run(_run_all(provider_for(emu), [req(model=model, size=s) for s in spec.sizes]))
        assert all(len(r.images) == 1 for r in results)
    sent = {(p["generationConfig"]["imageConfig"]["aspectRatio"], p["generationConfig"]["imageConfig"]["imageSize"])
            for p in map(recorded_payload, emu.requests)}
    assert len(sent) == 30


def test_our_price_is_the_upstream_cost_plus_ten_percent_for_every_size():
    prices = {(m, s, q): micros for m, s, q, micros, _ in PRICE_LIST}
    for model_id, model in adapter.MODELS.items():
        for size in model.sizes():
            upstream = model.image_price_micros(size)
            assert prices[(model_id, size, "standard")] == round(upstream * 1.1), (model_id, size)
    # Google's own per-image figures: $0.067 / $0.101 / $0.151 (3.1 Flash), $0.134 / $0.24 (3 Pro).
    flash, pro = adapter.MODELS["gemini-3.1-flash-image"], adapter.MODELS["gemini-3-pro-image"]
    assert [flash.image_price_micros(s) for s in ("1024x1024", "2048x2048", "4096x4096")] == [67_200, 100_800, 151_200]
    assert [pro.image_price_micros(s) for s in ("1024x1024", "2048x2048", "4096x4096")] == [134_400, 134_400, 240_000]


# --- Refused before any call ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change,words", [
    ({"size": "1024x1536"}, "1376x768"),  # an OpenAI size Gemini does not make: the message names those it does
    ({"mode": "edit"}, "generation only"),
    ({"n": 2}, "one image per upstream call"),
    ({"quality": "hd"}, "no quality"),
    ({"style": "vivid"}, "no style"),
    ({"model": "gemini-2.5-flash-image"}, "gemini-3.1-flash-image"),
])
def test_what_the_upstream_cannot_do_is_refused_before_any_call(emu, change, words):
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider_for(emu), req(**change))
    assert words in info.value.message
    assert emu.requests == []


# --- Refusals ---------------------------------------------------------------------------------------------------------


def test_a_blocked_prompt_is_a_refusal(emu):
    with pytest.raises(ContentRefused) as info:
        run(provider_for(emu), req(prompt="a forbidden-upstream scene"))
    assert "PROHIBITED_CONTENT" in info.value.message and not info.value.retryable


def test_a_blocked_output_is_a_refusal(emu):
    with pytest.raises(ContentRefused) as info:
        run(provider_for(emu), req(model="gemini-3-pro-image", prompt="a forbidden-output scene"))
    assert "IMAGE_SAFETY" in info.value.message


def test_a_block_reason_given_by_fault_is_a_refusal_whatever_the_prompt(emu):
    emu.faults.set("generate", Fault(kind="refuse"))
    with pytest.raises(ContentRefused):
        run(provider_for(emu), req())


# --- Errors -----------------------------------------------------------------------------------------------------------


def test_429_resource_exhausted_is_rate_limited_with_googles_retry_delay(emu):
    emu.faults.set("generate", Fault(status=429))
    with pytest.raises(UpstreamRateLimited) as info:
        run(provider_for(emu), req())
    assert info.value.retryable and info.value.retry_after_seconds == 38.0
    assert "RESOURCE_EXHAUSTED" in info.value.message


def test_429_without_retry_info_uses_retry_after_or_nothing(emu):
    body = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                      "status": "RESOURCE_EXHAUSTED"}}
    emu.faults.set("generate", Fault(status=429, body=body, headers={"Retry-After": "4"}))
    with pytest.raises(UpstreamRateLimited) as info:
        run(provider_for(emu), req())
    assert info.value.retry_after_seconds == 4.0
    emu.faults.set("generate", Fault(status=429, body=body))
    with pytest.raises(UpstreamRateLimited) as info:
        run(provider_for(emu), req())
    assert info.value.retry_after_seconds is None


@pytest.mark.parametrize("key", ["wrong-key", ""])
def test_a_bad_or_missing_key_is_the_gateways_problem_not_the_clients(emu, key):
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu, api_key=key), req())
    assert "key or account" in info.value.message
    assert ("API key not valid" if key else "unregistered callers") in info.value.message


def test_a_retired_model_is_unavailable_not_the_clients_fault(emu):
    body = {"error": {"code": 404, "status": "NOT_FOUND", "message": "models/gemini-3.1-flash-image is not found for "
                      "API version v1beta, or is not supported for generateContent."}}
    emu.faults.set("generate", Fault(status=404, body=body))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu), req())
    assert "is not found" in info.value.message and info.value.retryable


def test_an_invalid_argument_passes_googles_reason(emu):
    body = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "Unsupported image size: 8K."}}
    emu.faults.set("generate", Fault(status=400, body=body))
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider_for(emu), req())
    assert "Unsupported image size: 8K." in info.value.message


def test_failed_precondition_is_an_account_problem(emu):
    body = {"error": {"code": 400, "status": "FAILED_PRECONDITION", "message": "Gemini API free tier is not "
                      "available in your country. Please enable billing on your project in Google AI Studio."}}
    emu.faults.set("generate", Fault(status=400, body=body))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu), req())
    assert "enable billing" in info.value.message


@pytest.mark.parametrize("status,error", [(500, UpstreamUnavailable), (503, UpstreamUnavailable),
                                          (504, UpstreamTimeout)])
def test_server_errors(emu, status, error):
    emu.faults.set("generate", Fault(status=status))
    with pytest.raises(error) as info:
        run(provider_for(emu), req())
    assert info.value.retryable
    if status == 503:
        assert "overloaded" in info.value.message


@pytest.mark.parametrize("kind,words", [
    ("malformed", "not JSON"), ("truncated", "not JSON"), ("no_candidates", "no candidates"),
    ("text_only", "Here is the image"), ("no_image", "NO_IMAGE"), ("bad_base64", "invalid base64"),
    ("not_image", "undecodable"),
])
def test_malformed_answers_are_unavailable(emu, kind, words):
    emu.faults.set("generate", Fault(kind=kind))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu), req())
    assert words in info.value.message and info.value.retryable


def test_an_image_over_the_cap_is_refused(emu):
    emu.state["huge_bytes"] = 300_000
    emu.faults.set("generate", Fault(kind="huge"))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu, max_image_bytes=200_000), req())
    assert "larger than" in info.value.message


def test_a_slow_answer_times_out(emu):
    emu.faults.set("generate", Fault(delay=2.0))
    with pytest.raises(UpstreamTimeout):
        run(provider_for(emu, timeout=0.3), req())


def test_an_unreachable_upstream_is_unavailable():
    provider = GeminiProvider(api_key=API_KEY, base_url=f"http://127.0.0.1:{free_port()}", timeout=2.0)
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider, req())
    assert "could not reach gemini" in info.value.message


def test_the_emulator_refuses_what_google_refuses(emu):
    """The emulator is only useful if it is as strict as the API: unknown fields and lowercase sizes are 400s."""
    provider = provider_for(emu)
    url = f"{emu.url}/v1beta/models/gemini-3.1-flash-image:generateContent"

    async def post(payload):
        try:
            reply = await provider.transport.request("POST", url, json=payload, headers={"x-goog-api-key": API_KEY})
            return reply.status, reply.json()
        finally:
            await provider.aclose()

    base = {"contents": [{"parts": [{"text": "x"}]}]}
    status, body = asyncio.run(post({**base, "generationConfig": {"imageConfig": {"imageSize": "2k"}}}))
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT" and "2k" in body["error"]["message"]
    status, body = asyncio.run(post({**base, "generationConfig": {"numberOfImages": 2}}))
    assert status == 400 and 'Unknown name "numberOfImages"' in body["error"]["message"]
    status, body = asyncio.run(post({"contents": []}))
    assert status == 400 and "contents is not specified" in body["error"]["message"]
    image = json.loads(json.dumps(asyncio.run(post(base))[1]))  # defaults: 1:1, 1K
    data = image["candidates"][0]["content"]["parts"][-1]["inlineData"]["data"]
    assert base64.b64decode(data) == image_bytes("gemini-3.1-flash-image|x|1K", "1:1")
