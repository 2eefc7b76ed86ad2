"""Provider `openai`: the OpenAI Images API (dall-e-2, dall-e-3, and the GPT image models gpt-image-1,
gpt-image-1-mini, gpt-image-1.5, gpt-image-2 and the alias chatgpt-image-latest), and any OpenAI-compatible image server
at a configured base URL (self-hosted models), spoken through the shared transport (transport.py), so this adapter
only maps OpenAI's wire format.

Wire format (docs/providers/openai.md, which cites OpenAI's sources):
- generate  → POST {base}/images/generations, JSON
- edit      → POST {base}/images/edits, multipart (`image`, or repeated `image[]` for several; optional `mask`)
- variation → POST {base}/images/variations, multipart (dall-e-2 only)

dall-e models are asked for `response_format: b64_json` (no second download); a `url` reply is still downloaded,
with the same client and a 50 MB cap. GPT image models never get `response_format` (OpenAI refuses it); their extras
(background, moderation, output_format, output_compression, input_fidelity) come from `request.options`. `seed` is not
an OpenAI parameter and is never sent.

Streaming: when the client streams and asked for partial images (base.streams_partials), gpt-image calls ask OpenAI
to stream too (`stream: true`, `partial_images`); its `image_generation.partial_image` / `image_edit.partial_image`
events go on to the client as they arrive (base.emit_partial), and its completed events make the same result a
JSON reply would. Without partial images there is nothing to stream ahead, and the call is the ordinary one.

From a GPT image reply the result keeps what OpenAI says was produced (top-level size, quality, background,
output_format), its token `usage`, and the dated model that served the request (the body's `model`, else the
`openai-model` header; docs/providers/openai.md says why both).

Configuration arrives in the constructor only. Depends on base.py, transport.py and the standard library.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from .base import (
    ContentRefused,
    GeneratedImage,
    ImageRequest,
    ModelGone,
    PartialImage,
    ProviderError,
    ProviderResult,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    emit_partial,
    streams_partials,
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
    input_fidelities: tuple[str, ...] = ()  # edits' input_fidelity values the model takes
    free_sizes: bool = False  # gpt-image-2: any WIDTHxHEIGHT within _free_size_problem's rules


_GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
_GPT_IMAGE_QUALITIES = ("low", "medium", "high", "auto")
_GPT_IMAGE_MODES = frozenset({"generate", "edit"})

OPENAI_MODELS: dict[str, _ModelRules] = {
    "dall-e-2": _ModelRules(sizes=("256x256", "512x512", "1024x1024"), qualities=("standard",),
                            modes=frozenset({"generate", "edit", "variation"}), max_n=10),
    "dall-e-3": _ModelRules(sizes=("1024x1024", "1792x1024", "1024x1792"), qualities=("standard", "hd"),
                            modes=frozenset({"generate"}), max_n=1, styles=("vivid", "natural")),
    "gpt-image-1": _ModelRules(sizes=_GPT_IMAGE_SIZES, qualities=_GPT_IMAGE_QUALITIES, modes=_GPT_IMAGE_MODES,
                               max_n=10, gpt_image=True, max_input_images=16, input_fidelities=("high", "low")),
    "gpt-image-1-mini": _ModelRules(sizes=_GPT_IMAGE_SIZES, qualities=_GPT_IMAGE_QUALITIES, modes=_GPT_IMAGE_MODES,
                                    max_n=10, gpt_image=True, max_input_images=16, input_fidelities=("low",)),
    "gpt-image-1.5": _ModelRules(sizes=_GPT_IMAGE_SIZES, qualities=_GPT_IMAGE_QUALITIES, modes=_GPT_IMAGE_MODES,
                                 max_n=10, gpt_image=True, max_input_images=16, input_fidelities=("high", "low")),
    "gpt-image-2": _ModelRules(sizes=_GPT_IMAGE_SIZES, qualities=_GPT_IMAGE_QUALITIES, modes=_GPT_IMAGE_MODES,
                               max_n=10, gpt_image=True, max_input_images=16, free_sizes=True),
    "chatgpt-image-latest": _ModelRules(sizes=_GPT_IMAGE_SIZES, qualities=_GPT_IMAGE_QUALITIES,
                                        modes=_GPT_IMAGE_MODES, max_n=10, gpt_image=True, max_input_images=16),
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
# OpenAI's per-image output prices (docs/providers/openai.md): gpt-image-1-mini from OpenAI's model page,
# gpt-image-1.5 as price trackers report it (OpenAI's page for it was not in our sources).
_GPT_IMAGE_1_MINI_PRICES = {
    ("low", "1024x1024"): 5_000, ("medium", "1024x1024"): 11_000, ("high", "1024x1024"): 36_000,
    ("low", "1024x1536"): 6_000, ("medium", "1024x1536"): 15_000, ("high", "1024x1536"): 52_000,
    ("low", "1536x1024"): 6_000, ("medium", "1536x1024"): 15_000, ("high", "1536x1024"): 52_000,
}
_GPT_IMAGE_1_5_PRICES = {
    ("low", "1024x1024"): 9_000, ("medium", "1024x1024"): 34_000, ("high", "1024x1024"): 133_000,
    ("low", "1024x1536"): 13_000, ("medium", "1024x1536"): 50_000, ("high", "1024x1536"): 200_000,
    ("low", "1536x1024"): 13_000, ("medium", "1536x1024"): 50_000, ("high", "1536x1024"): 200_000,
}
_PER_IMAGE_TABLES = {"gpt-image-1": _GPT_IMAGE_1_PRICES, "gpt-image-1-mini": _GPT_IMAGE_1_MINI_PRICES,
                     "gpt-image-1.5": _GPT_IMAGE_1_5_PRICES}
# gpt-image-2 is priced by output tokens: $30 per 1M image output tokens (OpenAI's model page), and the tokens of
# one image follow from its size and quality (OpenAI's cost calculator, as reverse-engineered and checked against
# its published 1024x1024 prices: 196 / 1,756 / 7,024 tokens = $0.006 / $0.053 / $0.211).
GPT_IMAGE_2_OUTPUT_MICROS_PER_MILLION_TOKENS = 30_000_000
_GPT_IMAGE_2_QUALITY_FACTORS = {"low": 16, "medium": 48, "high": 96}
# chatgpt-image-latest points at gpt-image-2's snapshot (docs/providers/openai.md) and is priced as gpt-image-2.
ALIASES = {"chatgpt-image-latest": "gpt-image-2"}
# "auto" is priced as OpenAI's 1024x1024 medium until the reply says what it resolved to.
_GPT_IMAGE_AUTO_SIZE = "1024x1024"
_GPT_IMAGE_AUTO_QUALITY = "medium"
_GPT_IMAGE_1_SIZES_RESOLVED = ("1024x1024", "1024x1536", "1536x1024")

_REFUSAL_CODES = {"content_policy_violation", "moderation_blocked"}
_ACCOUNT_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "account_deactivated"}




def gpt_image_1_price(size: str, quality: str, model: str = "gpt-image-1") -> int:
    """OpenAI's per-image price (micro-USD) for gpt-image-1, -1-mini or -1.5; "auto" (or anything unknown) is
    priced as 1024x1024 medium."""
    size = size if size in ("1024x1024", "1024x1536", "1536x1024") else _GPT_IMAGE_AUTO_SIZE
    quality = quality if quality in ("low", "medium", "high") else _GPT_IMAGE_AUTO_QUALITY
    return _PER_IMAGE_TABLES[model][(quality, size)]


def gpt_image_2_output_tokens(size: str, quality: str) -> int:
    """Image output tokens of one gpt-image-2 image of `size` (WIDTHxHEIGHT) at `quality` (low/medium/high; "auto"
    or an unknown size counts as 1024x1024 medium). 1024x1024 high → 7,024; 1536x1024 high → 5,488."""
    factor = _GPT_IMAGE_2_QUALITY_FACTORS.get(quality, _GPT_IMAGE_2_QUALITY_FACTORS[_GPT_IMAGE_AUTO_QUALITY])
    w, _, h = (size if _free_size_problem(size) is None else _GPT_IMAGE_AUTO_SIZE).partition("x")
    width, height = int(w), int(h)
    long_edge, short_edge = max(width, height), min(width, height)
    short_axis = (2 * factor * short_edge + long_edge) // (2 * long_edge)
    return (factor * short_axis * (2_000_000 + width * height) + 3_999_999) // 4_000_000


def gpt_image_2_price(size: str, quality: str) -> int:
    """OpenAI's price (micro-USD, rounded up) of the output tokens of one gpt-image-2 image."""
    tokens = gpt_image_2_output_tokens(size, quality)
    return -(-tokens * GPT_IMAGE_2_OUTPUT_MICROS_PER_MILLION_TOKENS // 1_000_000)


def _free_size_problem(size: str) -> str | None:
    """gpt-image-2's size rules (OpenAI's SDK documentation of `size`): why `size` breaks them, or None."""
    w, sep, h = size.partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or len(size) > 11:
        return "a size is WIDTHxHEIGHT"
    width, height = int(w), int(h)
    if not width or not height or width % 16 or height % 16:
        return "both sides must be multiples of 16"
    if max(width, height) > 3 * min(width, height):
        return "the aspect ratio must be between 1:3 and 3:1"
    if max(width, height) > 3840 or width * height > 3840 * 2160:
        return "the size must be at most 3840x2160"
    if width * height < 655_360:
        return "the size must have at least 655,360 pixels"
    return None


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
        stream = rules is not None and rules.gpt_image and streams_partials(request)
        try:
            async with asyncio.timeout(self.timeout):
                body, reply_headers = await (self._post_stream(path, kwargs, request) if stream
                                             else self._post(path, kwargs))
                images = await self._images(body, request)
        except TimeoutError:
            raise UpstreamTimeout(f"{self.name} did not answer within {self.timeout:g} s.",
                                  provider=self.name) from None
        size, quality = self._resolved(request, body, rules)
        # The cost of this call: from the size/quality the reply says were made ("auto" resolved), else the request's.
        extra = {"resolved_size": size, "resolved_quality": quality}
        upstream = self._unit_price(request.model, size, quality) * request.n
        if rules is not None and rules.gpt_image:
            extra.update(_produced(body, reply_headers))
            tokens = self._token_cost(request.model, extra.get("usage"))
            if tokens is not None:
                upstream = tokens
        return ProviderResult(images=images, upstream_cost_micros=upstream, **extra)

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
        model = ALIASES.get(model, model)
        if model in _PER_IMAGE_TABLES:
            return gpt_image_1_price(size, quality, model)
        if model == "gpt-image-2":
            return gpt_image_2_price(size, quality)
        return 0  # a self-hosted model without a configured cost: our list price still applies

    def _token_cost(self, model: str, usage: dict | None) -> int | None:
        """What OpenAI bills for a token-priced model's call, from the tokens it reported (micro-USD: $1 per 1M
        tokens is 1 micro-USD per token): gpt-image-2 (and the alias, priced as it) at $5 text in, $8 image in, $30
        image out per 1M (docs/providers/openai.md). None when not applicable (no usage, a configured cost)."""
        if usage is None or model in self.cost_micros or ALIASES.get(model, model) != "gpt-image-2":
            return None
        details = usage["input_tokens_details"]
        return 5 * details["text_tokens"] + 8 * details["image_tokens"] + 30 * usage["output_tokens"]

    @staticmethod
    def _resolved(request: ImageRequest, body: dict, rules: _ModelRules | None) -> tuple[str, str]:
        """The size and quality the upstream actually produced (gpt-image replies say so when "auto" was asked)."""
        size, quality = request.size, request.quality
        if rules is not None and rules.gpt_image:
            answered = body.get("size")
            if isinstance(answered, str) and (answered in _GPT_IMAGE_1_SIZES_RESOLVED
                                              or (rules.free_sizes and _free_size_problem(answered) is None)):
                size = answered
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
            if not rules.free_sizes:
                refuse(f"{model} does not support size {request.size}; supported sizes: {', '.join(rules.sizes)}.")
            problem = _free_size_problem(request.size)
            if problem is not None:
                refuse(f"{model} does not support size {request.size}: {problem} (both sides multiples of 16, "
                       "aspect between 1:3 and 3:1, at most 3840x2160).")
        fidelity = request.options.get("input_fidelity")
        if fidelity is not None and fidelity not in rules.input_fidelities:
            refuse(f"{model} does not take input_fidelity {fidelity!r}"
                   + (f"; it takes: {', '.join(rules.input_fidelities)}." if rules.input_fidelities else "."))
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

    async def _post(self, path: str, kwargs: dict) -> tuple[dict, dict]:
        """(the reply's JSON object, its headers) for a 2xx; raises the mapped ProviderError otherwise."""
        response = await self.transport.request("POST", self.base_url + path, headers=self._auth(), **kwargs)
        if response.status >= 300:
            raise self._error(response)
        return self._json_body(response)

    async def _post_stream(self, path: str, kwargs: dict, request: ImageRequest) -> tuple[dict, dict]:
        """The call with `stream: true` and `partial_images`: partial images are emitted as they arrive, and the
        reply is built from the completed events as OpenAI's JSON reply would be ({data: [{b64_json}], and the last
        completed event's size, quality, background, output_format, usage}). An upstream that answers JSON instead
        is read as JSON. Raises what `_post` raises; an `error` event maps as an error reply would (ContentRefused
        for a safety refusal, UpstreamRateLimited, else UpstreamUnavailable); a stream that ends without a completed
        event for every image is UpstreamUnavailable."""
        if "json" in kwargs:
            kwargs = {**kwargs, "json": {**kwargs["json"], "stream": True, "partial_images": request.partial_images}}
        else:
            kwargs = {**kwargs, "data": {**kwargs["data"], "stream": "true",
                                         "partial_images": str(request.partial_images)}}
        completed: list[dict] = []
        defaults = {"size": request.size, "quality": request.quality,
                    "background": request.options.get("background") or "auto",
                    "output_format": request.options.get("output_format") or "png"}

        def on_event(name: str, data: str) -> None:
            if data.strip() == "[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError:
                raise UpstreamUnavailable(f"{self.name} streamed an event that is not JSON: {data[:80]!r}",
                                          provider=self.name) from None
            if not isinstance(event, dict):
                raise UpstreamUnavailable(f"{self.name} streamed a JSON {type(event).__name__}, not an object.",
                                          provider=self.name)
            kind = str(event.get("type") or name)
            if kind == "error" or name == "error" or "error" in event:
                raise self._stream_error(event)
            if kind.endswith(".partial_image"):
                b64, index = event.get("b64_json"), event.get("partial_image_index")
                if isinstance(b64, str) and b64 and isinstance(index, int) and not isinstance(index, bool):
                    fields = {k: event[k] if isinstance(event.get(k), str) and event[k] else v
                              for k, v in defaults.items()}
                    emit_partial(PartialImage(b64_json=b64, index=index, **fields))
            elif kind.endswith(".completed"):
                completed.append(event)

        headers = {**self._auth(), "Accept": "text/event-stream"}
        response = await self.transport.request("POST", self.base_url + path, headers=headers, on_event=on_event,
                                                **kwargs)
        if response.status >= 300:
            raise self._error(response)
        if response.content_type != "text/event-stream":
            return self._json_body(response)
        if len(completed) < request.n:
            raise UpstreamUnavailable(f"{self.name}'s stream ended after {len(completed)} completed image"
                                      f"{'s' if len(completed) != 1 else ''} of {request.n}.", provider=self.name)
        body: dict = {"data": [{"b64_json": event.get("b64_json")} for event in completed]}
        body.update({k: completed[-1][k] for k in ("size", "quality", "background", "output_format", "usage")
                     if k in completed[-1]})
        return body, response.headers

    def _stream_error(self, event: dict) -> ProviderError:
        """An `error` event of a stream (after the 200): {"error": {message, type, code, param}} or those keys
        flat, as OpenAI's streams send them."""
        error = event.get("error") if isinstance(event.get("error"), dict) else event
        message = str(error.get("message") or "error event without a message")
        code, etype = error.get("code"), error.get("type")
        text = f"{message} (streamed error" + (f", code {code}" if code else "") + ")"
        if code in _REFUSAL_CODES or etype == "image_generation_user_error":
            return ContentRefused(f"{self.name} refused the request: {text}", provider=self.name)
        if code == "rate_limit_exceeded":
            return UpstreamRateLimited(f"{self.name} rate limit: {text}", provider=self.name)
        return UpstreamUnavailable(f"{self.name} failed mid-stream: {text}", provider=self.name)

    def _json_body(self, response: Reply) -> tuple[dict, dict]:
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            raise UpstreamUnavailable(f"{self.name} sent a malformed reply (HTTP {response.status}, "
                                      f"{response.headers.get('content-type', 'no content type')}, not JSON): "
                                      f"{response.snippet()}", provider=self.name) from None
        if not isinstance(body, dict):
            raise UpstreamUnavailable(f"{self.name} sent a malformed reply: a JSON {type(body).__name__}, "
                                      f"not an object.", provider=self.name)
        return body, response.headers

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


_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")


def _produced(body: dict, headers) -> dict:
    """What a GPT image reply says it produced, as ProviderResult fields: background, output_format, the dated model
    that served it, and its token usage (only when every token count OpenAI documents is an integer)."""
    out: dict = {}
    if body.get("background") in ("transparent", "opaque"):
        out["resolved_background"] = body["background"]
    if body.get("output_format") in ("png", "jpeg", "webp"):
        out["resolved_output_format"] = body["output_format"]
    served = body.get("model")
    if not (isinstance(served, str) and served):
        served = headers.get("openai-model") if headers is not None else None
    if isinstance(served, str) and served and len(served) <= 100:
        out["served_model"] = served
    usage = body.get("usage")
    if isinstance(usage, dict) and all(_count(usage.get(k)) for k in _USAGE_KEYS):
        details = usage.get("input_tokens_details") if isinstance(usage.get("input_tokens_details"), dict) else {}
        kept = {k: usage[k] for k in _USAGE_KEYS}
        kept["input_tokens_details"] = {k: details.get(k) if _count(details.get(k)) else 0
                                        for k in ("text_tokens", "image_tokens")}
        output_details = usage.get("output_tokens_details")
        if isinstance(output_details, dict) and all(_count(output_details.get(k))
                                                    for k in ("text_tokens", "image_tokens")):
            kept["output_tokens_details"] = {k: output_details[k] for k in ("text_tokens", "image_tokens")}
        out["usage"] = kept
    return out


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


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
