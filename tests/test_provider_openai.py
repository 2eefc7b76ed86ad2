"""OpenAIProvider against the OpenAI emulator over loopback: the real HTTP transport, no mocks, no database.

Covers every model's happy path (what was sent, image bytes and count, cost), parameter mapping, edits (one and
several images, mask) and variations, the OpenAI-compatible self-hosted path, and every error mapping.
"""
import asyncio
import base64
import io
import threading
import time

import pytest
from PIL import Image

from billing.price_list import PRICE_LIST
from generation import catalog
from generation.providers.base import (
    ContentRefused,
    ImageRequest,
    InputImage,
    ModelGone,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from generation.providers.openai import OpenAIProvider, gpt_image_1_price
from tests.emulators.base import Fault, free_port
from tests.emulators.openai import API_KEY, emulator, image_bytes, recorded_form, recorded_json

SELF_HOSTED_KEY = "sk-selfhosted-9876"
SELF_HOSTED_MODEL = "sdxl-turbo-selfhosted"


# --- Fixtures and helpers --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_emu():
    # OpenAI as it was before it retired dall-e-2 and dall-e-3 (2026-05-12), which is what an OpenAI-compatible host
    # that still serves them speaks: these tests are about the dall-e wire format. The retirement itself is
    # test_openai_answers_retired_dall_e_models_as_gone.
    with emulator(retired=()) as emu:
        yield emu


@pytest.fixture
def emu(openai_emu):
    openai_emu.reset()
    yield openai_emu
    openai_emu.reset()


@pytest.fixture(scope="module")
def selfhosted_emu():
    with emulator(api_key=SELF_HOSTED_KEY,
                  extra_models={SELF_HOSTED_MODEL: ("512x512", "1024x1024"), "free-model": None}) as emu:
        yield emu


@pytest.fixture
def selfhosted(selfhosted_emu):
    selfhosted_emu.reset()
    yield selfhosted_emu
    selfhosted_emu.reset()


def provider_for(emu, **kwargs) -> OpenAIProvider:
    kwargs.setdefault("api_key", API_KEY)
    return OpenAIProvider(base_url=emu.url + "/v1", **kwargs)


def run(provider: OpenAIProvider, request: ImageRequest):
    async def go():
        try:
            return await provider.run(request)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def req(model="dall-e-2", prompt="a red fox in the snow", n=1, size="1024x1024", quality="standard", **kw):
    return ImageRequest(model=model, prompt=prompt, n=n, size=size, quality=quality, **kw)


def png(width=64, height=64, mode="RGBA", color=(10, 200, 30, 255)) -> InputImage:
    out = io.BytesIO()
    Image.new(mode, (width, height), color[: len(mode)] if mode != "L" else 128).save(out, format="PNG")
    return InputImage(data=out.getvalue(), content_type="image/png", width=width, height=height)


def jpeg(width=80, height=48) -> InputImage:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(out, format="JPEG")
    return InputImage(data=out.getvalue(), content_type="image/jpeg", width=width, height=height,
                      filename="photo.jpeg")


def only_request(emu):
    posts = [r for r in emu.requests if r.method == "POST"]
    assert len(posts) == 1, posts
    return posts[0]


# --- Interface and prices --------------------------------------------------------------------------------------------


def test_defaults_serve_the_openai_models():
    provider = OpenAIProvider(api_key="k")
    assert provider.name == "openai"
    assert provider.serves() == {"dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5",
                                 "gpt-image-2", "chatgpt-image-latest"}
    assert provider.base_url == "https://api.openai.com/v1"


@pytest.mark.parametrize("model", ["dall-e-2", "dall-e-3", "gpt-image-1"])
def test_cost_table_matches_reference_and_our_list_price(model):
    """Every catalog size/quality has a non-zero upstream price, and our list price is that plus 10%."""
    provider = OpenAIProvider(api_key="k")
    spec = catalog.get_model(model)
    ours = {(m, s, q): micros for m, s, q, micros, _ in PRICE_LIST if m == model}
    for size in spec.sizes:
        for quality in spec.qualities:
            cost = provider.upstream_cost_micros(req(model=model, size=size, quality=quality, n=3))
            assert cost > 0 and cost % 3 == 0
            if (model, size, quality) in ours:
                assert ours[(model, size, quality)] == round(cost / 3 * 1.1)


def test_cost_values_from_reference():
    p = OpenAIProvider(api_key="k")
    cost = lambda model, size, quality="standard", n=1, mode="generate": p.upstream_cost_micros(  # noqa: E731
        req(model=model, size=size, quality=quality, n=n, mode=mode))
    assert cost("dall-e-3", "1024x1024") == 40_000
    assert cost("dall-e-3", "1024x1792") == cost("dall-e-3", "1792x1024") == 80_000
    assert cost("dall-e-3", "1024x1024", "hd") == 80_000
    assert cost("dall-e-3", "1792x1024", "hd") == 120_000
    assert cost("dall-e-2", "1024x1024") == 20_000
    assert cost("dall-e-2", "512x512", n=2) == 36_000
    assert cost("dall-e-2", "256x256", n=10) == 160_000
    assert cost("dall-e-2", "256x256", mode="edit") == cost("dall-e-2", "256x256", mode="variation") == 16_000
    assert [cost("gpt-image-1", "1024x1024", q) for q in ("low", "medium", "high")] == [11_000, 42_000, 167_000]
    assert [cost("gpt-image-1", "1536x1024", q) for q in ("low", "medium", "high")] == [16_000, 63_000, 250_000]
    assert cost("gpt-image-1", "1024x1536", "high", n=2) == 500_000
    # "auto" is priced at 1024x1024 medium until the reply says otherwise.
    assert cost("gpt-image-1", "auto", "auto") == cost("gpt-image-1", "1024x1024", "auto") == 42_000
    assert gpt_image_1_price("auto", "high") == 167_000


def test_every_catalog_size_and_quality_is_accepted_by_the_adapter(emu):
    """What the gateway validates, the adapter maps (no catalog size is refused locally)."""
    provider = provider_for(emu)
    for model in ("dall-e-2", "dall-e-3", "gpt-image-1"):
        spec = catalog.get_model(model)
        for size in spec.sizes:
            for quality in spec.qualities:
                style = spec.default_style
                provider._check(req(model=model, size=size, quality=quality, style=style), _rules(model))


def _rules(model):
    from generation.providers.openai import OPENAI_MODELS

    return OPENAI_MODELS[model]


# --- Happy paths ------------------------------------------------------------------------------------------------------


def test_dall_e_2_generation(emu):
    result = run(provider_for(emu), req(n=3, size="512x512", user="user-42", seed=1234))
    sent = only_request(emu)
    assert sent.path == "/v1/images/generations"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["user-agent"] == "imagegate/1.0"
    assert sent.headers["content-type"] == "application/json"
    assert recorded_json(sent) == {"model": "dall-e-2", "prompt": "a red fox in the snow", "n": 3, "size": "512x512",
                                   "response_format": "b64_json", "user": "user-42"}  # no seed, no quality
    assert len(result.images) == 3
    for i, image in enumerate(result.images):
        assert image.data == image_bytes(f"dall-e-2|a red fox in the snow|generate|{i}", "512x512")
        assert image.content_type == "image/png"
        assert image.revised_prompt is None
    assert result.upstream_cost_micros == 3 * 18_000


def test_dall_e_3_generation_passes_quality_style_and_revised_prompt(emu):
    provider = provider_for(emu)
    request = req(model="dall-e-3", prompt="a lighthouse at dusk", size="1792x1024", quality="hd", style="natural",
                  seed=99, user="u")
    result = run(provider, request)
    assert recorded_json(only_request(emu)) == {
        "model": "dall-e-3", "prompt": "a lighthouse at dusk", "n": 1, "size": "1792x1024",
        "response_format": "b64_json", "quality": "hd", "style": "natural", "user": "u"}
    [image] = result.images
    assert image.revised_prompt == "A detailed, vivid rendering of: a lighthouse at dusk"
    assert image.content_type == "image/png"
    assert Image.open(io.BytesIO(image.data)).size == (64, 36)  # the emulator's thumbnail of 1792x1024
    assert result.upstream_cost_micros == 120_000 == provider.upstream_cost_micros(request)


def test_dall_e_3_standard_default_style(emu):
    result = run(provider_for(emu), req(model="dall-e-3", size="1024x1792", quality="standard", style="vivid"))
    assert recorded_json(only_request(emu))["style"] == "vivid"
    assert result.upstream_cost_micros == 80_000


def test_gpt_image_1_generation_maps_options_and_never_sends_response_format(emu):
    options = {"background": "transparent", "moderation": "low", "output_format": "webp", "output_compression": 80}
    result = run(provider_for(emu), req(model="gpt-image-1", n=2, size="1024x1536", quality="high", seed=5,
                                        user="u-1", options=options))
    assert recorded_json(only_request(emu)) == {
        "model": "gpt-image-1", "prompt": "a red fox in the snow", "n": 2, "size": "1024x1536", "quality": "high",
        "background": "transparent", "moderation": "low", "output_format": "webp", "output_compression": 80,
        "user": "u-1"}
    assert [img.content_type for img in result.images] == ["image/webp", "image/webp"]
    assert result.images[0].data == image_bytes("gpt-image-1|a red fox in the snow|generate|0", "1024x1536", "webp")
    assert result.upstream_cost_micros == 2 * 250_000


def test_gpt_image_1_auto_is_priced_from_the_resolved_size_and_quality(emu):
    emu.state.update(auto_size="1536x1024", auto_quality="high")
    provider = provider_for(emu)
    request = req(model="gpt-image-1", n=2, size="auto", quality="auto", options={"output_format": "jpeg"})
    assert provider.upstream_cost_micros(request) == 2 * 42_000  # the estimate before the call
    result = run(provider, request)
    sent = recorded_json(only_request(emu))
    assert sent["size"] == "auto" and sent["quality"] == "auto" and "response_format" not in sent
    assert [img.content_type for img in result.images] == ["image/jpeg", "image/jpeg"]
    assert result.upstream_cost_micros == 2 * 250_000  # what the reply says was made
    if hasattr(result, "resolved_size"):
        assert (result.resolved_size, result.resolved_quality) == ("1536x1024", "high")


def test_gpt_image_1_default_auto_resolution(emu):
    result = run(provider_for(emu), req(model="gpt-image-1", size="auto", quality="low"))
    assert result.upstream_cost_micros == 11_000  # resolved to 1024x1024 at the asked quality


# --- Image-input modes ----------------------------------------------------------------------------------------------


def test_dall_e_2_edit_with_mask(emu):
    image = png(128, 128, "RGB", (200, 0, 0))
    mask = png(128, 128, "RGBA", (0, 0, 0, 0))
    result = run(provider_for(emu), req(mode="edit", n=2, size="256x256", images=(image,), mask=mask, user="u"))
    sent = only_request(emu)
    assert sent.path == "/v1/images/edits"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    fields, files = recorded_form(sent)
    assert fields == {"model": ["dall-e-2"], "n": ["2"], "size": ["256x256"], "prompt": ["a red fox in the snow"],
                      "response_format": ["b64_json"], "user": ["u"]}
    assert files["image"] == [("image.png", "image/png", image.data)]
    assert files["mask"] == [("mask.png", "image/png", mask.data)]
    assert len(result.images) == 2
    assert result.images[1].data == image_bytes("dall-e-2|a red fox in the snow|edit|1", "256x256")
    assert result.upstream_cost_micros == 2 * 16_000


def test_dall_e_2_edit_without_mask_needs_transparency_upstream(emu):
    """OpenAI's own reason comes back as UpstreamInvalidRequest."""
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider_for(emu), req(mode="edit", images=(png(64, 64, "RGB", (1, 2, 3)),)))
    assert "format must be in ['RGBA', 'LA', 'L'], got RGB" in info.value.message
    assert info.value.provider == "openai"
    result = run(provider_for(emu), req(mode="edit", images=(png(64, 64, "RGBA"),)))
    assert len(result.images) == 1


