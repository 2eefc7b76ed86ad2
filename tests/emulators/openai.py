"""A loopback emulator of OpenAI's Images API (docs/providers/openai.md), also standing in for OpenAI-compatible
self-hosted servers (extra model ids with their own sizes).

    with emulator() as emu:                      # emu.url, emu.faults, emu.requests, emu.state
        provider = OpenAIProvider(api_key=API_KEY, base_url=emu.url + "/v1")

Routes: POST /v1/images/generations (JSON), /v1/images/edits and /v1/images/variations (multipart),
GET /v1/models[/{id}], and GET /files/{name} (the short-lived image URLs of `response_format: url`).

What it mirrors: bearer auth (401 invalid_api_key, or code null without a key), per-model validation in OpenAI's
error envelope (sizes, qualities, styles, n and dall-e-3's n=1, prompt length, response_format on gpt-image →
unknown_parameter, unknown parameters such as `seed`, gpt-image-only parameters on dall-e, output_compression with png,
transparent jpeg, dall-e-2 edit image rules, variations only for dall-e-2), 404 model_not_found, a safety refusal for
prompts containing "forbidden-upstream" (dall-e: 400 content_policy_violation; gpt-image: 400 moderation_blocked),
x-request-id and x-ratelimit-* headers on every reply, gpt-image's top-level background/output_format/quality/size and
token usage, dall-e-3's revised_prompt.

Streaming (gpt-image, `stream: true` in JSON or "true" in a form, `partial_images` 0-3): Server-Sent Events as OpenAI
sends them (docs/providers/openai.md), `event: <type>` then `data: <JSON>`: for each image, `partial_images`
`image_generation.partial_image` events (`image_edit.partial_image` on edits) with b64_json, created_at, size,
quality, background, output_format, partial_image_index; then one `*.completed` event per image with b64_json,
created_at, size, quality, background, output_format and usage. `emu.state["partial_delay"]` (seconds) is waited
before every event; `emu.state["gate"]` (a threading.Event) holds a stream after its first event until it is set.

Faults (`emu.faults.set(name, Fault(...))`, name = "generate" | "edit" | "variation" | "download" | "*"):
- status=...: answer with that status; body defaults to OpenAI's own body for it (429 rate_limit_exceeded with
  retry-after and x-ratelimit-* headers, 500 server_error, 503 overloaded, 401, 403, ...).
- kind="refuse" (safety refusal), "rate_limit", "quota" (429 insufficient_quota), "server_error" (500),
  "malformed" (200 with an HTML page, or `body` as raw text), "truncated" (200, JSON cut in half),
  "url" (answer with image URLs even when b64_json was asked; "relative_url": host-relative paths, as some
  self-hosted servers do), "wrong_count" (one image fewer),
  "extra_image" (one more), "bad_image" (base64 of bytes that are no image), "no_data" (JSON without `data`).
- kind="stream_error" (a stream sends its first event, then an `error` event, server_error), "stream_refuse" (the
  same with moderation_blocked), "stream_cut" (a stream ends after its first event, without the completed ones).
- delay=seconds before answering (with or without another behaviour). `emu.state["delay"] = 5.0` delays every
  generation/edit/variation (the capacity benchmark).
Retired models: OpenAI retired dall-e-2 and dall-e-3 on 2026-05-12 (the openai SDK's ImageModel docstring,
../shared/REFERENCE.md section 8, docs/providers/openai.md O11): by default the emulator answers them as OpenAI now
does, 404 `model_not_found`. `emulator(retired=())` is an OpenAI-compatible host that still serves them (and OpenAI
as it was before the retirement, for tests of the dall-e wire format).

State knobs: "delay", "auto_size" / "auto_quality" / "auto_background" (what gpt-image resolves "auto" to; default
1024x1024 / medium / opaque), "alias_snapshot" (the dated model behind chatgpt-image-latest), "no_usage" (answer
without `usage`, as compatible servers do).

GPT image models (gpt-image-1, -1-mini, -1.5, -2, chatgpt-image-latest): gpt-image-2 takes any WIDTHxHEIGHT within
its rules (free_size_error); `input_fidelity` is taken by gpt-image-1 and -1.5 (high, low), -1-mini (low) and refused
for gpt-image-2 and the alias (400 unsupported_parameter); every reply names the dated model that made it in the
`openai-model` header (an assumption, docs/providers/openai.md) and reports token usage, gpt-image-2's from its
calculator.
"""
import asyncio
import base64
import contextlib
import functools
import io
import itertools
import json
import time
import uuid

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .base import Fault, Faults, Recorded, make_png, serve

API_KEY = "sk-emulator-openai-0123456789abcdef"

_DALL_E_2 = "dall-e-2"
_DALL_E_3 = "dall-e-3"
_GPT_IMAGE_1 = "gpt-image-1"
RETIRED = (_DALL_E_2, _DALL_E_3)  # retired by OpenAI on 2026-05-12

