"""Streaming image requests (issue 13): `stream: true` on /v1/images/generations and /v1/images/edits answers OpenAI's
Server-Sent Events, iterated by the official Python SDK; the OpenAI adapter streams from its upstream (the emulator
streams as OpenAI does); errors before the first event keep the JSON envelope; replays and disconnects are charged
once."""
import asyncio
import base64
import json
import threading
import time
import uuid

import httpx
import openai
import pytest
from openai.types import (
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
)

from billing.models import LedgerEntry
from billing.selectors import current_price
from generation import providers
from generation.providers import base as pb
from generation.providers.openai import OpenAIProvider
from tests.emulators import openai as openai_emu
from tests.emulators.base import Fault
from tests.emulators.openai import recorded_form, recorded_json
from tests.images_util import png
from tests.servers import uvicorn_processes


@pytest.fixture(scope="module")
def upstream():
    with openai_emu.emulator(retired=()) as emu:  # OpenAI as it was before the dall-e retirement
        yield emu


@pytest.fixture
def configured(upstream, settings, live_url):
    upstream.reset()
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = openai_emu.API_KEY, upstream.url + "/v1"
    settings.PROVIDER_TIMEOUT_SECONDS = 10.0
    providers.reset_registry()
    yield upstream
    providers.reset_registry()
    upstream.reset()


def _rows(api_key):
    return list(LedgerEntry.objects.for_organization(api_key[0].organization).order_by("id"))


def _image_requests(emu):
    return [r for r in emu.requests if r.path.startswith("/v1/images/")]


def _strict(event):
    """The event re-validated by the SDK's own type (construct() on iteration checks nothing). The completed
    events' `usage` is ours (cost, latency_ms, image_size, model_used, and OpenAI's token fields when present):
    checked by the tests, the rest of the event by the type."""
    data = event.model_dump()
    if "usage" in data:
        data["usage"] = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                         "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}}
    return type(event).model_validate(data)


# --- Through the SDK ------------------------------------------------------------------------------------------------

def test_a_gpt_image_generation_streams_its_upstreams_partial_images_then_the_completed_image(
        configured, openai_client, api_key):
    stream = openai_client.images.generate(model="gpt-image-1", prompt="a lighthouse at dusk", size="1024x1024",
                                           quality="low", stream=True, partial_images=2)
    events = list(stream)
    assert [e.type for e in events] == ["image_generation.partial_image", "image_generation.partial_image",
                                        "image_generation.completed"]
    partials, completed = events[:2], events[2]
    assert all(isinstance(e, ImageGenPartialImageEvent) for e in partials)
    assert isinstance(completed, ImageGenCompletedEvent)
    assert [e.partial_image_index for e in partials] == [0, 1]
    for event in events:
        _strict(event)
        assert base64.b64decode(event.b64_json)[:4] == b"\x89PNG"
        assert (event.size, event.quality, event.output_format) == ("1024x1024", "low", "png")
        assert abs(event.created_at - time.time()) < 60
    assert partials[0].background == "auto"  # partial images carry the requested setting
    (row,) = _rows(api_key)
    price = current_price(model="gpt-image-1", size="1024x1024", quality="low").unit_price_micros
    assert row.status == "succeeded" and row.cost_micros == price
    usage = completed.model_dump()["usage"]
    assert usage["cost"] == pytest.approx(price / 1e6)
    assert usage["model_used"] == "gpt-image-1" and usage["image_size"] == "1024x1024"
    (sent,) = _image_requests(configured)
    body = recorded_json(sent)
    assert body["stream"] is True and body["partial_images"] == 2
    as_json = openai_client.images.with_raw_response.generate(model="gpt-image-1", prompt="a lighthouse at dusk",
                                                              size="1024x1024", quality="low").http_response.json()
    assert completed.background == as_json["background"]  # the completed image's fields are the JSON answer's
    # The same usage block, built by the same code (model_dump lists the SDK type's fields even when absent).
    assert {k for k, v in usage.items() if v is not None} == set(as_json["usage"])


def test_the_stream_is_server_sent_events_in_openais_wire_format(configured, live_url, api_key):
    _, raw = api_key
    with httpx.stream("POST", f"{live_url}/v1/images/generations", timeout=30,
                      headers={"Authorization": f"Bearer {raw}"},
                      json={"model": "gpt-image-1", "prompt": "x", "size": "1024x1024", "quality": "low",
                            "stream": True, "partial_images": 1}) as response:
        text = response.read().decode()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache" and response.headers["x-request-id"].startswith("req_")
    blocks = [b for b in text.split("\n\n") if b]
    assert [b.splitlines()[0] for b in blocks] == ["event: image_generation.partial_image",
                                                   "event: image_generation.completed"]
    for block in blocks:
        name, data = block.splitlines()
        payload = json.loads(data.removeprefix("data: "))
        assert payload["type"] == name.removeprefix("event: ")
        expected = {"type", "b64_json", "created_at", "size", "quality", "background", "output_format"}
        extra = {"partial_image_index"} if name.endswith("partial_image") else {"usage"}
        assert set(payload) == expected | extra


