"""Provider `stability`: Stability AI's REST API (docs/providers/stability.md).

Two API generations are spoken:

* v1 (`sdxl-1.0`, `sd-1.6`): `POST /v1/generation/{engine}/text-to-image`, JSON in, JSON out
  (`{"artifacts": [{"base64", "seed", "finishReason"}]}`); one call returns up to 10 samples.
* v2beta Stable Image (`stable-image-core`, `stable-image-ultra`, `sd3.5-*`): `POST /v2beta/stable-image/generate/
  {core|ultra|sd3}`, multipart/form-data in; one image out, either as raw bytes (`accept: image/*`, with
  `finish-reason` / `seed` headers) or JSON (`{image, finish_reason, seed}`). We ask for raw bytes and parse both.

HTTP goes through the shared transport (transport.py: pools, capped reads, timeouts, transport errors); this module
maps Stability's wire format only. Depends on base.py, transport.py and the standard library; all configuration
arrives in the constructor.
"""
from __future__ import annotations

import asyncio
import base64
import binascii

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
    upload_filename,
)
from .transport import Reply, Transport

MAX_RESPONSE_BYTES = 50 * 1024 * 1024  # one reply: up to 10 base64 artifacts, or one image

# --- v1 engines -----------------------------------------------------------------------------------------------------
V1_ENGINES = {"sdxl-1.0": "stable-diffusion-xl-1024-v1-0", "sd-1.6": "stable-diffusion-v1-6"}
# SDXL 1.0 only renders these dimensions (Stability's v1 API refuses others).
SDXL_DIMENSIONS = ("1024x1024", "1152x896", "896x1152", "1216x832", "1344x768", "768x1344", "1536x640", "640x1536")
# SD 1.6: each side a multiple of 64 from 320 to 1536.
SD16_MIN_SIDE, SD16_MAX_SIDE = 320, 1536
V1_MAX_SAMPLES = 10
V1_CFG_SCALE = 7
V1_STEPS = 30
V1_SEED_MODULUS = 2**32  # v1 seeds: 0..4294967295 (0 = random)

# --- v2beta Stable Image ---------------------------------------------------------------------------------------------
# model id -> (endpoint under /v2beta/stable-image/generate/, sd3 `model` field or None)
V2_MODELS = {
    "stable-image-core": ("core", None),
    "stable-image-ultra": ("ultra", None),
    "sd3.5-large": ("sd3", "sd3.5-large"),
    "sd3.5-large-turbo": ("sd3", "sd3.5-large-turbo"),
    "sd3.5-medium": ("sd3", "sd3.5-medium"),
}
# Our catalog sizes for v2beta models and the aspect ratio each stands for (copied from catalog.ASPECT_RATIOS,
# limited to the ratios Stability accepts; this module does not import the Django-side catalog).
V2_ASPECT_RATIOS = {
    "1024x1024": "1:1", "1344x768": "16:9", "768x1344": "9:16", "1216x832": "3:2", "832x1216": "2:3",
    "1280x1024": "5:4", "1024x1280": "4:5", "1568x672": "21:9", "672x1568": "9:21",
}
# Models with an image-to-image mode (`image` + `strength`). Stable Image Core has none.
V2_IMAGE_TO_IMAGE = ("stable-image-ultra", "sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium")
V2_DEFAULT_STRENGTH = 0.7
V2_SEED_MODULUS = 4294967295  # v2beta seeds: 0..4294967294 (0 = random)

# OpenAI's `style` values -> Stability style presets; a Stability preset passes through unchanged.
OPENAI_STYLES = {"vivid": "cinematic", "natural": "photographic"}

# --- upstream prices (micro-USD per image) ----------------------------------------------------------------------------
# v1: about $0.009 per image at <= 30 steps. v2beta: credits at $0.01 each.
COST_PER_IMAGE_MICROS = {
    "sdxl-1.0": 9_000,
    "sd-1.6": 9_000,
    "stable-image-core": 30_000,  # 3 credits
    "stable-image-ultra": 80_000,  # 8 credits
    "sd3.5-large": 65_000,  # 6.5 credits
    "sd3.5-large-turbo": 40_000,  # 4 credits
    "sd3.5-medium": 35_000,  # 3.5 credits
}

FINISH_SUCCESS = "SUCCESS"
FINISH_FILTERED = "CONTENT_FILTERED"
FINISH_ERROR = "ERROR"




