"""Provider `ideogram`: Ideogram 3.0 through Ideogram's API (api.ideogram.ai), over the shared transport.

Facts and their sources: docs/providers/ideogram.md. In short:
- POST {base}/v1/ideogram-v3/generate, header `Api-Key`, multipart/form-data fields: prompt, resolution ("WxH" from
  Ideogram's list), rendering_speed (TURBO | DEFAULT | QUALITY, our quality low | medium | high), num_images (1-8),
  seed?, style_type?.
- synchronous; 200 → {"created", "data": [{"url", "prompt", "resolution", "is_image_safe", "seed", "style_type"}]}.
  The URLs are short-lived: each image is downloaded at once, at most `max_image_bytes`, without our key. An image
  whose `is_image_safe` is false has no URL: the request is refused (ContentRefused, never charged).
- errors: 400 invalid input, 401 key, 422 {"error": "..."} the prompt failed the safety check (ContentRefused),
  429 too many requests.

Configuration arrives in the constructor only. Depends on base.py, transport.py and the standard library.
"""
from __future__ import annotations

import asyncio
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

MAX_IMAGE_BYTES = 50 * 1024 * 1024  # one downloaded image
MAX_REPLY_BYTES = 1024 * 1024  # the JSON reply carries URLs only
MAX_N = 8

# Our sizes: Ideogram 3.0 `resolution` values (docs/providers/ideogram.md, "Sizes"), one or two per aspect ratio.
SIZES = ("1024x1024", "1312x736", "736x1312", "1344x768", "768x1344", "1248x832", "832x1248", "1216x832", "832x1216",
         "1152x864", "864x1152", "1120x896", "896x1120", "1280x800", "800x1280", "1408x704", "704x1408", "1536x512",
         "512x1536")
# Our quality → Ideogram's rendering speed, and Ideogram's list price per image for it.
RENDERING_SPEEDS = {"low": "TURBO", "medium": "DEFAULT", "high": "QUALITY"}
PRICES_MICROS = {"low": 30_000, "medium": 60_000, "high": 90_000}
# Our style → Ideogram's style_type.
STYLE_TYPES = {"auto": "AUTO", "general": "GENERAL", "realistic": "REALISTIC", "design": "DESIGN",
               "fiction": "FICTION"}


@dataclass(frozen=True)
class IdeogramModel:
    path: str  # the generate endpoint


MODELS: dict[str, IdeogramModel] = {"ideogram-v3": IdeogramModel("/v1/ideogram-v3/generate")}


