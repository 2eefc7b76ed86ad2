"""Provider `stability`: Stability AI's REST API (REFERENCE.md §2).

Two API generations are spoken:

* v1 (`sdxl-1.0`, `sd-1.6`): `POST /v1/generation/{engine}/text-to-image`, JSON in, JSON out
  (`{"artifacts": [{"base64", "seed", "finishReason"}]}`); one call returns up to 10 samples.
* v2beta Stable Image (`stable-image-core`, `stable-image-ultra`, `sd3.5-*`): `POST /v2beta/stable-image/generate/
  {core|ultra|sd3}`, multipart/form-data in; one image out, either as raw bytes (`accept: image/*`, with
  `finish-reason` / `seed` headers) or JSON (`{image, finish_reason, seed}`). We ask for raw bytes and parse both.

Depends only on the provider interface (base.py), the standard library and httpx; all configuration arrives in the
constructor.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os

import httpx

from .http import LoopClients, shard_scope, sharded_client
from .base import (
    sniff_image_type,
    ContentRefused,
    GeneratedImage,
    ImageRequest,
    ProviderResult,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)

USER_AGENT = "imagegate/1.0"
MAX_RESPONSE_BYTES = 50 * 1024 * 1024

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


def encode_multipart(fields: list[tuple[str, tuple]]) -> tuple[bytes, str]:
    """multipart/form-data body and its Content-Type, from httpx-style `(name, (filename|None, value[, type]))`
    pairs. Encoded in one buffer so the body leaves in one write (httpx streams each part separately)."""
    boundary = os.urandom(16).hex()
    out = bytearray()
    for name, spec in fields:
        filename, value = spec[0], spec[1]
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{_quote(name)}"'
        if filename is not None:
            disposition += f'; filename="{_quote(filename)}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            content_type = spec[2] if len(spec) > 2 and spec[2] else "application/octet-stream"
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n"
        out += value if isinstance(value, bytes) else str(value).encode("utf-8")
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _error_reason(payload) -> tuple[str, str]:
    """(name, reason) from Stability's error shape `{id, name, message | errors[]}`."""
    if not isinstance(payload, dict):
        return "", ""
    name = str(payload.get("name") or "")
    errors = payload.get("errors")
    if isinstance(errors, list) and errors:
        reason = "; ".join(str(e) for e in errors)
    elif isinstance(errors, str) and errors:
        reason = errors
    else:
        reason = str(payload.get("message") or "")
    return name, reason


