"""An in-memory Black Forest Labs Flux API (FLUX.1 and FLUX.2; docs/providers/bfl.md) for tests and the benchmarks.

    with emulator() as bfl:                 # bfl.url, bfl.faults, bfl.requests, bfl.state
        bfl.state["delay"] = 5.0            # seconds from submit until a task is Ready (default 0)
        bfl.state["max_concurrent"] = 2000  # active tasks per key before 429 (default 24, as BFL)
        bfl.state["sample_ttl"] = 600.0     # seconds a result.sample URL stays valid (default 600)
        bfl.state["credits"] = 10.0         # optional account balance; 402 when a submit would overdraw it
        bfl.state["keys"] = {"other-key"}   # extra accepted keys (API_KEY is always accepted)

Wire format: `x-key` auth (401 {"detail": ...}); POST /v1/<model> validates like BFL's FastAPI (422
{"detail": [{type, loc, msg, input, ctx?}]}) and answers {id, polling_url, cost, input_mp, output_mp};
FLUX.1 costs flat credits per image; FLUX.2 (flux-2-klein-4b, flux-2-klein-9b, flux-2-pro, flux-2-flex,
flux-2-max) costs first-MP credits + per-MP credits for each output megapixel beyond the first and for each input
megapixel (BFL's formula; MP = 10^6 pixels; `cost` rounded up to 0.0001 credit, one micro-dollar). FLUX.2 takes
width/height (multiples of 16, at least 64; default 1024x1024), safety_tolerance 0–5, output_format jpeg|png,
input_image … input_image_4 ([klein]) or … input_image_8, webhook_url (http(s), ≤ 2083 chars), webhook_secret;
[flex] adds steps 1–50, guidance 1.5–10, prompt_upsampling. Webhooks are validated but never called (no test
needs BFL to call back);
GET /v1/get_result?id= answers {id, status, result, progress, details, preview} with status Pending, Ready
(result.sample = a URL served by this emulator at /results/<id>.png), Request Moderated, Content Moderated, Error or
Task not found (all on HTTP 200); over `max_concurrent` active tasks per key: 429 {error: "rate_limit_exceeded",
message, retry_after} with Retry-After.

Moderation: a prompt containing "forbidden-upstream" → "Request Moderated" at once; "forbidden-output" →
"Content Moderated" when the task would be Ready.

Faults (emulator.faults.set(name, Fault(...))), names "submit", "poll", "download":
- status=...: answer with that status, `body` (dict → JSON, str/bytes raw) and `headers`;
- delay=...: wait before answering (asyncio.sleep, never blocks);
- kind="malformed": HTTP 200 with an HTML page (or `body` as given, e.g. truncated JSON); on "download", bytes that
  are not an image;
- on "submit": kind="error" (the task ends with status Error), "moderated" (Request Moderated),
  "content_moderated", "lost" (polls say Task not found), "no_polling_url", "no_cost";
- on "poll": kind="error" / "not_found" / "pending" answer that status for this poll;
- on "download": kind="expired" (403 as an expired pre-signed URL).
"""
import asyncio
import base64
import binascii
import contextlib
import functools
import heapq
import io
import json
import re
import time
import uuid
from decimal import ROUND_CEILING, Decimal

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .base import Fault, Faults, Recorded, make_png, serve

API_KEY = "bfl-test-key-0123456789"

# FLUX.1 model -> credits per image (1 credit = $0.01), as BFL reports `cost`.
MODELS = {
    "flux-pro-1.1": 4.0,
    "flux-dev": 2.5,
    "flux-pro-1.1-ultra": 6.0,
    "flux-kontext-pro": 4.0,
    "flux-kontext-max": 8.0,
}
# FLUX.2 model -> (credits for the first megapixel, credits per further output or input megapixel), and how many
# input images its endpoint takes.
FLUX2_MODELS = {
    "flux-2-klein-4b": (Decimal("1.4"), Decimal("0.1")),
    "flux-2-klein-9b": (Decimal("1.5"), Decimal("0.2")),
    "flux-2-pro": (Decimal("3"), Decimal("1.5")),
    "flux-2-flex": (Decimal("5"), Decimal("5")),
    "flux-2-max": (Decimal("7"), Decimal("3")),
}
FLUX2_INPUT_IMAGES = {"flux-2-klein-4b": 4, "flux-2-klein-9b": 4}  # the others take 8
FLUX2_DEFAULT_SIDE = 1024
PIXEL_MODELS = {"flux-pro-1.1", "flux-dev"}
DEFAULTS = {"delay": 0.0, "max_concurrent": 24, "sample_ttl": 600.0}
_RATIO = re.compile(r"^(\d+):(\d+)$")
_MISSING = object()