class IdeogramProvider:
    """Ideogram 3.0 on Ideogram's API: up to 8 images per call, quality as rendering speed."""

    name = "ideogram"

    def __init__(self, *, api_key: str, base_url: str = "https://api.ideogram.ai", timeout: float = 120.0,
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
        return PRICES_MICROS.get(request.quality, PRICES_MICROS["medium"]) * request.n

    async def run(self, request: ImageRequest) -> ProviderResult:
        model = self._check(request)
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._post(model, self._form(request))
                images = await self._images(body, request.n)
        except TimeoutError:
            raise UpstreamTimeout(f"ideogram did not answer within {self.timeout:g} s.", provider=self.name) from None
        return ProviderResult(images=images, upstream_cost_micros=self.upstream_cost_micros(request))

    async def aclose(self) -> None:
        await self.transport.aclose()

    # --- Request ------------------------------------------------------------------------------------------------------

    def _check(self, request: ImageRequest) -> IdeogramModel:
        """Refuse what Ideogram cannot do, naming what it can."""
        model = MODELS.get(request.model)
        if model is None:
            self._refuse(f"ideogram does not serve model {request.model!r}; it serves {', '.join(sorted(MODELS))}.")
        if request.mode != "generate":
            self._refuse(f"{request.model} supports image generation only through this gateway (not {request.mode}s).")
        if request.size not in SIZES:
            self._refuse(f"{request.model} does not make {request.size} images; it makes {', '.join(SIZES)}.")
        if request.quality not in RENDERING_SPEEDS:
            self._refuse(f"{request.model} does not take quality {request.quality!r}; it takes "
                         f"{', '.join(RENDERING_SPEEDS)}.")
        if request.style and request.style not in STYLE_TYPES:
            self._refuse(f"{request.model} does not take style {request.style!r}; it takes {', '.join(STYLE_TYPES)}.")
        if not 1 <= request.n <= MAX_N:
            self._refuse(f"{request.model} makes 1 to {MAX_N} images per upstream call (n={request.n}).")
        return model

    def _refuse(self, message: str):
        raise UpstreamInvalidRequest(message, provider=self.name)

    @staticmethod
    def _form(request: ImageRequest) -> dict[str, str]:
        """The multipart form fields (every value a string, as a form sends them)."""
        form = {"prompt": request.prompt, "resolution": request.size,
                "rendering_speed": RENDERING_SPEEDS[request.quality], "num_images": str(request.n)}
        if request.seed is not None:
            form["seed"] = str(request.seed)
        if request.style:
            form["style_type"] = STYLE_TYPES[request.style]
        return form

    async def _post(self, model: IdeogramModel, form: dict[str, str]) -> dict:
        # files=[]: a multipart/form-data body with form fields only, as the endpoint takes.
        reply = await self.transport.request("POST", self.base_url + model.path, data=form, files=[],
                                             headers={"Api-Key": self.api_key, "Accept": "application/json"},
                                             max_bytes=MAX_REPLY_BYTES)
        if reply.status >= 300:
            raise self._error(reply)
        try:
            body = reply.json()
        except (ValueError, UnicodeDecodeError):
            raise UpstreamUnavailable(f"ideogram sent a malformed reply (HTTP {reply.status}, "
                                      f"{reply.headers.get('content-type', 'no content type')}, not JSON): "
                                      f"{reply.snippet()}", provider=self.name) from None
        if not isinstance(body, dict):
            raise UpstreamUnavailable(f"ideogram sent a malformed reply: a JSON {type(body).__name__}, not an object.",
                                      provider=self.name)
        return body

    # --- Reply --------------------------------------------------------------------------------------------------------

    async def _images(self, body: dict, n: int) -> list[GeneratedImage]:
        data = body.get("data")
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise UpstreamUnavailable(f"ideogram sent a malformed reply: no `data` list of objects (keys: "
                                      f"{', '.join(sorted(body)) or 'none'}).", provider=self.name)
        unsafe = [i for i, item in enumerate(data) if item.get("is_image_safe") is False]
        if unsafe:
            raise ContentRefused(f"ideogram withheld {len(unsafe)} of {len(data)} images as unsafe "
                                 "(is_image_safe false).", provider=self.name)
        if len(data) != n:
            raise UpstreamUnavailable(f"ideogram returned {len(data)} images for n={n}.", provider=self.name)
        blobs = await asyncio.gather(*(self._download(item.get("url"), i) for i, item in enumerate(data)))
        images = []
        for i, (item, blob) in enumerate(zip(data, blobs)):
            content_type = sniff_image_type(blob)
            if content_type is None:
                raise UpstreamUnavailable(f"ideogram's image {i} is not PNG, JPEG or WebP ({len(blob)} bytes).",
                                          provider=self.name)
            revised = item.get("prompt")  # the prompt it drew, rewritten when MagicPrompt was on
            images.append(GeneratedImage(data=blob, content_type=content_type,
                                         revised_prompt=revised if isinstance(revised, str) and revised else None))
        return images

    async def _download(self, url, index: int) -> bytes:
        """One image URL of the reply, fetched at once (they expire), at most `max_image_bytes`, without our key."""
        if not isinstance(url, str) or not url:
            raise UpstreamUnavailable(f"ideogram sent a malformed reply: data[{index}] has no url.", provider=self.name)
        url = urljoin(self.base_url + "/", url)
        if urlsplit(url).scheme not in ("http", "https"):
            raise UpstreamUnavailable(f"ideogram returned an unusable image URL in data[{index}].",
                                      provider=self.name)
        return await self.transport.download(url, label=f"image {index} from ideogram",
                                             max_bytes=self.max_image_bytes, follow_redirects=True)

    # --- Errors -------------------------------------------------------------------------------------------------------

    def _error(self, reply: Reply) -> ProviderError:
        status, message = reply.status, reply.error_text()
        text = f"{message} (HTTP {status})"
        if status == 422:
            return ContentRefused(f"ideogram refused the prompt: {text}", provider=self.name)
        if status in (401, 403):
            return UpstreamUnavailable(f"ideogram refused the gateway's key: {text}", provider=self.name)
        if status == 402:
            return UpstreamUnavailable(f"ideogram refused to serve the gateway's account (billing): {text}",
                                       provider=self.name)
        if status == 429:
            err = UpstreamRateLimited(f"ideogram rate limit: {text}", provider=self.name)
            err.retry_after_seconds = reply.retry_after()
            return err
        if status == 404:
            return UpstreamUnavailable(f"ideogram has no such endpoint at {self.base_url}: {text}", provider=self.name)
        if status in (408, 504):
            return UpstreamTimeout(f"ideogram timed out: {text}", provider=self.name)
        if status in (400, 413, 415):
            return UpstreamInvalidRequest(f"ideogram rejected the request: {message}", provider=self.name)
        return UpstreamUnavailable(f"ideogram failed: {text}", provider=self.name)
