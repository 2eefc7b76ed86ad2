"""An emulator of Stability AI's REST API (docs/providers/stability.md), for the `stability` provider's tests and the
benchmark.

Routes
  POST /v1/generation/{engine}/text-to-image        JSON; engines stable-diffusion-xl-1024-v1-0, stable-diffusion-v1-6
  POST /v2beta/stable-image/generate/{core|ultra|sd3}  multipart/form-data

Behaves like the upstream:
  * `Authorization: Bearer API_KEY`, else 401 in Stability's error shape (`{id, name, message}` on v1,
    `{id, name, errors[]}` on v2beta);
  * Stability's own validation (400): v1 SDXL dimensions, SD 1.6 multiples of 64 (320–1536), samples 1–10, steps
    10–50, cfg_scale 0–35, seed range, style presets, required text prompt; v2beta prompt, aspect ratios, output
    formats, seed range, style presets, sd3 `model` / `mode`, image-to-image needs `image` + `strength`;
    unknown engine / endpoint → 404;
  * a prompt containing "forbidden-upstream" is refused: 403 `content_moderation` (v2beta), artifacts with
    finishReason CONTENT_FILTERED (v1);
  * a sliding-window rate limiter: `state["rate_limit"]` requests (default 150) per `state["rate_window"]` seconds
    (default 10) per key → 429 `rate_limit_exceeded`. Set `state["rate_limit"] = None` to switch it off (benchmarks);
  * `state["delay"]` seconds (default 0) before every generation answers (asyncio.sleep; never blocks);
  * replies: v1 `Accept: application/json` → `{"artifacts": [{base64, seed, finishReason}]}`, `image/png` → bytes with
    Finish-Reason / Seed headers; v2beta `accept: image/*` → bytes with finish-reason / seed headers,
    `application/json` → `{image, finish_reason, seed}`. Images are tiny (make_png), cached.

Faults (`emulator.faults.set(name, Fault(...))`, name "generate" for every route, or "v1" / "core" / "ultra" / "sd3"):
  Fault(status=..., body=..., headers=...)  answer that status; body defaults to Stability's error shape for it
  Fault(delay=s)                            wait s seconds first (then answer normally, or with the fault's status/kind)
  kind="malformed"     200 with an HTML page (or `body` if given)
  kind="truncated"     200 application/json cut in the middle
  kind="refuse"        the content-moderation refusal, whatever the prompt
  kind="filtered"      200 whose finish reason is CONTENT_FILTERED (v1: the first artifact only)
  kind="error"         200 whose finish reason is ERROR (v1: the first artifact)
  kind="wrong_count"   v1: one artifact too few (one too many when one was asked)
  kind="json"          v2beta: answer in the JSON form whatever `accept` says
  kind="bad_image"     200 whose image bytes are not an image
  kind="bad_base64"    200 whose base64 is not decodable (v1 artifacts, v2beta JSON form)
  Kinds combine with "+", e.g. kind="json+filtered" (the JSON form carrying finish_reason CONTENT_FILTERED).
"""
import asyncio
import base64
import contextlib
import functools
import io
import json
import time
import uuid
from collections import deque

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .base import Fault, Faults, Recorded, make_png, serve

API_KEY = "sk-stability-test-key"

SDXL_ENGINE = "stable-diffusion-xl-1024-v1-0"
SD16_ENGINE = "stable-diffusion-v1-6"
V1_ENGINES = (SDXL_ENGINE, SD16_ENGINE)
SDXL_DIMENSIONS = ((1024, 1024), (1152, 896), (896, 1152), (1216, 832), (1344, 768), (768, 1344), (1536, 640),
                   (640, 1536))
STYLE_PRESETS = (
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
    "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic", "pixel-art",
    "tile-texture",
)
ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
SD3_MODELS = ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash", "sd3-large", "sd3-large-turbo",
              "sd3-medium")
V2_ENDPOINTS = ("core", "ultra", "sd3")
FORBIDDEN = "forbidden-upstream"
DEFAULT_RATE_LIMIT = 150
DEFAULT_RATE_WINDOW = 10.0
MODERATION_MESSAGE = ("Your request was flagged by our content moderation system, as a result your request was "
                      "denied and you were not charged.")


