"""The Replicate adapter against the Replicate emulator, over loopback with the real HTTP client (the shared
transport; no mocks)."""
import asyncio
import base64
import json

import httpx
import pytest

from generation.providers.base import (
    ContentRefused,
    ImageRequest,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from generation.providers.replicate import SD_2_1_VERSION, SDXL_VERSION, ReplicateProvider, sniff_image
from tests.emulators.base import Fault, free_port, make_png
from tests.emulators.replicate import API_TOKEN, NSFW_ERROR, emulator, image_bytes


@pytest.fixture(scope="module")
def emu():
    with emulator() as e:
        yield e


@pytest.fixture(autouse=True)
def fresh(emu):
    emu.reset()
    yield
    emu.reset()


def provider(emu, **kwargs) -> ReplicateProvider:
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("api_token", API_TOKEN)
    return ReplicateProvider(base_url=emu.url, **kwargs)


def req(model="flux-schnell", *, n=1, size="1024x1024", seed=None, prompt="a lighthouse at dusk", **kw):
    return ImageRequest(model=model, prompt=prompt, n=n, size=size, quality="standard", seed=seed, **kw)


def run(p: ReplicateProvider, request: ImageRequest):
    return asyncio.run(p.run(request))


def creates(emu):
    return [r for r in emu.requests if r.method == "POST" and not r.path.endswith("/cancel")]


def sent(emu) -> dict:
    (create,) = creates(emu)
    return json.loads(create.body)


def prediction_ids(emu) -> list[str]:
    return list(emu.state.get("predictions", {}))


# --- happy paths, one per model ---------------------------------------------------------------------------------

def test_flux_schnell_four_images(emu):
    result = run(provider(emu), req("flux-schnell", n=4, size="1344x768", seed=7))
    (create,) = creates(emu)
    assert create.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert create.headers["authorization"] == f"Bearer {API_TOKEN}"
    assert create.headers["prefer"] == "wait=60"
    assert create.headers["user-agent"] == "imagegate/1.0"
    assert json.loads(create.body) == {"input": {
        "prompt": "a lighthouse at dusk", "aspect_ratio": "16:9", "megapixels": "1", "num_outputs": 4,
        "num_inference_steps": 4, "output_format": "png", "disable_safety_checker": False, "seed": 7}}
    (pid,) = prediction_ids(emu)
    assert [img.data for img in result.images] == [image_bytes(pid, i) for i in range(4)]
    assert all(img.content_type == "image/png" and img.revised_prompt is None for img in result.images)
    assert result.upstream_cost_micros == 12_000
    # Finished within Prefer: wait, so no polling; downloads carry no credentials.
    files = [r for r in emu.requests if r.path.startswith("/files/")]
    assert len(files) == 4 and all("authorization" not in r.headers for r in files)
    assert not [r for r in emu.requests if r.method == "GET" and r.path.startswith("/v1/")]


def test_flux_dev(emu):
    result = run(provider(emu), req("flux-dev", size="832x1216", seed=3))
    (create,) = creates(emu)
    assert create.path == "/v1/models/black-forest-labs/flux-dev/predictions"
    assert json.loads(create.body)["input"] == {
        "prompt": "a lighthouse at dusk", "aspect_ratio": "2:3", "megapixels": "1", "num_outputs": 1,
        "guidance": 3, "num_inference_steps": 28, "output_format": "png", "disable_safety_checker": False,
        "seed": 3}
    assert len(result.images) == 1 and result.upstream_cost_micros == 25_000


def test_flux_dev_512_uses_quarter_megapixel(emu):
    run(provider(emu), req("flux-dev", size="512x512"))
    assert sent(emu)["input"]["aspect_ratio"] == "1:1" and sent(emu)["input"]["megapixels"] == "0.25"


def test_stable_diffusion_2_1_is_versioned(emu):
    result = run(provider(emu), req("stable-diffusion-2.1", n=2, size="768x512", seed=11))
    (create,) = creates(emu)
    assert create.path == "/v1/predictions"
    assert json.loads(create.body) == {"version": SD_2_1_VERSION, "input": {
        "prompt": "a lighthouse at dusk", "width": 768, "height": 512, "num_outputs": 2,
        "num_inference_steps": 50, "guidance_scale": 7.5, "scheduler": "DPMSolverMultistep", "seed": 11}}
    (pid,) = prediction_ids(emu)
    assert [img.data for img in result.images] == [image_bytes(pid, 0), image_bytes(pid, 1)]
    assert result.upstream_cost_micros == 5_000


def test_sdxl_is_versioned(emu):
    result = run(provider(emu), req("sdxl-1.0", n=3, size="1216x832", style="vivid"))
    body = sent(emu)
    assert body == {"version": SDXL_VERSION, "input": {
        "prompt": "a lighthouse at dusk", "width": 1216, "height": 832, "num_outputs": 3,
        "refine": "no_refiner", "apply_watermark": False}}
    assert "seed" not in body["input"]  # no seed asked → none sent
    assert len(result.images) == 3 and len({img.data for img in result.images}) == 3
    assert result.upstream_cost_micros == 12_000


def test_serves_and_cost_table(emu):
    p = provider(emu)
    assert p.name == "replicate"
    assert p.serves() == {"flux-schnell", "flux-dev", "stable-diffusion-2.1", "sdxl-1.0"}
    costs = {m: p.upstream_cost_micros(req(m, n=2)) for m in sorted(p.serves())}
    assert costs == {"flux-dev": 50_000, "flux-schnell": 6_000, "sdxl-1.0": 8_000, "stable-diffusion-2.1": 5_000}


def test_all_catalog_sizes_map(emu):
    """Every size the catalog lists for these models maps to a valid upstream request (or a clear refusal)."""
    from generation import catalog

    p = provider(emu)
    for model in sorted(p.serves()):
        for size in catalog.MODELS[model].sizes:
            if model == "flux-dev" and size == "1440x1440":
                continue
            path, body = p._build(p._model(req(model, size=size)), req(model, size=size))
            assert body["input"]["num_outputs"] == 1, (model, size)


def test_string_output_and_several_loops(emu):
    p = provider(emu)
    emu.faults.set("create", Fault(kind="string_output", times=1))
    assert len(run(p, req()).images) == 1
    assert len(run(p, req()).images) == 1  # another event loop, another HTTP session


def test_polls_when_prefer_wait_runs_out(emu):
    emu.state["delay"] = 1.3
    result = run(provider(emu, wait_seconds=1), req("sdxl-1.0"))
    assert len(result.images) == 1
    assert creates(emu)[0].headers["prefer"] == "wait=1"
    polls = [r for r in emu.requests if r.method == "GET" and r.path.startswith("/v1/predictions/")]
    assert polls and all(r.headers["authorization"] == f"Bearer {API_TOKEN}" for r in polls)


def test_async_mode_without_prefer(emu):
    emu.state["delay"] = 0.3
    result = run(provider(emu, wait_seconds=0), req())
    assert len(result.images) == 1
    assert "prefer" not in creates(emu)[0].headers


def test_transient_poll_error_is_retried(emu):
    emu.state["delay"] = 0.3
    emu.faults.set("get", Fault(status=503, times=1))
    assert len(run(provider(emu, wait_seconds=0), req()).images) == 1


# --- requests the upstream cannot do ----------------------------------------------------------------------------

@pytest.mark.parametrize("request_, words", [
    (req("flux-dev", size="1440x1440"), ["1440x1440", "1024x1024", "512x512"]),
    (req("stable-diffusion-2.1", size="1024x1536"), ["1024x1536", "multiples of 64", "1024"]),
    (req("sdxl-1.0", size="1000x1000"), ["multiples of 64"]),
    (req("flux-schnell", n=5), ["1 to 4"]),
    (req("flux-schnell", mode="edit"), ["edit"]),
    (req("sdxl-1.0", style="anime"), ["anime", "style"]),
    (req("dall-e-3"), ["flux-schnell"]),
])
def test_refuses_what_replicate_cannot_do(emu, request_, words):
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider(emu), request_)
    assert info.value.provider == "replicate"
    for word in words:
        assert word in info.value.message
    assert emu.requests == []