def style_preset_for(style: str | None) -> str | None:
    """OpenAI's vivid/natural map to cinematic/photographic; Stability presets pass through; None is omitted."""
    if style is None:
        return None
    return OPENAI_STYLES.get(style, style)


class StabilityProvider:
    """Stability AI: SDXL 1.0 and SD 1.6 (v1), Stable Image Core/Ultra and SD 3.5 (v2beta)."""

    name = "stability"

    def __init__(self, *, api_key: str, base_url: str = "https://api.stability.ai", timeout: float = 120.0):
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.transport = Transport(provider=self.name, timeout=timeout)

    # --- interface --------------------------------------------------------------------------------------------------
    def serves(self) -> set[str]:
        return set(COST_PER_IMAGE_MICROS)

    def upstream_cost_micros(self, request: ImageRequest) -> int:
        return COST_PER_IMAGE_MICROS[request.model] * request.n

    async def run(self, request: ImageRequest) -> ProviderResult:
        """n images: one v1 call (up to 10 samples) or n parallel v2beta calls, within `timeout` seconds. Raises
        UpstreamInvalidRequest (what Stability cannot do; its 400/404/413/422), ContentRefused (content moderation,
        CONTENT_FILTERED), UpstreamRateLimited (429, with `retry_after_seconds` when a header gives one),
        UpstreamTimeout, UpstreamUnavailable."""
        if request.model not in COST_PER_IMAGE_MICROS:
            raise UpstreamInvalidRequest(
                f"Stability does not serve model '{request.model}'; it serves {', '.join(sorted(self.serves()))}.",
                provider=self.name)
        if request.n < 1:
            raise UpstreamInvalidRequest("n must be at least 1.", provider=self.name)
        try:
            images = await asyncio.wait_for(self._generate(request), self.timeout)
        except TimeoutError:
            raise UpstreamTimeout(f"Stability did not answer within {self.timeout:g} s.", provider=self.name) from None
        if len(images) != request.n:
            raise UpstreamUnavailable(
                f"Stability returned {len(images)} image(s) where {request.n} were asked for.", provider=self.name)
        return ProviderResult(images=images, upstream_cost_micros=self.upstream_cost_micros(request))

    async def _generate(self, request: ImageRequest) -> list[GeneratedImage]:
        if request.model in V1_ENGINES:
            return await self._run_v1(request)
        # v2beta returns one image per call; more than one is served by parallel calls.
        return list(await asyncio.gather(*[
            self._run_v2(request, None if request.seed is None else request.seed + i) for i in range(request.n)
        ]))

    # --- HTTP -------------------------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the running event loop's HTTP session (optional; tests and shutdown hooks)."""
        await self.transport.aclose()

    async def _post(self, path: str, *, accept: str, **kwargs) -> Reply:
        """POST to the API (at most 50 MB back) and map an error status; transport failures arrive as provider
        errors from the transport."""
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": accept}
        reply = await self.transport.request("POST", f"{self.base_url}{path}", headers=headers,
                                             max_bytes=MAX_RESPONSE_BYTES, label="Stability", **kwargs)
        if not reply.ok:
            raise self._error(reply)
        return reply

    def _error(self, reply: Reply) -> ProviderError:
        """Stability's error shape `{id, name, message | errors[]}` → our errors."""
        status = reply.status
        try:
            payload = reply.json()
        except ValueError:
            payload = None
        name = str(payload.get("name") or "") if isinstance(payload, dict) else ""
        reason = reply.error_text(200)
        detail = f"{name}: {reason}" if name else reason
        message = f"Stability answered {status}: {detail}"
        if status == 403 and name == "content_moderation":
            return ContentRefused(f"Stability's content moderation refused the request: {reason}", provider=self.name)
        if status in (401, 403):
            return UpstreamUnavailable(f"Stability rejected the gateway's credentials ({status}: {detail}).",
                                       provider=self.name)
        if status == 429:
            wait = reply.retry_after()
            return UpstreamRateLimited(message + (f" (retry after {wait:g} s)" if wait is not None else ""),
                                       provider=self.name, retry_after_seconds=wait)
        if status in (400, 404, 413, 422):
            return UpstreamInvalidRequest(message, provider=self.name)
        # 5xx, 402 (our account's balance), anything unexpected: the upstream is not usable right now.
        return UpstreamUnavailable(message, provider=self.name)

    def _image(self, data: bytes, where: str) -> GeneratedImage:
        content_type = sniff_image_type(data)
        if content_type is None:
            raise UpstreamUnavailable(f"Stability returned {where} that is not a PNG, JPEG or WebP image.",
                                      provider=self.name)
        return GeneratedImage(data=data, content_type=content_type, revised_prompt=None)

    def _b64(self, value, where: str) -> bytes:
        if not isinstance(value, str) or not value:
            raise UpstreamUnavailable(f"Stability's reply has no base64 image in {where}.", provider=self.name)
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise UpstreamUnavailable(f"Stability's reply has undecodable base64 in {where}.",
                                      provider=self.name) from None

    def _check_finish(self, reason, where: str) -> None:
        reason = str(reason or FINISH_SUCCESS).upper()
        if reason == FINISH_FILTERED:
            raise ContentRefused(f"Stability's content filter blocked the output ({where} finish reason "
                                 f"{FINISH_FILTERED}).", provider=self.name)
        if reason == FINISH_ERROR:
            raise UpstreamUnavailable(f"Stability failed to generate the image ({where} finish reason ERROR).",
                                      provider=self.name)
        if reason != FINISH_SUCCESS:
            raise UpstreamUnavailable(f"Stability returned an unknown finish reason '{reason}' ({where}).",
                                      provider=self.name)

    def _json(self, reply: Reply) -> dict:
        try:
            payload = reply.json()
        except ValueError:
            raise UpstreamUnavailable(f"Stability returned a reply that is not JSON: {reply.snippet(80)}",
                                      provider=self.name) from None
        if not isinstance(payload, dict):
            raise UpstreamUnavailable("Stability returned JSON that is not an object.", provider=self.name)
        return payload

    # --- v1 ---------------------------------------------------------------------------------------------------------
    def _v1_payload(self, request: ImageRequest) -> dict:
        if request.mode != "generate":
            raise UpstreamInvalidRequest(
                f"Stability's v1 model {request.model} only generates from text (mode '{request.mode}' is not "
                f"supported); image input is available on {', '.join(V2_IMAGE_TO_IMAGE)}.", provider=self.name)
        if request.n > V1_MAX_SAMPLES:
            raise UpstreamInvalidRequest(f"Stability's v1 API returns at most {V1_MAX_SAMPLES} images per call.",
                                         provider=self.name)
        try:
            width, height = request.width, request.height
        except (ValueError, IndexError):
            raise UpstreamInvalidRequest(f"Size '{request.size}' is not WIDTHxHEIGHT.", provider=self.name) from None
        if request.model == "sdxl-1.0":
            if f"{width}x{height}" not in SDXL_DIMENSIONS:
                raise UpstreamInvalidRequest(
                    f"Stability's SDXL 1.0 renders only {', '.join(SDXL_DIMENSIONS)}; got {request.size}.",
                    provider=self.name)
        elif not all(SD16_MIN_SIDE <= side <= SD16_MAX_SIDE and side % 64 == 0 for side in (width, height)):
            raise UpstreamInvalidRequest(
                f"Stability's SD 1.6 takes widths and heights that are multiples of 64 from {SD16_MIN_SIDE} to "
                f"{SD16_MAX_SIDE}; got {request.size}.", provider=self.name)
        text_prompts = [{"text": request.prompt, "weight": 1}]
        negative = request.options.get("negative_prompt")
        if negative:
            text_prompts.append({"text": str(negative), "weight": -1})
        payload = {
            "text_prompts": text_prompts,
            "cfg_scale": V1_CFG_SCALE,
            "width": width,
            "height": height,
            "samples": request.n,
            "steps": V1_STEPS,
            "seed": 0 if request.seed is None else request.seed % V1_SEED_MODULUS,
        }
        preset = style_preset_for(request.style)
        if preset:
            payload["style_preset"] = preset
        return payload

    async def _run_v1(self, request: ImageRequest) -> list[GeneratedImage]:
        payload = self._v1_payload(request)
        path = f"/v1/generation/{V1_ENGINES[request.model]}/text-to-image"
        reply = await self._post(path, accept="application/json", json=payload)
        if reply.content_type.startswith("image/"):  # Accept: image/png form: one image, finish reason in a header
            self._check_finish(reply.headers.get("finish-reason"), "Finish-Reason header")
            return [self._image(reply.body, "an image")]
        artifacts = self._json(reply).get("artifacts")
        if not isinstance(artifacts, list):
            raise UpstreamUnavailable("Stability's v1 reply has no 'artifacts' list.", provider=self.name)
        if len(artifacts) != request.n:
            raise UpstreamUnavailable(
                f"Stability returned {len(artifacts)} artifact(s) where {request.n} were asked for.",
                provider=self.name)
        for i, artifact in enumerate(artifacts):  # a refusal anywhere refuses the whole request
            if not isinstance(artifact, dict):
                raise UpstreamUnavailable(f"Stability's artifact {i} is not an object.", provider=self.name)
            if str(artifact.get("finishReason") or "").upper() == FINISH_FILTERED:
                self._check_finish(FINISH_FILTERED, f"artifact {i}")
        images = []
        for i, artifact in enumerate(artifacts):
            self._check_finish(artifact.get("finishReason"), f"artifact {i}")
            images.append(self._image(self._b64(artifact.get("base64"), f"artifact {i}"), f"artifact {i}"))
        return images

    # --- v2beta -----------------------------------------------------------------------------------------------------
    def _v2_form(self, request: ImageRequest, seed: int | None) -> tuple[str, dict, list]:
        """(path, form fields, file parts) of one v2beta call."""
        endpoint, sd3_model = V2_MODELS[request.model]
        fields: dict[str, str] = {"prompt": request.prompt}
        files: list = []
        if sd3_model:
            fields["model"] = sd3_model
        image_input = request.mode != "generate"
        if request.mode == "variation":
            raise UpstreamInvalidRequest(f"Stability's {request.model} does not make variations.", provider=self.name)
        if image_input:
            if request.model not in V2_IMAGE_TO_IMAGE:
                raise UpstreamInvalidRequest(
                    f"Stability's {request.model} does not take an input image; image-to-image is available on "
                    f"{', '.join(V2_IMAGE_TO_IMAGE)}.", provider=self.name)
            if request.mask is not None:
                raise UpstreamInvalidRequest(
                    f"Stability's {request.model} does not take a mask (image-to-image with one image only).",
                    provider=self.name)
            if len(request.images) != 1:
                raise UpstreamInvalidRequest(
                    f"Stability's {request.model} takes exactly one input image; got {len(request.images)}.",
                    provider=self.name)
            strength = request.options.get("strength", V2_DEFAULT_STRENGTH)
            if sd3_model:
                fields["mode"] = "image-to-image"
            image = request.images[0]
            files.append(("image", (upload_filename(image.filename, image.content_type), image.data,
                                    image.content_type)))
            fields["strength"] = str(strength)
        else:
            ratio = V2_ASPECT_RATIOS.get(request.size)
            if ratio is None:
                raise UpstreamInvalidRequest(
                    f"Stability's {request.model} takes sizes {', '.join(V2_ASPECT_RATIOS)} (aspect ratios "
                    f"{', '.join(V2_ASPECT_RATIOS.values())}); got {request.size}.", provider=self.name)
            if sd3_model:
                fields["mode"] = "text-to-image"
            fields["aspect_ratio"] = ratio
        negative = request.options.get("negative_prompt")
        if negative and request.model != "sd3.5-large-turbo":  # turbo has no negative prompt
            fields["negative_prompt"] = str(negative)
        if seed is not None:
            fields["seed"] = str(seed % V2_SEED_MODULUS)
        preset = style_preset_for(request.style)
        if preset:
            fields["style_preset"] = preset
        fields["output_format"] = "png"
        return f"/v2beta/stable-image/generate/{endpoint}", fields, files

    async def _run_v2(self, request: ImageRequest, seed: int | None) -> GeneratedImage:
        path, fields, files = self._v2_form(request, seed)
        # v2beta takes multipart/form-data even when no file is sent.
        reply = await self._post(path, accept="image/*", data=fields, files=files, multipart=True)
        if reply.content_type == "application/json":
            payload = self._json(reply)
            self._check_finish(payload.get("finish_reason"), "finish_reason")
            return self._image(self._b64(payload.get("image"), "'image'"), "an image")
        self._check_finish(reply.headers.get("finish-reason"), "finish-reason header")
        return self._image(reply.body, "a body")

