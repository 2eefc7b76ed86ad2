"""BFLProvider against the BFL emulator over loopback: the real HTTP client (the shared transport), no mocks, no
database."""
import asyncio
import base64
import io
import json
import time

import httpx
import pytest
from PIL import Image

from generation.providers.base import (
    ContentRefused,
    ImageRequest,
    InputImage,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from generation.providers.bfl import BFLProvider
from tests.emulators.base import Fault, free_port, make_png
from tests.emulators.bfl import API_KEY, emulator

DEFAULT_SIZE = {"flux-pro-1.1": "1024x1024", "flux-dev": "1024x1024", "flux-pro-1.1-ultra": "2048x2048",
                "flux-kontext-pro": "1024x1024", "flux-kontext-max": "1024x1024", "flux-2-pro": "1024x1024",
                "flux-2-flex": "1024x1024", "flux-2-max": "1024x1024", "flux-2-klein-4b": "1024x1024",
                "flux-2-klein-9b": "1024x1024"}
FLUX2 = ["flux-2-klein-4b", "flux-2-klein-9b", "flux-2-pro", "flux-2-flex", "flux-2-max"]


@pytest.fixture(scope="module")
def bfl_server():
    with emulator() as emu:
        yield emu


@pytest.fixture
def bfl(bfl_server):
    bfl_server.reset()
    yield bfl_server
    bfl_server.reset()


def provider(emu, **kwargs) -> BFLProvider:
    options = {"api_key": API_KEY, "base_url": emu.url, "timeout": 2.0, "deadline": 5.0, "poll_interval": 0.01}
    options.update(kwargs)
    return BFLProvider(**options)


def req(model="flux-pro-1.1", prompt="a red fox in snow", size=None, **kwargs) -> ImageRequest:
    return ImageRequest(model=model, prompt=prompt, n=kwargs.pop("n", 1), size=size or DEFAULT_SIZE[model],
                        quality="standard", **kwargs)


def run(p: BFLProvider, request: ImageRequest):
    return asyncio.run(p.run(request))


def submits(emu):
    return [r for r in emu.requests if r.method == "POST"]


def polls(emu):
    return [r for r in emu.requests if r.path.startswith("/v1/get_result")]


def downloads(emu):
    return [r for r in emu.requests if r.path.startswith("/results/")]


def input_image(color=(10, 200, 30)) -> InputImage:
    out = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(out, format="PNG")
    return InputImage(data=out.getvalue(), content_type="image/png", width=48, height=32)


# --- happy paths ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, credits", [("flux-pro-1.1", 4.0), ("flux-dev", 2.5), ("flux-pro-1.1-ultra", 6.0),
                                            ("flux-kontext-pro", 4.0), ("flux-kontext-max", 8.0)])
def test_every_model_happy_path(bfl, model, credits):
    p = provider(bfl)
    result = run(p, req(model, seed=42))

    [sent] = submits(bfl)
    assert sent.path == f"/v1/{model}"
    assert sent.headers["x-key"] == API_KEY
    assert sent.headers["user-agent"] == "imagegate/1.0"
    body = json.loads(sent.body)
    assert body["prompt"] == "a red fox in snow"
    assert body["seed"] == 42
    assert body["safety_tolerance"] == 2
    assert body["output_format"] == "png"
    assert body["prompt_upsampling"] is False
    if model in ("flux-pro-1.1", "flux-dev"):
        assert (body["width"], body["height"]) == (1024, 1024)
        assert "aspect_ratio" not in body
    else:
        assert body["aspect_ratio"] == "1:1"
        assert "width" not in body and "height" not in body
    if model == "flux-dev":
        assert body["steps"] == 28 and body["guidance"] == 3.0
    else:
        assert "steps" not in body and "guidance" not in body
    assert "input_image" not in body

    assert len(result.images) == 1
    image = result.images[0]
    assert image.content_type == "image/png"
    assert image.data.startswith(b"\x89PNG")
    [dl] = downloads(bfl)
    assert "x-key" not in dl.headers  # the sample URL is pre-signed
    assert image.revised_prompt is None  # BFL echoed our prompt unchanged
    assert all(r.headers["x-key"] == API_KEY for r in polls(bfl))
    # The submit reply's `cost` (credits) is what we were charged.
    assert result.upstream_cost_micros == round(credits * 10_000)
    assert p.upstream_cost_micros(req(model)) == round(credits * 10_000)


