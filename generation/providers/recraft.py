"""Provider `recraft`: Recraft's raster models (V3, V4, V4.1 and their Pro variants) over the shared transport.

Facts and their sources: docs/providers/recraft.md. In short:
- POST {base}/v1/images/generations, `Authorization: Bearer <key>`, JSON (OpenAI's shape plus Recraft's fields):
  {"prompt", "model", "n" (1-6), "size" ("WxH" from the model's table), "response_format": "b64_json", "style"?}
- synchronous; 200 → {"created", "credits" (API units, 1,000 = $1), "data": [{"image_id", "b64_json" | "url"}]}.
- errors: 401 `text/plain` "request unauthorized", 404 `text/plain`; other failures a JSON or text body; 429 over
  Recraft's rate limits (100 images a minute, 5 requests a second).
- `style` (V3 only; V4 models take none) picks a style family; only the raster families are offered.

Vector models (`*_vector`) answer SVG, which our API (PNG/JPEG/WebP) cannot return honestly: they are not served,
and an SVG answer is refused as malformed. Configuration arrives in the constructor only. Depends on base.py,
transport.py and the standard library.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

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

MAX_IMAGE_BYTES = 50 * 1024 * 1024  # one image, decoded or downloaded
MAX_REPLY_BYTES = 6 * MAX_IMAGE_BYTES * 4 // 3 + 1024 * 1024  # up to 6 base64 images in one JSON reply
MAX_N = 6
MICROS_PER_CREDIT = 1_000  # Recraft bills in API units: 1,000 units = $1

# Sizes per model family: Recraft's table of aspect ratios and their WxH (docs/providers/recraft.md, "Sizes").
V3_SIZES = ("1024x1024", "2048x1024", "1024x2048", "1536x1024", "1024x1536", "1365x1024", "1024x1365", "1280x1024",
            "1024x1280", "1024x1707", "1434x1024", "1024x1434", "1820x1024", "1024x1820")
V4_SIZES = ("1024x1024", "1536x768", "768x1536", "1280x832", "832x1280", "1216x896", "896x1216", "1152x896",
            "896x1152", "832x1344", "1280x896", "896x1280", "1344x768", "768x1344")
V4_PRO_SIZES = ("2048x2048", "3072x1536", "1536x3072", "2560x1664", "1664x2560", "2432x1792", "1792x2432",
                "2304x1792", "1792x2304", "1664x2688", "2560x1792", "1792x2560", "2688x1536", "1536x2688")
# V3's raster style families (vector_illustration and icon answer SVG).
V3_STYLES = ("any", "realistic_image", "digital_illustration", "logo_raster")


@dataclass(frozen=True)
class RecraftModel:
    sizes: tuple[str, ...]
    price_micros: int  # Recraft's list price per raster image
    max_prompt_chars: int
    styles: tuple[str, ...] = ()


# Our catalog id (Recraft's own `model` value) → its rules and price.
MODELS: dict[str, RecraftModel] = {
    "recraftv3": RecraftModel(V3_SIZES, 40_000, 1000, V3_STYLES),
    "recraftv4": RecraftModel(V4_SIZES, 40_000, 10_000),
    "recraftv4_pro": RecraftModel(V4_PRO_SIZES, 250_000, 10_000),
    "recraftv4_1": RecraftModel(V4_SIZES, 35_000, 10_000),
    "recraftv4_1_pro": RecraftModel(V4_PRO_SIZES, 210_000, 10_000),
}

# Recraft documents no refusal shape; a 400/422 whose message names the content policy is taken as one
# (docs/providers/recraft.md, "Errors").
_REFUSAL_WORDS = ("inappropriate", "nsfw", "moderation", "content policy", "prohibited", "unsafe", "safety")


class RecraftProvider:
    """Recraft's OpenAI-compatible image generation API (external.api.recraft.ai), raster models only."""

    name = "recraft"

    def __init__(self, *, api_key: str, base_url: str = "https://external.api.recraft.ai", timeout: float = 120.0,
                 max_image_bytes: int = MAX_IMAGE_BYTES):
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
        return model.price_micros * request.n if model is not None else 0

    async def run(self, request: ImageRequest) -> ProviderResult:
        model = self._check(request)
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._post(self._payload(request))
                images = await self._images(body, request.n)
        except TimeoutError:
            raise UpstreamTimeout(f"recraft did not answer within {self.timeout:g} s.", provider=self.name) from None
        return ProviderResult(images=images, upstream_cost_micros=self._cost(body, model, request.n))

    async def aclose(self) -> None:
        await self.transport.aclose()

    # --- Request ------------------------------------------------------------------------------------------------------

    def _check(self, request: ImageRequest) -> RecraftModel:
        """Refuse what Recraft cannot do for this model, naming what it can."""
        model = MODELS.get(request.model)
        if model is None:
            self._refuse(f"recraft does not serve model {request.model!r}; it serves {', '.join(sorted(MODELS))}.")
        if request.mode != "generate":
            self._refuse(f"{request.model} supports image generation only through this gateway (not {request.mode}s).")
        if request.size not in model.sizes:
            self._refuse(f"{request.model} does not make {request.size} images; it makes {', '.join(model.sizes)}.")
        if request.quality not in ("", "standard"):
            self._refuse(f"{request.model} takes no quality setting.")
        if request.style and request.style not in model.styles:
            self._refuse(f"{request.model} does not take style {request.style!r}; "
                         + (f"it takes {', '.join(model.styles)}." if model.styles else "it takes no style."))
        if not 1 <= request.n <= MAX_N:
            self._refuse(f"{request.model} makes 1 to {MAX_N} images per upstream call (n={request.n}).")
        if len(request.prompt) > model.max_prompt_chars:
            self._refuse(f"{request.model} takes prompts of at most {model.max_prompt_chars} characters.")
        return model

    def _refuse(self, message: str):
        raise UpstreamInvalidRequest(message, provider=self.name)

    @staticmethod
    def _payload(request: ImageRequest) -> dict:
        payload = {"prompt": request.prompt, "model": request.model, "n": request.n, "size": request.size,
                   "response_format": "b64_json"}
        if request.style:
            payload["style"] = request.style
        return payload

    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}

    async def _post(self, payload: dict) -> dict:
        reply = await self.transport.request("POST", self.base_url + "/v1/images/generations", json=payload,
                                             headers=self._auth(), max_bytes=MAX_REPLY_BYTES)
        if reply.status >= 300:
            raise self._error(reply)
        try:
            body = reply.json()
        except (ValueError, UnicodeDecodeError):
            raise UpstreamUnavailable(f"recraft sent a malformed reply (HTTP {reply.status}, "
                                      f"{reply.headers.get('content-type', 'no content type')}, not JSON): "
                                      f"{reply.snippet()}", provider=self.name) from None
        if not isinstance(body, dict):
            raise UpstreamUnavailable(f"recraft sent a malformed reply: a JSON {type(body).__name__}, not an object.",
                                      provider=self.name)
        return body

    # --- Reply --------------------------------------------------------------------------------------------------------

    async def _images(self, body: dict, n: int) -> list[GeneratedImage]:
        data = body.get("data")
        if not isinstance(data, list):
            raise UpstreamUnavailable(f"recraft sent a malformed reply: no `data` list (keys: "
                                      f"{', '.join(sorted(body)) or 'none'}).", provider=self.name)
        if len(data) != n:
            raise UpstreamUnavailable(f"recraft returned {len(data)} images for n={n}.", provider=self.name)
        blobs = await asyncio.gather(*(self._image_bytes(item, i) for i, item in enumerate(data)))
        images = []
        for i, (item, blob) in enumerate(zip(data, blobs)):
            content_type = sniff_image_type(blob)
            if content_type is None:
                kind = "SVG" if blob.lstrip()[:5] in (b"<svg ", b"<?xml") else "not PNG, JPEG or WebP"
                raise UpstreamUnavailable(f"recraft returned image {i} as {kind} ({len(blob)} bytes); only raster "
                                          "images can be served.", provider=self.name)
            revised = item.get("revised_prompt")
            images.append(GeneratedImage(data=blob, content_type=content_type,
                                         revised_prompt=revised if isinstance(revised, str) and revised else None))
        return images

    async def _image_bytes(self, item, index: int) -> bytes:
        if not isinstance(item, dict):
            raise UpstreamUnavailable(f"recraft sent a malformed reply: data[{index}] is not an object.",
                                      provider=self.name)
        b64 = item.get("b64_json")
        if isinstance(b64, str) and b64:
            if len(b64) > self.max_image_bytes * 4 // 3 + 4:
                raise UpstreamUnavailable(f"recraft's image {index} is larger than "
                                          f"{self.max_image_bytes // (1024 * 1024)} MB.", provider=self.name)
            try:
                return base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise UpstreamUnavailable(f"recraft sent invalid base64 in data[{index}].b64_json.",
                                          provider=self.name) from None
        url = item.get("url")
        if isinstance(url, str) and url:
            return await self._download(url, index)
        raise UpstreamUnavailable(f"recraft sent a malformed reply: data[{index}] has neither b64_json nor url.",
                                  provider=self.name)

    async def _download(self, url: str, index: int) -> bytes:
        """An image URL in the reply (Recraft's default form): fetched at most `max_image_bytes`, without our key
        (its image URLs are signed and public)."""
        url = urljoin(self.base_url + "/", url)
        if urlsplit(url).scheme not in ("http", "https"):
            raise UpstreamUnavailable(f"recraft returned an unusable image URL in data[{index}].", provider=self.name)
        return await self.transport.download(url, label=f"image {index} from recraft", max_bytes=self.max_image_bytes,
                                             follow_redirects=True)

    @staticmethod
    def _cost(body: dict, model: RecraftModel, n: int) -> int:
        """What Recraft charged: the reply's `credits` (API units) when it says, else the list price × n."""
        credits = body.get("credits")
        if isinstance(credits, (int, float)) and not isinstance(credits, bool) and credits >= 0:
            return round(credits * MICROS_PER_CREDIT)
        return model.price_micros * n

    # --- Errors -------------------------------------------------------------------------------------------------------

    def _error(self, reply: Reply) -> ProviderError:
        """Map a Recraft error (plain text or JSON, docs/providers/recraft.md "Errors") to our errors."""
        status, message = reply.status, reply.error_text()
        text = f"{message} (HTTP {status})"
        if status in (401, 403):
            return UpstreamUnavailable(f"recraft refused the gateway's token: {text}", provider=self.name)
        if status == 402:
            return UpstreamUnavailable(f"recraft refused to serve the gateway's account (API units): {text}",
                                       provider=self.name)
        if status == 429:
            err = UpstreamRateLimited(f"recraft rate limit: {text}", provider=self.name)
            err.retry_after_seconds = reply.retry_after()
            return err
        if status in (400, 422) and any(word in message.lower() for word in _REFUSAL_WORDS):
            return ContentRefused(f"recraft refused the prompt: {text}", provider=self.name)
        if status == 404:
            return UpstreamUnavailable(f"recraft has no such endpoint at {self.base_url}: {text}", provider=self.name)
        if status in (408, 504):
            return UpstreamTimeout(f"recraft timed out: {text}", provider=self.name)
        if status in (400, 413, 422):
            return UpstreamInvalidRequest(f"recraft rejected the request: {message}", provider=self.name)
        return UpstreamUnavailable(f"recraft failed: {text}", provider=self.name)