@functools.lru_cache(maxsize=4096)
def _png(seed: str) -> bytes:
    return make_png(seed, 64, 64)


def _looks_like_image(data: bytes) -> bool:
    return (data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff")
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"))


class _Validator:
    """Collects errors in pydantic v2's shape, as BFL's FastAPI answers them."""

    def __init__(self, body: dict):
        self.body = body
        self.errors: list[dict] = []

    def error(self, field: str, type_: str, msg: str, value, ctx: dict | None = None):
        item = {"type": type_, "loc": ["body", field], "msg": msg, "input": value}
        if ctx:
            item["ctx"] = ctx
        self.errors.append(item)

    def string(self, field: str, *, required: bool = False):
        value = self.body.get(field, _MISSING)
        if value is _MISSING or (value is None and not required):
            if required:
                self.error(field, "missing", "Field required", self.body)
            return None
        if not isinstance(value, str):
            self.error(field, "string_type", "Input should be a valid string", value)
            return None
        return value

    def number(self, field: str, *, integer: bool, ge=None, le=None, multiple_of=None):
        value = self.body.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "int" if integer else "float"
            self.error(field, f"{kind}_type", f"Input should be a valid {'integer' if integer else 'number'}", value)
            return None
        if integer and isinstance(value, float) and not value.is_integer():
            self.error(field, "int_from_float", "Input should be a valid integer, got a number with a fractional "
                                                "part", value)
            return None
        if ge is not None and value < ge:
            self.error(field, "greater_than_equal", f"Input should be greater than or equal to {ge}", value,
                       {"ge": ge})
        elif le is not None and value > le:
            self.error(field, "less_than_equal", f"Input should be less than or equal to {le}", value, {"le": le})
        elif multiple_of is not None and value % multiple_of:
            self.error(field, "multiple_of", f"Input should be a multiple of {multiple_of}", value,
                       {"multiple_of": multiple_of})
        return value

    def boolean(self, field: str):
        value = self.body.get(field)
        if value is not None and not isinstance(value, bool):
            self.error(field, "bool_type", "Input should be a valid boolean", value)

    def enum(self, field: str, choices: tuple[str, ...]):
        value = self.body.get(field)
        if value is not None and value not in choices:
            expected = ", ".join(f"'{c}'" for c in choices[:-1]) + f" or '{choices[-1]}'"
            self.error(field, "enum", f"Input should be {expected}", value, {"expected": expected})

    def aspect_ratio(self, field: str):
        value = self.body.get(field)
        if value is None:
            return
        match = _RATIO.match(value) if isinstance(value, str) else None
        if not match or int(match.group(2)) == 0 or int(match.group(1)) == 0:
            self.error(field, "value_error", "Value error, Aspect ratio must be in the format 'W:H', e.g. '16:9'",
                       value, {"error": {}})
            return
        ratio = int(match.group(1)) / int(match.group(2))
        if not (9 / 21 - 1e-9 <= ratio <= 21 / 9 + 1e-9):
            self.error(field, "value_error", "Value error, Aspect ratio must be between 21:9 and 9:21", value,
                       {"error": {}})

    def image(self, field: str):
        value = self.body.get(field)
        if value is None:
            return
        if not isinstance(value, str):
            self.error(field, "string_type", "Input should be a valid string", value)
            return
        if value.startswith(("http://", "https://")):
            return
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            data = b""
        if not _looks_like_image(data):
            self.error(field, "value_error", "Value error, Invalid image: expected a base64-encoded PNG, JPEG or "
                                             "WebP image or an http(s) URL", value[:32], {"error": {}})

    def url(self, field: str, *, max_length: int):
        value = self.string(field)
        if value is None:
            return
        if not value:
            self.error(field, "string_too_short", "String should have at least 1 character", value, {"min_length": 1})
        elif len(value) > max_length:
            self.error(field, "string_too_long", f"String should have at most {max_length} characters", value[:32],
                       {"max_length": max_length})
        elif not value.startswith(("http://", "https://")):
            self.error(field, "url_scheme", "URL scheme should be 'http' or 'https'", value[:32],
                       {"expected_schemes": "'http' or 'https'"})


def _input_image_fields(model: str) -> list[str]:
    count = FLUX2_INPUT_IMAGES.get(model, 8)
    return ["input_image"] + [f"input_image_{i}" for i in range(2, count + 1)]


def validate_flux2(model: str, body: dict) -> list[dict]:
    v = _Validator(body)
    v.string("prompt", required=True)
    for field in _input_image_fields(model):
        v.image(field)
    v.number("width", integer=True, ge=64, multiple_of=16)
    v.number("height", integer=True, ge=64, multiple_of=16)
    v.number("seed", integer=True)
    v.number("safety_tolerance", integer=True, ge=0, le=5)
    v.enum("output_format", ("jpeg", "png"))
    v.url("webhook_url", max_length=2083)
    v.string("webhook_secret")
    if model == "flux-2-flex":
        v.number("steps", integer=True, ge=1, le=50)
        v.number("guidance", integer=False, ge=1.5, le=10)
        v.boolean("prompt_upsampling")
    return v.errors


def _megapixels(width: int, height: int) -> Decimal:
    return Decimal(width * height) / Decimal(1_000_000)


def _input_megapixels(model: str, body: dict) -> Decimal:
    """The input images' megapixels (base64 images measured; an image URL counted as one megapixel, since the
    emulator does not fetch it)."""
    total = Decimal(0)
    for field in _input_image_fields(model):
        value = body.get(field)
        if not isinstance(value, str):
            continue
        if value.startswith(("http://", "https://")):
            total += 1
            continue
        with Image.open(io.BytesIO(base64.b64decode(value))) as image:
            total += _megapixels(*image.size)
    return total


def flux2_cost(model: str, width: int, height: int, input_mp: Decimal) -> Decimal:
    """BFL's FLUX.2 price in credits: first + per_mp x (output MP - 1, at least 0) + per_mp x input MP, rounded up
    to 0.0001 credit (one micro-dollar)."""
    first, per_mp = FLUX2_MODELS[model]
    credits = first + per_mp * max(Decimal(0), _megapixels(width, height) - 1) + per_mp * input_mp
    return credits.quantize(Decimal("0.0001"), rounding=ROUND_CEILING)


def validate(model: str, body: dict) -> list[dict]:
    if model in FLUX2_MODELS:
        return validate_flux2(model, body)
    v = _Validator(body)
    # [pro] and ultra may go without a prompt (an image prompt alone); the others need one.
    v.string("prompt", required=model not in ("flux-pro-1.1", "flux-pro-1.1-ultra"))
    if model in PIXEL_MODELS:
        v.number("width", integer=True, ge=256, le=1440, multiple_of=32)
        v.number("height", integer=True, ge=256, le=1440, multiple_of=32)
    else:
        v.aspect_ratio("aspect_ratio")
    if model == "flux-dev":
        v.number("steps", integer=True, ge=1, le=50)
        v.number("guidance", integer=False, ge=1.5, le=5)
    if model.startswith("flux-kontext"):
        v.image("input_image")
    if model == "flux-pro-1.1-ultra":
        v.boolean("raw")
        v.image("image_prompt")
    v.number("seed", integer=True)
    v.number("safety_tolerance", integer=True, ge=0, le=6)
    v.enum("output_format", ("jpeg", "png", "webp"))
    v.boolean("prompt_upsampling")
    return v.errors


def _fault_response(fault: Fault) -> Response | None:
    """The reply a fault dictates (status or malformed), or None when it only delays or tags the task."""
    if fault.status is not None:
        if isinstance(fault.body, (dict, list)):
            return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
        body = fault.body if fault.body is not None else b""
        return Response(body, status_code=fault.status, headers=fault.headers,
                        media_type="text/plain" if body else None)
    if fault.kind == "malformed":
        if fault.body is not None:
            return Response(fault.body, status_code=200, headers=fault.headers, media_type="application/json")
        return Response("<html><body><h1>502 Bad Gateway</h1>cloudflare</body></html>", status_code=200,
                        media_type="text/html")
    return None


def build_app(faults: Faults, requests: list, state: dict) -> Starlette:
    def setting(name: str):
        return state.get(name, DEFAULTS[name])

    def tasks() -> dict:
        return state.setdefault("tasks", {})

    async def record(request: Request) -> bytes:
        body = await request.body()
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        requests.append(Recorded(method=request.method, path=path, headers=dict(request.headers), body=body))
        return body

    async def take(name: str) -> tuple[Fault | None, Response | None]:
        fault = faults.take(name)
        if fault is None:
            return None, None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        return fault, _fault_response(fault)

    def auth(request: Request) -> Response | None:
        key = request.headers.get("x-key")
        if not key:
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        if key != API_KEY and key not in state.get("keys", ()):
            return JSONResponse({"detail": "Invalid API key. Get a key at https://dashboard.bfl.ai"},
                                status_code=401)
        return None

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def active_slots(key: str, now: float) -> list:
        """Ready times of the key's unfinished tasks (a heap), pruned of those that have finished."""
        heap = state.setdefault("active", {}).setdefault(key, [])
        while heap and heap[0] <= now:
            heapq.heappop(heap)
        return heap

    async def submit(request: Request) -> Response:
        model = request.path_params["model"]
        raw = await record(request)
        fault, reply = await take("submit")
        if reply is not None:
            return reply
        denied = auth(request)
        if denied is not None:
            return denied
        if model not in MODELS and model not in FLUX2_MODELS:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error",
                                             "input": {}, "ctx": {"error": "Expecting value"}}]}, status_code=422)
        if not isinstance(body, dict):
            return JSONResponse({"detail": [{"type": "model_attributes_type", "loc": ["body"],
                                             "msg": "Input should be a valid dictionary or object to extract fields "
                                                    "from", "input": body}]}, status_code=422)
        errors = validate(model, body)
        if errors:
            return JSONResponse({"detail": errors}, status_code=422)

        key = request.headers["x-key"]
        now = time.monotonic()
        heap = active_slots(key, now)
        limit = setting("max_concurrent")
        if len(heap) >= limit:
            return JSONResponse(
                {"error": "rate_limit_exceeded",
                 "message": f"You have reached the limit of {limit} active tasks. Wait for a task to finish before "
                            "submitting another.",
                 "retry_after": 1},
                status_code=429, headers={"Retry-After": "1"})
        if model in FLUX2_MODELS:
            width = body.get("width") or FLUX2_DEFAULT_SIDE
            height = body.get("height") or FLUX2_DEFAULT_SIDE
            input_mp = _input_megapixels(model, body)
            cost = float(flux2_cost(model, width, height, input_mp))
            output_mp = round(width * height / 1e6, 2)
        else:
            cost, input_mp, output_mp = MODELS[model], 0, 1.05
        if "credits" in state:
            if state["credits"] < cost:
                return JSONResponse({"detail": "Insufficient credits. Add credits at https://dashboard.bfl.ai"},
                                    status_code=402)
            state["credits"] -= cost

        prompt = body.get("prompt") or ""
        kind = fault.kind if fault is not None else ""
        delay = setting("delay")
        if "forbidden-upstream" in prompt or kind == "moderated":
            final, ready_at = "Request Moderated", now
        else:
            final, ready_at = "Ready", now + delay
            if "forbidden-output" in prompt or kind == "content_moderated":
                final = "Content Moderated"
            elif kind == "error":
                final = "Error"
        task_id = str(uuid.uuid4())
        if kind != "lost":
            tasks()[task_id] = {"id": task_id, "model": model, "prompt": prompt, "seed": body.get("seed"),
                                "submitted": now, "ready_at": ready_at, "final": final, "wall": time.time()}
        if ready_at > now:
            heapq.heappush(heap, ready_at)
        answer = {"id": task_id, "polling_url": f"{base(request)}/v1/get_result?id={task_id}", "cost": cost,
                  "input_mp": round(float(input_mp), 2), "output_mp": output_mp}
        if kind == "no_polling_url":
            del answer["polling_url"]
        if kind == "no_cost":
            del answer["cost"]
        return JSONResponse(answer)

    def status_body(task_id: str, status: str, **extra) -> dict:
        body = {"id": task_id, "status": status, "result": None, "progress": None, "details": None, "preview": None}
        body.update(extra)
        return body

    async def get_result(request: Request) -> Response:
        await record(request)
        fault, reply = await take("poll")
        if reply is not None:
            return reply
        denied = auth(request)
        if denied is not None:
            return denied
        task_id = request.query_params.get("id")
        if not task_id:
            return JSONResponse({"detail": [{"type": "missing", "loc": ["query", "id"], "msg": "Field required",
                                             "input": None}]}, status_code=422)
        kind = fault.kind if fault is not None else ""
        if kind == "error":
            return JSONResponse(status_body(task_id, "Error", details={"error": "Injected generation failure"}))
        if kind == "not_found":
            return JSONResponse(status_body(task_id, "Task not found"))
        task = tasks().get(task_id)
        if task is None:
            return JSONResponse(status_body(task_id, "Task not found"))
        now = time.monotonic()
        if kind == "pending" or now < task["ready_at"]:
            span = max(task["ready_at"] - task["submitted"], 1e-9)
            progress = min(max((now - task["submitted"]) / span, 0.0), 0.99)
            return JSONResponse(status_body(task_id, "Pending", progress=round(progress, 2)))
        final = task["final"]
        if final == "Request Moderated":
            return JSONResponse(status_body(task_id, final, details={"Moderation Reasons": ["Prohibited content"]}))
        if final == "Content Moderated":
            return JSONResponse(status_body(task_id, final, details={"Moderation Reasons": ["Prohibited output"]}))
        if final == "Error":
            return JSONResponse(status_body(task_id, "Error", details={"error": "Internal error during generation"}))
        duration = task["ready_at"] - task["submitted"]
        expires = int(task["wall"] + duration + setting("sample_ttl"))
        result = {"sample": f"{base(request)}/results/{task_id}.png?se={expires}&sig={task_id[:8]}",
                  "prompt": task["prompt"], "seed": task["seed"], "start_time": task["wall"],
                  "end_time": task["wall"] + duration, "duration": duration}
        return JSONResponse(status_body(task_id, "Ready", result=result, progress=1.0))

    async def sample(request: Request) -> Response:
        await record(request)
        fault = faults.take("download")
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            return _fault_response(fault)
        if fault is not None and fault.kind == "malformed":
            body = fault.body if fault.body is not None else b"<html>not an image</html>"
            return Response(body, status_code=200, media_type="image/png")
        expired_xml = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>"
                       "<Message>Request has expired</Message></Error>")
        if fault is not None and fault.kind == "expired":
            return Response(expired_xml, status_code=403, media_type="application/xml")
        task = tasks().get(request.path_params["task_id"])
        now = time.monotonic()
        if task is None or task["final"] != "Ready" or now < task["ready_at"]:
            return Response("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code>"
                            "<Message>The specified key does not exist.</Message></Error>", status_code=404,
                            media_type="application/xml")
        if now > task["ready_at"] + setting("sample_ttl"):
            return Response(expired_xml, status_code=403, media_type="application/xml")
        return Response(_png(f"{task['id']}:{task['prompt']}:{task['seed']}"), media_type="image/png")

    return Starlette(routes=[
        Route("/v1/get_result", get_result, methods=["GET"]),
        Route("/v1/{model}", submit, methods=["POST"]),
        Route("/results/{task_id}.png", sample, methods=["GET"]),
    ])


@contextlib.contextmanager
def emulator():
    """A running BFL emulator: yields base.Emulator (url, faults, requests, state)."""
    faults, requests, state = Faults(), [], {}
    with serve(build_app(faults, requests, state), faults=faults, requests=requests, state=state) as emu:
        yield emu
