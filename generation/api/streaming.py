"""Streamed image requests: `stream: true` on /v1/images/generations and /v1/images/edits answers OpenAI's
Server-Sent Events instead of one JSON body.

The wire (OpenAI's API reference, "Image streaming"; the Python SDK's types ImageGenPartialImageEvent,
ImageGenCompletedEvent, ImageEditPartialImageEvent, ImageEditCompletedEvent; docs/openai-sdk.md), one event each:

    event: image_generation.partial_image
    data: {"type": "image_generation.partial_image", "b64_json": "...", "created_at": 1764028800, "size": "1024x1024",
           "quality": "medium", "background": "auto", "output_format": "png", "partial_image_index": 0}

    event: image_generation.completed
    data: {"type": "image_generation.completed", "b64_json": "...", "created_at": 1764028800, "size": "1024x1024",
           "quality": "medium", "background": "opaque", "output_format": "png", "usage": {"cost": 0.042, ...}}

Edits send `image_edit.partial_image` and `image_edit.completed` with the same fields. `partial_images` (0-3) is how
many previews the client asked for; only an upstream that streams sends any (the OpenAI adapter for gpt-image
models), and it may send fewer. Every model answers a stream: one completed event per image (n of them).

How one stream is served. The request runs exactly as a JSON request does (images.py `_answer`: the Idempotency-Key,
the pipeline, the ledger row), in a task of its own with `providers.base.partial_sink` set for it, and what comes
first decides the answer:
  * the request ends before any partial image: an error keeps its JSON envelope and HTTP status (nothing was
    streamed yet); a success answers 200 text/event-stream with the partial images that came (if any), then the
    completed events;
  * a partial image comes first: the stream starts (200), partial images follow as they come, then the completed
    events, or one `error` event with the envelope ({"type": "error", "error": {...}}, which the SDKs raise as
    APIError) when the request failed after all.
The completed events are built from the JSON response body the request produced (service.py's, stored under the
Idempotency-Key): their `usage` is that body's `usage` (cost included), `size`/`quality`/`background`/
`output_format` its top-level fields where the model reports them. So an Idempotency-Key replay of a stream answers
its completed events again, without partial images and without a charge. A client that disconnects does not stop
the request: its task runs to the end (the pipeline is shielded as well), the image that was made is charged once
and its answer stored, and a retry with the same key replays it.

Headers are the JSON answer's (x-provider, idempotent-replayed) when the request ended before the stream began; a
stream that began with a partial image sends its headers before the provider is final, so without x-provider.

Partial images reach the client only after the first one decided to stream: an upstream that streams is never
served with decoded input pixels kept for the request (input_images.keep_policy keeps them for the built-in renderer
alone, which does not stream), so the request's KeptPixels may end when the response starts.
"""
import asyncio
import base64
import collections
import json
import time
from collections.abc import AsyncIterator, Awaitable

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

from generation import catalog
from generation.errors import error_parts
from generation.pipeline import validation
from generation.pipeline.idempotency import StoredResponse
from generation.providers.base import PartialImage, partial_sink, sniff_image_type

EVENT_PREFIX = {"generations": "image_generation", "edits": "image_edit"}
CONTENT_TYPE = "text/event-stream; charset=utf-8"
_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
# The qualities OpenAI's event types take (the SDK refuses others); a model's own ("standard", "hd") is sent as auto.
EVENT_QUALITIES = ("low", "medium", "high", "xhigh", "max", "auto")

# Strong references to the requests being streamed: a request outlives a response whose client went away.
_running: set[asyncio.Task] = set()


def requested(data) -> bool:
    """The body asks for a stream: `stream` is true (JSON) or "true" (a form). Anything else, valid or not, is served
    as JSON (validation refuses a `stream` that is not a boolean)."""
    if not isinstance(data, dict):
        return False
    value = data.get("stream")
    return value is True or (isinstance(value, str) and value in validation.FORM_TRUE)


class _Feed:
    """The partial images the adapter hands over (partial_sink), and a wake-up for whoever waits on them."""

    def __init__(self):
        self.partials: collections.deque[PartialImage] = collections.deque()
        self.ready = asyncio.Event()

    def __call__(self, partial: PartialImage) -> None:
        self.partials.append(partial)
        self.ready.set()