def test_gpt_image_1_edit_several_images_as_image_array(emu):
    images = (png(64, 64), jpeg(80, 48), png(32, 96, "RGB", (5, 5, 5)))
    mask = png(64, 64, "RGBA", (0, 0, 0, 0))
    options = {"background": "opaque", "moderation": "low", "output_format": "png", "input_fidelity": "high"}
    result = run(provider_for(emu), req(model="gpt-image-1", mode="edit", n=2, size="1024x1024", quality="medium",
                                        images=images, mask=mask, options=options))
    fields, files = recorded_form(only_request(emu))
    assert fields == {"model": ["gpt-image-1"], "n": ["2"], "size": ["1024x1024"], "prompt": ["a red fox in the snow"],
                      "quality": ["medium"], "background": ["opaque"], "output_format": ["png"],
                      "input_fidelity": ["high"]}  # no response_format, no moderation (not an edits parameter)
    assert "image" not in files
    assert [(name, ctype) for name, ctype, _ in files["image[]"]] == [
        ("image.png", "image/png"), ("photo.jpeg", "image/jpeg"), ("image.png", "image/png")]
    assert [data for _, _, data in files["image[]"]] == [img.data for img in images]
    assert files["mask"][0][2] == mask.data
    assert len(result.images) == 2
    assert result.upstream_cost_micros == 2 * 42_000