def test_an_edit_streams_image_edit_events(configured, openai_client, api_key):
    events = list(openai_client.images.edit(model="gpt-image-1", image=("in.png", png(), "image/png"),
                                            prompt="add a red balloon", size="1024x1536", quality="medium",
                                            stream=True, partial_images=1))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert isinstance(events[0], ImageEditPartialImageEvent) and isinstance(events[1], ImageEditCompletedEvent)
    for event in events:
        _strict(event)
        assert event.size == "1024x1536" and event.quality == "medium"
    (row,) = _rows(api_key)
    assert row.endpoint == "edits" and row.cost_micros == current_price(
        model="gpt-image-1", size="1024x1536", quality="medium").unit_price_micros
    assert events[1].model_dump()["usage"]["cost"] == pytest.approx(row.cost_micros / 1e6)
    (sent,) = _image_requests(configured)
    fields, _ = recorded_form(sent)
    assert fields["stream"] == ["true"] and fields["partial_images"] == ["1"]


def test_n_images_stream_one_completed_event_each_with_the_requests_usage(configured, openai_client, api_key):
    events = list(openai_client.images.generate(model="gpt-image-1", prompt="two cats", n=2, size="1024x1024",
                                                quality="low", stream=True, partial_images=1))
    assert [e.type for e in events].count("image_generation.partial_image") == 2
    completed = [e for e in events if e.type == "image_generation.completed"]
    assert len(completed) == 2 and completed[0].b64_json != completed[1].b64_json
    (row,) = _rows(api_key)
    assert [e.model_dump()["usage"]["cost"] for e in completed] == [pytest.approx(row.cost_micros / 1e6)] * 2


def test_without_partial_images_the_upstream_is_called_as_usual_and_one_completed_event_answers(
        configured, openai_client, api_key):
    events = list(openai_client.images.generate(model="gpt-image-1", prompt="x", size="1024x1024", quality="low",
                                                stream=True))
    assert [e.type for e in events] == ["image_generation.completed"]
    (sent,) = _image_requests(configured)
    assert "stream" not in recorded_json(sent)


@pytest.mark.parametrize("model, upstream_called", [("dall-e-3", True), ("local-preview", False)])
def test_a_model_whose_upstream_cannot_stream_sends_one_completed_event(configured, openai_client, api_key, model,
                                                                       upstream_called):
    events = list(openai_client.images.generate(model=model, prompt="a harbour", size="1024x1024", stream=True,
                                                partial_images=3))
    assert [e.type for e in events] == ["image_generation.completed"]
    (event,) = events
    _strict(event)
    assert base64.b64decode(event.b64_json)[:4] == b"\x89PNG"
    # dall-e-3's and local-preview's "standard" is not a quality OpenAI's event type knows: "auto" (the model's own)
    assert (event.size, event.quality, event.background, event.output_format) == ("1024x1024", "auto", "auto", "png")
    (row,) = _rows(api_key)
    assert event.model_dump()["usage"]["cost"] == pytest.approx(row.cost_micros / 1e6) and row.cost_micros > 0
    sent = _image_requests(configured)
    assert bool(sent) is upstream_called
    if sent:
        assert "stream" not in recorded_json(sent[0]) and recorded_json(sent[0])["response_format"] == "b64_json"


def test_a_local_edit_streams_one_image_edit_completed_event(configured, openai_client, api_key):
    events = list(openai_client.images.edit(model="local-preview", image=("in.png", png(), "image/png"),
                                            prompt="snow", size="256x256", stream=True))
    assert [e.type for e in events] == ["image_edit.completed"]
    assert events[0].size == "256x256"


