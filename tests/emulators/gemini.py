"""A loopback emulator of the Gemini API's generateContent for the image models (docs/providers/gemini.md).

    with emulator() as emu:                      # emu.url, emu.faults, emu.requests, emu.state
        provider = GeminiProvider(api_key=API_KEY, base_url=emu.url)

Route: POST /v1beta/models/{model}:generateContent (anything else: Google's 404 NOT_FOUND envelope).

What it mirrors:
- auth by `x-goog-api-key` (or `?key=`): none → 403 PERMISSION_DENIED "Method doesn't allow unregistered callers";
  a wrong key → 400 INVALID_ARGUMENT with google.rpc.ErrorInfo reason API_KEY_INVALID;
- an unknown model → 404 NOT_FOUND "models/x is not found for API version v1beta ...";
- proto-JSON validation as Google answers it (400 INVALID_ARGUMENT): unknown fields ("Invalid JSON payload
  received. Unknown name ..."), contents required with parts, responseModalities values, imageConfig.aspectRatio and
  imageSize per model (uppercase K), seed an integer;
- safety: a prompt containing "forbidden-upstream" is blocked (200, promptFeedback.blockReason PROHIBITED_CONTENT, no
  candidates); "forbidden-output" makes a candidate with finishReason IMAGE_SAFETY and no parts;
- success: one candidate whose parts are (gemini-3-pro-image) a thought text and a thought image, then a short text
  and the final image as inlineData (a small PNG of the requested aspect ratio), finishReason STOP, and
  usageMetadata with the image tokens of the size tier (candidatesTokensDetails modality IMAGE).

Faults (`emu.faults.set("generate", Fault(...))`):
- status=...: answer that status; body defaults to Google's envelope for it (429 RESOURCE_EXHAUSTED with
  QuotaFailure, Help and RetryInfo retryDelay "38s"; 500 INTERNAL; 503 UNAVAILABLE "The model is overloaded");
- kind="malformed" (200 HTML), "truncated" (200 JSON cut in half), "no_candidates", "text_only" (finishReason STOP,
  a text part and no image), "no_image" (finishReason NO_IMAGE), "bad_base64", "not_image" (base64 of no image),
  "refuse" (blocked prompt, whatever the prompt), "no_usage" (no usageMetadata), "huge" (an image of
  `state["huge_bytes"]` bytes);
- delay=seconds before answering. `emu.state["delay"]` delays every answer.
"""
import asyncio
import base64
import contextlib
import functools
import io
import json
import uuid

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .base import Faults, Recorded, make_png, serve

API_KEY = "AIzaSy-emulator-gemini-0123456789"
FORBIDDEN = "forbidden-upstream"
FORBIDDEN_OUTPUT = "forbidden-output"