def test_gpt_image_1_edit_single_image_uses_image_field(emu):
    image = InputImage(data=jpeg().data, content_type="image/jpeg", width=80, height=48, filename="upload")
    run(provider_for(emu), req(model="gpt-image-1", mode="edit", size="1536x1024", quality="low", images=(image,)))
    fields, files = recorded_form(only_request(emu))
    assert list(files) == ["image"]
    assert files["image"][0][:2] == ("upload.jpg", "image/jpeg")  # the extension follows the content type


def test_dall_e_2_variation(emu):
    image = png(96, 96, "RGB")
    result = run(provider_for(emu), req(mode="variation", prompt="", n=4, size="512x512", images=(image,), user="v"))
    sent = only_request(emu)
    assert sent.path == "/v1/images/variations"
    fields, files = recorded_form(sent)
    assert fields == {"model": ["dall-e-2"], "n": ["4"], "size": ["512x512"], "response_format": ["b64_json"],
                      "user": ["v"]}
    assert files == {"image": [("image.png", "image/png", image.data)]}
    assert len(result.images) == 4 and all(img.revised_prompt is None for img in result.images)
    assert result.upstream_cost_micros == 4 * 18_000


@pytest.mark.parametrize("request_, reason", [
    (req(model="dall-e-3", mode="edit", images=(png(),)), "dall-e-3 does not support edits"),
    (req(model="gpt-image-1", mode="variation", quality="auto", size="auto", images=(png(),)),
     "gpt-image-1 does not support variations"),
    (req(model="dall-e-3", size="512x512"), "supported sizes: 1024x1024, 1792x1024, 1024x1792"),
    (req(model="dall-e-2", size="1536x1024"), "supported sizes: 256x256, 512x512, 1024x1024"),
    (req(model="dall-e-3", quality="low"), "supported: standard, hd"),
    (req(model="gpt-image-1", size="auto", quality="standard"), "supported: low, medium, high, auto"),
    (req(model="dall-e-2", style="vivid"), "does not take a style"),
    (req(model="dall-e-3", style="anime"), "supported: vivid, natural"),
    (req(model="dall-e-3", n=2), "at most 1 image per upstream call"),
    (req(model="dall-e-2", n=11), "at most 10 images"),
    (req(model="dall-e-2", mode="edit", images=(png(), png())), "at most 1 input image"),
    (req(model="dall-e-2", mode="edit"), "need an input image"),
    (req(model="sdxl-1.0"), "does not serve model 'sdxl-1.0'"),
])
def test_what_openai_cannot_do_is_refused_locally(emu, request_, reason):
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider_for(emu), request_)
    assert reason in info.value.message
    assert info.value.provider == "openai"
    assert emu.requests == []