# --- helpers ---------------------------------------------------------------------------------------------------------
def _header_params(value: str) -> tuple[str, dict]:
    """`form-data; name="x"; filename="y"` → ("form-data", {"name": "x", "filename": "y"})."""
    main, _, rest = value.partition(";")
    params = {}
    for item in rest.split(";"):
        key, sep, val = item.strip().partition("=")
        if sep:
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1].replace('\\"', '"')
            params[key.strip().lower()] = val
    return main.strip().lower(), params


def parse_multipart(content_type: str, body: bytes) -> dict:
    """multipart/form-data → {name: str, or (filename, bytes, content_type) for file parts}. Raises ValueError.

    A small RFC 7578 parser (python-multipart is not installed; the email package is too slow for the benchmark)."""
    kind, params = _header_params(content_type)
    boundary = params.get("boundary")
    if kind != "multipart/form-data" or not boundary:
        raise ValueError("Content-Type must be multipart/form-data with a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise ValueError("the multipart body is not terminated")
    fields: dict = {}
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise ValueError("malformed multipart part")
        head, sep, data = chunk[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without headers")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition, disp_params = _header_params(headers.get("content-disposition", ""))
        name = disp_params.get("name")
        if disposition != "form-data" or not name:
            raise ValueError("multipart part without a form-data name")
        part_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if "filename" in disp_params or part_type not in ("", "text/plain"):
            fields[name] = (disp_params.get("filename", ""), data, part_type or "application/octet-stream")
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields


@functools.lru_cache(maxsize=4096)
def _picture(seed: int, fmt: str = "png") -> bytes:
    png = make_png(f"stability:{seed}", 16, 16)
    if fmt == "png":
        return png
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(out, format="JPEG" if fmt == "jpeg" else "WEBP")
    return out.getvalue()


def _sniff(data: bytes) -> bool:
    return data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _id() -> str:
    return uuid.uuid4().hex


def _v1_error(status: int, name: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"id": _id(), "name": name, "message": message}, status_code=status, headers=headers)


def _v2_error(status: int, name: str, *errors: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"id": _id(), "name": name, "errors": list(errors)}, status_code=status, headers=headers)


_DEFAULT_NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                  413: "payload_too_large", 422: "invalid_request", 429: "rate_limit_exceeded",
                  500: "internal_error", 502: "bad_gateway", 503: "service_unavailable", 504: "gateway_timeout"}


def _fault_status_response(fault: Fault, v1: bool) -> Response:
    headers = dict(fault.headers or {})
    if fault.body is not None:
        if isinstance(fault.body, (dict, list)):
            return JSONResponse(fault.body, status_code=fault.status, headers=headers)
        raw = fault.body.encode() if isinstance(fault.body, str) else fault.body
        return Response(raw, status_code=fault.status, headers=headers,
                        media_type=headers.pop("content-type", "text/plain"))
    name = _DEFAULT_NAMES.get(fault.status, "error")
    message = {500: "An unexpected server error has occurred, please try again later.",
               429: "You have exceeded the rate limit of 150 requests within a 10 second period."}.get(
        fault.status, f"emulated {fault.status}")
    return (_v1_error if v1 else _v2_error)(fault.status, name, message, headers=headers)


def _malformed(fault: Fault) -> Response:
    if fault.kind == "truncated":
        return Response(b'{"artifacts": [{"base64": "iVBORw0KGgoAAAANSUhEUgAA', media_type="application/json")
    body = fault.body if fault.body is not None else "<html><body><h1>502 Bad Gateway</h1>cloudflare</body></html>"
    return Response(body.encode() if isinstance(body, str) else body, media_type="text/html")


