"""A loopback emulator of Ideogram's "Generate with Ideogram 3.0" endpoint (docs/providers/ideogram.md).

    with emulator() as emu:                      # emu.url, emu.faults, emu.requests, emu.state
        provider = IdeogramProvider(api_key=API_KEY, base_url=emu.url)

Routes: POST /v1/ideogram-v3/generate (multipart/form-data), GET /api/images/ephemeral/{name} (the short-lived
image links of the answer).

What it mirrors (Ideogram's OpenAPI document for the endpoint):
- `Api-Key` header: missing or wrong → 401;
- the body must be multipart/form-data (anything else → 400); fields: prompt (required), seed (0-2147483647),
  resolution (Ideogram 3.0's list) or aspect_ratio (not both), rendering_speed FLASH | TURBO | DEFAULT | QUALITY,
  magic_prompt AUTO | ON | OFF, negative_prompt, num_images 1-8, style_type AUTO | GENERAL | REALISTIC | DESIGN |
  FICTION; unknown fields → 400. Error bodies are {"error": "..."} (the 422 schema of the document; its 400/401/429
  bodies are untyped there, so this shape is an assumption);
- a prompt containing "forbidden-upstream" → 422 {"error": "Prompt failed the safety check."}; "forbidden-output" →
  200 whose images have is_image_safe false and url null;
- success: {"created", "data": [{"url", "prompt", "resolution", "is_image_safe", "seed", "style_type"}]}; the
  prompt is "rewritten" when magic_prompt is not OFF; links expire after `state["url_ttl"]` seconds (default 600).

Faults (`emu.faults.set(name, Fault(...))`, name "generate" or "download"):
- status=...: answer that status (body defaults to {"error": ...}; 429 has Retry-After: 3);
- kind="malformed" (200 HTML), "wrong_count" (one image fewer), "no_url" (url null although safe),
  "no_data"; on "download": status, kind="expired" (403 XML), "bad_image", "huge" (`state["huge_bytes"]` bytes);
- delay=seconds. `emu.state["delay"]` delays every generation.
"""
import asyncio
import contextlib
import datetime
import random
import time
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .base import Faults, Recorded, make_png, serve
from .openai import parse_multipart

API_KEY = "ideogram-emulator-key-0123456789"
FORBIDDEN = "forbidden-upstream"
FORBIDDEN_OUTPUT = "forbidden-output"

RESOLUTIONS = (
    "512x1536", "576x1408", "576x1472", "576x1536", "640x1344", "640x1408", "640x1472", "640x1536", "704x1152",
    "704x1216", "704x1280", "704x1344", "704x1408", "704x1472", "736x1312", "768x1088", "768x1216", "768x1280",
    "768x1344", "800x1280", "832x960", "832x1024", "832x1088", "832x1152", "832x1216", "832x1248", "864x1152",
    "896x960", "896x1024", "896x1088", "896x1120", "896x1152", "960x832", "960x896", "960x1024", "960x1088",
    "1024x832", "1024x896", "1024x960", "1024x1024", "1088x768", "1088x832", "1088x896", "1088x960", "1120x896",
    "1152x704", "1152x832", "1152x864", "1152x896", "1216x704", "1216x768", "1216x832", "1248x832", "1280x704",
    "1280x768", "1280x800", "1312x736", "1344x640", "1344x704", "1344x768", "1408x576", "1408x640", "1408x704",
    "1472x576", "1472x640", "1472x704", "1536x512", "1536x576", "1536x640",
)
ASPECT_RATIOS = {"1x3": "512x1536", "3x1": "1536x512", "1x2": "704x1408", "2x1": "1408x704", "9x16": "736x1312",
                 "16x9": "1312x736", "10x16": "800x1280", "16x10": "1280x800", "2x3": "832x1248", "3x2": "1248x832",
                 "3x4": "864x1152", "4x3": "1152x864", "4x5": "896x1120", "5x4": "1120x896", "1x1": "1024x1024"}
ENUMS = {"rendering_speed": ("FLASH", "TURBO", "DEFAULT", "QUALITY"), "magic_prompt": ("AUTO", "ON", "OFF"),
         "style_type": ("AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION")}
FIELDS = {"prompt", "seed", "resolution", "aspect_ratio", "rendering_speed", "magic_prompt", "negative_prompt",
          "num_images", "color_palette", "style_codes", "style_type", "style_preset", "custom_model_uri"}
EXPIRED_XML = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
               "<Message>Request has expired</Message></Error>")


class IdeogramError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    def response(self, headers: dict | None = None) -> Response:
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers or {})


def _int(fields: dict, name: str, low: int, high: int) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise IdeogramError(400, f"Invalid {name}: expected an integer, got '{value[:40]}'.") from None
    if not low <= number <= high:
        raise IdeogramError(400, f"Invalid {name}: must be between {low} and {high}.")
    return number