# model id → its rules. Extra (self-hosted) models come in through emulator(extra_models=...).
OPENAI_RULES = {
    _DALL_E_2: {"sizes": ("256x256", "512x512", "1024x1024"), "qualities": ("standard",), "max_prompt": 1000,
                "kind": "dall-e", "created": 1698798177},
    _DALL_E_3: {"sizes": ("1024x1024", "1792x1024", "1024x1792"), "qualities": ("standard", "hd"),
                "styles": ("vivid", "natural"), "max_prompt": 4000, "kind": "dall-e", "created": 1698785189},
    _GPT_IMAGE_1: {"sizes": ("1024x1024", "1536x1024", "1024x1536", "auto"),
                   "qualities": ("low", "medium", "high", "auto"), "max_prompt": 32000, "kind": "gpt-image",
                   "created": 1745517030, "fidelities": ("high", "low"), "snapshot": "gpt-image-1"},
    "gpt-image-1-mini": {"sizes": ("1024x1024", "1536x1024", "1024x1536", "auto"),
                         "qualities": ("low", "medium", "high", "auto"), "max_prompt": 32000, "kind": "gpt-image",
                         "created": 1759708800, "fidelities": ("low",), "snapshot": "gpt-image-1-mini-2025-10-06"},
    "gpt-image-1.5": {"sizes": ("1024x1024", "1536x1024", "1024x1536", "auto"),
                      "qualities": ("low", "medium", "high", "auto"), "max_prompt": 32000, "kind": "gpt-image",
                      "created": 1765843200, "fidelities": ("high", "low"), "snapshot": "gpt-image-1.5-2025-12-16"},
    # Free-form sizes (free_sizes); input_fidelity must be omitted (the SDK: "For gpt-image-2, omit this parameter").
    "gpt-image-2": {"sizes": ("1024x1024", "1536x1024", "1024x1536", "auto"),
                    "qualities": ("low", "medium", "high", "auto"), "max_prompt": 32000, "kind": "gpt-image",
                    "created": 1776729600, "fidelities": None, "free_sizes": True,
                    "snapshot": "gpt-image-2-2026-04-21"},
    # The alias: served by gpt-image-2's snapshot today (state["alias_snapshot"] moves it).
    "chatgpt-image-latest": {"sizes": ("1024x1024", "1536x1024", "1024x1536", "auto"),
                             "qualities": ("low", "medium", "high", "auto"), "max_prompt": 32000,
                             "kind": "gpt-image", "created": 1765843200, "fidelities": None,
                             "snapshot": "gpt-image-2-2026-04-21"},
}
_GENERATION_KEYS = {"prompt", "model", "n", "size", "quality", "style", "response_format", "user", "background",
                    "moderation", "output_format", "output_compression", "partial_images", "stream"}
_EDIT_KEYS = {"prompt", "model", "n", "size", "quality", "response_format", "user", "background", "output_format",
              "output_compression", "input_fidelity", "partial_images", "stream"}
_VARIATION_KEYS = {"model", "n", "size", "response_format", "user"}
_GPT_IMAGE_ONLY = ("background", "moderation", "output_format", "output_compression", "input_fidelity")
# gpt-image-1 output tokens per image (OpenAI's published table), for the `usage` block; gpt-image-2's follow from
# size and quality (gpt_image_2_tokens).
_OUTPUT_TOKENS = {("low", "1024x1024"): 272, ("medium", "1024x1024"): 1056, ("high", "1024x1024"): 4160,
                  ("low", "1024x1536"): 408, ("medium", "1024x1536"): 1584, ("high", "1024x1536"): 6240,
                  ("low", "1536x1024"): 400, ("medium", "1536x1024"): 1568, ("high", "1536x1024"): 6208}
_GPT_IMAGE_2_FACTORS = {"low": 16, "medium": 48, "high": 96}


def gpt_image_2_tokens(size: str, quality: str) -> int:
    """Image output tokens of one gpt-image-2 image (OpenAI's cost calculator; 1024x1024 high → 7,024)."""
    factor = _GPT_IMAGE_2_FACTORS[quality]
    width, height = (int(v) for v in size.split("x"))
    long_edge, short_edge = max(width, height), min(width, height)
    short_axis = (2 * factor * short_edge + long_edge) // (2 * long_edge)
    return (factor * short_axis * (2_000_000 + width * height) + 3_999_999) // 4_000_000


def free_size_error(size) -> str | None:
    """gpt-image-2's size rules, as the SDK documents them (and the pixel floor OpenAI's calculator applies)."""
    if not isinstance(size, str) or size == "auto":
        return None if size == "auto" else "Invalid type for 'size': expected a string."
    w, sep, h = size.partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        return f"Invalid 'size': '{size}'. Expected 'auto' or a string of the form WIDTHxHEIGHT."
    width, height = int(w), int(h)
    if not width or not height or width % 16 or height % 16:
        return f"Invalid 'size': '{size}'. Width and height must both be divisible by 16."
    if max(width, height) > 3 * min(width, height):
        return f"Invalid 'size': '{size}'. The aspect ratio must be between 1:3 and 3:1."
    if max(width, height) > 3840 or width * height > 3840 * 2160:
        return f"Invalid 'size': '{size}'. The maximum supported resolution is 3840x2160."
    if width * height < 655_360:
        return f"Invalid 'size': '{size}'. The image must have at least 655360 pixels."
    return None