# --- Error mapping ----------------------------------------------------------------------------------------------------


def test_safety_refusal_dall_e(emu):
    with pytest.raises(ContentRefused) as info:
        run(provider_for(emu), req(model="dall-e-3", prompt="please draw forbidden-upstream things", style="vivid"))
    assert "rejected as a result of our safety system" in info.value.message
    assert "content_policy_violation" in info.value.message
    assert info.value.provider == "openai" and not info.value.retryable


def test_safety_refusal_gpt_image_moderation_blocked(emu):
    with pytest.raises(ContentRefused) as info:
        run(provider_for(emu), req(model="gpt-image-1", size="auto", quality="auto", prompt="x forbidden-upstream"))
    assert "rejected by the safety system" in info.value.message and "moderation_blocked" in info.value.message


def test_refusal_fault_on_edits(emu):
    emu.faults.set("edit", Fault(kind="refuse"))
    with pytest.raises(ContentRefused):
        run(provider_for(emu), req(mode="edit", images=(png(),)))


def test_upstream_400_reason_passes_through(emu):
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider_for(emu), req(prompt="x" * 1001))
    assert "string too long" in info.value.message and "maximum length 1000" in info.value.message
    assert "param prompt" in info.value.message
    emu.faults.set("generate", Fault(status=400, body={"error": {
        "message": "Invalid value for 'size'.", "type": "invalid_request_error", "param": "size",
        "code": "invalid_size"}}))
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider_for(emu), req())
    assert info.value.message == "openai rejected the request: Invalid value for 'size'. (param size)"


