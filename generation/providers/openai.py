"""Provider `openai`: the OpenAI Images API (dall-e-2, dall-e-3, gpt-image-1), and any OpenAI-compatible image server
at a configured base URL (self-hosted models), spoken through the shared transport (transport.py), so this adapter
only maps OpenAI's wire format.

Wire format (docs/providers/openai.md, which cites OpenAI's sources):
- generate  → POST {base}/images/generations, JSON
- edit      → POST {base}/images/edits, multipart (`image`, or repeated `image[]` for several; optional `mask`)
- variation → POST {base}/images/variations, multipart (dall-e-2 only)

dall-e models are asked for `response_format: b64_json` (no second download); a `url` reply is still downloaded,
with the same client and a 50 MB cap. gpt-image-1 never gets `response_format` (OpenAI refuses it); its extras
(background, moderation, output_format, output_compression, input_fidelity) come from `request.options`. `seed` is not
an OpenAI parameter and is never sent.

Configuration arrives in the constructor only. Depends on base.py, transport.py and the standard library.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass, fields
from urllib.parse import urljoin, urlsplit

from .base import (
    ContentRefused,
    GeneratedImage,
    ImageRequest,
    ModelGone,
    ProviderError,
    ProviderResult,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    upload_filename,
)
from .base import (
    sniff_image_type as sniff_image,
)
from .transport import Reply, Transport

MAX_IMAGE_BYTES = 50 * 1024 * 1024  # cap on one downloaded image

# gpt-image extras per endpoint (OpenAI's parameter lists: edits take no `moderation`; only edits take input_fidelity).
_GPT_IMAGE_GENERATE_OPTIONS = ("background", "moderation", "output_format", "output_compression")
_GPT_IMAGE_EDIT_OPTIONS = ("background", "output_format", "output_compression", "input_fidelity")


@dataclass(frozen=True)
class _ModelRules:
    """What OpenAI accepts for one of its own models."""

    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    modes: frozenset[str]
    max_n: int
    styles: tuple[str, ...] = ()
    gpt_image: bool = False  # always answers base64, refuses response_format, takes the gpt-image extras
    max_input_images: int = 1


OPENAI_MODELS: dict[str, _ModelRules] = {
    "dall-e-2": _ModelRules(sizes=("256x256", "512x512", "1024x1024"), qualities=("standard",),
                            modes=frozenset({"generate", "edit", "variation"}), max_n=10),
    "dall-e-3": _ModelRules(sizes=("1024x1024", "1792x1024", "1024x1792"), qualities=("standard", "hd"),
                            modes=frozenset({"generate"}), max_n=1, styles=("vivid", "natural")),
    "gpt-image-1": _ModelRules(sizes=("1024x1024", "1536x1024", "1024x1536", "auto"),
                               qualities=("low", "medium", "high", "auto"), modes=frozenset({"generate", "edit"}),
                               max_n=10, gpt_image=True, max_input_images=16),
}

# OpenAI's published list prices, micro-USD per image. Edits and variations cost what a generation of that size does.
_DALL_E_2_PRICES = {"256x256": 16_000, "512x512": 18_000, "1024x1024": 20_000}
_DALL_E_3_PRICES = {
    ("standard", "1024x1024"): 40_000, ("standard", "1792x1024"): 80_000, ("standard", "1024x1792"): 80_000,
    ("hd", "1024x1024"): 80_000, ("hd", "1792x1024"): 120_000, ("hd", "1024x1792"): 120_000,
}
_GPT_IMAGE_1_PRICES = {
    ("low", "1024x1024"): 11_000, ("medium", "1024x1024"): 42_000, ("high", "1024x1024"): 167_000,
    ("low", "1024x1536"): 16_000, ("medium", "1024x1536"): 63_000, ("high", "1024x1536"): 250_000,
    ("low", "1536x1024"): 16_000, ("medium", "1536x1024"): 63_000, ("high", "1536x1024"): 250_000,
}
# "auto" is priced as OpenAI's 1024x1024 medium until the reply says what it resolved to.
_GPT_IMAGE_AUTO_SIZE = "1024x1024"
_GPT_IMAGE_AUTO_QUALITY = "medium"
_GPT_IMAGE_1_SIZES_RESOLVED = ("1024x1024", "1024x1536", "1536x1024")

_RESULT_FIELDS = {f.name for f in fields(ProviderResult)}
_REFUSAL_CODES = {"content_policy_violation", "moderation_blocked"}
_ACCOUNT_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "account_deactivated"}




def gpt_image_1_price(size: str, quality: str) -> int:
    """OpenAI's per-image price for gpt-image-1; "auto" (or anything unknown) is priced as 1024x1024 medium."""
    size = size if size in ("1024x1024", "1024x1536", "1536x1024") else _GPT_IMAGE_AUTO_SIZE
    quality = quality if quality in ("low", "medium", "high") else _GPT_IMAGE_AUTO_QUALITY
    return _GPT_IMAGE_1_PRICES[(quality, size)]