# --- refusals and failed predictions ----------------------------------------------------------------------------

def test_nsfw_prompt_is_content_refused(emu):
    with pytest.raises(ContentRefused) as info:
        run(provider(emu), req(prompt="something forbidden-upstream"))
    assert NSFW_ERROR in info.value.message and info.value.provider == "replicate"
    assert not [r for r in emu.requests if r.path.startswith("/files/")]


def test_nsfw_on_sd_after_polling(emu):
    emu.state["delay"] = 0.3
    emu.faults.set("create", Fault(kind="nsfw"))
    with pytest.raises(ContentRefused):
        run(provider(emu, wait_seconds=0), req("stable-diffusion-2.1"))


def test_failed_prediction(emu):
    emu.faults.set("create", Fault(kind="failed", body="CUDA out of memory on the worker"))
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider(emu), req())
    assert "failed: CUDA out of memory on the worker" in info.value.message


def test_canceled_prediction(emu):
    emu.faults.set("create", Fault(kind="canceled"))
    with pytest.raises(UpstreamUnavailable, match="canceled"):
        run(provider(emu), req())


# --- HTTP errors ------------------------------------------------------------------------------------------------

def test_wrong_token_is_misconfiguration(emu):
    with pytest.raises(UpstreamUnavailable) as info:
        run(provider(emu, api_token="r8_wrong"), req())
    assert "credentials" in info.value.message
    assert "You did not pass a valid authentication token" in info.value.message