def test_upstream_refuses_options_it_does_not_know(emu):
    """A bad option (transparent JPEG) gets OpenAI's reason back."""
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider_for(emu), req(model="gpt-image-1", size="auto", quality="auto",
                                   options={"background": "transparent", "output_format": "jpeg"}))
    assert "Transparent background is not supported" in info.value.message


def test_bad_key_is_a_gateway_misconfiguration(emu):
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu, api_key="sk-wrong-key-000000"), req())
    assert "rejected the gateway's credentials" in info.value.message
    assert "Incorrect API key provided" in info.value.message and "invalid_api_key" in info.value.message
    assert info.value.retryable


def test_403_is_a_gateway_misconfiguration(emu):
    emu.faults.set("generate", Fault(status=403))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu), req())
    assert "credentials" in info.value.message and "must be verified" in info.value.message


def test_unknown_model_upstream_is_gone(emu):
    """404 model_not_found: the upstream no longer has (or never had) the model; another provider may (ModelGone is
    retryable, and not a health failure)."""
    with pytest.raises(ModelGone) as info:
        run(provider_for(emu, models={"dall-e-4"}, cost_micros={"dall-e-4": 1}), req(model="dall-e-4"))
    assert "does not exist" in info.value.message and "model_not_found" in info.value.message


def test_rate_limited(emu):
    emu.faults.set("generate", Fault(status=429, times=1))
    with pytest.raises(UpstreamRateLimited) as info:
        run(provider_for(emu), req())
    assert "Rate limit reached" in info.value.message and "rate_limit_exceeded" in info.value.message
    assert "retry after 2 s" in info.value.message
    assert info.value.retry_after_seconds == 2.0
    assert len(emu.requests) == 1  # no retries inside the adapter: the gateway decides
    assert len(run(provider_for(emu), req()).images) == 1  # the fault was for one request


def test_out_of_quota_fails_over(emu):
    emu.faults.set("generate", Fault(kind="quota"))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu), req())
    assert "out of quota" in info.value.message and "exceeded your current quota" in info.value.message