def test_serves_and_cost_table():
    p = BFLProvider(api_key="k")
    assert p.name == "bfl"
    assert p.serves() == {"flux-pro-1.1", "flux-dev", "flux-pro-1.1-ultra", "flux-kontext-pro", "flux-kontext-max",
                          *FLUX2}
    assert p.upstream_cost_micros(req("flux-pro-1.1", n=3)) == 120_000
    assert p.upstream_cost_micros(req("flux-pro-1.1-ultra", n=2)) == 120_000
    assert p.upstream_cost_micros(req("flux-kontext-pro")) == 40_000
    assert p.upstream_cost_micros(req("flux-kontext-max", n=10)) == 800_000
    assert p.upstream_cost_micros(req("flux-dev", n=4)) == 100_000
    with pytest.raises(UpstreamInvalidRequest):
        p.upstream_cost_micros(ImageRequest(model="dall-e-3", prompt="x", n=1, size="1024x1024", quality="standard"))


def test_cost_falls_back_to_price_table_when_submit_has_no_cost(bfl):
    bfl.faults.set("submit", Fault(kind="no_cost", times=1))
    result = run(provider(bfl), req("flux-kontext-max"))
    assert result.upstream_cost_micros == 80_000


def test_seed_omitted_when_not_given(bfl):
    run(provider(bfl), req())
    assert "seed" not in json.loads(submits(bfl)[0].body)


def test_n_greater_than_one_runs_one_task_per_image_with_offset_seeds(bfl):
    result = run(provider(bfl), req("flux-dev", n=3, seed=7))
    assert len(result.images) == 3
    assert sorted(json.loads(r.body)["seed"] for r in submits(bfl)) == [7, 8, 9]
    assert result.upstream_cost_micros == 3 * 25_000


# --- parameter mapping ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, size, expected", [
    ("flux-pro-1.1", "1344x768", {"width": 1344, "height": 768}),
    ("flux-dev", "832x1216", {"width": 832, "height": 1216}),
    ("flux-pro-1.1", "1440x1440", {"width": 1440, "height": 1440}),
    ("flux-pro-1.1", "512x512", {"width": 512, "height": 512}),
    ("flux-pro-1.1-ultra", "2752x1536", {"aspect_ratio": "16:9"}),
    ("flux-pro-1.1-ultra", "1536x2752", {"aspect_ratio": "9:16"}),
    ("flux-pro-1.1-ultra", "2496x1664", {"aspect_ratio": "3:2"}),
    ("flux-pro-1.1-ultra", "1664x2496", {"aspect_ratio": "2:3"}),
    ("flux-kontext-pro", "1344x768", {"aspect_ratio": "16:9"}),
    ("flux-kontext-pro", "832x1216", {"aspect_ratio": "2:3"}),
    ("flux-kontext-max", "1024x768", {"aspect_ratio": "4:3"}),
    ("flux-kontext-max", "768x1024", {"aspect_ratio": "3:4"}),
])
def test_size_mapping(bfl, model, size, expected):
    run(provider(bfl), req(model, size=size))
    body = json.loads(submits(bfl)[0].body)
    for key, value in expected.items():
        assert body[key] == value


@pytest.mark.parametrize("model, size, hint", [
    ("flux-pro-1.1", "1000x1000", "multiples of 32"),
    ("flux-dev", "1536x1536", "from 256 to 1440"),
    ("flux-pro-1.1", "auto", "multiples of 32"),
    ("flux-pro-1.1-ultra", "1024x1024", "2048x2048 (1:1)"),
    ("flux-kontext-pro", "1440x1440", "1344x768 (16:9)"),
])
def test_sizes_the_upstream_cannot_do_are_refused_before_any_call(bfl, model, size, hint):
    with pytest.raises(UpstreamInvalidRequest) as err:
        run(provider(bfl), req(model, size=size))
    assert hint in err.value.message and size in err.value.message
    assert err.value.provider == "bfl"
    assert bfl.requests == []


def test_flux_dev_steps_and_guidance_from_options(bfl):
    run(provider(bfl), req("flux-dev", options={"steps": 40, "guidance": 4.5}))
    body = json.loads(submits(bfl)[0].body)
    assert (body["steps"], body["guidance"]) == (40, 4.5)