SAFETY_TRIGGER = "forbidden-upstream"
DALL_E_REFUSAL = ("Your request was rejected as a result of our safety system. Your prompt may contain text that is "
                  "not allowed by our safety system.")
GPT_IMAGE_REFUSAL = ("Your request was rejected by the safety system. If you believe this is an error, contact us at "
                     "help.openai.com and include the request ID {request_id}.")


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code=None, param=None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}


def error_body(message: str, *, type: str = "invalid_request_error", code=None, param=None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# --- Multipart (python-multipart is not installed; this is a strict little parser) -------------------------------


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, list[str]], dict[str, list[tuple]]]:
    """(fields, files) of a multipart/form-data body: fields name → [str]; files name → [(filename, type, bytes)]."""
    boundary = None
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        raise ValueError("expected multipart/form-data with a boundary")
    fields: dict[str, list[str]] = {}
    files: dict[str, list[tuple]] = {}
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise ValueError("truncated multipart body")
    for chunk in chunks[1:-1]:
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        chunk = chunk[:-2] if chunk.endswith(b"\r\n") else chunk
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without headers")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        params = {}
        for piece in headers.get("content-disposition", "").split(";")[1:]:
            key, _, value = piece.strip().partition("=")
            params[key.lower()] = value.strip('"')
        name = params.get("name")
        if name is None:
            raise ValueError("multipart part without a name")
        if "filename" in params:
            files.setdefault(name, []).append((params["filename"], headers.get("content-type", ""), data))
        else:
            fields.setdefault(name, []).append(data.decode("utf-8"))
    return fields, files


def recorded_form(recorded: Recorded) -> tuple[dict[str, list[str]], dict[str, list[tuple]]]:
    """The multipart fields and files of a recorded request (for tests)."""
    return parse_multipart(recorded.headers.get("content-type", ""), recorded.body)


def recorded_json(recorded: Recorded) -> dict:
    return json.loads(recorded.body)


# --- Images ----------------------------------------------------------------------------------------------------------


def _thumb(size: str) -> tuple[int, int]:
    """A tiny stand-in of the requested aspect ratio (max side 64)."""
    try:
        w, h = (int(v) for v in size.split("x"))
    except ValueError:
        return 64, 64
    scale = 64 / max(w, h, 1)
    return max(1, int(w * scale)), max(1, int(h * scale))


@functools.lru_cache(maxsize=2048)
def image_bytes(seed: str, size: str, fmt: str = "png") -> bytes:
    """A small deterministic image: PNG via make_png; JPEG/WebP re-encoded with Pillow."""
    w, h = _thumb(size)
    png = make_png(seed, w, h)
    if fmt == "png":
        return png
    out = io.BytesIO()
    with Image.open(io.BytesIO(png)) as img:
        img.convert("RGB").save(out, format="JPEG" if fmt == "jpeg" else "WEBP")
    return out.getvalue()


# --- The app ---------------------------------------------------------------------------------------------------------