@pytest.mark.parametrize("status, text", [(500, "The server had an error"), (503, "currently overloaded"),
                                          (502, "bad gateway")])
def test_server_errors(emu, status, text):
    body = "bad gateway" if status == 502 else None
    emu.faults.set("generate", Fault(status=status, body=body))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu), req())
    assert text in info.value.message and f"HTTP {status}" in info.value.message


def test_timeout(emu):
    emu.faults.set("generate", Fault(delay=1.5))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as info:
        run(provider_for(emu, timeout=0.3), req())
    assert time.monotonic() - started < 1.2
    assert info.value.provider == "openai" and info.value.retryable


def test_global_delay_state_and_concurrency(emu):
    """state["delay"] slows every generation; many calls share one client and run concurrently."""
    emu.state["delay"] = 0.4
    provider = provider_for(emu)

    async def go():
        try:
            results = await asyncio.gather(*(provider.run(req(prompt=f"p{i}")) for i in range(60)))
            connector = provider.transport.session().connector
            assert connector.limit >= 1000  # ~1,000 connections in all
            assert not any(connector._acquired)  # every connection given back
            return results
        finally:
            await provider.aclose()

    started = time.monotonic()
    results = asyncio.run(go())
    assert len(results) == 60 and all(len(r.images) == 1 for r in results)
    assert 0.4 <= time.monotonic() - started < 3.0


@pytest.mark.parametrize("fault, text", [
    (Fault(kind="malformed"), "not JSON"),
    (Fault(kind="truncated"), "not JSON"),
    (Fault(kind="malformed", body='["not", "an", "object"]'), "not an object"),
    (Fault(kind="no_data"), "no `data` list"),
    (Fault(kind="wrong_count"), "returned 1 image for n=2"),
    (Fault(kind="extra_image"), "returned 3 images for n=2"),
    (Fault(kind="bad_image"), "undecodable image"),
    (Fault(kind="malformed", body='{"data": [{"b64_json": "@@@not base64@@@"}, {"b64_json": "AAAA"}]}'),
     "invalid base64"),
    (Fault(kind="malformed", body='{"data": [{"revised_prompt": "x"}, {}]}'), "neither b64_json nor url"),
])
def test_malformed_replies(emu, fault, text):
    emu.faults.set("generate", fault)
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu), req(n=2))
    assert text in info.value.message


def test_url_replies_are_downloaded(emu):
    emu.faults.set("generate", Fault(kind="url"))
    result = run(provider_for(emu), req(model="dall-e-3", size="1024x1024", style="vivid"))
    downloads = [r for r in emu.requests if r.method == "GET"]
    assert len(downloads) == 1 and downloads[0].path.startswith("/files/img-")
    assert downloads[0].headers["user-agent"] == "imagegate/1.0"
    [image] = result.images
    assert image.data == image_bytes("dall-e-3|a red fox in the snow|generate|0", "1024x1024")
    assert image.revised_prompt.startswith("A detailed")


def test_failed_download_is_unavailable(emu):
    emu.faults.set("generate", Fault(kind="url"))
    emu.faults.set("download", Fault(status=403))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider_for(emu), req())
    assert "downloading image 0" in info.value.message and "HTTP 403" in info.value.message


def test_connection_refused_is_unavailable():
    provider = OpenAIProvider(api_key="k", base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=2)
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider, req())
    assert "could not reach openai" in info.value.message


def test_one_client_per_event_loop(emu):
    """run() works from several loops, in turn and at once in threads."""
    provider = provider_for(emu)
    first = asyncio.run(provider.run(req(prompt="one")))
    second = asyncio.run(provider.run(req(prompt="two")))  # a new loop: a new session, the old one dropped with it
    assert len(first.images) == len(second.images) == 1
    import gc

    gc.collect()
    assert len(provider.transport) <= 1
    errors, results = [], []

    def worker(i):
        try:
            results.append(run(provider, req(prompt=f"thread {i}")))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 4