RATIOS = ("1:1", "1:4", "1:8", "2:3", "3:2", "3:4", "4:1", "4:3", "4:5", "5:4", "8:1", "9:16", "16:9", "21:9")
# Model → {imageSize: image output tokens}. 3.1 Flash also takes "512" (the 0.5K tier).
MODELS = {
    "gemini-3.1-flash-image": {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
    "gemini-3-pro-image": {"1K": 1120, "2K": 1120, "4K": 2000},
}
THINKING_MODELS = {"gemini-3-pro-image"}
_TOP_LEVEL = {"contents", "generationConfig", "safetySettings", "systemInstruction", "tools", "toolConfig",
              "cachedContent"}
_GENERATION_CONFIG = {"responseModalities", "imageConfig", "seed", "temperature", "topP", "topK", "candidateCount",
                      "maxOutputTokens", "stopSequences", "thinkingConfig", "responseMimeType"}
_IMAGE_CONFIG = {"aspectRatio", "imageSize"}
_SNAKE = {"generationConfig": "generation_config", "imageConfig": "image_config"}


class GoogleError(Exception):
    def __init__(self, code: int, status: str, message: str, details: list | None = None, headers=None):
        super().__init__(message)
        self.code, self.status, self.message, self.details, self.headers = code, status, message, details or [], \
            headers or {}

    def response(self) -> JSONResponse:
        error = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return JSONResponse({"error": error}, status_code=self.code, headers=self.headers)


def default_error(status: int) -> GoogleError:
    """Google's own envelope for an error status."""
    if status == 429:
        return GoogleError(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and "
                           "billing details. For more information on this error, head to: "
                           "https://ai.google.dev/gemini-api/docs/rate-limits.", [
                               {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                                   {"quotaMetric": "generativelanguage.googleapis.com/generate_requests_per_model",
                                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                                    "quotaDimensions": {"location": "global", "model": "gemini-3.1-flash-image"},
                                    "quotaValue": "10"}]},
                               {"@type": "type.googleapis.com/google.rpc.Help", "links": [
                                   {"description": "Learn more about Gemini API quotas",
                                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
                               {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"}])
    if status == 503:
        return GoogleError(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
    if status == 504:
        return GoogleError(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.")
    if status == 400:
        return GoogleError(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
    if status == 403:
        return GoogleError(403, "PERMISSION_DENIED", "Your API key doesn't have the required permissions.")
    return GoogleError(500, "INTERNAL", "An internal error has occurred. Please retry or report in "
                       "https://developers.generativeai.google/guide/troubleshooting")


def _invalid(message: str) -> GoogleError:
    return GoogleError(400, "INVALID_ARGUMENT", message)


def _unknown_name(name: str, where: str) -> GoogleError:
    return GoogleError(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. Unknown name \"{name}\" at "
                       f"'{where}': Cannot find field.", [
                           {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [
                               {"field": where, "description": f"Invalid JSON payload received. Unknown name "
                                                               f"\"{name}\" at '{where}': Cannot find field."}]}])


@functools.lru_cache(maxsize=512)
def image_bytes(seed: str, ratio: str) -> bytes:
    """A small PNG of the requested aspect ratio (longest side 64)."""
    w, h = (int(v) for v in ratio.split(":"))
    scale = 64 / max(w, h)
    return make_png(seed, max(1, round(w * scale)), max(1, round(h * scale)))


@functools.lru_cache(maxsize=1)
def thought_image() -> bytes:
    """The interim draft a thinking model shows (a gray 8x8 PNG): never the answer."""
    out = io.BytesIO()
    Image.new("L", (8, 8), 128).save(out, format="PNG")
    return out.getvalue()


def build_app(*, faults: Faults, requests: list, state: dict, api_key: str = API_KEY) -> Starlette:

    def check_auth(request: Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            raise GoogleError(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without "
                              "established identity). Please use API Key or other form of API consumer identity to "
                              "call this API.")
        if key != api_key:
            raise GoogleError(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                 "message": "API key not valid. Please pass a valid API key."}])

    def validate(model: str, raw: bytes) -> tuple[str, str, str, int | None]:
        """(prompt, aspectRatio, imageSize, seed) of a valid request; GoogleError otherwise."""
        try:
            body = json.loads(raw)
        except ValueError:
            raise _invalid("Invalid JSON payload received. Unexpected token.") from None
        if not isinstance(body, dict):
            raise _invalid("Invalid JSON payload received. Expected an object.")
        for key in body:
            if key not in _TOP_LEVEL:
                raise _unknown_name(key, "")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _invalid("* GenerateContentRequest.contents: contents is not specified\n")
        texts = []
        for content in contents:
            parts = content.get("parts") if isinstance(content, dict) else None
            if not isinstance(parts, list) or not parts:
                raise _invalid("* GenerateContentRequest.contents[0].parts: contents.parts must not be empty.\n")
            texts += [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if not "".join(texts).strip():
            raise _invalid("* GenerateContentRequest.contents[0].parts[0].data: required oneof field 'data' must "
                           "have one initialized field\n")
        config = body.get("generationConfig") or {}
        if not isinstance(config, dict):
            raise _invalid("Invalid value at 'generation_config': expected an object.")
        for key in config:
            if key not in _GENERATION_CONFIG:
                raise _unknown_name(key, "generation_config")
        modalities = config.get("responseModalities") or ["TEXT", "IMAGE"]
        for value in modalities:
            if value not in ("TEXT", "IMAGE"):
                raise _invalid(f"Invalid value at 'generation_config.response_modalities[0]' "
                               f"(type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig.Modality)"
                               f", \"{value}\"")
        if "IMAGE" not in modalities:
            raise _invalid("This model only supports text and image output; responseModalities must include IMAGE.")
        image_config = config.get("imageConfig") or {}
        if not isinstance(image_config, dict):
            raise _invalid("Invalid value at 'generation_config.image_config': expected an object.")
        for key in image_config:
            if key not in _IMAGE_CONFIG:
                raise _unknown_name(key, "generation_config.image_config")
        ratio = image_config.get("aspectRatio", "1:1")
        if ratio not in RATIOS or (model != "gemini-3.1-flash-image" and ratio in ("1:4", "4:1", "1:8", "8:1")):
            raise _invalid(f"Unsupported aspect ratio: {ratio}.")
        size = image_config.get("imageSize", "1K")
        if size not in MODELS[model]:
            raise _invalid(f"Unsupported image size: {size}. Supported sizes for {model}: "
                           f"{', '.join(MODELS[model])}.")
        seed = config.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise _invalid("Invalid value at 'generation_config.seed' (TYPE_INT32), " + json.dumps(seed))
        return " ".join(texts), ratio, size, seed

    def success(model: str, prompt: str, ratio: str, size: str, fault_kind: str) -> Response:
        tokens = MODELS[model][size]
        prompt_tokens = max(1, len(prompt) // 4)
        usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": tokens + 12,
                 "totalTokenCount": prompt_tokens + tokens + 12,
                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
                 "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 12},
                                             {"modality": "IMAGE", "tokenCount": tokens}]}
        base = {"modelVersion": model, "responseId": uuid.uuid4().hex[:22]}
        if FORBIDDEN in prompt or fault_kind == "refuse":
            return JSONResponse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                                 "usageMetadata": {"promptTokenCount": prompt_tokens,
                                                   "totalTokenCount": prompt_tokens}, **base})
        if FORBIDDEN_OUTPUT in prompt:
            return JSONResponse({"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}],
                                 "usageMetadata": usage, **base})
        blob = image_bytes(f"{model}|{prompt}|{size}", ratio)
        if fault_kind == "not_image":
            blob = b"definitely not an image"
        elif fault_kind == "huge":
            blob = b"\x89PNG\r\n\x1a\n" + b"\0" * int(state.get("huge_bytes", 1024 * 1024))
        data = base64.b64encode(blob).decode()
        if fault_kind == "bad_base64":
            data = "!!!" + data
        parts = []
        if model in THINKING_MODELS:
            parts += [{"text": "**Composing the scene**\n\nPlacing the subject first.", "thought": True},
                      {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(thought_image()).decode()},
                       "thought": True}]
        parts.append({"text": "Here is the image you asked for."})
        if fault_kind not in ("text_only", "no_image"):
            parts.append({"inlineData": {"mimeType": "image/png", "data": data}})
        reason = "NO_IMAGE" if fault_kind == "no_image" else "STOP"
        body = {"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": reason, "index": 0}],
                **base}
        if fault_kind != "no_usage":
            body["usageMetadata"] = usage
        if fault_kind == "no_candidates":
            body = {"usageMetadata": usage, **base}
        if fault_kind == "truncated":
            text = json.dumps(body)
            return Response(text[: len(text) // 2], media_type="application/json")
        return JSONResponse(body)

    async def generate(request: Request) -> Response:
        raw = await request.body()
        requests.append(Recorded(method=request.method, path=request.url.path, headers=dict(request.headers),
                                 body=raw))
        fault = faults.take("generate")
        delay = fault.delay if fault is not None and fault.delay else float(state.get("delay", 0) or 0)
        if delay:
            await asyncio.sleep(delay)
        target = request.path_params["target"]
        model, _, method = target.partition(":")
        try:
            if method != "generateContent" or "/" in model:
                raise GoogleError(404, "NOT_FOUND", "Requested entity was not found.")
            check_auth(request)
            if model not in MODELS:
                raise GoogleError(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or is not "
                                  "supported for generateContent. Call ListModels to see the list of available models "
                                  "and their supported methods.")
            prompt, ratio, size, _seed = validate(model, raw)
        except GoogleError as err:
            return err.response()
        kind = fault.kind if fault is not None else ""
        if fault is not None and fault.status is not None:
            if isinstance(fault.body, (dict, list)):
                return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
            if fault.body is not None:
                return Response(fault.body, status_code=fault.status, headers=fault.headers)
            err = default_error(fault.status)
            err.headers = fault.headers
            return err.response()
        if kind == "malformed":
            return Response(fault.body or "<html><body><h1>502 Bad Gateway</h1></body></html>", media_type="text/html")
        return success(model, prompt, ratio, size, kind)

    async def not_found(request: Request) -> Response:
        return GoogleError(404, "NOT_FOUND", "Requested entity was not found.").response()

    return Starlette(routes=[
        Route("/v1beta/models/{target:path}", generate, methods=["POST"]),
        Route("/{path:path}", not_found, methods=["GET", "POST"]),
    ])


@contextlib.contextmanager
def emulator(*, api_key: str = API_KEY):
    """Serve the emulator on a free loopback port; yields base.Emulator (url, faults, requests, state)."""
    faults, requests, state = Faults(), [], {}
    with serve(build_app(faults=faults, requests=requests, state=state, api_key=api_key), faults=faults,
               requests=requests, state=state) as emu:
        yield emu


def recorded_payload(recorded: Recorded) -> dict:
    return json.loads(recorded.body)