def test_upstream_422_reason_passes_through(bfl):
    # flux-dev allows at most 50 steps: the emulator's own validation answers 422 in FastAPI's shape.
    with pytest.raises(UpstreamInvalidRequest) as err:
        run(provider(bfl), req("flux-dev", options={"steps": 80}))
    assert "steps: Input should be less than or equal to 50" in err.value.message
    assert not err.value.retryable


def test_injected_422_with_several_messages(bfl):
    detail = [{"loc": ["body", "width"], "msg": "Input should be a multiple of 32", "type": "multiple_of"},
              {"loc": ["body", "prompt"], "msg": "String should have at most 10000 characters", "type": "too_long"}]
    bfl.faults.set("submit", Fault(status=422, body={"detail": detail}))
    with pytest.raises(UpstreamInvalidRequest) as err:
        run(provider(bfl), req())
    assert "width: Input should be a multiple of 32" in err.value.message
    assert "prompt: String should have at most 10000 characters" in err.value.message


# --- image input modes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["flux-kontext-pro", "flux-kontext-max"])
def test_kontext_edit_sends_first_input_image_as_base64(bfl, model):
    first, second = input_image((1, 2, 3)), input_image((200, 100, 50))
    result = run(provider(bfl), req(model, prompt="make it night", size="1216x832", mode="edit",
                                    images=(first, second)))
    body = json.loads(submits(bfl)[0].body)
    assert base64.b64decode(body["input_image"]) == first.data
    assert body["aspect_ratio"] == "3:2"
    assert body["prompt"] == "make it night"
    assert len(result.images) == 1


def test_edit_with_mask_is_refused(bfl):
    with pytest.raises(UpstreamInvalidRequest) as err:
        run(provider(bfl), req("flux-kontext-pro", mode="edit", images=(input_image(),), mask=input_image()))
    assert "mask" in err.value.message
    assert bfl.requests == []


@pytest.mark.parametrize("model", ["flux-pro-1.1", "flux-dev", "flux-pro-1.1-ultra"])
def test_edit_on_non_kontext_model_is_refused(bfl, model):
    with pytest.raises(UpstreamInvalidRequest) as err:
        run(provider(bfl), req(model, mode="edit", images=(input_image(),)))
    assert "flux-kontext-pro" in err.value.message
    assert bfl.requests == []


def test_variation_is_refused(bfl):
    with pytest.raises(UpstreamInvalidRequest):
        run(provider(bfl), req("flux-kontext-pro", mode="variation", images=(input_image(),)))
    assert bfl.requests == []


def test_unknown_model_is_refused():
    request = ImageRequest(model="flux-schnell", prompt="x", n=1, size="1024x1024", quality="standard")
    with pytest.raises(UpstreamInvalidRequest) as err:
        asyncio.run(BFLProvider(api_key="k").run(request))
    assert "flux-schnell" in err.value.message


# --- polling --------------------------------------------------------------------------------------------------------

def test_polls_until_ready_using_the_polling_url(bfl):
    bfl.state["delay"] = 0.15
    p = provider(bfl, poll_interval=0.02)
    result = run(p, req())
    assert len(result.images) == 1
    task_polls = polls(bfl)
    assert len(task_polls) >= 3  # several Pending answers first
    assert all(r.method == "GET" for r in task_polls)


def test_falls_back_to_get_result_when_no_polling_url(bfl):
    bfl.faults.set("submit", Fault(kind="no_polling_url", times=1))
    run(provider(bfl), req())
    [poll] = polls(bfl)
    assert poll.path.startswith("/v1/get_result?id=")


def test_processing_and_queued_statuses_keep_polling(bfl):
    bfl.faults.set("poll", Fault(status=200, body={"id": "x", "status": "Queued", "result": None}, times=1))
    p = provider(bfl)
    run(p, req())
    bfl.faults.set("poll", Fault(status=200, body={"id": "x", "status": "Processing", "result": None}, times=2))
    run(p, req())
    assert len(polls(bfl)) == 1 + 1 + 2 + 1


def test_transient_poll_failures_are_retried(bfl):
    bfl.faults.set("poll", Fault(status=503, body={"detail": "Service Unavailable"}, times=2))
    result = run(provider(bfl), req())
    assert len(result.images) == 1
    assert len(polls(bfl)) == 3