# --- The OpenAI-compatible (self-hosted) path -----------------------------------------------------------------------


def compatible(selfhosted, **kwargs):
    kwargs.setdefault("api_key", SELF_HOSTED_KEY)
    return OpenAIProvider(base_url=selfhosted.url + "/v1", name="openai_compatible",
                          models={SELF_HOSTED_MODEL, "free-model"}, cost_micros={SELF_HOSTED_MODEL: 2000}, **kwargs)


def test_self_hosted_generation(selfhosted):
    provider = compatible(selfhosted)
    assert provider.name == "openai_compatible"
    assert provider.serves() == {SELF_HOSTED_MODEL, "free-model"}
    result = run(provider, req(model=SELF_HOSTED_MODEL, n=2, size="512x512", user="u", seed=7))
    sent = only_request(selfhosted)
    assert sent.headers["authorization"] == f"Bearer {SELF_HOSTED_KEY}"
    assert recorded_json(sent) == {"model": SELF_HOSTED_MODEL, "prompt": "a red fox in the snow", "n": 2,
                                   "size": "512x512", "response_format": "b64_json", "quality": "standard",
                                   "user": "u"}
    assert len(result.images) == 2
    assert result.images[0].data == image_bytes(f"{SELF_HOSTED_MODEL}|a red fox in the snow|generate|0", "512x512")
    assert result.upstream_cost_micros == 4000 == provider.upstream_cost_micros(req(model=SELF_HOSTED_MODEL, n=2))


def test_self_hosted_without_configured_cost_is_zero(selfhosted):
    provider = compatible(selfhosted)
    result = run(provider, req(model="free-model", size="768x768"))
    assert result.upstream_cost_micros == 0 == provider.upstream_cost_micros(req(model="free-model"))


def test_self_hosted_does_not_serve_openai_models(selfhosted):
    provider = compatible(selfhosted)
    assert "dall-e-3" not in provider.serves()
    with pytest.raises(UpstreamInvalidRequest):
        run(provider, req(model="dall-e-3"))


def test_self_hosted_edit_and_variation(selfhosted):
    provider = compatible(selfhosted)
    images = (png(64, 64), jpeg())
    result = run(provider, req(model=SELF_HOSTED_MODEL, mode="edit", images=images, mask=png(64, 64)))
    fields, files = recorded_form(only_request(selfhosted))
    assert fields["model"] == [SELF_HOSTED_MODEL] and fields["response_format"] == ["b64_json"]
    assert len(files["image[]"]) == 2 and "mask" in files
    assert len(result.images) == 1 and result.upstream_cost_micros == 2000
    selfhosted.requests.clear()
    result = run(provider, req(model=SELF_HOSTED_MODEL, mode="variation", n=3, size="512x512", images=(png(),)))
    assert only_request(selfhosted).path == "/v1/images/variations"
    assert len(result.images) == 3 and result.upstream_cost_micros == 6000


def test_self_hosted_rejects_other_keys(selfhosted):
    with pytest.raises(UpstreamUnavailable) as info:
        run(compatible(selfhosted, api_key=API_KEY), req(model=SELF_HOSTED_MODEL, size="512x512"))
    assert "openai_compatible rejected the gateway's credentials" in info.value.message
    assert info.value.provider == "openai_compatible"


def test_self_hosted_validation_errors_and_variants(selfhosted):
    provider = compatible(selfhosted)
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider, req(model=SELF_HOSTED_MODEL, size="256x256"))
    assert "'256x256' is not one of ['512x512', '1024x1024']" in info.value.message
    # FastAPI-style 422 {"detail": ...} from a compatible server.
    selfhosted.faults.set("generate", Fault(status=422, body={"detail": [{"loc": ["body", "n"],
                                                                          "msg": "n too large"}]}))
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider, req(model=SELF_HOSTED_MODEL, size="512x512"))
    assert "n too large" in info.value.message
    # A 404 that is not about a model: the base URL is wrong → unavailable, not the client's fault.
    selfhosted.faults.set("generate", Fault(status=404, body={"detail": "Not Found"}))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider, req(model=SELF_HOSTED_MODEL, size="512x512"))
    assert "no such endpoint" in info.value.message