# --- the app ---------------------------------------------------------------------------------------------------------
def build_app(faults: Faults, requests: list, state: dict) -> Starlette:
    def rate_limited(key: str) -> bool:
        limit = state.get("rate_limit", DEFAULT_RATE_LIMIT)
        if not limit:
            return False
        window = float(state.get("rate_window", DEFAULT_RATE_WINDOW))
        hits = state.setdefault("_hits", {}).setdefault(key, deque())
        now = time.monotonic()
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            return True
        hits.append(now)
        return False

    async def prologue(request: Request, v1: bool, fault_name: str):
        """Record, authenticate, rate-limit; (early response or None, body, fault)."""
        body = await request.body()
        requests.append(Recorded(method=request.method, path=request.url.path, headers=dict(request.headers),
                                 body=body))
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {API_KEY}":
            if not auth:
                reason = "missing authorization header"
            else:
                reason = "Incorrect API key provided: " + (auth[7:11] + "****" if auth.startswith("Bearer ") else "?")
            error = _v1_error(401, "unauthorized", reason) if v1 else _v2_error(401, "unauthorized", reason)
            return error, body, None
        if rate_limited(auth):
            window = float(state.get("rate_window", DEFAULT_RATE_WINDOW))
            limit = state.get("rate_limit", DEFAULT_RATE_LIMIT)
            message = (f"You have exceeded the rate limit of {limit} requests within a {window:g} second period, "
                       f"and have been timed out for 60 seconds.")
            return (_v1_error(429, "rate_limit_exceeded", message) if v1
                    else _v2_error(429, "rate_limit_exceeded", message)), body, None
        fault = faults.take(fault_name) or faults.take("generate")
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status:
                return _fault_status_response(fault, v1), body, fault
            if fault.kind in ("malformed", "truncated"):
                return _malformed(fault), body, fault
        return None, body, fault

    async def global_delay():
        delay = state.get("delay") or 0
        if delay:
            await asyncio.sleep(float(delay))

    # --- v1 ---------------------------------------------------------------------------------------------------------
    async def v1_text_to_image(request: Request) -> Response:
        engine = request.path_params["engine"]
        early, body, fault = await prologue(request, True, "v1")
        if early is not None:
            return early
        kinds = set(fault.kind.split("+")) if fault and fault.kind else set()
        if engine not in V1_ENGINES:
            return _v1_error(404, "not_found", f"engine: {engine} not found")
        accept = request.headers.get("accept", "application/json").split(";")[0].strip().lower()
        if accept not in ("application/json", "image/png", "*/*", ""):
            return _v1_error(400, "invalid_accept_header", "accept: must be application/json or image/png")
        try:
            payload = json.loads(body)
        except ValueError:
            return _v1_error(400, "invalid_json", "body: could not parse JSON")
        if not isinstance(payload, dict):
            return _v1_error(400, "invalid_json", "body: must be a JSON object")

        prompts = payload.get("text_prompts")
        if not isinstance(prompts, list) or not prompts:
            return _v1_error(400, "invalid_prompts", "text_prompts: is required and must contain at least one prompt")
        for i, p in enumerate(prompts):
            if not isinstance(p, dict) or not isinstance(p.get("text"), str) or not p["text"].strip():
                return _v1_error(400, "invalid_prompts", f"text_prompts[{i}].text: cannot be empty")
            if len(p["text"]) > 2000:
                return _v1_error(400, "invalid_prompts", f"text_prompts[{i}].text: must be at most 2000 characters")
            if "weight" in p and not isinstance(p["weight"], (int, float)):
                return _v1_error(400, "invalid_prompts", f"text_prompts[{i}].weight: must be a number")
        default_side = 1024 if engine == SDXL_ENGINE else 512
        width, height = payload.get("width", default_side), payload.get("height", default_side)
        if not isinstance(width, int) or not isinstance(height, int):
            return _v1_error(400, "invalid_dimensions", "height and width must be integers")
        if engine == SDXL_ENGINE:
            if (width, height) not in SDXL_DIMENSIONS:
                allowed = ", ".join(f"{w}x{h}" for w, h in SDXL_DIMENSIONS)
                return _v1_error(400, "invalid_sdxl_v1_dimensions",
                                 f"for stable-diffusion-xl-1024-v1-0 the allowed dimensions are {allowed}, "
                                 f"but we received {width}x{height}")
        elif not all(320 <= s <= 1536 and s % 64 == 0 for s in (width, height)):
            return _v1_error(400, "invalid_dimensions",
                             "height and width must be multiples of 64 between 320 and 1536 for "
                             f"stable-diffusion-v1-6, but we received {width}x{height}")
        samples = payload.get("samples", 1)
        if not isinstance(samples, int) or not 1 <= samples <= 10:
            return _v1_error(400, "invalid_samples", "samples: must be an integer between 1 and 10")
        steps = payload.get("steps", 30)
        if not isinstance(steps, int) or not 10 <= steps <= 50:
            return _v1_error(400, "invalid_steps", "steps: must be an integer between 10 and 50")
        cfg = payload.get("cfg_scale", 7)
        if not isinstance(cfg, (int, float)) or not 0 <= cfg <= 35:
            return _v1_error(400, "invalid_cfg_scale", "cfg_scale: must be a number between 0 and 35")
        seed = payload.get("seed", 0)
        if not isinstance(seed, int) or not 0 <= seed <= 4294967295:
            return _v1_error(400, "invalid_seed", "seed: must be an integer between 0 and 4294967295")
        preset = payload.get("style_preset")
        if preset is not None and preset not in STYLE_PRESETS:
            return _v1_error(400, "invalid_style_preset", f"style_preset: must be one of {', '.join(STYLE_PRESETS)}")

        await global_delay()
        base_seed = seed or (uuid.uuid4().int % 4294967295 + 1)
        positive = " ".join(p["text"] for p in prompts if p.get("weight", 1) >= 0)
        refused = FORBIDDEN in positive or "refuse" in kinds
        artifacts = []
        count = samples
        if "wrong_count" in kinds:
            count = samples - 1 if samples > 1 else 2
        for i in range(count):
            reason = "SUCCESS"
            if refused or ("filtered" in kinds and i == 0):
                reason = "CONTENT_FILTERED"
            elif "error" in kinds and i == 0:
                reason = "ERROR"
            data = _picture(base_seed + i)
            if "bad_image" in kinds:
                data = b"<html>not an image</html>"
            b64 = base64.b64encode(data).decode()
            if "bad_base64" in kinds:
                b64 = "%%%not-base64%%%"
            artifacts.append({"base64": b64, "seed": base_seed + i, "finishReason": reason})
        if accept == "image/png":
            first = artifacts[0]
            return Response(base64.b64decode(first["base64"]) if "bad_base64" not in kinds else b"garbage",
                            media_type="image/png",
                            headers={"Finish-Reason": first["finishReason"], "Seed": str(first["seed"])})
        return JSONResponse({"artifacts": artifacts})

    # --- v2beta -----------------------------------------------------------------------------------------------------
    async def v2_generate(request: Request) -> Response:
        endpoint = request.path_params["endpoint"]
        early, body, fault = await prologue(request, False, endpoint)
        if early is not None:
            return early
        kinds = set(fault.kind.split("+")) if fault and fault.kind else set()
        if endpoint not in V2_ENDPOINTS:
            return _v2_error(404, "not_found", f"endpoint: /v2beta/stable-image/generate/{endpoint} not found")
        accept = request.headers.get("accept", "image/*").split(";")[0].strip().lower() or "image/*"
        if accept == "*/*":
            accept = "image/*"
        if accept not in ("image/*", "application/json"):
            return _v2_error(400, "bad_request", "accept: must be image/* or application/json")
        try:
            form = parse_multipart(request.headers.get("content-type", ""), body)
        except ValueError as exc:
            return _v2_error(400, "bad_request", f"content-type: {exc}")

        def text(name):
            value = form.get(name)
            return value if isinstance(value, str) else None

        errors = []
        prompt = text("prompt")
        if not prompt or not prompt.strip():
            errors.append("prompt: is required")
        elif len(prompt) > 10000:
            errors.append("prompt: must be at most 10000 characters")
        negative = text("negative_prompt")
        if negative is not None and len(negative) > 10000:
            errors.append("negative_prompt: must be at most 10000 characters")
        aspect = text("aspect_ratio")
        if aspect is not None and aspect not in ASPECT_RATIOS:
            errors.append(f"aspect_ratio: must be one of {', '.join(ASPECT_RATIOS)}")
        fmt = text("output_format") or "png"
        formats = ("png", "jpeg") if endpoint == "sd3" else ("png", "jpeg", "webp")
        if fmt not in formats:
            errors.append(f"output_format: must be one of {', '.join(formats)}")
        seed = 0
        if "seed" in form:
            try:
                seed = int(text("seed") or "")
                if not 0 <= seed <= 4294967294:
                    raise ValueError
            except ValueError:
                errors.append("seed: must be an integer between 0 and 4294967294")
        preset = text("style_preset")
        if preset is not None and preset not in STYLE_PRESETS:
            errors.append(f"style_preset: must be one of {', '.join(STYLE_PRESETS)}")
        image_to_image = False
        if endpoint == "sd3":
            model = text("model") or "sd3.5-large"
            if model not in SD3_MODELS:
                errors.append(f"model: must be one of {', '.join(SD3_MODELS)}")
            mode = text("mode") or "text-to-image"
            if mode not in ("text-to-image", "image-to-image"):
                errors.append("mode: must be one of text-to-image, image-to-image")
            image_to_image = mode == "image-to-image"
            if image_to_image and "image" not in form:
                errors.append("image: is required when mode is image-to-image")
        elif endpoint == "ultra":
            image_to_image = "image" in form
        if image_to_image and "image" in form:
            image = form["image"]
            if not isinstance(image, tuple) or not _sniff(image[1]):
                errors.append("image: must be a JPEG, PNG or WebP file")
            strength = text("strength")
            if strength is None:
                errors.append("strength: is required when image is provided")
            else:
                try:
                    if not 0 <= float(strength) <= 1:
                        raise ValueError
                except ValueError:
                    errors.append("strength: must be a number between 0 and 1")
        if errors:
            return _v2_error(400, "bad_request", *errors)

        if FORBIDDEN in prompt or "refuse" in kinds:
            return _v2_error(403, "content_moderation", MODERATION_MESSAGE)

        await global_delay()
        out_seed = seed or (uuid.uuid4().int % 4294967294 + 1)
        reason = "CONTENT_FILTERED" if "filtered" in kinds else "ERROR" if "error" in kinds else "SUCCESS"
        data = _picture(out_seed, fmt)
        if "bad_image" in kinds:
            data = b"<html>not an image</html>"
        if accept == "application/json" or kinds & {"json", "bad_base64"}:
            b64 = "%%%not-base64%%%" if "bad_base64" in kinds else base64.b64encode(data).decode()
            return JSONResponse({"image": b64, "finish_reason": reason, "seed": out_seed})
        return Response(data, media_type="image/png" if "bad_image" in kinds else f"image/{fmt}",
                        headers={"finish-reason": reason, "seed": str(out_seed)})

    return Starlette(routes=[
        Route("/v1/generation/{engine}/text-to-image", v1_text_to_image, methods=["POST"]),
        Route("/v2beta/stable-image/generate/{endpoint}", v2_generate, methods=["POST"]),
    ])


@contextlib.contextmanager
def emulator(*, rate_limit: int | None = DEFAULT_RATE_LIMIT, rate_window: float = DEFAULT_RATE_WINDOW,
             delay: float = 0.0):
    """Serve the Stability emulator; yields base.Emulator (url, faults, requests, state).

    state keys: "delay" (seconds before every generation answers), "rate_limit" (requests per window, None = off),
    "rate_window" (seconds). Emulator.reset() restores the defaults (150 per 10 s, no delay).
    """
    faults, requests = Faults(), []
    state: dict = {}
    if rate_limit != DEFAULT_RATE_LIMIT:
        state["rate_limit"] = rate_limit
    if rate_window != DEFAULT_RATE_WINDOW:
        state["rate_window"] = rate_window
    if delay:
        state["delay"] = delay
    app = build_app(faults, requests, state)
    with serve(app, faults=faults, requests=requests, state=state) as emu:
        yield emu