def test_422_detail_passes_through(emu):
    body = {"detail": "- input.num_outputs: Must be less than or equal to 4\n- input.seed: Invalid type. "
                      "Expected: integer, given: string\n",
            "status": 422, "title": "Input validation failed",
            "invalid_fields": [{"type": "number_lte", "field": "input.num_outputs",
                                "description": "Must be less than or equal to 4"}]}
    emu.faults.set("create", Fault(status=422, body=body))
    with pytest.raises(UpstreamInvalidRequest) as info:
        run(provider(emu), req())
    assert "input.num_outputs: Must be less than or equal to 4; input.seed: Invalid type" in info.value.message


def test_404_unknown_model(emu):
    emu.faults.set("create", Fault(status=404))
    with pytest.raises(UpstreamInvalidRequest, match="does not know this model"):
        run(provider(emu), req())


def test_402_billing(emu):
    emu.faults.set("create", Fault(status=402))
    with pytest.raises(UpstreamUnavailable, match="billing.*insufficient credit"):
        run(provider(emu), req("sdxl-1.0"))


def test_429_rate_limit(emu):
    emu.state["rate_limit"] = 2
    p = provider(emu)
    run(p, req())
    run(p, req())
    with pytest.raises(UpstreamRateLimited) as info:
        run(p, req())
    assert "Request was throttled" in info.value.message and "retry after" in info.value.message
    assert info.value.retry_after_seconds >= 1  # Replicate's Retry-After, for the gateway to pass on


def test_429_wait_from_the_body_when_the_header_says_nothing_usable(emu):
    emu.faults.set("create", Fault(status=429, headers={"retry-after": "later"}, body={
        "detail": "Request was throttled. Your rate limit resets in ~12s.", "status": 429}))
    with pytest.raises(UpstreamRateLimited) as info:
        run(provider(emu), req())
    assert info.value.retry_after_seconds == 12.0 and "retry after 12 s" in info.value.message


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx(emu, status):
    emu.faults.set("create", Fault(status=status))
    with pytest.raises(UpstreamUnavailable, match=f"HTTP {status}"):
        run(provider(emu), req())


def test_persistent_poll_failure_cancels(emu):
    emu.state["delay"] = 5.0
    emu.faults.set("get", Fault(status=500))
    with pytest.raises(UpstreamUnavailable):
        run(provider(emu, wait_seconds=0), req())
    assert [r for r in emu.requests if r.path.endswith("/cancel")]


def test_connection_refused(emu):
    p = ReplicateProvider(api_token=API_TOKEN, base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamUnavailable, match="could not reach Replicate"):
        run(p, req())


# --- time limits ------------------------------------------------------------------------------------------------

def test_deadline_cancels_the_prediction(emu):
    emu.state["delay"] = 5.0
    with pytest.raises(UpstreamTimeout) as info:
        run(provider(emu, deadline=0.6), req())
    assert "deadline" in info.value.message and info.value.provider == "replicate"
    assert "prefer" not in creates(emu)[0].headers  # a 0.6 s deadline leaves no whole second to wait
    (cancel,) = [r for r in emu.requests if r.path.endswith("/cancel")]
    (pid,) = prediction_ids(emu)
    assert cancel.path == f"/v1/predictions/{pid}/cancel"
    assert emu.state["predictions"][pid]["status"] == "canceled"


def test_stuck_prediction_hits_deadline_after_prefer_wait(emu):
    emu.faults.set("create", Fault(kind="stuck"))
    with pytest.raises(UpstreamTimeout):
        run(provider(emu, deadline=1.5, wait_seconds=60), req())
    assert creates(emu)[0].headers["prefer"] == "wait=1"
    assert [r for r in emu.requests if r.path.endswith("/cancel")]


def test_read_timeout(emu):
    emu.faults.set("create", Fault(delay=1.0))
    with pytest.raises(UpstreamTimeout, match="did not answer in time"):
        run(provider(emu, timeout=0.3, wait_seconds=0), req())


def test_download_timeout(emu):
    emu.faults.set("file", Fault(delay=1.0))
    with pytest.raises(UpstreamTimeout, match="downloading Replicate output"):
        run(provider(emu, timeout=0.3, wait_seconds=0), req())