def test_self_hosted_relative_url_reply(selfhosted):
    """Some compatible servers answer with a path on their own host; it is fetched with our key."""
    selfhosted.faults.set("generate", Fault(kind="relative_url"))
    result = run(compatible(selfhosted), req(model=SELF_HOSTED_MODEL, size="1024x1024"))
    assert len(result.images) == 1
    download = [r for r in selfhosted.requests if r.method == "GET"][0]
    assert download.headers["authorization"] == f"Bearer {SELF_HOSTED_KEY}"  # same host as the API


def test_b64_data_url_prefix_is_tolerated(selfhosted):
    b64 = base64.b64encode(image_bytes("x", "64x64")).decode()
    selfhosted.faults.set("generate", Fault(kind="malformed", body='{"created": 1, "data": [{"b64_json": '
                                                                   f'"data:image/png;base64,{b64}"}}]}}'))
    result = run(compatible(selfhosted), req(model=SELF_HOSTED_MODEL, size="512x512"))
    assert result.images[0].data == image_bytes("x", "64x64")


# --- The emulator speaks OpenAI's wire format ------------------------------------------------------------------------


def test_emulator_mirrors_openai_validation_and_headers(emu):
    import httpx

    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=emu.url + "/v1") as client:
        r = client.post("/images/generations", json={"prompt": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] is None
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        r = client.post("/images/generations", json={"prompt": "x", "model": "dall-e-3", "n": 2}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["message"] == "You must provide n=1 for this model."
        r = client.post("/images/generations", json={"prompt": "x", "model": "gpt-image-1",
                                                     "response_format": "b64_json"}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_parameter"
        r = client.post("/images/generations", json={"prompt": "x", "seed": 3}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
        r = client.post("/images/generations", json={"prompt": "x", "model": "dall-e-2", "size": "1792x1024"},
                        headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "size"
        r = client.post("/images/generations", json={"prompt": "x", "model": "nope"}, headers=auth)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        # dall-e defaults to URLs; explicit nulls are accepted.
        r = client.post("/images/generations", json={"prompt": "x", "size": None, "user": None}, headers=auth)
        assert r.status_code == 200 and r.headers["x-request-id"].startswith("req_")
        assert r.headers["x-ratelimit-remaining-requests"]
        assert client.get(r.json()["data"][0]["url"]).headers["content-type"] == "image/png"
        r = client.post("/images/generations", json={"prompt": "x", "model": "gpt-image-1"}, headers=auth)
        body = r.json()
        assert {"created", "data", "background", "output_format", "quality", "size", "usage"} <= set(body)
        assert body["usage"]["input_tokens_details"].keys() == {"text_tokens", "image_tokens"}
        emu.faults.set("generate", Fault(status=429))
        r = client.post("/images/generations", json={"prompt": "x"}, headers=auth)
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert r.json()["error"] == {"message": r.json()["error"]["message"], "type": "requests", "param": None,
                                     "code": "rate_limit_exceeded"}
        assert client.get("/models", headers=auth).json()["object"] == "list"
        assert client.get("/models/dall-e-3", headers=auth).json()["id"] == "dall-e-3"


@pytest.mark.parametrize("model", ["dall-e-2", "dall-e-3"])
def test_openai_answers_retired_dall_e_models_as_gone(model):
    """OpenAI retired dall-e-2 and dall-e-3 on 2026-05-12 and answers 404 model_not_found (docs/providers/openai.md
    O11): the adapter raises ModelGone, which the router fails over from (tests/test_model_lifecycle.py)."""
    with emulator() as emu:
        with pytest.raises(ModelGone) as info:
            run(provider_for(emu), req(model=model))
    assert "model_not_found" in info.value.message and info.value.retryable