# --- Errors ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, status, code", [
    ({"model": "gpt-image-1", "size": "640x480"}, 400, "invalid_size"),
    ({"model": "gpt-image-1", "partial_images": 4}, 400, "invalid_parameter"),
    ({"model": "dall-e-3", "response_format": "url"}, 400, "invalid_parameter"),
    ({"model": "dall-e-9"}, 404, "model_not_found"),
    ({"model": "gpt-image-1", "prompt": "forbidden-upstream thing"}, 400, "content_policy_violation"),
    ({"model": "gpt-image-1", "prompt": "forbidden-upstream thing", "partial_images": 2}, 400,
     "content_policy_violation"),  # the upstream refuses before its stream begins
    ({"model": "gpt-image-1", "stream": "yes"}, 400, "invalid_type"),
])
def test_errors_before_the_first_event_keep_the_json_envelope_and_status(configured, live_url, api_key, body,
                                                                         status, code):
    _, raw = api_key
    payload = {"prompt": "x", "stream": True, **body}
    if payload["stream"] == "yes":  # not a stream: refused by validation, as JSON
        assert status == 400
    response = httpx.post(f"{live_url}/v1/images/generations", json=payload, timeout=30,
                          headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code


def test_the_sdk_raises_an_error_before_the_first_event_as_for_json(configured, openai_client, api_key):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="gpt-image-1", prompt="x", size="640x480", stream=True)
    assert info.value.code == "invalid_size"
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="gpt-image-1", prompt="x", stream="yes")  # type: ignore[arg-type]
    assert info.value.code == "invalid_type"
    assert all(row.cost_micros == 0 for row in _rows(api_key))


@pytest.mark.parametrize("kind, code", [("stream_error", "upstream_error"),
                                        ("stream_refuse", "content_policy_violation"),
                                        ("stream_cut", "upstream_error")])
def test_an_upstream_failing_after_the_first_partial_ends_the_stream_with_an_error_event_and_costs_nothing(
        configured, openai_client, api_key, kind, code):
    configured.faults.set("generate", Fault(kind=kind))
    stream = openai_client.images.generate(model="gpt-image-1", prompt="x", size="1024x1024", quality="low",
                                           stream=True, partial_images=2)
    first = next(iter(stream))
    assert first.type == "image_generation.partial_image"
    with pytest.raises(openai.APIError) as info:
        list(stream)
    assert info.value.code == code
    (row,) = _rows(api_key)
    assert row.status != "succeeded" and row.cost_micros == 0


# --- Idempotency and disconnects ------------------------------------------------------------------------------------

def test_an_idempotency_key_replay_of_a_stream_replays_its_completed_event(configured, openai_client, api_key):
    key = f"stream-{uuid.uuid4()}"
    kwargs = dict(model="gpt-image-1", prompt="a fox", size="1024x1024", quality="low", stream=True,
                  partial_images=2, extra_headers={"Idempotency-Key": key})
    first = list(openai_client.images.generate(**kwargs))
    raw = openai_client.images.with_raw_response.generate(**kwargs)
    assert raw.headers["idempotent-replayed"] == "true"
    replay = list(raw.parse())
    assert [e.type for e in replay] == ["image_generation.completed"]
    assert replay[0].b64_json == first[-1].b64_json
    assert replay[0].model_dump()["usage"] == first[-1].model_dump()["usage"]
    assert len(_rows(api_key)) == 1 and len(_image_requests(configured)) == 1


def test_a_client_that_disconnects_after_the_first_partial_is_charged_once_and_its_retry_is_not_charged(
        transactional_db, prices, api_key, upstream):
    upstream.reset()
    gate = upstream.state["gate"] = threading.Event()  # the upstream holds its stream after the first partial
    _, raw = api_key
    key = f"disconnect-{uuid.uuid4()}"
    headers = {"Authorization": f"Bearer {raw}", "Idempotency-Key": key}
    payload = {"model": "gpt-image-1", "prompt": "a storm", "size": "1024x1024", "quality": "low", "stream": True,
               "partial_images": 3}
    with uvicorn_processes(1, OPENAI_API_KEY=openai_emu.API_KEY, OPENAI_BASE_URL=upstream.url + "/v1") as servers:
        base = servers[0][0]
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", f"{base}/v1/images/generations", json=payload, headers=headers) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        assert json.loads(line[5:])["type"] == "image_generation.partial_image"
                        break
        # The connection is closed: the client saw one partial image, and nothing is charged yet (the upstream is
        # still holding the rest). Then the upstream finishes: the generation goes on and is charged once.
        assert not LedgerEntry.objects.for_organization(api_key[0].organization).exists()
        gate.set()
        deadline = time.monotonic() + 20
        while not LedgerEntry.objects.for_organization(api_key[0].organization).exists():
            assert time.monotonic() < deadline, "the generation was not recorded after the client left"
            time.sleep(0.1)
        (row,) = _rows(api_key)
        price = current_price(model="gpt-image-1", size="1024x1024", quality="low").unit_price_micros
        assert row.status == "succeeded" and row.cost_micros == price
        sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=raw, max_retries=0, timeout=30)
        deadline = time.monotonic() + 20
        while True:  # 409 while the first attempt still stores its answer (the SDK would retry it by itself)
            try:
                replay = list(sdk.images.generate(**{k: v for k, v in payload.items() if k != "stream"}, stream=True,
                                                  extra_headers={"Idempotency-Key": key}))
                break
            except openai.ConflictError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    assert [e.type for e in replay] == ["image_generation.completed"]
    assert replay[0].model_dump()["usage"]["cost"] == pytest.approx(price / 1e6)
    assert len(_rows(api_key)) == 1  # the retry was not charged
    assert len(_image_requests(upstream)) == 1  # nor generated again
    upstream.reset()