class OpenAIProvider:
    """OpenAI's Images API, or an OpenAI-compatible server (then `models` names what it serves and `cost_micros`
    what each image costs us upstream)."""

    def __init__(self, *, api_key: str, base_url: str = "https://api.openai.com/v1", timeout: float = 120.0,
                 name: str = "openai", models: set[str] | None = None, cost_micros: dict | None = None):
        self.name = name
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.models = set(models) if models is not None else set(OPENAI_MODELS)
        # model id → micro-USD per image (int), or {size: micros, "*": default}; overrides the list price.
        self.cost_micros = dict(cost_micros or {})
        self.transport = Transport(provider=name, timeout=self.timeout)

    # --- Provider interface -----------------------------------------------------------------------------------------

    def serves(self) -> set[str]:
        return set(self.models)

    def upstream_cost_micros(self, request: ImageRequest) -> int:
        return self._unit_price(request.model, request.size, request.quality) * request.n

    async def run(self, request: ImageRequest) -> ProviderResult:
        if request.model not in self.models:
            raise UpstreamInvalidRequest(f"{self.name} does not serve model {request.model!r}; it serves "
                                         f"{', '.join(sorted(self.models))}.", provider=self.name)
        rules = OPENAI_MODELS.get(request.model)
        if rules is not None:
            self._check(request, rules)
        path, kwargs = self._build(request, rules)
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._post(path, kwargs)
                images = await self._images(body, request)
        except TimeoutError:
            raise UpstreamTimeout(f"{self.name} did not answer within {self.timeout:g} s.",
                                  provider=self.name) from None
        size, quality = self._resolved(request, body, rules)
        # The cost of this call: from the size/quality the reply says were made ("auto" resolved), else the request's.
        extra = {}
        if "resolved_size" in _RESULT_FIELDS:  # once base.ProviderResult carries them, the gateway gets them too
            extra["resolved_size"] = size
        if "resolved_quality" in _RESULT_FIELDS:
            extra["resolved_quality"] = quality
        return ProviderResult(images=images,
                              upstream_cost_micros=self._unit_price(request.model, size, quality) * request.n, **extra)

    async def aclose(self) -> None:
        """Close the HTTP session of the running event loop (each loop gets its own)."""
        await self.transport.aclose()

    # --- Pricing ------------------------------------------------------------------------------------------------------

    def _unit_price(self, model: str, size: str, quality: str) -> int:
        configured = self.cost_micros.get(model)
        if configured is not None:
            if isinstance(configured, dict):
                return int(configured.get(size, configured.get("*", 0)))
            return int(configured)
        if model == "dall-e-2":
            return _DALL_E_2_PRICES.get(size, _DALL_E_2_PRICES["1024x1024"])
        if model == "dall-e-3":
            q = quality if quality in ("standard", "hd") else "standard"
            return _DALL_E_3_PRICES.get((q, size), _DALL_E_3_PRICES[(q, "1024x1024")])
        if model == "gpt-image-1":
            return gpt_image_1_price(size, quality)
        return 0  # a self-hosted model without a configured cost: our list price still applies

    @staticmethod
    def _resolved(request: ImageRequest, body: dict, rules: _ModelRules | None) -> tuple[str, str]:
        """The size and quality the upstream actually produced (gpt-image replies say so when "auto" was asked)."""
        size, quality = request.size, request.quality
        if rules is not None and rules.gpt_image:
            if isinstance(body.get("size"), str) and body["size"] in _GPT_IMAGE_1_SIZES_RESOLVED:
                size = body["size"]
            if isinstance(body.get("quality"), str) and body["quality"] in ("low", "medium", "high"):
                quality = body["quality"]
        return size, quality

    # --- Request building ---------------------------------------------------------------------------------------------

    def _check(self, request: ImageRequest, rules: _ModelRules) -> None:
        """Refuse what OpenAI cannot do for this model, naming what it can."""
        model = request.model

        def refuse(message: str):
            raise UpstreamInvalidRequest(message, provider=self.name)

        if request.mode not in rules.modes:
            refuse(f"{model} does not support {request.mode}s upstream; it supports: {', '.join(sorted(rules.modes))}.")
        if request.size not in rules.sizes:
            refuse(f"{model} does not support size {request.size}; supported sizes: {', '.join(rules.sizes)}.")
        if request.quality and request.quality not in rules.qualities:
            refuse(f"{model} does not support quality {request.quality!r}; supported: {', '.join(rules.qualities)}.")
        if request.style and request.style not in rules.styles:
            if rules.styles:
                refuse(f"{model} does not support style {request.style!r}; supported: {', '.join(rules.styles)}.")
            refuse(f"{model} does not take a style.")
        if not 1 <= request.n <= rules.max_n:
            refuse(f"{model} returns at most {rules.max_n} image{'s' if rules.max_n > 1 else ''} per upstream call "
                   f"(n={request.n}).")
        if request.mode in ("edit", "variation"):
            if not request.images:
                refuse(f"{model} {request.mode}s need an input image.")
            if request.mode == "variation" and len(request.images) != 1:
                refuse(f"{model} variations take exactly one input image.")
            if len(request.images) > rules.max_input_images:
                refuse(f"{model} accepts at most {rules.max_input_images} input image"
                       f"{'s' if rules.max_input_images > 1 else ''}.")

    def _build(self, request: ImageRequest, rules: _ModelRules | None) -> tuple[str, dict]:
        """(path, Transport.request keyword arguments) for the upstream call."""
        gpt_image = rules is not None and rules.gpt_image
        if request.mode == "generate":
            payload: dict = {"model": request.model, "prompt": request.prompt, "n": request.n, "size": request.size}
            if gpt_image:
                if request.quality:
                    payload["quality"] = request.quality
                payload.update(_pick(request.options, _GPT_IMAGE_GENERATE_OPTIONS))
            else:
                payload["response_format"] = "b64_json"
                if request.model == "dall-e-3" or rules is None:
                    if request.quality:
                        payload["quality"] = request.quality
                    if request.style:
                        payload["style"] = request.style
                if rules is None:
                    payload.update({k: v for k, v in request.options.items() if v is not None})
            if request.user:
                payload["user"] = request.user
            return "/images/generations", {"json": payload}

        data: dict[str, str] = {"model": request.model, "n": str(request.n), "size": request.size}
        if request.mode == "edit":
            data["prompt"] = request.prompt
        if gpt_image:
            if request.quality:
                data["quality"] = request.quality
            data.update({k: _form_value(v) for k, v in _pick(request.options, _GPT_IMAGE_EDIT_OPTIONS).items()})
        else:
            data["response_format"] = "b64_json"
            if rules is None:
                if request.quality and request.mode == "edit":
                    data["quality"] = request.quality
                data.update({k: _form_value(v) for k, v in request.options.items() if v is not None})
        if request.user:
            data["user"] = request.user
        images = request.images if request.mode == "edit" else request.images[:1]
        field = "image" if len(images) == 1 else "image[]"
        files = [(field, (upload_filename(img.filename, img.content_type, f"image_{i}"), img.data,
                          img.content_type)) for i, img in enumerate(images)]
        if request.mode == "edit" and request.mask is not None:
            files.append(("mask", (upload_filename("mask.png", request.mask.content_type, "mask"),
                                   request.mask.data, request.mask.content_type)))
        path = "/images/edits" if request.mode == "edit" else "/images/variations"
        return path, {"data": data, "files": files}

    # --- HTTP ---------------------------------------------------------------------------------------------------------

    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}

    async def _post(self, path: str, kwargs: dict) -> dict:
        response = await self.transport.request("POST", self.base_url + path, headers=self._auth(), **kwargs)
        if response.status >= 300:
            raise self._error(response)
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            raise UpstreamUnavailable(f"{self.name} sent a malformed reply (HTTP {response.status}, "
                                      f"{response.headers.get('content-type', 'no content type')}, not JSON): "
                                      f"{response.snippet()}", provider=self.name) from None
        if not isinstance(body, dict):
            raise UpstreamUnavailable(f"{self.name} sent a malformed reply: a JSON {type(body).__name__}, "
                                      f"not an object.", provider=self.name)
        return body

    def _error(self, response: Reply) -> ProviderError:
        """Map an upstream error reply (OpenAI's {"error": {message, type, param, code}} envelope) to our errors."""
        status = response.status
        message, etype, code, param = _parse_error(response)
        request_id = response.headers.get("x-request-id")
        detail = f"HTTP {status}" + (f", code {code}" if code else "") + (f", param {param}" if param else "") \
            + (f", request {request_id}" if request_id else "")
        text = f"{message} ({detail})"
        low = message.lower()

        if code in _ACCOUNT_CODES or etype in _ACCOUNT_CODES:
            return UpstreamUnavailable(f"{self.name} refused to serve the gateway's account (out of quota or "
                                       f"billing): {text}", provider=self.name)
        if status in (401, 403):
            return UpstreamUnavailable(f"{self.name} rejected the gateway's credentials: {text}", provider=self.name)
        if status == 429:
            wait = response.retry_after()
            return UpstreamRateLimited(f"{self.name} rate limit: {text}"
                                       + (f"; retry after {wait:g} s" if wait is not None else ""),
                                       provider=self.name, retry_after_seconds=wait)
        if status in (400, 422) and (code in _REFUSAL_CODES or etype == "image_generation_user_error"
                                     or "safety system" in low):
            return ContentRefused(f"{self.name} refused the request: {text}", provider=self.name)
        if status == 404:
            if code == "model_not_found" or "model" in low:  # retired upstream (dall-e since 2026-05-12)
                return ModelGone(f"{self.name} no longer serves the model: {text}", provider=self.name)
            return UpstreamUnavailable(f"{self.name} has no such endpoint at {self.base_url}: {text}",
                                       provider=self.name)
        if status == 408:
            return UpstreamTimeout(f"{self.name} timed out: {text}", provider=self.name)
        if status in (400, 413, 415, 422):
            return UpstreamInvalidRequest(f"{self.name} rejected the request: {message}"
                                          + (f" (param {param})" if param else ""), provider=self.name)
        return UpstreamUnavailable(f"{self.name} failed: {text}", provider=self.name)

    # --- Reply --------------------------------------------------------------------------------------------------------

    async def _images(self, body: dict, request: ImageRequest) -> list[GeneratedImage]:
        data = body.get("data")
        if not isinstance(data, list):
            raise UpstreamUnavailable(f"{self.name} sent a malformed reply: no `data` list "
                                      f"(keys: {', '.join(sorted(body)) or 'none'}).", provider=self.name)
        if len(data) != request.n:
            raise UpstreamUnavailable(f"{self.name} returned {len(data)} image{'s' if len(data) != 1 else ''} "
                                      f"for n={request.n}.", provider=self.name)
        raw = await asyncio.gather(*(self._image_bytes(item, i) for i, item in enumerate(data)))
        images = []
        for i, (item, blob) in enumerate(zip(data, raw)):
            content_type = sniff_image(blob)
            if content_type is None:
                raise UpstreamUnavailable(f"{self.name} returned undecodable image data for image {i} "
                                          f"({len(blob)} bytes, not PNG, JPEG or WebP).", provider=self.name)
            revised = item.get("revised_prompt")
            images.append(GeneratedImage(data=blob, content_type=content_type,
                                         revised_prompt=revised if isinstance(revised, str) and revised else None))
        return images

    async def _image_bytes(self, item, index: int) -> bytes:
        if not isinstance(item, dict):
            raise UpstreamUnavailable(f"{self.name} sent a malformed reply: data[{index}] is not an object.",
                                      provider=self.name)
        b64 = item.get("b64_json")
        if isinstance(b64, str) and b64:
            if b64.startswith("data:"):
                b64 = b64.partition(",")[2]
            try:
                return base64.b64decode("".join(b64.split()), validate=True)
            except (binascii.Error, ValueError):
                raise UpstreamUnavailable(f"{self.name} sent invalid base64 in data[{index}].b64_json.",
                                          provider=self.name) from None
        url = item.get("url")
        if isinstance(url, str) and url:
            return await self._download(url, index)
        raise UpstreamUnavailable(f"{self.name} sent a malformed reply: data[{index}] has neither b64_json nor url.",
                                  provider=self.name)

    async def _download(self, url: str, index: int) -> bytes:
        """Fetch an image URL from the reply with the same client, at most 50 MB. Our key goes only to the API's
        own host (self-hosted servers may serve their images behind it), never to a storage host."""
        url = urljoin(self.base_url + "/", url)
        target, api = urlsplit(url), urlsplit(self.base_url)
        if target.scheme not in ("http", "https"):
            raise UpstreamUnavailable(f"{self.name} returned an unusable image URL in data[{index}].",
                                      provider=self.name)
        headers = self._auth() if (target.scheme, target.netloc) == (api.scheme, api.netloc) else {}
        return await self.transport.download(url, label=f"image {index} from {self.name}", max_bytes=MAX_IMAGE_BYTES,
                                             headers=headers, follow_redirects=True)


def _pick(options: dict, keys: tuple[str, ...]) -> dict:
    return {k: options[k] for k in keys if options.get(k) is not None}


def _form_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_error(response: Reply) -> tuple[str, str | None, str | None, str | None]:
    """(message, type, code, param) from OpenAI's error envelope; tolerant of compatible servers' variants
    ({"error": "text"}, FastAPI's {"detail": ...}, plain text)."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    message = etype = code = param = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message, etype, code, param = (error.get("message"), error.get("type"), error.get("code"),
                                           error.get("param"))
        else:
            message = response.error_text(500)
    if not message:
        message = (f"{response.reason or 'error'}: {response.snippet()}" if body is None
                   else response.reason or "error")
    as_str = lambda v: str(v) if v is not None else None  # noqa: E731 (codes are sometimes numbers)
    return str(message), as_str(etype), as_str(code), as_str(param)
