"""Provider `bfl`: Black Forest Labs' Flux API (https://api.bfl.ai): FLUX.1 and FLUX.2. Wire facts, sources and the
dates they were read: docs/providers/bfl.md.

Every BFL call is asynchronous: POST /v1/<model> submits a task and answers {id, polling_url, cost, input_mp,
output_mp}; the task is polled (GET polling_url, or /v1/get_result?id=) until its status is final; a Ready task's
`result.sample` is a short-lived URL (~10 minutes) that we download at once. One task makes one image, so n images
are n tasks. Moderation is a poll status on HTTP 200 ("Request Moderated", "Content Moderated"), not an HTTP error.
We poll rather than pass `webhook_url` (the gateway has no public endpoint for BFL to call back).

FLUX.1 models are priced per image; FLUX.2 models per megapixel of output (`flux2_price_micros`). The submit reply's
`cost` (credits, 1 credit = $0.01) is what the task cost us; the published price is the fallback when it is missing.

HTTP goes through the shared transport (transport.py: pools, capped reads, timeouts, transport errors); this module
maps BFL's wire format only. Depends on base.py, transport.py and the standard library; configuration arrives in the
constructor.
"""
from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
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
from .transport import DownloadFailed, Reply, Transport

MICROS_PER_CREDIT = 10_000  # BFL reports `cost` in credits; 1 credit = $0.01 = 10,000 micro-USD

# --- FLUX.1: flat prices, micro-USD per image -------------------------------------------------------------------------
FLUX1_PRICES_MICROS = {
    "flux-pro-1.1": 40_000,
    "flux-pro-1.1-ultra": 60_000,
    "flux-kontext-pro": 40_000,
    "flux-kontext-max": 80_000,
    "flux-dev": 25_000,
}


# --- FLUX.2: per-megapixel prices -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MegapixelTariff:
    """BFL's FLUX.2 text-to-image price: `first_mp_micros` for the first megapixel (also the price of anything
    smaller) plus `extra_mp_micros` per further megapixel, pro rata. A megapixel is 1,000,000 pixels."""

    first_mp_micros: int
    extra_mp_micros: int

    def price_micros(self, width: int, height: int) -> int:
        """Micro-USD for one width x height image: first + extra x max(0, pixels - 10^6) / 10^6, rounded up to a
        whole micro-dollar (exact integer arithmetic)."""
        extra_pixels = max(0, width * height - 1_000_000)
        return self.first_mp_micros + -(-self.extra_mp_micros * extra_pixels // 1_000_000)


FLUX2_TARIFFS = {
    "flux-2-klein-4b": MegapixelTariff(14_000, 1_000),  # 1.4 credits + 0.1 per extra MP
    "flux-2-klein-9b": MegapixelTariff(15_000, 2_000),  # 1.5 + 0.2
    "flux-2-pro": MegapixelTariff(30_000, 15_000),  # 3 + 1.5
    "flux-2-flex": MegapixelTariff(50_000, 50_000),  # 5 + 5
    "flux-2-max": MegapixelTariff(70_000, 30_000),  # 7 + 3
}
# FLUX.2 dimensions: multiples of 16, at least 64, at most 4 megapixels (BFL's own example of the maximum: 2048x2048).
FLUX2_STEP, FLUX2_MIN_SIDE, FLUX2_MAX_PIXELS = 16, 64, 2048 * 2048


def flux2_price_micros(model: str, width: int, height: int) -> int:
    """BFL's price of one FLUX.2 text-to-image image of width x height, micro-USD (KeyError for other models)."""
    return FLUX2_TARIFFS[model].price_micros(width, height)


# Our catalog id -> BFL submit path (the same names upstream).
ENDPOINTS = {model: f"/v1/{model}" for model in (*FLUX1_PRICES_MICROS, *FLUX2_TARIFFS)}

# FLUX.1 models that take width/height (multiples of 32, 256–1440) ...
PIXEL_MODELS = {"flux-pro-1.1", "flux-dev"}
DIMENSION_MIN, DIMENSION_MAX, DIMENSION_STEP = 256, 1440, 32
# ... and models that take an aspect ratio: each of our sizes names the ratio it stands for
# (copied from catalog.FLUX_ULTRA_ASPECT_RATIOS and the KONTEXT_SIZES entries of catalog.ASPECT_RATIOS).
ULTRA_ASPECT_RATIOS = {"2048x2048": "1:1", "2752x1536": "16:9", "1536x2752": "9:16", "2496x1664": "3:2",
                       "1664x2496": "2:3"}
KONTEXT_ASPECT_RATIOS = {"1024x1024": "1:1", "1344x768": "16:9", "768x1344": "9:16", "1216x832": "3:2",
                         "832x1216": "2:3", "1024x768": "4:3", "768x1024": "3:4"}
ASPECT_RATIO_MODELS = {
    "flux-pro-1.1-ultra": ULTRA_ASPECT_RATIOS,
    "flux-kontext-pro": KONTEXT_ASPECT_RATIOS,
    "flux-kontext-max": KONTEXT_ASPECT_RATIOS,
}
EDIT_MODELS = {"flux-kontext-pro", "flux-kontext-max"}  # `input_image`

# flux-dev defaults (BFL's own); request.options may override them. FLUX.2 [flex] takes `steps`/`guidance` from
# request.options when given (BFL's defaults otherwise).
DEV_STEPS = 28
DEV_GUIDANCE = 3.0
SAFETY_TOLERANCE = 2  # FLUX.1 takes 0–6, FLUX.2 0–5

PENDING_STATUSES = {"Pending", "Processing", "Queued"}
MODERATED_STATUSES = {"Request Moderated", "Content Moderated"}

# A poll that fails transiently (5xx, connection error, timeout, 429) is retried this many times in a row before the
# task is given up: the task is already paid for upstream. A download that fails transiently is tried twice.
MAX_POLL_FAILURES = 3
DOWNLOAD_ATTEMPTS = 2
MAX_REPLY_BYTES = 1024 * 1024  # a submit or poll reply (small JSON)


def _details(data: dict) -> str:
    details = data.get("details")
    if details in (None, "", {}, []):
        return ""
    if isinstance(details, dict):
        return "; ".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in details.items())
    return str(details)