# --- The adapter and the transport ----------------------------------------------------------------------------------

def _adapter_run(emu, request, sink=None):
    provider = OpenAIProvider(api_key=openai_emu.API_KEY, base_url=emu.url + "/v1")

    async def go():
        token = pb.partial_sink.set(sink)
        try:
            return await provider.run(request)
        finally:
            pb.partial_sink.reset(token)
            await provider.aclose()

    return asyncio.run(go())


def _gpt(**kw):
    kw.setdefault("partial_images", 2)
    return pb.ImageRequest(model="gpt-image-1", prompt="p", n=1, size="auto", quality="auto",
                           options={"background": "transparent", "output_format": "webp"}, **kw)


def test_the_adapter_hands_over_partial_images_as_they_arrive_and_reads_the_completed_event(upstream):
    upstream.reset()
    upstream.state["auto_size"], upstream.state["auto_quality"] = "1536x1024", "high"
    got = []
    result = _adapter_run(upstream, _gpt(), got.append)
    assert [(p.index, p.size, p.quality, p.background, p.output_format) for p in got] == \
        [(0, "1536x1024", "high", "transparent", "webp"), (1, "1536x1024", "high", "transparent", "webp")]
    assert base64.b64decode(got[0].b64_json)[:4] == b"RIFF"
    (image,) = result.images
    assert image.content_type == "image/webp"
    assert (result.resolved_size, result.resolved_quality) == ("1536x1024", "high")  # priced as produced
    assert recorded_json(upstream.requests[0])["stream"] is True


def test_the_adapter_streams_only_when_someone_receives_the_partials(upstream):
    upstream.reset()
    _adapter_run(upstream, _gpt(), sink=None)
    _adapter_run(upstream, _gpt(partial_images=0), sink=lambda p: None)
    assert ["stream" in recorded_json(r) for r in upstream.requests] == [False, False]


@pytest.mark.parametrize("kind, error", [("stream_error", pb.UpstreamUnavailable),
                                         ("stream_refuse", pb.ContentRefused),
                                         ("stream_cut", pb.UpstreamUnavailable)])
def test_the_adapter_maps_a_stream_that_fails_after_its_first_event(upstream, kind, error):
    upstream.reset()
    upstream.faults.set("generate", Fault(kind=kind))
    got = []
    with pytest.raises(error):
        _adapter_run(upstream, _gpt(), got.append)
    assert len(got) == 1
    upstream.reset()


def test_the_transport_reads_server_sent_events_of_any_length_as_they_come():
    from starlette.applications import Starlette
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    from generation.providers.transport import Transport
    from tests.emulators.base import serve

    big = "A" * 3_000_000  # a 1024x1024 PNG in base64 is a data line of this order, far above aiohttp's line limit

    async def events(request):
        async def body():
            yield b": a comment\r\nevent: first\r\ndata: {\"n\": 1}\r\n\r\n"
            yield ("data: " + big[:1_000_000]).encode()  # one event split across writes
            yield (big[1_000_000:] + "\ndata: second line\n\n").encode()
            yield b"event: dropped\ndata: no blank line after it"

        return StreamingResponse(body(), media_type="text/event-stream")

    async def as_json(request):
        return Response(b'{"ok": true}', media_type="application/json")

    app = Starlette(routes=[Route("/sse", events, methods=["POST"]), Route("/json", as_json, methods=["POST"])])
    got = []

    async def go(path, **kwargs):
        transport = Transport(provider="test", timeout=10)
        try:
            return await transport.request("POST", emu.url + path, json={}, on_event=lambda *e: got.append(e),
                                           **kwargs)
        finally:
            await transport.aclose()

    with serve(app) as emu:
        reply = asyncio.run(go("/sse"))
        assert reply.status == 200 and reply.body == b""
        assert got == [("first", '{"n": 1}'), ("message", big + "\nsecond line")]
        got.clear()
        assert asyncio.run(go("/json")).json() == {"ok": True} and got == []  # not a stream: read whole
        with pytest.raises(pb.UpstreamUnavailable, match="larger than"):
            asyncio.run(go("/sse", max_bytes=1_000_000))