def test_persistent_poll_failure_gives_up(bfl):
    bfl.faults.set("poll", Fault(status=500, body={"detail": "Internal Server Error"}))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl), req())
    assert "HTTP 500" in err.value.message and "Internal Server Error" in err.value.message


def test_works_from_several_event_loops(bfl):
    p = provider(bfl)
    for _ in range(3):
        assert len(run(p, req()).images) == 1

    async def concurrent():
        return await asyncio.gather(*(p.run(req(seed=i)) for i in range(5)))

    assert len(asyncio.run(concurrent())) == 5


# --- refusals -------------------------------------------------------------------------------------------------------

def test_request_moderated_is_a_content_refusal(bfl):
    with pytest.raises(ContentRefused) as err:
        run(provider(bfl), req(prompt="something forbidden-upstream"))
    assert "Request Moderated" in err.value.message
    assert err.value.provider == "bfl" and not err.value.retryable
    assert downloads(bfl) == []


def test_content_moderated_is_a_content_refusal(bfl):
    bfl.state["delay"] = 0.05
    with pytest.raises(ContentRefused) as err:
        run(provider(bfl), req("flux-kontext-pro", prompt="forbidden-output please"))
    assert "Content Moderated" in err.value.message
    assert "Prohibited output" in err.value.message


# --- upstream errors ------------------------------------------------------------------------------------------------

def test_error_status_is_unavailable_with_details(bfl):
    bfl.faults.set("submit", Fault(kind="error", times=1))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl), req())
    assert "Error" in err.value.message and "Internal error during generation" in err.value.message
    assert err.value.retryable


def test_task_not_found_is_unavailable(bfl):
    bfl.faults.set("submit", Fault(kind="lost", times=1))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl), req())
    assert "Task not found" in err.value.message


def test_wrong_key_is_a_credentials_problem(bfl):
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl, api_key="wrong"), req())
    assert "credentials" in err.value.message and "HTTP 401" in err.value.message
    assert "Invalid API key" in err.value.message


def test_403_is_a_credentials_problem(bfl):
    bfl.faults.set("submit", Fault(status=403, body={"detail": "Not authenticated"}))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl), req())
    assert "credentials" in err.value.message and "HTTP 403" in err.value.message


def test_out_of_credits(bfl):
    bfl.state["credits"] = 5.0
    p = provider(bfl)
    run(p, req())  # 4 credits
    with pytest.raises(UpstreamUnavailable) as err:
        run(p, req())
    assert "out of credits" in err.value.message and "Insufficient credits" in err.value.message


def test_real_concurrency_limit_gives_429(bfl):
    bfl.state["max_concurrent"] = 2
    bfl.state["delay"] = 0.4
    p = provider(bfl, poll_interval=0.05)

    async def three():
        return await asyncio.gather(*(p.run(req(seed=i)) for i in range(3)), return_exceptions=True)

    outcomes = asyncio.run(three())
    limited = [o for o in outcomes if isinstance(o, Exception)]
    assert len(limited) == 1 and isinstance(limited[0], UpstreamRateLimited)
    assert "rate_limit_exceeded" in limited[0].message and "retry after 1" in limited[0].message
    assert limited[0].retryable and limited[0].retry_after_seconds == 1.0
    assert sum(1 for o in outcomes if not isinstance(o, Exception)) == 2


def test_injected_429(bfl):
    bfl.faults.set("submit", Fault(status=429, headers={"Retry-After": "3"},
                                   body={"error": "rate_limit_exceeded", "message": "Too many active tasks",
                                         "retry_after": 3}))
    with pytest.raises(UpstreamRateLimited) as err:
        run(provider(bfl), req())
    assert "Too many active tasks" in err.value.message and "retry after 3" in err.value.message
    assert err.value.retry_after_seconds == 3.0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_submit_5xx(bfl, status):
    bfl.faults.set("submit", Fault(status=status, body={"detail": "upstream overloaded"}))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl), req())
    assert f"HTTP {status}" in err.value.message and "upstream overloaded" in err.value.message