def _thumb(resolution: str) -> tuple[int, int]:
    w, h = (int(v) for v in resolution.split("x"))
    scale = 64 / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def build_app(*, faults: Faults, requests: list, state: dict, api_key: str = API_KEY) -> Starlette:
    images: dict[str, tuple[bytes, float]] = {}

    def validate(request: Request, raw: bytes) -> dict:
        try:
            fields, uploads = parse_multipart(request.headers.get("content-type", ""), raw)
        except (ValueError, UnicodeDecodeError):
            raise IdeogramError(400, "Invalid input: the request body must be multipart/form-data.") from None
        for name in list(fields) + list(uploads):
            if name not in FIELDS:
                raise IdeogramError(400, f"Invalid input: unexpected field '{name}'.")
        params = {k: v[-1] for k, v in fields.items()}
        prompt = params.get("prompt", "")
        if not prompt.strip():
            raise IdeogramError(400, "Invalid input: prompt is required.")
        if "resolution" in params and "aspect_ratio" in params:
            raise IdeogramError(400, "Invalid input: resolution cannot be used in conjunction with aspect_ratio.")
        if "resolution" in params and params["resolution"] not in RESOLUTIONS:
            raise IdeogramError(400, f"Invalid input: resolution '{params['resolution']}' is not supported.")
        if "aspect_ratio" in params and params["aspect_ratio"] not in ASPECT_RATIOS:
            raise IdeogramError(400, f"Invalid input: aspect_ratio '{params['aspect_ratio']}' is not supported.")
        for name, values in ENUMS.items():
            if name in params and params[name] not in values:
                raise IdeogramError(400, f"Invalid input: {name} must be one of {', '.join(values)}.")
        params["num_images"] = _int(params, "num_images", 1, 8) or 1
        params["seed"] = _int(params, "seed", 0, 2147483647)
        if FORBIDDEN in prompt:
            raise IdeogramError(422, "Prompt failed the safety check.")
        return params

    def success(request: Request, params: dict, kind: str) -> Response:
        resolution = params.get("resolution") or ASPECT_RATIOS[params.get("aspect_ratio", "1x1")]
        prompt = params["prompt"]
        unsafe = FORBIDDEN_OUTPUT in prompt
        drawn = prompt if params.get("magic_prompt") == "OFF" else f"A detailed, well-composed image: {prompt}"
        count = params["num_images"] - (1 if kind == "wrong_count" else 0)
        base = str(request.base_url).rstrip("/")
        data = []
        for i in range(count):
            seed = params["seed"] + i if params["seed"] is not None else random.randint(0, 2147483647)
            url = None
            if not unsafe and kind != "no_url":
                name = f"{uuid.uuid4().hex}.png"
                images[name] = (make_png(f"ideogram|{prompt}|{seed}", *_thumb(resolution)),
                                time.monotonic() + float(state.get("url_ttl", 600)))
                url = f"{base}/api/images/ephemeral/{name}?exp={int(time.time()) + 600}&signature=emulated"
            data.append({"url": url, "prompt": drawn, "resolution": resolution, "is_image_safe": not unsafe,
                         "seed": seed, "style_type": params.get("style_type", "GENERAL")})
        body = {"created": datetime.datetime.now(datetime.UTC).isoformat(), "data": data}
        if kind == "no_data":
            del body["data"]
        return JSONResponse(body)

    async def generate(request: Request) -> Response:
        raw = await request.body()
        requests.append(Recorded(method=request.method, path=request.url.path, headers=dict(request.headers),
                                 body=raw))
        fault = faults.take("generate")
        delay = fault.delay if fault is not None and fault.delay else float(state.get("delay", 0) or 0)
        if delay:
            await asyncio.sleep(delay)
        if request.headers.get("api-key") != api_key:
            return IdeogramError(401, "Not authorized: a valid Api-Key header is required.").response()
        if fault is not None and fault.status is not None:
            if isinstance(fault.body, (dict, list)):
                return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
            if fault.body is not None:
                return Response(fault.body, status_code=fault.status, headers=fault.headers, media_type="text/plain")
            headers = {"Retry-After": "3", **fault.headers} if fault.status == 429 else fault.headers
            message = "Too many requests." if fault.status == 429 else "Internal server error."
            return IdeogramError(fault.status, message).response(headers)
        try:
            params = validate(request, raw)
        except IdeogramError as err:
            return err.response()
        kind = fault.kind if fault is not None else ""
        if kind == "malformed":
            return Response("<html><body>upstream connect error</body></html>", media_type="text/html")
        return success(request, params, kind)

    async def image(request: Request) -> Response:
        requests.append(Recorded(method="GET", path=request.url.path, headers=dict(request.headers), body=b""))
        fault = faults.take("download")
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and (fault.status is not None or fault.kind == "expired"):
            return Response(EXPIRED_XML, status_code=fault.status or 403, media_type="application/xml")
        entry = images.get(request.path_params["name"])
        if entry is None:
            return Response("Not Found", status_code=404, media_type="text/plain")
        blob, expires = entry
        if time.monotonic() > expires:
            return Response(EXPIRED_XML, status_code=403, media_type="application/xml")
        if fault is not None and fault.kind == "bad_image":
            blob = b"<html>not an image</html>"
        if fault is not None and fault.kind == "huge":
            blob = blob + b"\0" * int(state.get("huge_bytes", 1024 * 1024))
        return Response(blob, media_type="image/png")

    return Starlette(routes=[
        Route("/v1/ideogram-v3/generate", generate, methods=["POST"]),
        Route("/api/images/ephemeral/{name}", image, methods=["GET"]),
    ])


@contextlib.contextmanager
def emulator(*, api_key: str = API_KEY):
    """Serve the emulator on a free loopback port; yields base.Emulator (url, faults, requests, state)."""
    faults, requests, state = Faults(), [], {}
    with serve(build_app(faults=faults, requests=requests, state=state, api_key=api_key), faults=faults,
               requests=requests, state=state) as emu:
        yield emu