# --- malformed replies ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fault, match", [
    ("create", Fault(kind="malformed"), "not JSON"),
    ("create", Fault(kind="missing_fields"), "no prediction id/status"),
    ("get", Fault(kind="malformed"), "not JSON"),
    ("create", Fault(kind="no_output"), "without a list of output URLs"),
    ("create", Fault(kind="short"), "returned 1 images for 2 requested"),
    ("create", Fault(kind="bad_image"), "not a PNG, JPEG or WebP"),
    ("file", Fault(kind="malformed"), "not a PNG, JPEG or WebP"),
    ("file", Fault(status=404), "HTTP 404"),
    ("file", Fault(status=500), "HTTP 500"),
])
def test_malformed_replies(emu, name, fault, match):
    emu.state["delay"] = 0.2 if name == "get" else 0.05
    emu.faults.set(name, fault)
    with pytest.raises(UpstreamUnavailable, match=match):
        run(provider(emu, wait_seconds=0 if name == "get" else 60), req(n=2))


def test_data_uri_output_and_foreign_poll_url(emu):
    p = provider(emu)
    png = make_png("data-uri")

    async def go():
        prediction = {"id": "x", "status": "succeeded",
                      "output": ["data:image/png;base64," + base64.b64encode(png).decode()]}
        return await p._outputs(prediction, 1)

    (image,) = asyncio.run(go())
    assert image.data == png and image.content_type == "image/png"
    # Our token only goes to the API's own origin.
    assert p._api_url("https://evil.example/v1/predictions/x", "/v1/predictions/x") == emu.url + "/v1/predictions/x"
    assert p._api_url(emu.url + "/v1/predictions/y", "/v1/predictions/x") == emu.url + "/v1/predictions/y"
    assert sniff_image(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_image(b"GIF89a") is None


# --- the emulator's own wire format -----------------------------------------------------------------------------

def test_emulator_validation_and_errors(emu):
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(base_url=emu.url) as c:
        r = c.post("/v1/models/black-forest-labs/flux-schnell/predictions",
                   json={"input": {"prompt": "x", "num_outputs": 5, "aspect_ratio": "7:5",
                                   "num_inference_steps": 28}}, headers=auth)
        assert r.status_code == 422
        body = r.json()
        assert body["title"] == "Input validation failed" and body["status"] == 422
        assert "- input.num_outputs: Must be less than or equal to 4\n" in body["detail"]
        assert '- input.aspect_ratio: aspect_ratio must be one of the following: "1:1"' in body["detail"]
        assert "- input.num_inference_steps: Must be less than or equal to 4\n" in body["detail"]
        assert {f["field"] for f in body["invalid_fields"]} == {"input.num_outputs", "input.aspect_ratio",
                                                                "input.num_inference_steps"}

        r = c.post("/v1/predictions", json={"version": SD_2_1_VERSION,
                                            "input": {"prompt": "x", "width": 1000, "num_outputs": 0}}, headers=auth)
        assert r.status_code == 422 and "input.width: width must be one of the following: 64, 128" in r.json()["detail"]
        assert "input.num_outputs: Must be greater than or equal to 1" in r.json()["detail"]

        r = c.post("/v1/predictions", json={"version": SDXL_VERSION, "input": {"prompt": "x", "height": 1000}},
                   headers=auth)
        assert r.status_code == 422 and "input.height: Must be a multiple of 64" in r.json()["detail"]

        r = c.post("/v1/predictions", json={"version": "deadbeef", "input": {"prompt": "x"}}, headers=auth)
        assert r.status_code == 422 and r.json()["title"] == "Invalid version or not permitted"

        r = c.post("/v1/models/nobody/nothing/predictions", json={"input": {"prompt": "x"}}, headers=auth)
        assert r.status_code == 404 and r.json()["status"] == 404

        r = c.post("/v1/predictions", json={"input": {"prompt": "x"}}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json() == {
            "title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401}

        # Async create, poll, cancel: the prediction object's shape.
        emu.state["delay"] = 5.0
        r = c.post("/v1/predictions", json={"version": f"stability-ai/sdxl:{SDXL_VERSION}",
                                            "input": {"prompt": "x"}}, headers=auth)
        assert r.status_code == 201
        p = r.json()
        assert set(p) >= {"id", "model", "version", "input", "status", "output", "error", "logs", "metrics",
                          "created_at", "urls"}
        assert p["status"] == "starting" and p["model"] == "stability-ai/sdxl" and p["version"] == SDXL_VERSION
        assert p["urls"]["get"] == f"{emu.url}/v1/predictions/{p['id']}"
        assert c.get(p["urls"]["get"], headers=auth).json()["id"] == p["id"]
        canceled = c.post(p["urls"]["cancel"], headers=auth).json()
        assert canceled["status"] == "canceled"

        emu.state["rate_limit"] = 1
        emu.state["delay"] = 0.01
        assert c.post("/v1/predictions", json={"version": SDXL_VERSION, "input": {"prompt": "x"}},
                      headers={**auth, "Prefer": "wait"}).json()["status"] == "succeeded"
        r = c.post("/v1/predictions", json={"version": SDXL_VERSION, "input": {"prompt": "x"}}, headers=auth)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["detail"].startswith("Request was throttled.")