def test_connection_refused(bfl):
    p = BFLProvider(api_key=API_KEY, base_url=f"http://127.0.0.1:{free_port()}", timeout=1, deadline=3)
    with pytest.raises(UpstreamUnavailable) as err:
        run(p, req())
    assert "could not reach" in err.value.message and "submit" in err.value.message


def test_deadline_passes_while_polling(bfl):
    bfl.state["delay"] = 10.0
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as err:
        run(provider(bfl, deadline=0.3, poll_interval=0.05), req())
    assert time.monotonic() - started < 2
    assert "deadline" in err.value.message and err.value.retryable
    assert len(polls(bfl)) >= 2


def test_read_timeout_on_submit(bfl):
    bfl.faults.set("submit", Fault(delay=1.0, times=1))
    with pytest.raises(UpstreamTimeout) as err:
        run(provider(bfl, timeout=0.2), req())
    assert "timed out" in err.value.message


def test_deadline_bounds_a_slow_submit(bfl):
    bfl.faults.set("submit", Fault(delay=1.0, times=1))
    with pytest.raises(UpstreamTimeout):
        run(provider(bfl, timeout=5, deadline=0.2), req())


@pytest.mark.parametrize("body", [None, b'{"id": "abc", "polling_u'])
def test_malformed_submit_reply(bfl, body):
    bfl.faults.set("submit", Fault(kind="malformed", body=body))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl), req())
    assert "not JSON" in err.value.message


def test_submit_reply_without_id(bfl):
    bfl.faults.set("submit", Fault(status=200, body={"polling_url": "x"}))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl), req())
    assert "no task id" in err.value.message


def test_malformed_poll_replies(bfl):
    bfl.faults.set("poll", Fault(kind="malformed"))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl), req())
    assert "not JSON" in err.value.message
    bfl.reset()
    bfl.faults.set("poll", Fault(status=200, body={"id": "x", "status": "Ready", "result": {}}))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl), req())
    assert "no sample URL" in err.value.message
    bfl.faults.set("poll", Fault(status=200, body={"id": "x", "status": "Exploded"}))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl), req())
    assert "Exploded" in err.value.message


def test_download_not_an_image(bfl):
    bfl.faults.set("download", Fault(kind="malformed"))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl), req())
    assert "not a PNG, JPEG or WebP" in err.value.message


def test_expired_sample_url(bfl):
    bfl.state["sample_ttl"] = 0.0
    bfl.state["delay"] = 0.02
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl, poll_interval=0.05), req())
    assert "HTTP 403" in err.value.message and "expired" in err.value.message


def test_download_5xx_is_retried_once(bfl):
    bfl.faults.set("download", Fault(status=502, body=b"bad gateway", times=1))
    assert len(run(provider(bfl), req()).images) == 1
    assert len(downloads(bfl)) == 2


def test_download_size_limit(bfl):
    p = provider(bfl)
    p.max_download_bytes = 50
    with pytest.raises(UpstreamUnavailable) as err:
        run(p, req())
    assert "limit" in err.value.message


def test_jpeg_and_webp_are_sniffed(bfl):
    for fmt, content_type in (("JPEG", "image/jpeg"), ("WEBP", "image/webp")):
        out = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(out, format=fmt)
        bfl.faults.set("download", Fault(status=200, body=out.getvalue(), times=1))
        result = run(provider(bfl), req())
        assert result.images[0].content_type == content_type
        assert result.images[0].data == out.getvalue()


# --- the emulator itself --------------------------------------------------------------------------------------------