def build_app(*, faults: Faults, requests: list, state: dict, api_key: str = API_KEY,
              extra_models: dict | None = None, retired: tuple[str, ...] = RETIRED) -> Starlette:
    """extra_models: model id → sizes (a tuple, or None for any WxH): a self-hosted OpenAI-compatible model,
    validated leniently (no gpt-image rules, unknown parameters tolerated). retired: model ids answered with 404
    model_not_found, as OpenAI answers them since it retired them."""
    rules = {k: v for k, v in OPENAI_RULES.items() if k not in retired}
    for model_id, sizes in (extra_models or {}).items():
        rules[model_id] = {"sizes": tuple(sizes) if sizes else None, "qualities": None, "max_prompt": 100_000,
                           "kind": "compatible", "created": 1735689600}
    files: dict[str, bytes] = {}
    counter = itertools.count(1)

    def request_id() -> str:
        return f"req_{uuid.uuid4().hex[:24]}"

    def common_headers(rid: str, remaining: int | None = None) -> dict:
        return {"x-request-id": rid, "openai-processing-ms": "42", "x-ratelimit-limit-requests": "500",
                "x-ratelimit-remaining-requests": str(499 if remaining is None else remaining),
                "x-ratelimit-reset-requests": "120ms"}

    def error_response(err: OpenAIError, rid: str) -> JSONResponse:
        headers = common_headers(rid)
        headers.update(err.headers)
        return JSONResponse(error_body(err.message, type=err.type, code=err.code, param=err.param),
                            status_code=err.status, headers=headers)

    def check_auth(request: Request) -> None:
        header = request.headers.get("authorization", "")
        if not header:
            raise OpenAIError(401, "You didn't provide an API key. You need to provide your API key in an "
                              "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as "
                              "the password field (with blank username) if you're accessing the API from your browser "
                              "and are prompted for a username. You can obtain an API key from "
                              "https://platform.openai.com/account/api-keys.")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or key.strip() != api_key:
            shown = key.strip()
            masked = (shown[:3] + "*" * 10 + shown[-4:]) if len(shown) > 8 else "*" * len(shown)
            raise OpenAIError(401, f"Incorrect API key provided: {masked}. You can find your API key at "
                              "https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    def fault_response(fault: Fault, rid: str, model: str) -> Response | None:
        """A response for an injected status/kind, or None when the fault only shapes a success."""
        headers = common_headers(rid)
        if fault.kind == "refuse":
            return JSONResponse(refusal_body(model, rid), status_code=400, headers={**headers, **fault.headers})
        if fault.kind == "rate_limit":
            fault = Fault(status=429, headers=fault.headers, body=fault.body)
        elif fault.kind == "quota":
            fault = Fault(status=429, headers=fault.headers, body=fault.body or error_body(
                "You exceeded your current quota, please check your plan and billing details. For more information "
                "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
                type="insufficient_quota", code="insufficient_quota"))
        elif fault.kind == "server_error":
            fault = Fault(status=500, headers=fault.headers, body=fault.body)
        elif fault.kind == "malformed":
            body = fault.body if fault.body is not None else (
                "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
                "<hr><center>cloudflare</center></body></html>")
            ctype = "text/html" if fault.body is None else "application/json"
            return Response(body, status_code=200, media_type=ctype, headers={**headers, **fault.headers})
        elif fault.kind == "truncated":
            return Response('{"created": 1700000000, "data": [{"b64_json": "iVBORw0KGgo', status_code=200,
                            media_type="application/json", headers={**headers, **fault.headers})
        if fault.status is None:
            return None
        status = fault.status
        body = fault.body
        extra = dict(fault.headers)
        if status == 429:
            extra = {"retry-after": "2", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s",
                     **extra}
        if body is None:
            body = default_error_body(status)
        if isinstance(body, dict):
            return JSONResponse(body, status_code=status, headers={**headers, **extra})
        return Response(body, status_code=status, media_type="text/plain", headers={**headers, **extra})

    def refusal_body(model: str, rid: str) -> dict:
        if rules.get(model, {}).get("kind") == "gpt-image":
            return error_body(GPT_IMAGE_REFUSAL.format(request_id=rid), type="image_generation_user_error",
                              code="moderation_blocked")
        return error_body(DALL_E_REFUSAL, type="image_generation_user_error", code="content_policy_violation")

    async def handle(request: Request, endpoint: str) -> Response:
        raw = await request.body()
        requests.append(Recorded(method=request.method, path=request.url.path, headers=dict(request.headers),
                                 body=raw))
        rid = request_id()
        fault = faults.take(endpoint) or faults.take("*")
        delay = fault.delay if fault is not None and fault.delay else float(state.get("delay", 0) or 0)
        if delay:
            await asyncio.sleep(delay)
        try:
            check_auth(request)
            if endpoint == "generate":
                params, images, mask = parse_json(raw), [], None
            else:
                params, images, mask = parse_form(request, raw)
            model = validate(endpoint, params, images, mask)
        except OpenAIError as err:
            return error_response(err, rid)
        if fault is not None:
            response = fault_response(fault, rid, model)
            if response is not None:
                return response
        return success(request, endpoint, params, model, images, fault, rid)

    def parse_json(raw: bytes) -> dict:
        try:
            params = json.loads(raw)
        except ValueError:
            raise OpenAIError(400, "We could not parse the JSON body of your request. (HINT: This likely means you "
                              "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but "
                              "what was sent was not valid JSON. If you have trouble figuring out how to fix this, "
                              "please contact us through our help center at help.openai.com.)") from None
        if not isinstance(params, dict):
            raise OpenAIError(400, "Invalid type for 'body': expected an object.", code="invalid_type")
        return params

    def parse_form(request: Request, raw: bytes):
        try:
            fields, uploads = parse_multipart(request.headers.get("content-type", ""), raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise OpenAIError(400, f"Could not parse multipart form: {exc}. This endpoint expects "
                              "multipart/form-data.") from None
        params: dict = {k: v[-1] for k, v in fields.items()}
        images = uploads.get("image", []) + uploads.get("image[]", [])
        mask = uploads.get("mask", [None])[0]
        for name in uploads:
            if name not in ("image", "image[]", "mask"):
                raise OpenAIError(400, f"Unknown parameter: '{name}'.", code="unknown_parameter", param=name)
        for name, value in list(params.items()):
            if name == "n":
                try:
                    params["n"] = int(value)
                except ValueError:
                    raise OpenAIError(400, "Invalid type for 'n': expected an integer, but got a string instead.",
                                      code="invalid_type", param="n") from None
            elif name == "partial_images":
                try:
                    params[name] = int(value)
                except ValueError:
                    raise OpenAIError(400, "Invalid type for 'partial_images': expected an integer, but got a "
                                      "string instead.", code="invalid_type", param=name) from None
            elif name == "stream":
                if value not in ("true", "false"):
                    raise OpenAIError(400, "Invalid type for 'stream': expected a boolean.", code="invalid_type",
                                      param=name)
                params[name] = value == "true"
            elif name == "output_compression":
                try:
                    params[name] = int(value)
                except ValueError:
                    raise OpenAIError(400, "Invalid type for 'output_compression': expected an integer, but got a "
                                      "string instead.", code="invalid_type", param=name) from None
        return params, images, mask

    def validate(endpoint: str, params: dict, images: list, mask) -> str:
        """OpenAI's checks, in roughly its order; returns the model id."""
        model = params.get("model") or _DALL_E_2
        if not isinstance(model, str):
            raise OpenAIError(400, "Invalid type for 'model': expected a string.", code="invalid_type", param="model")
        spec = rules.get(model)
        if spec is None:
            raise OpenAIError(404, f"The model `{model}` does not exist or you do not have access to it.",
                              code="model_not_found")
        kind = spec["kind"]
        allowed = {"generate": _GENERATION_KEYS, "edit": _EDIT_KEYS, "variation": _VARIATION_KEYS}[endpoint]
        if kind != "compatible":
            for key in params:
                if key not in allowed:
                    raise OpenAIError(400, f"Unknown parameter: '{key}'.", code="unknown_parameter", param=key)
        if endpoint == "variation" and kind != "compatible" and model != _DALL_E_2:
            raise OpenAIError(400, f"Invalid value: '{model}'. Supported values are: 'dall-e-2'.",
                              code="invalid_value", param="model")
        if endpoint == "edit" and model == _DALL_E_3:
            raise OpenAIError(400, "Invalid value: 'dall-e-3'. Supported values are: 'dall-e-2', 'gpt-image-1', "
                              "'gpt-image-1-mini', 'gpt-image-1.5', 'gpt-image-2' and 'chatgpt-image-latest'.",
                              code="invalid_value", param="model")
        prompt = params.get("prompt")
        if endpoint != "variation":
            if prompt is None or prompt == "":
                raise OpenAIError(400, "Missing required parameter: 'prompt'.", code="missing_required_parameter",
                                  param="prompt")
            if not isinstance(prompt, str):
                raise OpenAIError(400, "Invalid type for 'prompt': expected a string.", code="invalid_type",
                                  param="prompt")
            if len(prompt) > spec["max_prompt"]:
                raise OpenAIError(400, f"Invalid 'prompt': string too long. Expected a string with maximum length "
                                  f"{spec['max_prompt']}, but got a string with length {len(prompt)} instead.",
                                  code="string_above_max_length", param="prompt")
        n = params.get("n")
        if n is not None:
            if not isinstance(n, int) or isinstance(n, bool):
                raise OpenAIError(400, "Invalid type for 'n': expected an integer.", code="invalid_type", param="n")
            if n < 1:
                raise OpenAIError(400, f"Invalid 'n': integer below minimum value. Expected a value >= 1, but got "
                                  f"{n} instead.", code="integer_below_min_value", param="n")
            if n > 10:
                raise OpenAIError(400, f"Invalid 'n': integer above maximum value. Expected a value <= 10, but got "
                                  f"{n} instead.", code="integer_above_max_value", param="n")
            if model == _DALL_E_3 and n != 1:
                raise OpenAIError(400, "You must provide n=1 for this model.", param="n")
        size = params.get("size")
        if size is not None and spec.get("free_sizes"):
            problem = free_size_error(size)
            if problem is not None:
                raise OpenAIError(400, problem, code="invalid_value", param="size")
        elif size is not None:
            sizes = spec["sizes"]
            ok = (size in sizes) if sizes else _is_wxh(size)
            if not ok:
                shown = list(sizes) if sizes else "WIDTHxHEIGHT"
                raise OpenAIError(400, f"'{size}' is not one of {shown} - 'size'", code="invalid_size", param="size")
        quality = params.get("quality")
        if quality is not None and spec["qualities"] and quality not in spec["qualities"]:
            raise OpenAIError(400, f"Invalid value: '{quality}'. Supported values are: "
                              + ", ".join(f"'{q}'" for q in spec["qualities"]) + ".", code="invalid_value",
                              param="quality")
        style = params.get("style")
        if style is not None and model == _DALL_E_3 and style not in spec["styles"]:
            raise OpenAIError(400, f"Invalid value: '{style}'. Supported values are: 'vivid' and 'natural'.",
                              code="invalid_value", param="style")
        response_format = params.get("response_format")
        if response_format is not None:
            if kind == "gpt-image":
                raise OpenAIError(400, "Unknown parameter: 'response_format'.", code="unknown_parameter",
                                  param="response_format")
            if response_format not in ("url", "b64_json"):
                raise OpenAIError(400, f"Invalid value: '{response_format}'. Supported values are: 'url' and "
                                  "'b64_json'.", code="invalid_value", param="response_format")
        if kind == "dall-e":
            for key in _GPT_IMAGE_ONLY:
                if params.get(key) is not None:
                    raise OpenAIError(400, f"Unknown parameter: '{key}'.", code="unknown_parameter", param=key)
        if kind == "gpt-image":
            validate_gpt_image(params)
            fidelity = params.get("input_fidelity")
            if fidelity is not None and spec.get("fidelities") is None:
                raise OpenAIError(400, f"The 'input_fidelity' parameter is not supported with model '{model}'.",
                                  code="unsupported_parameter", param="input_fidelity")
            if fidelity is not None and fidelity not in spec["fidelities"]:
                raise OpenAIError(400, f"Invalid value: '{fidelity}'. Supported values for {model} are: "
                                  + ", ".join(f"'{v}'" for v in spec["fidelities"]) + ".", code="invalid_value",
                                  param="input_fidelity")
        if endpoint in ("edit", "variation"):
            validate_inputs(endpoint, model, kind, images, mask)
        if endpoint != "variation" and SAFETY_TRIGGER in prompt:
            err = refusal_body(model, "req_emulated")["error"]
            raise OpenAIError(400, err["message"], type=err["type"], code=err["code"])
        return model

    def validate_gpt_image(params: dict) -> None:
        enums = {"background": ("transparent", "opaque", "auto"), "moderation": ("low", "auto"),
                 "output_format": ("png", "jpeg", "webp"), "input_fidelity": ("high", "low")}
        for key, values in enums.items():
            value = params.get(key)
            if value is not None and value not in values:
                raise OpenAIError(400, f"Invalid value: '{value}'. Supported values are: "
                                  + ", ".join(f"'{v}'" for v in values) + ".", code="invalid_value", param=key)
        partials = params.get("partial_images")
        if partials is not None and (not isinstance(partials, int) or isinstance(partials, bool)
                                     or not 0 <= partials <= 3):
            raise OpenAIError(400, "Invalid 'partial_images': expected an integer between 0 and 3.",
                              code="invalid_value", param="partial_images")
        if params.get("stream") is not None and not isinstance(params.get("stream"), bool):
            raise OpenAIError(400, "Invalid type for 'stream': expected a boolean.", code="invalid_type",
                              param="stream")
        compression = params.get("output_compression")
        fmt = params.get("output_format") or "png"
        if compression is not None:
            if not isinstance(compression, int) or not 0 <= compression <= 100:
                raise OpenAIError(400, "Invalid 'output_compression': expected an integer between 0 and 100.",
                                  code="invalid_value", param="output_compression")
            if fmt == "png" and compression < 100:
                raise OpenAIError(400, "Compression less than 100 is not supported for PNG output format.",
                                  code="invalid_value", param="output_compression")
        if params.get("background") == "transparent" and fmt == "jpeg":
            raise OpenAIError(400, "Transparent background is not supported for the jpeg output format; use png or "
                              "webp.", code="invalid_value", param="background")

    def validate_inputs(endpoint: str, model: str, kind: str, images: list, mask) -> None:
        if not images:
            raise OpenAIError(400, "Missing required parameter: 'image'.", code="missing_required_parameter",
                              param="image")
        if kind == "gpt-image":
            if len(images) > 16:
                raise OpenAIError(400, "Invalid 'image': too many images. Expected at most 16.",
                                  code="invalid_value", param="image")
            limit, types = 50 * 1024 * 1024, ("png", "jpeg", "webp")
        elif kind == "dall-e":
            if len(images) > 1:
                raise OpenAIError(400, f"Invalid 'image': {model} accepts only one image.", code="invalid_value",
                                  param="image")
            limit, types = 4 * 1024 * 1024, ("png",)
        else:
            limit, types = 50 * 1024 * 1024, ("png", "jpeg", "webp")
        first_size = None
        for i, (_filename, _ctype, data) in enumerate(images):
            if len(data) > limit:
                raise OpenAIError(400, f"Invalid input image - image must be less than {limit // (1024 * 1024)} MB.",
                                  code="invalid_value", param="image")
            try:
                with Image.open(io.BytesIO(data)) as img:
                    fmt, dims, mode = (img.format or "").lower(), img.size, img.mode
            except Exception:
                raise OpenAIError(400, f"Invalid image file or mode for image {i + 1}, please check your image file.",
                                  code="invalid_image_file", param="image") from None
            if fmt not in types:
                raise OpenAIError(400, f"Invalid input image - format must be in {list(types)}, got {fmt}.",
                                  code="invalid_image_format", param="image")
            if kind == "dall-e":
                if dims[0] != dims[1]:
                    raise OpenAIError(400, "Invalid input image - image must be square.", code="invalid_value",
                                      param="image")
                if endpoint == "edit" and mask is None and mode not in ("RGBA", "LA", "L"):
                    raise OpenAIError(400, f"Invalid input image - format must be in ['RGBA', 'LA', 'L'], got {mode}.",
                                      code="invalid_image_format", param="image")
            first_size = first_size or dims
        if mask is not None:
            try:
                with Image.open(io.BytesIO(mask[2])) as img:
                    mfmt, mdims = (img.format or "").lower(), img.size
            except Exception:
                raise OpenAIError(400, "Invalid mask image file.", code="invalid_image_file", param="mask") from None
            if mfmt != "png":
                raise OpenAIError(400, f"Invalid mask image - format must be png, got {mfmt}.",
                                  code="invalid_image_format", param="mask")
            if mdims != first_size:
                raise OpenAIError(400, "Invalid mask image - image and mask must be the same size.",
                                  code="invalid_value", param="mask")

    def success(request: Request, endpoint: str, params: dict, model: str, images: list, fault: Fault | None,
                rid: str) -> Response:
        spec = rules[model]
        kind = spec["kind"]
        n = params.get("n") or 1
        size = params.get("size") or ("auto" if kind == "gpt-image" else "1024x1024")
        quality = params.get("quality") or ("auto" if kind == "gpt-image" else "standard")
        fault_kind = fault.kind if fault is not None else ""
        if kind == "gpt-image":
            size = state.get("auto_size", "1024x1024") if size == "auto" else size
            quality = state.get("auto_quality", "medium") if quality == "auto" else quality
        fmt = (params.get("output_format") or "png") if kind == "gpt-image" else "png"
        as_url = kind != "gpt-image" and (params.get("response_format") or "url") == "url"
        as_url = as_url or fault_kind in ("url", "relative_url")
        count = n - 1 if fault_kind == "wrong_count" else n + 1 if fault_kind == "extra_image" else n
        prompt = params.get("prompt") or ""
        serial = next(counter)
        data = []
        for i in range(count):
            blob = image_bytes(f"{model}|{prompt}|{endpoint}|{i}", size, fmt)
            if fault_kind == "bad_image":
                blob = b"this is not an image at all"
            item = {}
            if as_url:
                name = f"img-{serial}-{i}-{uuid.uuid4().hex[:12]}.{fmt}"
                files[name] = blob
                expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
                item["url"] = f"/files/{name}" if fault_kind == "relative_url" else \
                    f"{str(request.base_url).rstrip('/')}/files/{name}?se={expiry}&sp=r&sig=emulated"
            else:
                item["b64_json"] = base64.b64encode(blob).decode()
            if model == _DALL_E_3:
                item["revised_prompt"] = f"A detailed, vivid rendering of: {prompt}"
            data.append(item)
        body: dict = {"created": int(time.time()), "data": data}
        if fault_kind == "no_data":
            body = {"created": int(time.time()), "object": "list"}
        headers = common_headers(rid)
        if kind == "gpt-image":
            background = params.get("background") or "auto"
            if background == "auto":
                background = state.get("auto_background", "opaque")
            text_tokens = max(1, len(prompt) // 4)
            image_tokens = 323 * len(images)
            snapshot = state.get("alias_snapshot", spec["snapshot"]) if model == "chatgpt-image-latest" \
                else spec["snapshot"]
            if snapshot.startswith("gpt-image-2"):
                per_image = gpt_image_2_tokens(size, quality)
            else:
                per_image = _OUTPUT_TOKENS.get((quality, size), 1056)
            output_tokens = per_image * n
            body.update({"background": background, "output_format": fmt, "quality": quality, "size": size})
            if not state.get("no_usage"):
                body["usage"] = {
                    "input_tokens": text_tokens + image_tokens, "output_tokens": output_tokens,
                    "total_tokens": text_tokens + image_tokens + output_tokens,
                    "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
                    "output_tokens_details": {"text_tokens": 0, "image_tokens": output_tokens},
                }
            headers["openai-model"] = snapshot
        if fault is not None:
            headers.update(fault.headers)
        if kind == "gpt-image" and params.get("stream") is True:
            return StreamingResponse(stream_events(endpoint, params, model, body, fault_kind, rid),
                                     media_type="text/event-stream", headers=headers)
        return JSONResponse(body, headers=headers)

    async def stream_events(endpoint: str, params: dict, model: str, body: dict, fault_kind: str, rid: str):
        """OpenAI's image stream: partial images for each image, then one completed event per image."""
        prefix = "image_generation" if endpoint == "generate" else "image_edit"
        fields = {k: body[k] for k in ("size", "quality", "output_format")}
        fields["background"] = params.get("background") or "auto"  # partial events: the requested setting
        partials = params.get("partial_images") or 0
        pause = float(state.get("partial_delay", 0) or 0)
        sent = 0

        def event(payload: dict) -> bytes:
            return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()

        async def after_first():
            """The faults that strike once the first event is out: None to go on, else the stream's last bytes."""
            if fault_kind == "stream_cut":
                return b""
            if fault_kind in ("stream_error", "stream_refuse"):
                err = (refusal_body(model, rid)["error"] if fault_kind == "stream_refuse" else error_body(
                    "The server had an error processing your request.", type="server_error")["error"])
                return event({"type": "error", "error": err})
            return None

        for i in range(len(body["data"])):
            for p in range(partials):
                if pause:
                    await asyncio.sleep(pause)
                blob = image_bytes(f"{model}|{params.get('prompt') or ''}|{endpoint}|{i}|partial {p}", fields["size"],
                                   fields["output_format"])
                yield event({"type": f"{prefix}.partial_image", "b64_json": base64.b64encode(blob).decode(),
                             "created_at": int(time.time()), **fields, "partial_image_index": p})
                sent += 1
                if sent == 1 and (last := await after_first()) is not None:
                    yield last
                    return
                while sent == 1 and state.get("gate") is not None and not state["gate"].is_set():
                    await asyncio.sleep(0.02)
        for item in body["data"]:
            if pause:
                await asyncio.sleep(pause)
            yield event({"type": f"{prefix}.completed", "b64_json": item["b64_json"], "created_at": body["created"],
                         "size": body["size"], "quality": body["quality"], "background": body["background"],
                         "output_format": body["output_format"], "usage": body["usage"]})
            sent += 1
            if sent == 1 and (last := await after_first()) is not None:
                yield last
                return

    async def generations(request: Request) -> Response:
        return await handle(request, "generate")

    async def edits(request: Request) -> Response:
        return await handle(request, "edit")

    async def variations(request: Request) -> Response:
        return await handle(request, "variation")

    async def download(request: Request) -> Response:
        requests.append(Recorded(method="GET", path=request.url.path, headers=dict(request.headers), body=b""))
        fault = faults.take("download")
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                return Response(fault.body or b"<Error><Code>AuthenticationFailed</Code></Error>",
                                status_code=fault.status, media_type="application/xml")
        blob = files.get(request.path_params["name"])
        if blob is None:
            return Response(b"<Error><Code>BlobNotFound</Code></Error>", status_code=404,
                            media_type="application/xml")
        ctype = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}.get(
            request.path_params["name"].rsplit(".", 1)[-1], "application/octet-stream")
        return Response(blob, media_type=ctype)

    async def list_models(request: Request) -> Response:
        rid = request_id()
        try:
            check_auth(request)
        except OpenAIError as err:
            return error_response(err, rid)
        data = [{"id": m, "object": "model", "created": spec["created"],
                 "owned_by": "system" if spec["kind"] != "compatible" else "self-hosted"} for m, spec in rules.items()]
        return JSONResponse({"object": "list", "data": data}, headers=common_headers(rid))

    async def get_model(request: Request) -> Response:
        rid = request_id()
        try:
            check_auth(request)
            model = request.path_params["model"]
            if model not in rules:
                raise OpenAIError(404, f"The model '{model}' does not exist", code="model_not_found", param="model")
        except OpenAIError as err:
            return error_response(err, rid)
        spec = rules[model]
        return JSONResponse({"id": model, "object": "model", "created": spec["created"],
                             "owned_by": "system" if spec["kind"] != "compatible" else "self-hosted"},
                            headers=common_headers(rid))

    return Starlette(routes=[
        Route("/v1/images/generations", generations, methods=["POST"]),
        Route("/v1/images/edits", edits, methods=["POST"]),
        Route("/v1/images/variations", variations, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/files/{name}", download, methods=["GET"]),
    ])


def default_error_body(status: int) -> dict:
    """OpenAI's own body for an error status."""
    if status == 400:
        return error_body("Invalid request.", code="invalid_value")
    if status == 401:
        return error_body("Incorrect API key provided: sk-******. You can find your API key at "
                          "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
    if status == 403:
        return error_body("Your organization must be verified to use the model `gpt-image-1`. Please go to: "
                          "https://platform.openai.com/settings/organization/general and click on Verify "
                          "Organization.", code=None)
    if status == 404:
        return error_body("The model `unknown` does not exist or you do not have access to it.",
                          code="model_not_found")
    if status == 429:
        return error_body("Rate limit reached for images per minute. Limit: 50/1min. Current: 51/1min. Please try "
                          "again in 2s. Visit https://platform.openai.com/account/rate-limits to learn more.",
                          type="requests", code="rate_limit_exceeded")
    if status == 503:
        return error_body("The engine is currently overloaded, please try again later", type="server_error")
    return error_body("The server had an error while processing your request. Sorry about that!",
                      type="server_error")


def _is_wxh(size) -> bool:
    if not isinstance(size, str) or size == "auto":
        return isinstance(size, str)
    w, _, h = size.partition("x")
    return w.isdigit() and h.isdigit() and 0 < int(w) <= 4096 and 0 < int(h) <= 4096


@contextlib.contextmanager
def emulator(*, api_key: str = API_KEY, extra_models: dict | None = None, retired: tuple[str, ...] = RETIRED):
    """Serve the emulator on a free loopback port; yields base.Emulator (url, faults, requests, state).
    The OpenAI API lives under `emu.url + "/v1"`."""
    faults, requests, state = Faults(), [], {}
    app = build_app(faults=faults, requests=requests, state=state, api_key=api_key, extra_models=extra_models,
                    retired=retired)
    with serve(app, faults=faults, requests=requests, state=state) as emu:
        yield emu
