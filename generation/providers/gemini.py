"""Provider `gemini`: Google's Gemini image models ("Nano Banana") through the Gemini API, over the shared transport.

Facts and their sources: docs/providers/gemini.md. In short:
- POST {base}/v1beta/models/{model}:generateContent, header `x-goog-api-key`, JSON
  {"contents": [{"role": "user", "parts": [{"text": prompt}]}],
   "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
                        "seed"?: int}}
- synchronous; 200 → {"candidates": [{"content": {"parts": [...]}, "finishReason"}], "promptFeedback"?,
  "usageMetadata"}; the image is a part {"inlineData": {"mimeType", "data": base64}}. Parts marked "thought": true are
  the model's interim drafts (Gemini 3 Pro Image thinks in images) and are skipped. One call makes one image.
- a blocked prompt is HTTP 200 with `promptFeedback.blockReason` and no candidates; a blocked output is a candidate
  whose `finishReason` is SAFETY, IMAGE_SAFETY, PROHIBITED_CONTENT, ... → ContentRefused (never charged).
- errors are {"error": {"code", "message", "status", "details"}}; 429 RESOURCE_EXHAUSTED carries
  google.rpc.RetryInfo.retryDelay ("38s") → UpstreamRateLimited.retry_after_seconds.

Our sizes are the exact pixel sizes Google lists for each (aspectRatio, imageSize) pair; a size outside the table is
refused naming the sizes the model has. Configuration arrives in the constructor only. Depends on base.py,
transport.py and the standard library.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import quote

from .base import (
    ContentRefused,
    GeneratedImage,
    ImageRequest,
    ProviderError,
    ProviderResult,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    sniff_image_type,
)
from .transport import Reply, Transport

MAX_IMAGE_BYTES = 50 * 1024 * 1024  # one decoded image
# The reply carries the image in base64 (4/3 of its size) inside JSON, with usage metadata and maybe thought images.
MAX_REPLY_BYTES = 80 * 1024 * 1024

# (aspectRatio, imageSize) → the pixel size Google documents for it; the same table for both models
# (docs/providers/gemini.md, "Sizes"). 1K, 2K and 4K tiers; the 0.5K tier of 3.1 Flash is left out.
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
_PIXELS = {
    "1K": ("1024x1024", "848x1264", "1264x848", "896x1200", "1200x896", "928x1152", "1152x928", "768x1376",
           "1376x768", "1584x672"),
    "2K": ("2048x2048", "1696x2528", "2528x1696", "1792x2400", "2400x1792", "1856x2304", "2304x1856", "1536x2752",
           "2752x1536", "3168x1344"),
    "4K": ("4096x4096", "3392x5056", "5056x3392", "3584x4800", "4800x3584", "3712x4608", "4608x3712", "3072x5504",
           "5504x3072", "6336x2688"),
}
SIZES: dict[str, tuple[str, str]] = {
    size: (ratio, tier) for tier, sizes in _PIXELS.items() for ratio, size in zip(ASPECT_RATIOS, sizes)
}


@dataclass(frozen=True)
class GeminiModel:
    """One image model: its id on the Gemini API, its image output price and the tokens one image costs per tier."""

    upstream_id: str
    micros_per_image_token: int  # image output price: $60 / 1M tokens = 60 micro-USD per token
    image_tokens: dict[str, int]  # imageSize tier → output tokens per image

    def sizes(self) -> tuple[str, ...]:
        return tuple(size for size, (_ratio, tier) in SIZES.items() if tier in self.image_tokens)

    def image_price_micros(self, size: str) -> int:
        return self.image_tokens[SIZES[size][1]] * self.micros_per_image_token


# Our catalog id → the model (docs/providers/gemini.md, "Models" and "Prices").
MODELS: dict[str, GeminiModel] = {
    "gemini-3.1-flash-image": GeminiModel("gemini-3.1-flash-image", 60, {"1K": 1120, "2K": 1680, "4K": 2520}),
    "gemini-3-pro-image": GeminiModel("gemini-3-pro-image", 120, {"1K": 1120, "2K": 1120, "4K": 2000}),
}

# promptFeedback.blockReason values and candidate finishReason values that mean "refused by safety" (any value of
# blockReason does: the prompt was blocked).
REFUSAL_FINISH_REASONS = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
})
_ACCOUNT_STATUSES = {"FAILED_PRECONDITION", "PERMISSION_DENIED", "UNAUTHENTICATED"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")  # protobuf Duration in JSON: "38s", "0.5s"


class GeminiProvider:
    """Gemini image models on the Gemini API (generativelanguage.googleapis.com), one image per call."""

    name = "gemini"

    def __init__(self, *, api_key: str, base_url: str = "https://generativelanguage.googleapis.com",
                 timeout: float = 120.0, max_image_bytes: int = MAX_IMAGE_BYTES):
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.max_image_bytes = max_image_bytes
        self.transport = Transport(provider=self.name, timeout=self.timeout)

    # --- Provider interface -----------------------------------------------------------------------------------------

    def serves(self) -> set[str]:
        return set(MODELS)

    def upstream_cost_micros(self, request: ImageRequest) -> int:
        model = MODELS.get(request.model)
        if model is None or request.size not in SIZES:
            return 0
        return model.image_price_micros(request.size) * request.n

    async def run(self, request: ImageRequest) -> ProviderResult:
        model = self._check(request)
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._post(model, self._payload(request))
        except TimeoutError:
            raise UpstreamTimeout(f"gemini did not answer within {self.timeout:g} s.", provider=self.name) from None
        image = self._image(body)
        return ProviderResult(images=[image], upstream_cost_micros=self._cost(model, request.size, body))

    async def aclose(self) -> None:
        await self.transport.aclose()

    # --- Request ------------------------------------------------------------------------------------------------------

    def _check(self, request: ImageRequest) -> GeminiModel:
        """Refuse what the upstream cannot do for this model, naming what it can."""
        model = MODELS.get(request.model)
        if model is None:
            self._refuse(f"gemini does not serve model {request.model!r}; it serves {', '.join(sorted(MODELS))}.")
        if request.mode != "generate":
            self._refuse(f"{request.model} supports image generation only through this gateway (not {request.mode}s).")
        if request.size not in model.sizes():
            self._refuse(f"{request.model} does not make {request.size} images; it makes "
                         f"{', '.join(model.sizes())}.")
        if request.quality not in ("", "standard"):
            self._refuse(f"{request.model} takes no quality setting (the size sets the resolution tier).")
        if request.style:
            self._refuse(f"{request.model} takes no style; describe the style in the prompt.")
        if request.n != 1:
            self._refuse(f"{request.model} makes one image per upstream call (n={request.n}).")
        return model

    def _refuse(self, message: str):
        raise UpstreamInvalidRequest(message, provider=self.name)

    @staticmethod
    def _payload(request: ImageRequest) -> dict:
        ratio, tier = SIZES[request.size]
        config: dict = {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": ratio, "imageSize": tier}}
        if request.seed is not None:
            config["seed"] = request.seed
        return {"contents": [{"role": "user", "parts": [{"text": request.prompt}]}], "generationConfig": config}

    async def _post(self, model: GeminiModel, payload: dict) -> dict:
        url = f"{self.base_url}/v1beta/models/{quote(model.upstream_id, safe='.-_')}:generateContent"
        reply = await self.transport.request("POST", url, json=payload, max_bytes=MAX_REPLY_BYTES,
                                             headers={"x-goog-api-key": self.api_key, "Accept": "application/json"})
        if reply.status >= 300:
            raise self._error(reply)
        try:
            body = reply.json()
        except (ValueError, UnicodeDecodeError):
            raise UpstreamUnavailable(f"gemini sent a malformed reply (HTTP {reply.status}, "
                                      f"{reply.headers.get('content-type', 'no content type')}, not JSON): "
                                      f"{reply.snippet()}", provider=self.name) from None
        if not isinstance(body, dict):
            raise UpstreamUnavailable(f"gemini sent a malformed reply: a JSON {type(body).__name__}, not an object.",
                                      provider=self.name)
        return body

    # --- Reply --------------------------------------------------------------------------------------------------------

    def _image(self, body: dict) -> GeneratedImage:
        """The one generated image of a 200 reply, or the refusal / failure the reply describes."""
        feedback = body.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            raise ContentRefused(f"gemini blocked the prompt (blockReason {feedback['blockReason']}"
                                 f"{_block_message(feedback)}).", provider=self.name)
        candidates = body.get("candidates")
        if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
            raise UpstreamUnavailable(f"gemini sent a malformed reply: no candidates (keys: "
                                      f"{', '.join(sorted(body)) or 'none'}).", provider=self.name)
        candidate = candidates[0]
        reason = candidate.get("finishReason")
        if reason in REFUSAL_FINISH_REASONS:
            raise ContentRefused(f"gemini refused to make the image (finishReason {reason}).", provider=self.name)
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list):
            raise UpstreamUnavailable(f"gemini returned no image (finishReason {reason or 'none'}, no content parts).",
                                      provider=self.name)
        images = [p["inlineData"] for p in parts if isinstance(p, dict) and not p.get("thought")
                  and isinstance(p.get("inlineData"), dict)]
        if not images:
            text = " ".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
                            and not p.get("thought")).strip()
            raise UpstreamUnavailable(f"gemini returned no image (finishReason {reason or 'none'})"
                                      + (f"; it answered: {text[:200]!r}" if text else "."), provider=self.name)
        blob, content_type = self._decode(images[-1])
        return GeneratedImage(data=blob, content_type=content_type)

    def _decode(self, inline: dict) -> tuple[bytes, str]:
        """(bytes, sniffed content type) of an inlineData part, refusing more than `max_image_bytes`."""
        data = inline.get("data")
        if not isinstance(data, str) or not data:
            raise UpstreamUnavailable("gemini sent an image part without data.", provider=self.name)
        if len(data) > self.max_image_bytes * 4 // 3 + 4:
            raise UpstreamUnavailable(f"gemini's image is larger than {self.max_image_bytes // (1024 * 1024)} MB.",
                                      provider=self.name)
        try:
            blob = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise UpstreamUnavailable("gemini sent invalid base64 in inlineData.data.", provider=self.name) from None
        content_type = sniff_image_type(blob)
        if content_type is None:
            raise UpstreamUnavailable(f"gemini returned undecodable image data ({len(blob)} bytes, declared "
                                      f"{inline.get('mimeType')!r}; not PNG, JPEG or WebP).", provider=self.name)
        return blob, content_type

    @staticmethod
    def _cost(model: GeminiModel, size: str, body: dict) -> int:
        """What Google bills for the image: the image output tokens the reply reports (usageMetadata
        .candidatesTokensDetails, modality IMAGE) at the model's image token price; the published tokens per image
        for the size when the reply does not say."""
        usage = body.get("usageMetadata")
        details = usage.get("candidatesTokensDetails") if isinstance(usage, dict) else None
        if isinstance(details, list):
            tokens = [d.get("tokenCount") for d in details if isinstance(d, dict) and d.get("modality") == "IMAGE"]
            if tokens and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens):
                return sum(tokens) * model.micros_per_image_token
        return model.image_price_micros(size)

    # --- Errors -------------------------------------------------------------------------------------------------------

    def _error(self, reply: Reply) -> ProviderError:
        """Map Google's error envelope ({"error": {code, message, status, details}}) to our errors."""
        status, (message, code_name, details) = reply.status, _parse_error(reply)
        text = f"{message} (HTTP {status}" + (f", {code_name}" if code_name else "") + ")"
        reasons = {d.get("reason") for d in details if isinstance(d, dict)}
        if "API_KEY_INVALID" in reasons or status in (401, 403) or code_name in _ACCOUNT_STATUSES:
            return UpstreamUnavailable(f"gemini refused the gateway's key or account: {text}", provider=self.name)
        if status == 429 or code_name == "RESOURCE_EXHAUSTED":
            err = UpstreamRateLimited(f"gemini rate limit or quota: {text}", provider=self.name)
            err.retry_after_seconds = _retry_delay(details) or reply.retry_after()
            return err
        if status == 404:
            return UpstreamUnavailable(f"gemini does not have this model or endpoint at {self.base_url}: {text}",
                                       provider=self.name)
        if status in (408, 504) or code_name == "DEADLINE_EXCEEDED":
            return UpstreamTimeout(f"gemini timed out: {text}", provider=self.name)
        if status in (400, 413, 422):
            return UpstreamInvalidRequest(f"gemini rejected the request: {message}", provider=self.name)
        return UpstreamUnavailable(f"gemini failed: {text}", provider=self.name)


def _parse_error(reply: Reply) -> tuple[str, str | None, list]:
    """(message, status name, details) from {"error": {...}}; the start of the body when it is not that."""
    try:
        body = reply.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"{reply.reason or 'error'}: {reply.snippet()}", None, []
    message = error.get("message") if isinstance(error.get("message"), str) else reply.reason or "error"
    status = error.get("status") if isinstance(error.get("status"), str) else None
    details = error.get("details") if isinstance(error.get("details"), list) else []
    return message, status, details


def _retry_delay(details: list) -> float | None:
    """google.rpc.RetryInfo.retryDelay in seconds ("38s" → 38.0), when the error carries one."""
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None



def _block_message(feedback: dict) -> str:
    message = feedback.get("blockReasonMessage")
    return f": {message}" if isinstance(message, str) and message else ""
