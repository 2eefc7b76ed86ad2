"""Provider `replicate`: FLUX.1 [schnell], FLUX.1 [dev], Stable Diffusion 2.1 and SDXL hosted on Replicate.

Wire format (docs/providers/replicate.md, from https://replicate.com/docs/reference/http):
- Official models (the two FLUX models) run at `POST /v1/models/{owner}/{name}/predictions` with `{"input": {...}}`.
  Community models (stability-ai/stable-diffusion, stability-ai/sdxl) are versioned: `POST /v1/predictions` with
  `{"version": "<id>", "input": {...}}`; the version ids are pinned below, so an upstream update never changes what
  our users get without a code change.
- `Authorization: Bearer <token>` and `Prefer: wait=N`: Replicate holds the request up to N (≤ 60) seconds and answers
  with the prediction in whatever state it has then. A prediction still `starting`/`processing` is polled at
  `urls.get` every `poll_interval` until `succeeded`, `failed` or `canceled`; past `deadline` it is cancelled
  (best effort, `POST urls.cancel`) and the call fails with UpstreamTimeout.
- A succeeded prediction's `output` is a list of file URLs (or one URL string for some models; `data:` URIs are
  accepted too). Each file is downloaded through the same transport (no credentials are sent to file hosts), limited
  to 50 MB and sniffed (PNG, JPEG, WebP); anything else is a malformed reply.
- Errors are problem+json `{title, detail, status}`; 422 adds `invalid_fields`. Safety refusals arrive as a `failed`
  prediction whose error reads like "NSFW content detected. Try running it again, or try a different prompt."

Upstream prices (what Replicate charges us): flux-schnell $0.003 and flux-dev $0.025 per output image (Replicate's
published per-image prices for these official models). The community Stable Diffusion models are billed by GPU
time, not per image: we use flat estimates of $0.0025 (stable-diffusion-2.1) and $0.004 (sdxl-1.0) per image.

HTTP goes through the shared transport (transport.py: pools, capped reads, timeouts, transport errors); this module
maps Replicate's wire format only. Like every adapter it depends on base.py, transport.py and the standard library,
and reads no settings: configuration arrives in the constructor.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

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
)
from .base import (
    sniff_image_type as sniff_image,
)
from .transport import Reply, Transport

MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_REPLY_BYTES = 4 * 1024 * 1024  # one prediction object (its `logs` grow while it runs)
MAX_OUTPUTS = 4  # every model here takes num_outputs 1–4

# Pinned versions of the community models (Replicate model pages, "Versions" tab).
SD_2_1_VERSION = "ac732df83cea7fff18b8472768c88ad041fa750ff7682a21affe81863cbe77e4"  # stability-ai/stable-diffusion
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"  # stability-ai/sdxl

# Our sizes → FLUX's (aspect_ratio, megapixels). A copy of catalog.ASPECT_RATIOS (about 1 megapixel each), plus
# 512x512, which FLUX on Replicate renders as 1:1 at 0.25 megapixels.
FLUX_ASPECT_RATIOS = {
    "1024x1024": "1:1", "1344x768": "16:9", "768x1344": "9:16", "1216x832": "3:2", "832x1216": "2:3",
    "1280x1024": "5:4", "1024x1280": "4:5", "1568x672": "21:9", "672x1568": "9:21", "1024x768": "4:3",
    "768x1024": "3:4",
}
FLUX_SIZES = {size: (ratio, "1") for size, ratio in FLUX_ASPECT_RATIOS.items()} | {"512x512": ("1:1", "0.25")}

_TERMINAL = {"succeeded", "failed", "canceled"}
_RUNNING = {"starting", "processing"}
# Replicate's safety checker wording (flux/SD: "NSFW content detected…", newer models: "flagged as sensitive (E005)").
_REFUSAL = re.compile(r"nsfw|flagged as sensitive|\(E005\)|safety checker", re.IGNORECASE)
_POLL_RETRIES = 3  # consecutive transient failures (429, 5xx, connection) tolerated while polling
# Replicate's 429 body: {"detail": "Request was throttled. Your rate limit resets in ~30s."}
_RESETS_IN = re.compile(r"resets in ~?\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)


@dataclass(frozen=True)
class _Model:
    id: str  # our catalog id
    slug: str  # Replicate owner/name
    version: str | None  # pinned version (community models); None = official model endpoint
    price_micros: int  # per image


MODELS: dict[str, _Model] = {
    m.id: m
    for m in (
        _Model("flux-schnell", "black-forest-labs/flux-schnell", None, 3_000),
        _Model("flux-dev", "black-forest-labs/flux-dev", None, 25_000),
        _Model("stable-diffusion-2.1", "stability-ai/stable-diffusion", SD_2_1_VERSION, 2_500),  # GPU-time estimate
        _Model("sdxl-1.0", "stability-ai/sdxl", SDXL_VERSION, 4_000),  # GPU-time estimate
    )
}




def _retry_after(reply: Reply, reason: str) -> float | None:
    """A 429's wait in seconds: the retry-after headers, else the "resets in ~Ns" of Replicate's body."""
    wait = reply.retry_after()
    if wait is None:
        match = _RESETS_IN.search(reason)
        wait = float(match.group(1)) if match else None
    return wait


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class ReplicateProvider:
    """Provider `replicate`: serves flux-schnell, flux-dev, stable-diffusion-2.1 and sdxl-1.0 (generation only)."""

    name = "replicate"

    def __init__(
        self,
        *,
        api_token: str,
        base_url: str = "https://api.replicate.com",
        timeout: float = 70.0,
        deadline: float = 180.0,
        poll_interval: float = 0.5,
        wait_seconds: int = 60,
    ):
        self.api_token = api_token
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.wait_seconds = wait_seconds
        self.transport = Transport(provider=self.name, timeout=timeout)

    # --- interface ---------------------------------------------------------------------------------------------

    def serves(self) -> set[str]:
        return set(MODELS)

    def upstream_cost_micros(self, request: ImageRequest) -> int:
        return self._model(request).price_micros * request.n

    async def run(self, request: ImageRequest) -> ProviderResult:
        """One prediction of n outputs (1–4), created with Prefer: wait, polled to the end within `deadline`
        seconds, its files downloaded. Raises UpstreamInvalidRequest (what Replicate cannot do; its 4xx),
        ContentRefused (its safety checker), UpstreamRateLimited (429, with `retry_after_seconds`), UpstreamTimeout
        (the deadline; the prediction is cancelled), UpstreamUnavailable."""
        model = self._model(request)
        path, body = self._build(model, request)
        images = await self._run(path, body)
        return ProviderResult(images=images, upstream_cost_micros=self.upstream_cost_micros(request))

    async def _run(self, path: str, body: dict) -> list[GeneratedImage]:
        started = time.monotonic()
        running: dict = {}  # the prediction while it runs: for a best-effort cancel if we give up on it
        try:
            async with asyncio.timeout(self.deadline):
                prediction = await self._create(path, body, started)
                running.update(prediction)
                prediction = await self._until_done(prediction)
                running.clear()
                return await self._outputs(prediction, body["input"]["num_outputs"])
        except TimeoutError:
            await self._cancel(running)
            where = f"prediction {running.get('id')} " if running.get("id") else ""
            raise UpstreamTimeout(
                f"Replicate {where}did not finish within the {self.deadline:g} s deadline", provider=self.name
            ) from None
        except ProviderError:
            await self._cancel(running)
            raise

    # --- request mapping ---------------------------------------------------------------------------------------

    def _model(self, request: ImageRequest) -> _Model:
        model = MODELS.get(request.model)
        if model is None:
            raise UpstreamInvalidRequest(
                f"Replicate does not serve model {request.model!r} here; it serves: {', '.join(MODELS)}",
                provider=self.name,
            )
        return model

    def _invalid(self, message: str) -> UpstreamInvalidRequest:
        return UpstreamInvalidRequest(message, provider=self.name)

    def _build(self, model: _Model, request: ImageRequest) -> tuple[str, dict]:
        """(path, JSON body) of the create-prediction call."""
        if request.mode != "generate":
            raise self._invalid(f"Replicate's {model.id} only generates images from a prompt; "
                                f"{request.mode!r} is not supported")
        if not 1 <= request.n <= MAX_OUTPUTS:
            raise self._invalid(f"Replicate's {model.id} returns 1 to {MAX_OUTPUTS} images per prediction, "
                                f"not {request.n}")
        if request.style and request.style not in ("vivid", "natural"):
            # OpenAI's vivid/natural have no meaning here and are ignored; a named preset cannot be honoured.
            raise self._invalid(f"Replicate's {model.slug} has no style presets; style {request.style!r} "
                                f"is not supported by this provider")
        inp: dict = {"prompt": request.prompt}
        if model.id in ("flux-schnell", "flux-dev"):
            if request.size not in FLUX_SIZES:
                raise self._invalid(f"Replicate's {model.slug} cannot produce {request.size}; it supports sizes "
                                    f"{', '.join(FLUX_SIZES)}")
            aspect_ratio, megapixels = FLUX_SIZES[request.size]
            inp.update(aspect_ratio=aspect_ratio, megapixels=megapixels, num_outputs=request.n)
            if model.id == "flux-schnell":
                inp.update(num_inference_steps=4)
            else:
                inp.update(guidance=3, num_inference_steps=28)
            inp.update(output_format="png", disable_safety_checker=False)
        else:
            width, height = self._pixels(model, request.size)
            inp.update(width=width, height=height, num_outputs=request.n)
            if model.id == "stable-diffusion-2.1":
                inp.update(num_inference_steps=50, guidance_scale=7.5, scheduler="DPMSolverMultistep")
            else:
                inp.update(refine="no_refiner", apply_watermark=False)
        if request.seed is not None:
            inp["seed"] = request.seed
        if model.version is None:
            return f"/v1/models/{model.slug}/predictions", {"input": inp}
        return "/v1/predictions", {"version": model.version, "input": inp}

    def _pixels(self, model: _Model, size: str) -> tuple[int, int]:
        """Width and height for the Stable Diffusion models: multiples of 64 (SD 2.1: at most 1024)."""
        max_side = 1024 if model.id == "stable-diffusion-2.1" else 2048
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            width = height = 0
        if not (64 <= width <= max_side and 64 <= height <= max_side and width % 64 == 0 and height % 64 == 0):
            raise self._invalid(f"Replicate's {model.slug} cannot produce {size}; width and height must be "
                                f"multiples of 64 from 64 to {max_side}")
        return width, height

    # --- HTTP --------------------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the running event loop's HTTP session (optional; tests and shutdown hooks)."""
        await self.transport.aclose()

    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self.api_token}"}

    def _api_url(self, url: str | None, fallback_path: str) -> str:
        """A URL Replicate handed us (urls.get / urls.cancel), used only on the API's own origin: our token never
        goes elsewhere. Anything else falls back to the documented path on base_url."""
        if isinstance(url, str) and _origin(url) == _origin(self.base_url):
            return url
        return self.base_url + fallback_path

    async def _send(self, method: str, url: str, **kwargs) -> Reply:
        """One exchange with the API (our token unless `headers` says otherwise), at most MAX_REPLY_BYTES back."""
        return await self.transport.request(method, url, headers=kwargs.pop("headers", self._auth()),
                                            max_bytes=MAX_REPLY_BYTES, label="Replicate", **kwargs)

    def _error(self, reply: Reply, action: str) -> ProviderError:
        """The error for a non-2xx reply from the API, with Replicate's own reason (problem+json)."""
        status = reply.status
        reason = reply.error_text()
        p = self.name
        if status in (401, 403):
            return UpstreamUnavailable(f"Replicate rejected the gateway's credentials (HTTP {status}: {reason}); "
                                       f"check the configured Replicate API token", provider=p)
        if status == 402:
            return UpstreamUnavailable(f"Replicate refused to {action} for billing reasons (HTTP 402: {reason})",
                                       provider=p)
        if status == 429:
            wait = _retry_after(reply, reason)
            hint = f"; retry after {wait:g} s" if wait is not None else ""
            return UpstreamRateLimited(f"Replicate is rate limiting requests (HTTP 429: {reason}){hint}", provider=p,
                                       retry_after_seconds=wait, transient=True)
        if status >= 500:
            return UpstreamUnavailable(f"Replicate failed to {action} (HTTP {status}: {reason})", provider=p,
                                       transient=True)
        return UpstreamUnavailable(f"Replicate answered HTTP {status} when asked to {action}: {reason}", provider=p)

    def _json(self, reply: Reply, action: str) -> dict:
        """A prediction object from a 2xx reply, or UpstreamUnavailable for anything malformed."""
        try:
            body = reply.json()
        except ValueError:
            raise UpstreamUnavailable(f"Replicate sent a malformed reply to {action} (not JSON): "
                                      f"{reply.snippet(200)}", provider=self.name) from None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not isinstance(body.get("status"), str):
            raise UpstreamUnavailable(f"Replicate sent a malformed reply to {action} (no prediction id/status): "
                                      f"{str(body)[:200]}", provider=self.name)
        return body

    async def _create(self, path: str, body: dict, started: float) -> dict:
        headers = self._auth()
        # Prefer: wait=N (Replicate accepts 1–60) within what is left of our deadline; below 1 s, plain async.
        wait = min(int(self.wait_seconds), 60, int(self.deadline - (time.monotonic() - started)))
        timeout = None
        if wait >= 1:
            headers["Prefer"] = f"wait={wait}"
            timeout = max(self.timeout, wait + 5.0)  # the answer must be allowed to outlast the hold
        reply = await self._send("POST", self.base_url + path, json=body, headers=headers, timeout=timeout)
        if reply.ok:
            return self._json(reply, "create a prediction")
        if reply.status == 404:
            raise UpstreamInvalidRequest(f"Replicate does not know this model or version (HTTP 404: "
                                         f"{reply.error_text()})", provider=self.name)
        if reply.status in (400, 422):
            raise UpstreamInvalidRequest(f"Replicate rejected the input (HTTP {reply.status}): {reply.error_text()}",
                                         provider=self.name)
        raise self._error(reply, "create a prediction")

    async def _until_done(self, prediction: dict) -> dict:
        """Poll urls.get until the prediction is terminal (the deadline is enforced by the caller). A transient
        failure (connection, timeout, 429, 5xx) is polled through up to _POLL_RETRIES times in a row."""
        failures = 0
        while prediction["status"] not in _TERMINAL:
            if prediction["status"] not in _RUNNING:
                raise UpstreamUnavailable(f"Replicate sent an unknown prediction status {prediction['status']!r}",
                                          provider=self.name)
            await asyncio.sleep(self.poll_interval)
            urls = prediction.get("urls") if isinstance(prediction.get("urls"), dict) else {}
            url = self._api_url(urls.get("get"), f"/v1/predictions/{prediction['id']}")
            try:
                reply = await self._send("GET", url)
                if not reply.ok:
                    raise self._error(reply, "report the prediction's status")
            except ProviderError as exc:
                failures += 1
                if not exc.transient or failures >= _POLL_RETRIES:
                    raise
                continue
            prediction = {**prediction, **self._json(reply, "a status poll")}
            failures = 0
        return prediction

    async def _cancel(self, prediction: dict) -> None:
        """Best effort: stop a prediction we gave up on, so it stops running (and billing)."""
        if not prediction.get("id") or prediction.get("status") in _TERMINAL:
            return
        urls = prediction.get("urls") if isinstance(prediction.get("urls"), dict) else {}
        url = self._api_url(urls.get("cancel"), f"/v1/predictions/{prediction['id']}/cancel")
        try:
            await self._send("POST", url, timeout=min(self.timeout, 5.0))
        except ProviderError:  # best effort only
            pass

    # --- outputs -----------------------------------------------------------------------------------------------

    async def _outputs(self, prediction: dict, n: int) -> list[GeneratedImage]:
        pid = prediction["id"]
        status = prediction["status"]
        if status == "failed":
            error = prediction.get("error")
            reason = str(error).strip() if error else "no reason given"
            if _REFUSAL.search(reason):
                raise ContentRefused(f"Replicate's safety checker refused the prompt: {reason}", provider=self.name)
            raise UpstreamUnavailable(f"Replicate prediction {pid} failed: {reason}", provider=self.name)
        if status == "canceled":
            raise UpstreamUnavailable(f"Replicate prediction {pid} was canceled before it finished",
                                      provider=self.name)
        output = prediction.get("output")
        if isinstance(output, str):
            output = [output]
        if not isinstance(output, list) or not all(isinstance(item, str) and item for item in output):
            raise UpstreamUnavailable(f"Replicate prediction {pid} succeeded without a list of output URLs "
                                      f"(output: {str(output)[:200]})", provider=self.name)
        if len(output) != n:
            raise UpstreamUnavailable(f"Replicate prediction {pid} returned {len(output)} images for {n} requested "
                                      f"(its safety checker may have withheld some)", provider=self.name)
        results = await asyncio.gather(*(self._download(url) for url in output), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [GeneratedImage(data=data, content_type=ctype, revised_prompt=None) for data, ctype in results]

    async def _download(self, url: str) -> tuple[bytes, str]:
        if url.startswith("data:"):
            data = self._data_uri(url)
        else:
            if urlsplit(url).scheme.lower() not in ("http", "https"):
                raise UpstreamUnavailable(f"Replicate returned an output that is not a URL: {url[:100]!r}",
                                          provider=self.name)
            # No credentials: file hosts are not the API.
            data = await self.transport.download(url, label=f"Replicate output {url[:100]}",
                                                 max_bytes=MAX_IMAGE_BYTES)
        content_type = sniff_image(data)
        if content_type is None:
            raise UpstreamUnavailable(f"Replicate returned an output that is not a PNG, JPEG or WebP image "
                                      f"({url[:100]})", provider=self.name)
        return data, content_type

    def _data_uri(self, url: str) -> bytes:
        header, _, payload = url.partition(",")
        if ";base64" not in header or len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
            raise UpstreamUnavailable("Replicate returned an undecodable data: URI output", provider=self.name)
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise UpstreamUnavailable("Replicate returned an undecodable data: URI output",
                                      provider=self.name) from None