def _credits_to_micros(credits) -> int | None:
    """BFL's `cost` (credits, a JSON number) in micro-USD, rounded up; None when absent or not a number."""
    if isinstance(credits, bool) or not isinstance(credits, (int, float)) or credits < 0:
        return None
    try:
        return int((Decimal(str(credits)) * MICROS_PER_CREDIT).to_integral_value(rounding=ROUND_CEILING))
    except InvalidOperation:  # inf, nan
        return None


class BFLProvider:
    """Provider `bfl`: FLUX1.1 [pro], [pro] ultra, FLUX.1 [dev], Kontext [pro]/[max], and FLUX.2 [klein] 4B/9B,
    [pro], [flex], [max] on Black Forest Labs' API."""

    name = "bfl"
    max_download_bytes = 50 * 1024 * 1024

    def __init__(self, *, api_key: str, base_url: str = "https://api.bfl.ai", timeout: float = 30.0,
                 deadline: float = 120.0, poll_interval: float = 0.5):
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout  # one HTTP exchange (submit, poll, download), seconds
        self.deadline = deadline  # the whole call: every task submitted, polled and downloaded, seconds
        self.poll_interval = poll_interval
        self.transport = Transport(provider=self.name, timeout=timeout)

    # --- interface -------------------------------------------------------------------------------------------------

    def serves(self) -> set[str]:
        return set(ENDPOINTS)

    def upstream_cost_micros(self, request: ImageRequest) -> int:
        """BFL's published price of `request` (all n images), micro-USD: flat for FLUX.1, per megapixel of the
        requested size for FLUX.2. UpstreamInvalidRequest for a model or size BFL cannot price."""
        return self._unit_price(request) * request.n

    async def run(self, request: ImageRequest) -> ProviderResult:
        """n tasks (one image each) submitted, polled and downloaded within `deadline` seconds; the result's
        `upstream_cost_micros` is the sum of what BFL reported per task (the published price where it did not).
        Raises UpstreamInvalidRequest (model, size or mode BFL cannot do; BFL's 422), ContentRefused (moderation
        status), UpstreamRateLimited (429, with `retry_after_seconds`), UpstreamTimeout, UpstreamUnavailable."""
        path = ENDPOINTS.get(request.model)
        if path is None:
            raise UpstreamInvalidRequest(f"bfl does not serve model {request.model!r}; it serves "
                                         f"{', '.join(sorted(ENDPOINTS))}", provider=self.name)
        if request.n < 1:
            raise UpstreamInvalidRequest("n must be at least 1", provider=self.name)
        body = self._body(request)
        unit_price = self._unit_price(request)
        try:
            async with asyncio.timeout(self.deadline):
                # One task per image; the gateway normally sends n=1 (native_max_n), seed+offset otherwise.
                if request.n == 1:
                    outcomes = [await self._one_task(path, body)]
                else:
                    bodies = []
                    for i in range(request.n):
                        b = dict(body)
                        if request.seed is not None:
                            b["seed"] = request.seed + i
                        bodies.append(b)
                    outcomes = await self._gather([self._one_task(path, b) for b in bodies])
        except TimeoutError:
            raise UpstreamTimeout(f"BFL did not finish the {request.model} task within the {self.deadline:g} s "
                                  "deadline", provider=self.name) from None
        images = [image for image, _ in outcomes]
        cost = sum(c if c is not None else unit_price for _, c in outcomes)
        return ProviderResult(images=images, upstream_cost_micros=cost)

    async def aclose(self) -> None:
        """Close the running event loop's HTTP session (others are dropped with their loops)."""
        await self.transport.aclose()

    # --- request mapping -------------------------------------------------------------------------------------------

    def _invalid(self, message: str) -> UpstreamInvalidRequest:
        return UpstreamInvalidRequest(message, provider=self.name)

    def _unit_price(self, request: ImageRequest) -> int:
        if request.model in FLUX2_TARIFFS:
            width, height = self._flux2_dimensions(request)
            return flux2_price_micros(request.model, width, height)
        try:
            return FLUX1_PRICES_MICROS[request.model]
        except KeyError:
            raise self._invalid(f"bfl does not serve model {request.model!r}") from None

    def _body(self, request: ImageRequest) -> dict:
        model = request.model
        if request.mode == "variation":
            raise self._invalid(f"{model} on BFL has no variations; use an edit with flux-kontext-pro or "
                                "flux-kontext-max instead")
        if request.mode not in ("generate", "edit"):
            raise self._invalid(f"unknown mode {request.mode!r}")
        if model in FLUX2_TARIFFS:
            return self._flux2_body(request)
        body: dict = {"prompt": request.prompt}
        if model in PIXEL_MODELS:
            width, height = self._dimensions(request)
            body["width"] = width
            body["height"] = height
        else:
            ratios = ASPECT_RATIO_MODELS[model]
            ratio = ratios.get(request.size)
            if ratio is None:
                options = ", ".join(f"{size} ({r})" for size, r in ratios.items())
                raise self._invalid(f"{model} takes an aspect ratio, not free pixel sizes: size must be one of "
                                    f"{options}, not {request.size!r}")
            body["aspect_ratio"] = ratio
        if model == "flux-dev":
            body["steps"] = request.options.get("steps", DEV_STEPS)
            body["guidance"] = request.options.get("guidance", DEV_GUIDANCE)
        if request.mode == "edit":
            if model not in EDIT_MODELS:
                raise self._invalid(f"{model} cannot edit an input image; flux-kontext-pro and flux-kontext-max can")
            if not request.images:
                raise self._invalid("an edit needs an input image")
            if request.mask is not None:
                raise self._invalid(f"{model} does not take a mask: Kontext edits follow the prompt's "
                                    "instructions over the whole image; send the image without a mask")
            body["input_image"] = base64.b64encode(request.images[0].data).decode("ascii")
        if request.seed is not None:
            body["seed"] = request.seed
        body["safety_tolerance"] = SAFETY_TOLERANCE
        body["output_format"] = "png"
        body["prompt_upsampling"] = False
        return body

    def _flux2_body(self, request: ImageRequest) -> dict:
        """FLUX.2: prompt, width/height (multiples of 16), seed, safety_tolerance (0–5), output_format (jpeg|png);
        [flex] also steps/guidance (from options) and prompt_upsampling."""
        if request.mode == "edit":
            # FLUX.2 edits (input_image…input_image_8) are charged per input megapixel too, which our per-size
            # price list cannot express yet.
            raise self._invalid(f"{request.model} is offered for generation only here; edit with flux-kontext-pro "
                                "or flux-kontext-max")
        width, height = self._flux2_dimensions(request)
        body: dict = {"prompt": request.prompt, "width": width, "height": height}
        if request.seed is not None:
            body["seed"] = request.seed
        if request.model == "flux-2-flex":
            for key in ("steps", "guidance"):
                if request.options.get(key) is not None:
                    body[key] = request.options[key]
            body["prompt_upsampling"] = False
        body["safety_tolerance"] = SAFETY_TOLERANCE
        body["output_format"] = "png"
        return body

    def _pixels(self, request: ImageRequest) -> tuple[int, int]:
        try:
            return request.width, request.height
        except (ValueError, IndexError):
            return -1, -1

    def _dimensions(self, request: ImageRequest) -> tuple[int, int]:
        width, height = self._pixels(request)
        ok = all(DIMENSION_MIN <= v <= DIMENSION_MAX and v % DIMENSION_STEP == 0 for v in (width, height))
        if not ok:
            raise self._invalid(f"{request.model} takes width and height that are multiples of {DIMENSION_STEP} "
                                f"from {DIMENSION_MIN} to {DIMENSION_MAX} (e.g. 1024x1024, 1344x768, 768x1344, "
                                f"1440x1440), not {request.size!r}")
        return width, height

    def _flux2_dimensions(self, request: ImageRequest) -> tuple[int, int]:
        width, height = self._pixels(request)
        ok = (all(v >= FLUX2_MIN_SIDE and v % FLUX2_STEP == 0 for v in (width, height))
              and width * height <= FLUX2_MAX_PIXELS)
        if not ok:
            raise self._invalid(f"{request.model} takes width and height that are multiples of {FLUX2_STEP}, at "
                                f"least {FLUX2_MIN_SIDE}, at most 4 megapixels in all (e.g. 1024x1024, 1920x1088, "
                                f"2048x2048), not {request.size!r}")
        return width, height

    # --- HTTP ------------------------------------------------------------------------------------------------------

    @staticmethod
    async def _gather(coros):
        tasks = [asyncio.ensure_future(c) for c in coros]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _call(self, method: str, url: str, what: str, **kwargs) -> dict:
        """One exchange with the API (`what`: "submit" or "poll"): an error status becomes our error (transient for
        429 and 5xx), the reply must be a JSON object."""
        reply = await self.transport.request(method, url, headers={"x-key": self.api_key, "Accept": "application/json"},
                                             max_bytes=MAX_REPLY_BYTES, label=f"BFL {what}", **kwargs)
        if not reply.ok:
            raise self._error(reply, what, url)
        try:
            data = reply.json()
        except ValueError:
            raise UpstreamUnavailable(f"BFL {what} answered HTTP {reply.status} with a body that is not JSON: "
                                      f"{reply.snippet(120)}", provider=self.name, transient=True) from None
        if not isinstance(data, dict):
            raise UpstreamUnavailable(f"BFL {what} answered JSON that is not an object: {str(data)[:120]}",
                                      provider=self.name, transient=True)
        return data

    def _error(self, reply: Reply, what: str, url: str) -> ProviderError:
        status = reply.status
        reason = reply.error_text()
        if status in (401, 403):
            return UpstreamUnavailable(f"BFL rejected the gateway's credentials (HTTP {status} on {what}: {reason}); "
                                       "check the configured BFL API key", provider=self.name)
        if status == 402:
            return UpstreamUnavailable(f"BFL account is out of credits (HTTP 402 on {what}: {reason})",
                                       provider=self.name)
        if status == 429:
            wait = self._retry_after(reply)
            hint = f"; retry after {wait:g} s" if wait is not None else ""
            return UpstreamRateLimited(f"BFL rate limit on {what} (HTTP 429: {reason}{hint})", provider=self.name,
                                       retry_after_seconds=wait, transient=True)
        if status in (400, 422):
            if "Moderated" in reason:
                return ContentRefused(f"BFL refused the request: {reason}", provider=self.name)
            return UpstreamInvalidRequest(f"BFL rejected the request: {reason}", provider=self.name)
        if status == 404 and what == "submit":
            return UpstreamUnavailable(f"BFL does not know the endpoint {url} (HTTP 404: {reason})",
                                       provider=self.name)
        return UpstreamUnavailable(f"BFL {what} failed with HTTP {status}: {reason}", provider=self.name,
                                   transient=status >= 500)

    @staticmethod
    def _retry_after(reply: Reply) -> float | None:
        """BFL's 429 body says `retry_after` (seconds); the Retry-After header is the fallback."""
        try:
            body = reply.json()
        except ValueError:
            body = None
        hint = body.get("retry_after") if isinstance(body, dict) else None
        if isinstance(hint, (int, float)) and not isinstance(hint, bool) and hint >= 0:
            return float(hint)
        return reply.retry_after()

    # --- one task: submit, poll, download -----------------------------------------------------------------------------

    async def _one_task(self, path: str, body: dict) -> tuple[GeneratedImage, int | None]:
        """Submit, poll until final, download: (image, what BFL says it charged in micro-USD or None)."""
        submitted = await self._call("POST", self.base_url + path, "submit", json=body)
        task_id = submitted.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise UpstreamUnavailable(f"BFL submit reply has no task id: {str(submitted)[:200]}", provider=self.name)
        polling_url = submitted.get("polling_url")
        if not isinstance(polling_url, str) or not polling_url:
            polling_url = f"{self.base_url}/v1/get_result?id={quote(task_id, safe='')}"
        cost = _credits_to_micros(submitted.get("cost"))

        result = await self._poll(task_id, polling_url)
        sample = result.get("sample") if isinstance(result, dict) else None
        if not isinstance(sample, str) or not sample:
            raise UpstreamUnavailable(f"BFL task {task_id} is Ready but its result has no sample URL",
                                      provider=self.name)
        data, content_type = await self._download(sample, task_id)
        revised = result.get("prompt")
        revised = revised if isinstance(revised, str) and revised and revised != body.get("prompt") else None
        return GeneratedImage(data=data, content_type=content_type, revised_prompt=revised), cost

    async def _poll(self, task_id: str, polling_url: str) -> dict:
        failures = 0
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                data = await self._call("GET", polling_url, "poll")
                status = data.get("status")
                if not isinstance(status, str):
                    raise UpstreamUnavailable(f"BFL poll reply for task {task_id} has no status: {str(data)[:200]}",
                                              provider=self.name, transient=True)
            except ProviderError as exc:
                # A passing failure (5xx, connection, timeout, malformed reply, 429): the task is paid for and may
                # still finish, so poll again a few times before giving up.
                failures += 1
                if not exc.transient or failures >= MAX_POLL_FAILURES:
                    raise
                continue
            failures = 0
            if status in PENDING_STATUSES:
                continue
            if status == "Ready":
                return data.get("result") if isinstance(data.get("result"), dict) else {}
            details = _details(data)
            suffix = f": {details}" if details else ""
            if status in MODERATED_STATUSES:
                what = "the prompt or input image" if status == "Request Moderated" else "the generated image"
                raise ContentRefused(f"BFL's safety system refused {what} ({status}{suffix})", provider=self.name)
            if status == "Error":
                raise UpstreamUnavailable(f"BFL task {task_id} failed (Error{suffix or ': no details'})",
                                          provider=self.name)
            if status == "Task not found":
                raise UpstreamUnavailable(f"BFL lost task {task_id} (Task not found)", provider=self.name)
            raise UpstreamUnavailable(f"BFL task {task_id} has an unexpected status {status!r}{suffix}",
                                      provider=self.name)

    async def _download(self, url: str, task_id: str) -> tuple[bytes, str]:
        """The sample (pre-signed on BFL's delivery host: no x-key), at most `max_download_bytes`; (bytes, sniffed
        content type). A transient failure (connection, timeout, 408/429/5xx) is tried once more; 403/404/410 says
        the URL may have expired (it lives ~10 minutes). Raises UpstreamUnavailable or UpstreamTimeout."""
        label = f"the image of BFL task {task_id}"
        attempt = 1
        while True:
            try:
                data = await self.transport.download(url, label=label, max_bytes=self.max_download_bytes,
                                                     follow_redirects=True)
                break
            except ProviderError as exc:
                if exc.transient and attempt < DOWNLOAD_ATTEMPTS:
                    attempt += 1
                    continue
                if isinstance(exc, DownloadFailed) and exc.status in (403, 404, 410):
                    raise UpstreamUnavailable(f"{exc.message} (the result URL may have expired)",
                                              provider=self.name) from exc
                raise
        content_type = sniff_image_type(data)
        if content_type is None:
            raise UpstreamUnavailable(f"downloading {label} failed: the body is not a PNG, JPEG or WebP image "
                                      f"({len(data)} bytes starting {data[:16]!r})", provider=self.name)
        return data, content_type