async def respond(answer: Awaitable[tuple[StoredResponse, dict]], *, request, endpoint: str,
                  data: dict) -> HttpResponse:
    """Serve a streamed request. `answer` is the request's JSON path (images.py `_answer`: the stored response and
    its headers), `endpoint` "generations" or "edits", `data` the request's fields. Returns the JSON error response
    when the request failed before any event, else a streaming response of Server-Sent Events; raises what `answer`
    raises before any event (the caller answers it in the error envelope)."""
    feed = _Feed()
    token = partial_sink.set(feed)
    try:
        task = asyncio.ensure_future(answer)  # the task copies the context: the adapter sees the sink
    finally:
        partial_sink.reset(token)
    _running.add(task)
    task.add_done_callback(_running.discard)
    task.add_done_callback(lambda _: feed.ready.set())
    await feed.ready.wait()
    headers: dict = {}
    if task.done():
        stored, headers = task.result()
        if stored.status != 200:  # nothing streamed yet: the JSON envelope and its status
            return JsonResponse(stored.body, status=stored.status, headers=headers)
    response = StreamingHttpResponse(_events(feed, task, request=request, prefix=EVENT_PREFIX[endpoint], data=data),
                                     content_type=CONTENT_TYPE, headers=headers)
    response["cache-control"] = "no-cache"
    response["x-accel-buffering"] = "no"  # proxies that buffer (nginx) pass each event on at once
    return response


async def _events(feed: _Feed, task: asyncio.Task, *, request, prefix: str, data: dict) -> AsyncIterator[bytes]:
    while True:
        while feed.partials:
            yield _sse(f"{prefix}.partial_image", partial_event(feed.partials.popleft(), prefix))
        if task.done():
            break
        feed.ready.clear()
        await feed.ready.wait()
    try:
        stored, _ = task.result()
    except Exception as exc:  # the envelope the JSON answer would have carried
        _, body, _ = error_parts(exc, where=request.path, request_id=getattr(request, "request_id", "?"))
        yield _sse("error", {"type": "error", **body})
        return
    if stored.status != 200:
        yield _sse("error", {"type": "error", **stored.body})
        return
    for event in completed_events(stored.body, prefix, data=data):
        yield _sse(event["type"], event)


def partial_event(partial: PartialImage, prefix: str) -> dict:
    """OpenAI's `{prefix}.partial_image` event for one partial image."""
    return {"type": f"{prefix}.partial_image", "b64_json": partial.b64_json, "created_at": int(time.time()),
            "size": partial.size, "quality": partial.quality, "background": partial.background,
            "output_format": partial.output_format, "partial_image_index": partial.index}


def completed_events(body: dict, prefix: str, *, data: dict) -> list[dict]:
    """OpenAI's `{prefix}.completed` events of a JSON images response `body` (service.py's ImagesResponse with our
    usage), one per image. Each carries the body's `usage` as it is (the request's: all n images) and its
    `created` as `created_at`. A model that does not report size, quality, background or output_format (only
    gpt-image models do) gets: usage.image_size; the requested quality, else the model's default; "auto"; the
    format of the image bytes. A quality OpenAI's event types do not know (dall-e's "standard" and "hd", other
    models' "standard") is sent as "auto": the model's own setting."""
    usage = body.get("usage") or {}
    spec = catalog.get_model(str(usage.get("model_used") or data.get("model") or catalog.DEFAULT_MODEL))
    requested_quality = data.get("quality") if isinstance(data.get("quality"), str) else None
    quality = body.get("quality") or requested_quality or (spec.default_quality if spec is not None else "auto")
    quality = quality if quality in EVENT_QUALITIES else "auto"
    events = []
    for item in body.get("data") or ():
        b64 = item.get("b64_json") or ""
        events.append({
            "type": f"{prefix}.completed", "b64_json": b64, "created_at": body.get("created", int(time.time())),
            "size": body.get("size") or usage.get("image_size"), "quality": quality,
            "background": body.get("background") or "auto",
            "output_format": body.get("output_format") or _format_of(b64), "usage": usage,
        })
    return events


def _format_of(b64: str) -> str:
    """png, jpeg or webp, from the image's first bytes (png when they say nothing)."""
    try:
        head = base64.b64decode(b64[:16])
    except ValueError:
        return "png"
    return _FORMATS.get(sniff_image_type(head) or "", "png")


def _sse(name: str, payload: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
