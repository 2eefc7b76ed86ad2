"""The `stability` provider against the Stability AI emulator: real HTTP over loopback (the shared transport), no
mocks, no database."""
import asyncio
import base64
import json
import time

import httpx
import pytest

from generation.providers.base import (
    ContentRefused,
    ImageRequest,
    InputImage,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from generation.providers.stability import StabilityProvider
from tests.emulators.base import Fault, free_port, make_png
from tests.emulators.stability import API_KEY, emulator, parse_multipart

V2_MODELS = {
    "stable-image-core": ("core", None, 30_000),
    "stable-image-ultra": ("ultra", None, 80_000),
    "sd3.5-large": ("sd3", "sd3.5-large", 65_000),
    "sd3.5-large-turbo": ("sd3", "sd3.5-large-turbo", 40_000),
    "sd3.5-medium": ("sd3", "sd3.5-medium", 35_000),
}
INPUT = InputImage(data=make_png("input", 64, 48), content_type="image/png", width=64, height=48, filename="in.png")


@pytest.fixture(scope="module")
def emu():
    with emulator() as e:
        yield e


@pytest.fixture(autouse=True)
def _clean(emu):
    emu.reset()
    yield
    emu.reset()


def provider(emu, *, timeout: float = 10.0, api_key: str = API_KEY) -> StabilityProvider:
    return StabilityProvider(api_key=api_key, base_url=emu.url, timeout=timeout)


def run(p: StabilityProvider, request: ImageRequest):
    async def go():
        try:
            return await p.run(request)
        finally:
            await p.aclose()

    return asyncio.run(go())


def req(model="sdxl-1.0", **kw) -> ImageRequest:
    kw.setdefault("prompt", "a lighthouse at dusk")
    kw.setdefault("n", 1)
    kw.setdefault("size", "1024x1024")
    kw.setdefault("quality", "standard")
    return ImageRequest(model=model, **kw)


def form(recorded) -> dict:
    return parse_multipart(recorded.headers["content-type"], recorded.body)


def is_png(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n")


# --- catalog, costs ---------------------------------------------------------------------------------------------------
def test_serves_and_costs():
    p = StabilityProvider(api_key="k")
    assert p.name == "stability"
    assert p.serves() == {"sdxl-1.0", "sd-1.6", *V2_MODELS}
    assert p.upstream_cost_micros(req("sdxl-1.0", n=4)) == 36_000
    assert p.upstream_cost_micros(req("sd-1.6", n=10, size="512x512")) == 90_000
    for model, (_, _, cost) in V2_MODELS.items():
        assert p.upstream_cost_micros(req(model)) == cost
        assert p.upstream_cost_micros(req(model, n=3)) == 3 * cost


# --- v1 happy paths ---------------------------------------------------------------------------------------------------
def test_sdxl_generate(emu):
    result = run(provider(emu), req("sdxl-1.0", n=3, size="1344x768", style="vivid", seed=42))
    assert len(result.images) == 3
    assert all(is_png(i.data) and i.content_type == "image/png" and i.revised_prompt is None for i in result.images)
    assert len({i.data for i in result.images}) == 3  # seeds 42, 43, 44
    assert result.upstream_cost_micros == 27_000
    (sent,) = emu.requests
    assert sent.path == "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["user-agent"] == "imagegate/1.0"
    assert json.loads(sent.body) == {
        "text_prompts": [{"text": "a lighthouse at dusk", "weight": 1}], "cfg_scale": 7, "width": 1344,
        "height": 768, "samples": 3, "steps": 30, "seed": 42, "style_preset": "cinematic",
    }


def test_sd16_generate_defaults(emu):
    result = run(provider(emu), req("sd-1.6", n=2, size="512x768", style="natural"))
    assert len(result.images) == 2 and result.upstream_cost_micros == 18_000
    (sent,) = emu.requests
    assert sent.path == "/v1/generation/stable-diffusion-v1-6/text-to-image"
    body = json.loads(sent.body)
    assert (body["width"], body["height"], body["samples"], body["seed"]) == (512, 768, 2, 0)
    assert body["style_preset"] == "photographic"


def test_v1_no_style_omits_preset_and_negative_prompt(emu):
    run(provider(emu), req("sdxl-1.0", options={"negative_prompt": "blurry"}))
    body = json.loads(emu.requests[0].body)
    assert "style_preset" not in body
    assert body["text_prompts"] == [{"text": "a lighthouse at dusk", "weight": 1}, {"text": "blurry", "weight": -1}]


# --- v2beta happy paths -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", list(V2_MODELS))
def test_v2_generate(emu, model):
    endpoint, sd3_model, cost = V2_MODELS[model]
    result = run(provider(emu), req(model, size="1216x832", style="anime", seed=7))
    (image,) = result.images
    assert is_png(image.data) and image.content_type == "image/png" and image.revised_prompt is None
    assert result.upstream_cost_micros == cost
    (sent,) = emu.requests
    assert sent.path == f"/v2beta/stable-image/generate/{endpoint}"
    assert sent.headers["accept"] == "image/*"
    assert sent.headers["content-type"].startswith("multipart/form-data")
    fields = form(sent)
    expected = {"prompt": "a lighthouse at dusk", "aspect_ratio": "3:2", "seed": "7", "style_preset": "anime",
                "output_format": "png"}
    if sd3_model:
        expected.update(model=sd3_model, mode="text-to-image")
    assert fields == expected


def test_v2_aspect_ratios_and_no_seed(emu):
    p = provider(emu)
    for size, ratio in [("1024x1024", "1:1"), ("768x1344", "9:16"), ("1568x672", "21:9"), ("1024x1280", "4:5")]:
        run(p, req("stable-image-core", size=size))
        fields = form(emu.requests[-1])
        assert fields["aspect_ratio"] == ratio
        assert "seed" not in fields and "style_preset" not in fields


def test_v2_n_above_one_runs_parallel_calls_with_distinct_seeds(emu):
    result = run(provider(emu), req("sd3.5-medium", n=2, seed=100))
    assert len(result.images) == 2 and result.upstream_cost_micros == 70_000
    assert sorted(form(r)["seed"] for r in emu.requests) == ["100", "101"]


def test_v2_seed_wraps_into_upstream_range(emu):
    run(provider(emu), req("stable-image-ultra", seed=4294967295))
    assert form(emu.requests[0])["seed"] == "0"


def test_v2_json_reply_form_is_parsed(emu):
    emu.faults.set("generate", Fault(kind="json"))
    (image,) = run(provider(emu), req("stable-image-core")).images
    assert is_png(image.data)


# --- image input ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium"])
def test_sd3_image_to_image(emu, model):
    result = run(provider(emu), req(model, mode="edit", images=(INPUT,), seed=3))
    assert len(result.images) == 1 and result.upstream_cost_micros == V2_MODELS[model][2]
    fields = form(emu.requests[0])
    assert fields["mode"] == "image-to-image" and fields["model"] == model
    assert fields["image"] == ("in.png", INPUT.data, "image/png")
    assert fields["strength"] == "0.7"
    assert "aspect_ratio" not in fields


def test_ultra_image_to_image(emu):
    run(provider(emu), req("stable-image-ultra", mode="edit", images=(INPUT,), options={"strength": 0.4}))
    fields = form(emu.requests[0])
    assert emu.requests[0].path == "/v2beta/stable-image/generate/ultra"
    assert fields["image"][1] == INPUT.data and fields["strength"] == "0.4"
    assert "mode" not in fields and "aspect_ratio" not in fields and "model" not in fields


@pytest.mark.parametrize("request_", [
    req("stable-image-core", mode="edit", images=(INPUT,)),
    req("sd3.5-large", mode="edit", images=(INPUT,), mask=INPUT),
    req("sd3.5-large", mode="edit", images=(INPUT, INPUT)),
    req("stable-image-ultra", mode="variation", images=(INPUT,)),
    req("sdxl-1.0", mode="edit", images=(INPUT,)),
], ids=["core-has-no-image-input", "mask", "two-images", "variation", "v1-edit"])
def test_unsupported_image_modes_are_refused_before_calling(emu, request_):
    with pytest.raises(UpstreamInvalidRequest) as err:
        run(provider(emu), request_)
    assert err.value.provider == "stability"
    assert emu.requests == []
    if request_.model == "stable-image-core":
        assert "stable-image-ultra" in err.value.message and "sd3.5-large" in err.value.message


# --- size mapping refusals --------------------------------------------------------------------------------------------
def test_sizes_the_upstream_cannot_do_are_refused(emu):
    with pytest.raises(UpstreamInvalidRequest, match="1024x1024, 1152x896") as err:
        run(provider(emu), req("sdxl-1.0", size="512x512"))
    assert "512x512" in err.value.message
    with pytest.raises(UpstreamInvalidRequest, match="multiples of 64"):
        run(provider(emu), req("sd-1.6", size="500x500"))
    with pytest.raises(UpstreamInvalidRequest, match="1344x768") as err:
        run(provider(emu), req("stable-image-core", size="1024x768"))
    assert "16:9" in err.value.message
    assert emu.requests == []


# --- upstream validation errors ---------------------------------------------------------------------------------------
def test_v1_400_reason_passthrough(emu):
    with pytest.raises(UpstreamInvalidRequest, match="invalid_style_preset: style_preset: must be one of"):
        run(provider(emu), req("sdxl-1.0", style="watercolor"))


def test_v2_400_errors_passthrough(emu):
    with pytest.raises(UpstreamInvalidRequest, match="bad_request: style_preset: must be one of") as err:
        run(provider(emu), req("sd3.5-large", style="watercolor"))
    assert err.value.provider == "stability"


@pytest.mark.parametrize("status", [404, 422])
def test_404_and_422_are_invalid_requests(emu, status):
    emu.faults.set("generate", Fault(status=status, body={"id": "x", "name": "not_found" if status == 404 else
                                                           "invalid_language", "message": "engine: nope not found"}))
    with pytest.raises(UpstreamInvalidRequest, match=f"{status}.*engine: nope not found"):
        run(provider(emu), req("sdxl-1.0"))


# --- refusals ---------------------------------------------------------------------------------------------------------
def test_v1_content_filtered_artifact_is_a_refusal(emu):
    with pytest.raises(ContentRefused, match="CONTENT_FILTERED"):
        run(provider(emu), req("sdxl-1.0", prompt="a forbidden-upstream thing", n=2))
    emu.faults.set("generate", Fault(kind="filtered"))
    with pytest.raises(ContentRefused):
        run(provider(emu), req("sd-1.6", size="512x512", n=3))


def test_v2_403_content_moderation_is_a_refusal(emu):
    with pytest.raises(ContentRefused, match="flagged by our content moderation") as err:
        run(provider(emu), req("stable-image-ultra", prompt="forbidden-upstream"))
    assert err.value.provider == "stability"


@pytest.mark.parametrize("kind", ["filtered", "json+filtered"], ids=["bytes-header", "json-body"])
def test_v2_filtered_finish_reason_is_a_refusal(emu, kind):
    emu.faults.set("generate", Fault(kind=kind))
    with pytest.raises(ContentRefused, match="CONTENT_FILTERED"):
        run(provider(emu), req("sd3.5-large"))


def test_finish_reason_error_is_unavailable(emu):
    emu.faults.set("generate", Fault(kind="error"))
    with pytest.raises(UpstreamUnavailable, match="ERROR"):
        run(provider(emu), req("sdxl-1.0", n=2))
    for kind in ("error", "json+error"):
        emu.faults.set("generate", Fault(kind=kind))
        with pytest.raises(UpstreamUnavailable, match="ERROR"):
            run(provider(emu), req("stable-image-core"))


# --- credentials, rate limits, 5xx ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["sdxl-1.0", "stable-image-core"])
def test_401_is_a_credentials_failure(emu, model):
    with pytest.raises(UpstreamUnavailable, match="rejected the gateway's credentials") as err:
        run(provider(emu, api_key="sk-wrong"), req(model))
    assert "401" in err.value.message and "Incorrect API key" in err.value.message


def test_403_other_than_moderation_is_a_credentials_failure(emu):
    emu.faults.set("generate", Fault(status=403, body={"id": "x", "name": "permission_denied",
                                                       "errors": ["organization is suspended"]}))
    with pytest.raises(UpstreamUnavailable, match="credentials.*organization is suspended"):
        run(provider(emu), req("sd3.5-medium"))


def test_real_rate_limiter_429(emu):
    emu.state["rate_limit"] = 2
    p = provider(emu)
    run(p, req("stable-image-core"))
    run(p, req("sdxl-1.0"))
    with pytest.raises(UpstreamRateLimited, match="rate_limit_exceeded.*2 requests within a 10 second"):
        run(p, req("stable-image-core"))
    with pytest.raises(UpstreamRateLimited):
        run(p, req("sdxl-1.0"))


def test_429_fault_with_retry_after(emu):
    emu.faults.set("generate", Fault(status=429, headers={"retry-after": "60"}))
    with pytest.raises(UpstreamRateLimited, match="retry after 60") as err:
        run(provider(emu), req("sd-1.6", size="512x512"))
    assert err.value.retry_after_seconds == 60.0  # for the gateway to pass on


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_unavailable(emu, status):
    emu.faults.set("generate", Fault(status=status))
    with pytest.raises(UpstreamUnavailable, match=str(status)):
        run(provider(emu), req("stable-image-ultra"))
    emu.faults.set("generate", Fault(status=status))
    with pytest.raises(UpstreamUnavailable, match=str(status)):
        run(provider(emu), req("sdxl-1.0"))


def test_connection_refused_is_unavailable():
    p = StabilityProvider(api_key=API_KEY, base_url=f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(UpstreamUnavailable, match="could not reach Stability"):
        run(p, req("sdxl-1.0"))


# --- timeouts ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["sdxl-1.0", "sd3.5-large"])
def test_slow_answer_times_out(emu, model):
    emu.faults.set("generate", Fault(delay=1.5))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as err:
        run(provider(emu, timeout=0.3), req(model))
    assert time.monotonic() - started < 1.2
    assert err.value.provider == "stability"


def test_global_state_delay(emu):
    emu.state["delay"] = 0.6
    with pytest.raises(UpstreamTimeout):
        run(provider(emu, timeout=0.3), req("stable-image-core"))
    started = time.monotonic()
    assert len(run(provider(emu), req("stable-image-core")).images) == 1
    assert time.monotonic() - started >= 0.6


# --- malformed replies ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["sdxl-1.0", "stable-image-core"])
@pytest.mark.parametrize("kind", ["malformed", "truncated", "bad_image", "bad_base64"])
def test_malformed_replies_are_unavailable(emu, model, kind):
    emu.faults.set("generate", Fault(kind=kind))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(emu), req(model))
    assert err.value.provider == "stability"


def test_wrong_image_count_is_unavailable(emu):
    emu.faults.set("generate", Fault(kind="wrong_count"))
    with pytest.raises(UpstreamUnavailable, match="2 artifact.*3 were asked"):
        run(provider(emu), req("sdxl-1.0", n=3))
    emu.faults.set("generate", Fault(kind="wrong_count"))
    with pytest.raises(UpstreamUnavailable, match="2 artifact.*1 were asked"):
        run(provider(emu), req("sdxl-1.0", n=1))


def test_missing_artifacts_is_unavailable(emu):
    emu.faults.set("generate", Fault(status=200, body={"id": "x"}))
    with pytest.raises(UpstreamUnavailable, match="artifacts"):
        run(provider(emu), req("sdxl-1.0"))


# --- HTTP session per event loop --------------------------------------------------------------------------------------
def test_one_provider_across_event_loops(emu):
    p = provider(emu)
    for _ in range(3):
        assert len(asyncio.run(p.run(req("sd3.5-large-turbo"))).images) == 1
    assert len(p.transport) == 1  # sessions of closed loops are dropped


def test_concurrent_calls_on_one_loop(emu):
    p = provider(emu)

    async def go():
        results = await asyncio.gather(*[p.run(req("stable-image-core", seed=i + 1)) for i in range(20)])
        await p.aclose()
        return results

    assert sum(len(r.images) for r in asyncio.run(go())) == 20


# --- the emulator's own validation (what a raw client sees) -----------------------------------------------------------
def test_emulator_v1_validation(emu):
    headers = {"authorization": f"Bearer {API_KEY}", "accept": "application/json"}
    url = f"{emu.url}/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
    base = {"text_prompts": [{"text": "x", "weight": 1}]}
    with httpx.Client() as c:
        r = c.post(url, json={**base, "width": 512, "height": 512}, headers=headers)
        assert r.status_code == 400 and r.json()["name"] == "invalid_sdxl_v1_dimensions"
        assert set(r.json()) == {"id", "name", "message"}
        assert c.post(url, json={**base, "samples": 11}, headers=headers).status_code == 400
        assert c.post(url, json={"text_prompts": []}, headers=headers).status_code == 400
        r = c.post(url.replace("stable-diffusion-xl-1024-v1-0", "stable-diffusion-512-v2-1"), json=base,
                   headers=headers)
        assert r.status_code == 404
        r = c.post(url, json=base, headers={**headers, "accept": "image/png"})
        assert r.status_code == 200 and is_png(r.content) and r.headers["finish-reason"] == "SUCCESS"
        r = c.post(url, json=base, headers={"accept": "application/json"})
        assert r.status_code == 401 and r.json()["name"] == "unauthorized"


def test_emulator_v2_validation(emu):
    headers = {"authorization": f"Bearer {API_KEY}", "accept": "image/*"}
    url = f"{emu.url}/v2beta/stable-image/generate"
    with httpx.Client() as c:
        r = c.post(f"{url}/core", files={"aspect_ratio": (None, "4:3")}, headers=headers)
        assert r.status_code == 400
        assert set(r.json()) == {"id", "name", "errors"}
        assert any("prompt: is required" in e for e in r.json()["errors"])
        assert any("aspect_ratio" in e for e in r.json()["errors"])
        r = c.post(f"{url}/sd3", files={"prompt": (None, "x"), "mode": (None, "image-to-image")}, headers=headers)
        assert r.status_code == 400 and "image: is required" in r.json()["errors"][0]
        r = c.post(f"{url}/ultra", files={"prompt": (None, "x"), "image": ("a.png", INPUT.data, "image/png")},
                   headers=headers)
        assert r.status_code == 400 and "strength" in r.json()["errors"][0]
        r = c.post(f"{url}/sd3", files={"prompt": (None, "x"), "model": (None, "sd9")}, headers=headers)
        assert r.status_code == 400
        assert c.post(f"{url}/turbo", files={"prompt": (None, "x")}, headers=headers).status_code == 404
        r = c.post(f"{url}/core", files={"prompt": (None, "x"), "seed": (None, "5")},
                   headers={**headers, "accept": "application/json"})
        assert r.status_code == 200 and r.json()["seed"] == 5
        assert is_png(base64.b64decode(r.json()["image"]))
        r = c.post(f"{url}/core", files={"prompt": (None, "x"), "output_format": (None, "webp")}, headers=headers)
        assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