def test_emulator_validates_like_bfl(bfl):
    headers = {"x-key": API_KEY}
    with httpx.Client(base_url=bfl.url, headers=headers) as c:
        r = c.post("/v1/flux-pro-1.1", json={"prompt": "x", "width": 1000, "height": 2048})
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert {(tuple(d["loc"]), d["msg"]) for d in detail} == {
            (("body", "width"), "Input should be a multiple of 32"),
            (("body", "height"), "Input should be less than or equal to 1440")}
        r = c.post("/v1/flux-pro-1.1-ultra", json={"prompt": "x", "aspect_ratio": "3:1"})
        assert r.status_code == 422 and "between 21:9 and 9:21" in r.json()["detail"][0]["msg"]
        r = c.post("/v1/flux-kontext-pro", json={"aspect_ratio": "1:1"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prompt"]
        r = c.post("/v1/flux-kontext-pro", json={"prompt": "x", "input_image": "bm90IGFuIGltYWdl"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "input_image"]
        r = c.post("/v1/flux-dev", json={"prompt": "x", "output_format": "gif", "safety_tolerance": 9})
        assert r.status_code == 422 and len(r.json()["detail"]) == 2
        r = c.post("/v1/flux-pro", json={"prompt": "x"})
        assert r.status_code == 404
        r = c.post("/v1/flux-pro-1.1", json={"prompt": "x"}, headers={"x-key": ""})
        assert r.status_code == 401 and r.json() == {"detail": "Not authenticated"}
        r = c.get("/v1/get_result", params={"id": "nope"})
        assert r.status_code == 200 and r.json()["status"] == "Task not found"


def test_emulator_enforces_24_active_tasks_per_key(bfl):
    bfl.state["delay"] = 5.0
    # A key of its own: tasks that earlier tests left pending on API_KEY must not count against this budget.
    bfl.state["keys"] = {"second-key", "budget-key"}
    with httpx.Client(base_url=bfl.url) as c:
        for i in range(24):
            r = c.post("/v1/flux-pro-1.1", json={"prompt": f"p{i}"}, headers={"x-key": "budget-key"})
            assert r.status_code == 200, r.text
            assert set(r.json()) >= {"id", "polling_url", "cost"}
        r = c.post("/v1/flux-pro-1.1", json={"prompt": "one too many"}, headers={"x-key": "budget-key"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"] == "rate_limit_exceeded" and "retry_after" in r.json() and r.json()["message"]
        # Another key has its own budget; a pending task polls as Pending with progress.
        r = c.post("/v1/flux-pro-1.1", json={"prompt": "other"}, headers={"x-key": "second-key"})
        assert r.status_code == 200
        polled = c.get(r.json()["polling_url"], headers={"x-key": "second-key"}).json()
        assert polled["status"] == "Pending" and polled["result"] is None


def test_emulator_ready_shape(bfl):
    with httpx.Client(base_url=bfl.url, headers={"x-key": API_KEY}) as c:
        task = c.post("/v1/flux-pro-1.1", json={"prompt": "shape", "seed": 3}).json()
        ready = c.get(task["polling_url"]).json()
        assert ready["status"] == "Ready" and ready["id"] == task["id"]
        assert set(ready["result"]) >= {"sample", "prompt", "seed", "start_time", "end_time", "duration"}
        image = httpx.get(ready["result"]["sample"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content == make_png(f"{task['id']}:shape:3", 64, 64)


# --- FLUX.2 ---------------------------------------------------------------------------------------------------------

# BFL's FLUX.2 prices at 1024x1024 (1.048576 MP), worked by hand from docs/providers/bfl.md's formula
# first + per-MP x (MP - 1), in micro-USD, rounded up: e.g. [pro] 30,000 + 15,000 x 0.048576 = 30,728.64 → 30,729.
FLUX2_1024_MICROS = {"flux-2-klein-4b": 14_049, "flux-2-klein-9b": 15_098, "flux-2-pro": 30_729,
                     "flux-2-flex": 52_429, "flux-2-max": 71_458}


@pytest.mark.parametrize("model", FLUX2)
def test_flux2_every_model_happy_path(bfl, model):
    p = provider(bfl)
    result = run(p, req(model, seed=7))

    [sent] = submits(bfl)
    assert sent.path == f"/v1/{model}" and sent.headers["x-key"] == API_KEY
    expected = {"prompt": "a red fox in snow", "width": 1024, "height": 1024, "seed": 7, "safety_tolerance": 2,
                "output_format": "png"}
    if model == "flux-2-flex":
        expected["prompt_upsampling"] = False
    assert json.loads(sent.body) == expected
    [image] = result.images
    assert image.content_type == "image/png" and image.data.startswith(b"\x89PNG")
    assert "x-key" not in downloads(bfl)[0].headers
    # The cost BFL reported for the task (credits → micro-USD) is what the published formula says.
    assert result.upstream_cost_micros == FLUX2_1024_MICROS[model] == p.upstream_cost_micros(req(model))


@pytest.mark.parametrize("size, micros", [("512x512", 30_000), ("1024x768", 30_000), ("1024x1024", 30_729),
                                          ("1920x1088", 46_335), ("2048x2048", 77_915)])
def test_flux2_price_grows_with_megapixels(bfl, size, micros):
    """[pro]: 3 credits for the first megapixel (also for less), 1.5 per further megapixel, pro rata."""
    p = provider(bfl)
    result = run(p, req("flux-2-pro", size=size))
    assert result.upstream_cost_micros == micros == p.upstream_cost_micros(req("flux-2-pro", size=size))
    width, height = map(int, size.split("x"))
    assert (json.loads(submits(bfl)[0].body)["width"], json.loads(submits(bfl)[0].body)["height"]) == (width, height)
    assert p.upstream_cost_micros(req("flux-2-pro", size=size, n=3)) == 3 * micros


def test_flux2_n_tasks_and_cost(bfl):
    result = run(provider(bfl), req("flux-2-klein-4b", size="2048x2048", n=3, seed=1))
    assert len(result.images) == 3
    assert sorted(json.loads(r.body)["seed"] for r in submits(bfl)) == [1, 2, 3]
    assert result.upstream_cost_micros == 3 * 17_195  # 14,000 + 1,000 x 3.194304, rounded up


@pytest.mark.parametrize("size", ["1000x1000", "1024x1000", "48x1024", "4096x4096", "2064x2048", "auto"])
def test_flux2_sizes_the_upstream_cannot_do_are_refused_before_any_call(bfl, size):
    with pytest.raises(UpstreamInvalidRequest) as err:
        run(provider(bfl), req("flux-2-max", size=size))
    assert "multiples of 16" in err.value.message and size in err.value.message
    assert bfl.requests == []


def test_flux2_flex_steps_and_guidance_from_options(bfl):
    run(provider(bfl), req("flux-2-flex", options={"steps": 30, "guidance": 6.5}))
    body = json.loads(submits(bfl)[0].body)
    assert (body["steps"], body["guidance"], body["prompt_upsampling"]) == (30, 6.5, False)
    bfl.reset()
    with pytest.raises(UpstreamInvalidRequest) as err:  # the emulator's own validation, BFL's 422 shape
        run(provider(bfl), req("flux-2-flex", options={"steps": 80}))
    assert "steps: Input should be less than or equal to 50" in err.value.message


@pytest.mark.parametrize("model", ["flux-2-pro", "flux-2-klein-9b"])
def test_flux2_edits_are_refused(bfl, model):
    with pytest.raises(UpstreamInvalidRequest) as err:
        run(provider(bfl), req(model, mode="edit", images=(input_image(),)))
    assert "generation only" in err.value.message and "flux-kontext-pro" in err.value.message
    assert bfl.requests == []


def test_flux2_moderation_statuses_are_refusals(bfl):
    with pytest.raises(ContentRefused) as err:
        run(provider(bfl), req("flux-2-pro", prompt="a forbidden-upstream scene"))
    assert "Request Moderated" in err.value.message
    bfl.state["delay"] = 0.03
    with pytest.raises(ContentRefused) as err:
        run(provider(bfl), req("flux-2-klein-4b", prompt="forbidden-output please"))
    assert "Content Moderated" in err.value.message and downloads(bfl) == []


def test_flux2_slow_and_malformed_answers(bfl):
    bfl.faults.set("submit", Fault(delay=1.0, times=1))
    with pytest.raises(UpstreamTimeout):
        run(provider(bfl, timeout=0.2), req("flux-2-max"))
    bfl.faults.set("poll", Fault(kind="malformed"))
    with pytest.raises(UpstreamUnavailable) as err:
        run(provider(bfl), req("flux-2-max"))
    assert "not JSON" in err.value.message and len(polls(bfl)) == 3  # polled through twice, then given up


def test_flux2_over_24_active_tasks_is_rate_limited(bfl):
    bfl.state["delay"] = 0.5
    p = provider(bfl, poll_interval=0.05, deadline=10.0)

    async def burst():
        return await asyncio.gather(*(p.run(req("flux-2-klein-4b", seed=i)) for i in range(26)),
                                    return_exceptions=True)

    outcomes = asyncio.run(burst())
    limited = [o for o in outcomes if isinstance(o, UpstreamRateLimited)]
    assert len(limited) == 2 and all(o.retry_after_seconds == 1.0 for o in limited)
    assert sum(1 for o in outcomes if not isinstance(o, Exception)) == 24


def test_flux2_cost_without_a_reported_cost_is_the_published_price(bfl):
    bfl.faults.set("submit", Fault(kind="no_cost", times=1))
    assert run(provider(bfl), req("flux-2-flex", size="1536x1536")).upstream_cost_micros == 117_965


def test_our_flux2_list_prices_are_bfls_plus_ten_percent_rounded_up_at_every_catalog_size():
    """billing/price_list.py mirrors the adapter's tariffs (billing cannot import generation) and adds 10 % to the
    exact per-megapixel price, rounding up once; larger sizes cost more."""
    from fractions import Fraction
    from math import ceil

    from billing.price_list import _FLUX2_TARIFFS_MICROS, PRICE_LIST
    from generation import catalog
    from generation.providers.bfl import FLUX2_TARIFFS

    assert _FLUX2_TARIFFS_MICROS == {m: (t.first_mp_micros, t.extra_mp_micros) for m, t in FLUX2_TARIFFS.items()}
    ours = {(m, s): micros for m, s, q, micros, _ in PRICE_LIST if q == "standard"}
    p = BFLProvider(api_key="k")
    for model in FLUX2:
        tariff = FLUX2_TARIFFS[model]
        by_pixels = []
        for size in catalog.MODELS[model].sizes:
            width, height = map(int, size.split("x"))
            exact = tariff.first_mp_micros + Fraction(tariff.extra_mp_micros * max(0, width * height - 10**6), 10**6)
            assert p.upstream_cost_micros(req(model, size=size)) == ceil(exact), (model, size)
            assert ours[(model, size)] == ceil(exact * Fraction(11, 10)), (model, size)
            by_pixels.append((width * height, ours[(model, size)]))
        by_pixels.sort()
        assert all(a[1] <= b[1] for a, b in zip(by_pixels, by_pixels[1:]))
        assert by_pixels[-1][1] > by_pixels[0][1]


def test_emulator_validates_flux2_like_bfl(bfl):
    with httpx.Client(base_url=bfl.url, headers={"x-key": API_KEY}) as c:
        r = c.post("/v1/flux-2-pro", json={"prompt": "x", "width": 1000, "height": 32, "safety_tolerance": 6,
                                           "output_format": "webp", "webhook_url": "ftp://example.com/hook"})
        assert r.status_code == 422
        assert {(d["loc"][1], d["msg"]) for d in r.json()["detail"]} == {
            ("width", "Input should be a multiple of 16"),
            ("height", "Input should be greater than or equal to 64"),
            ("safety_tolerance", "Input should be less than or equal to 5"),
            ("output_format", "Input should be 'jpeg' or 'png'"),
            ("webhook_url", "URL scheme should be 'http' or 'https'")}
        r = c.post("/v1/flux-2-flex", json={"prompt": "x", "steps": 0, "guidance": 11, "prompt_upsampling": "yes"})
        assert r.status_code == 422 and {d["loc"][1] for d in r.json()["detail"]} == {"steps", "guidance",
                                                                                      "prompt_upsampling"}
        r = c.post("/v1/flux-2-klein-4b", json={"width": 1024})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prompt"]
        r = c.post("/v1/flux-2-max", json={"prompt": "x", "input_image_2": "bm90IGFuIGltYWdl"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "input_image_2"]
        # Output and input megapixels are both charged: 1920x1088 out (2.08896 MP) + a 48x32 input (0.001536 MP).
        image = base64.b64encode(input_image().data).decode()
        r = c.post("/v1/flux-2-pro", json={"prompt": "x", "width": 1920, "height": 1088, "input_image": image,
                                           "webhook_url": "https://example.com/hook", "webhook_secret": "s"})
        assert r.status_code == 200
        task = r.json()
        assert (task["output_mp"], task["input_mp"]) == (2.09, 0.0)
        assert task["cost"] == 4.6358  # 3 + 1.5 x 1.08896 + 1.5 x 0.001536 = 4.635744, rounded up to 0.0001
        assert c.get(task["polling_url"]).json()["status"] == "Ready"
        r = c.post("/v1/flux-2-pro", json={"prompt": "x"})  # no size: 1024x1024
        assert r.json()["cost"] == 3.0729 and r.json()["output_mp"] == 1.05