class StabilityProvider:
    """Stability AI: SDXL 1.0 and SD 1.6 (v1), Stable Image Core/Ultra and SD 3.5 (v2beta)."""

    name = "stability"

    def __init__(self, *, api_key: str, base_url: str = "https://api.stability.ai", timeout: float = 120.0):
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._clients = LoopClients(lambda: sharded_client(
            timeout=self.timeout, headers={"Authorization": f"Bearer {self.api_key}"}))

    # --- interface --------------------------------------------------------------------------------------------------
    def serves(self) -> set[str]:
        return set(COST_PER_IMAGE_MICROS)

    def upstream_cost_micros(self, request: ImageRequest) -> int:
        return COST_PER_IMAGE_MICROS[request.model] * request.n

    async def run(self, request: ImageRequest) -> ProviderResult:
        if request.model not in COST_PER_IMAGE_MICROS:
            raise UpstreamInvalidRequest(
                f"Stability does not serve model '{request.model}'; it serves {', '.join(sorted(self.serves()))}.",
                provider=self.name)
        if request.n < 1:
            raise UpstreamInvalidRequest("n must be at least 1.", provider=self.name)
        try:
            with shard_scope():
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
    def _client(self) -> httpx.AsyncClient:
        """One AsyncClient per running event loop, its connections split over pool shards (providers/http.py)."""
        return self._clients.get()

    async def aclose(self) -> None:
        """Close the current loop's client (optional; tests and shutdown hooks)."""
        await self._clients.aclose()

    async def _post(self, path: str, **kwargs) -> tuple[httpx.Response, bytes]:
        """POST and read the body (capped at 50 MB); transport failures become provider errors."""
        url = f"{self.base_url}{path}"
        try:
            async with self._client().stream("POST", url, **kwargs) as response:
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
                    raise UpstreamUnavailable(
                        f"Stability's reply is larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MB.",
                        provider=self.name)
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise UpstreamUnavailable(
                            f"Stability's reply is larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MB.",
                            provider=self.name)
                    chunks.append(chunk)
                return response, b"".join(chunks)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"Stability did not answer in time ({type(exc).__name__}).",
                                  provider=self.name) from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"Could not reach Stability: {type(exc).__name__}: {exc}",
                                      provider=self.name) from exc

    def _raise_for_status(self, response: httpx.Response, body: bytes) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        name, reason = _error_reason(payload)
        if not reason:
            reason = body[:200].decode("utf-8", "replace").strip() or response.reason_phrase or "no reason given"
        detail = f"{name}: {reason}" if name else reason
        message = f"Stability answered {status}: {detail}"
        if status == 403 and name == "content_moderation":
            raise ContentRefused(f"Stability's content moderation refused the request: {reason}", provider=self.name)
        if status in (401, 403):
            raise UpstreamUnavailable(f"Stability rejected the gateway's credentials ({status}: {detail}).",
                                      provider=self.name)
        if status == 429:
            retry = response.headers.get("retry-after")
            raise UpstreamRateLimited(message + (f" (retry after {retry} s)" if retry else ""), provider=self.name)
        if status in (400, 404, 413, 422):
            raise UpstreamInvalidRequest(message, provider=self.name)
        # 5xx, 402 (our account's balance), anything unexpected: the upstream is not usable right now.
        raise UpstreamUnavailable(message, provider=self.name)

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

    def _json(self, body: bytes) -> dict:
        try:
            payload = json.loads(body)
        except ValueError:
            raise UpstreamUnavailable(f"Stability returned a reply that is not JSON: {body[:80]!r}",
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
        response, body = await self._post(path, json=payload, headers={"Accept": "application/json"})
        self._raise_for_status(response, body)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type.startswith("image/"):  # Accept: image/png form: one image, finish reason in a header
            self._check_finish(response.headers.get("finish-reason"), "Finish-Reason header")
            return [self._image(body, "an image")]
        artifacts = self._json(body).get("artifacts")
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
    def _v2_form(self, request: ImageRequest, seed: int | None) -> tuple[str, list]:
        endpoint, sd3_model = V2_MODELS[request.model]
        fields: list[tuple[str, tuple]] = [("prompt", (None, request.prompt))]
        if sd3_model:
            fields.append(("model", (None, sd3_model)))
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
                fields.append(("mode", (None, "image-to-image")))
            image = request.images[0]
            fields.append(("image", (image.filename or "image.png", image.data, image.content_type)))
            fields.append(("strength", (None, str(strength))))
        else:
            ratio = V2_ASPECT_RATIOS.get(request.size)
            if ratio is None:
                raise UpstreamInvalidRequest(
                    f"Stability's {request.model} takes sizes {', '.join(V2_ASPECT_RATIOS)} (aspect ratios "
                    f"{', '.join(V2_ASPECT_RATIOS.values())}); got {request.size}.", provider=self.name)
            if sd3_model:
                fields.append(("mode", (None, "text-to-image")))
            fields.append(("aspect_ratio", (None, ratio)))
        negative = request.options.get("negative_prompt")
        if negative and request.model != "sd3.5-large-turbo":  # turbo has no negative prompt
            fields.append(("negative_prompt", (None, str(negative))))
        if seed is not None:
            fields.append(("seed", (None, str(seed % V2_SEED_MODULUS))))
        preset = style_preset_for(request.style)
        if preset:
            fields.append(("style_preset", (None, preset)))
        fields.append(("output_format", (None, "png")))
        return f"/v2beta/stable-image/generate/{endpoint}", fields

    async def _run_v2(self, request: ImageRequest, seed: int | None) -> GeneratedImage:
        path, fields = self._v2_form(request, seed)
        content, content_type = encode_multipart(fields)
        response, body = await self._post(path, content=content,
                                          headers={"Accept": "image/*", "Content-Type": content_type})
        self._raise_for_status(response, body)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            payload = self._json(body)
            self._check_finish(payload.get("finish_reason"), "finish_reason")
            return self._image(self._b64(payload.get("image"), "'image'"), "an image")
        self._check_finish(response.headers.get("finish-reason"), "finish-reason header")
        return self._image(body, "a body")

