"""Provider `bfl`: Black Forest Labs' Flux API (https://api.bfl.ai), REFERENCE.md §3.

Every BFL call is asynchronous: POST /v1/<model> submits a task and answers {id, polling_url, cost}; the task is
polled (GET polling_url, or /v1/get_result?id=) until its status is final; a Ready task's `result.sample` is a
short-lived URL (~10 minutes) that we download at once. One task makes one image, so n images are n tasks.

Moderation is a poll status on HTTP 200 ("Request Moderated", "Content Moderated"), not an HTTP error.

Depends only on the provider interface in base.py, the standard library and httpx; configuration arrives in the
constructor.
"""
import asyncio
import base64
import itertools
import threading
import weakref
from urllib.parse import quote

import httpx

from .base import (
    sniff_image_type,
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

USER_AGENT = "imagegate/1.0"

# Our catalog id -> BFL submit path.
ENDPOINTS = {
    "flux-pro-1.1": "/v1/flux-pro-1.1",
    "flux-dev": "/v1/flux-dev",
    "flux-pro-1.1-ultra": "/v1/flux-pro-1.1-ultra",
    "flux-kontext-pro": "/v1/flux-kontext-pro",
    "flux-kontext-max": "/v1/flux-kontext-max",
}

# BFL's published prices, micro-USD per image (REFERENCE.md §3).
PRICES_MICROS = {
    "flux-pro-1.1": 40_000,
    "flux-pro-1.1-ultra": 60_000,
    "flux-kontext-pro": 40_000,
    "flux-kontext-max": 80_000,
    "flux-dev": 25_000,
}
MICROS_PER_CREDIT = 10_000  # BFL reports `cost` in credits; 1 credit = $0.01

# Models that take width/height (multiples of 32, 256–1440) ...
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

# flux-dev defaults (BFL's own); request.options may override them.
DEV_STEPS = 28
DEV_GUIDANCE = 3.0
SAFETY_TOLERANCE = 2

PENDING_STATUSES = {"Pending", "Processing", "Queued"}
MODERATED_STATUSES = {"Request Moderated", "Content Moderated"}

# A poll that fails transiently (5xx, connection error, malformed reply, 429) is retried this many times in a
# row before the task is given up: the task is already paid for upstream.
MAX_POLL_FAILURES = 3
DOWNLOAD_ATTEMPTS = 2




def _reason(response: httpx.Response) -> str:
    """BFL's own reason from an error body: FastAPI `detail` (a string or a list of {loc, msg}), or
    {error, message}; falls back to a snippet of the raw body."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return text[:300] or response.reason_phrase or "no details"
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list):
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = [str(p) for p in item.get("loc") or () if p not in ("body", "query")]
                    msg = str(item.get("msg") or item.get("type") or item)
                    parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
                else:
                    parts.append(str(item))
            if parts:
                return "; ".join(parts)
        if isinstance(detail, (str, dict)) and detail:
            return str(detail)
        message = body.get("message")
        error = body.get("error")
        if message and error:
            return f"{error}: {message}"
        if message or error:
            return str(message or error)
    return str(body)[:300]


def _transient(exc: ProviderError) -> ProviderError:
    """Mark an error as passing (worth another poll or download attempt)."""
    exc.transient = True
    return exc


def _details(data: dict) -> str:
    details = data.get("details")
    if details in (None, "", {}, []):
        return ""
    if isinstance(details, dict):
        return "; ".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in details.items())
    return str(details)


class BFLProvider:
    """Provider `bfl`: FLUX1.1 [pro], [pro] ultra, FLUX.1 [dev], Kontext [pro]/[max] on Black Forest Labs' API."""

    name = "bfl"
    max_download_bytes = 50 * 1024 * 1024
    max_connections = 1000  # per event loop, over all its clients
    client_shards = 64

    def __init__(self, *, api_key: str, base_url: str = "https://api.bfl.ai", timeout: float = 30.0,
                 deadline: float = 120.0, poll_interval: float = 0.5):
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.deadline = deadline
        self.poll_interval = poll_interval
        # Clients per running event loop (an httpx client is bound to the loop that opened its connections);
        # dropped with their loop.
        self._clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple]" = weakref.WeakKeyDictionary()
        self._clients_lock = threading.Lock()
        self._ssl_context = None

    # --- interface -------------------------------------------------------------------------------------------------

    def serves(self) -> set[str]:
        return set(ENDPOINTS)

    def upstream_cost_micros(self, request: ImageRequest) -> int:
        try:
            return PRICES_MICROS[request.model] * request.n
        except KeyError:
            raise UpstreamInvalidRequest(f"bfl does not serve model {request.model!r}", provider=self.name) from None

    async def run(self, request: ImageRequest) -> ProviderResult:
        path = ENDPOINTS.get(request.model)
        if path is None:
            raise UpstreamInvalidRequest(f"bfl does not serve model {request.model!r}; it serves "
                                         f"{', '.join(sorted(ENDPOINTS))}", provider=self.name)
        if request.n < 1:
            raise UpstreamInvalidRequest("n must be at least 1", provider=self.name)
        body = self._body(request)
        client = self._client()
        try:
            async with asyncio.timeout(self.deadline):
                # One task per image; the gateway normally sends n=1 (native_max_n), seed+offset otherwise.
                if request.n == 1:
                    outcomes = [await self._one_task(client, path, body)]
                else:
                    bodies = []
                    for i in range(request.n):
                        b = dict(body)
                        if request.seed is not None:
                            b["seed"] = request.seed + i
                        bodies.append(b)
                    outcomes = await self._gather([self._one_task(client, path, b) for b in bodies])
        except TimeoutError:
            raise UpstreamTimeout(f"BFL did not finish the {request.model} task within the {self.deadline:g} s "
                                  "deadline", provider=self.name) from None
        images = [image for image, _ in outcomes]
        cost = sum(c if c is not None else PRICES_MICROS[request.model] for _, c in outcomes)
        return ProviderResult(images=images, upstream_cost_micros=cost)

    async def aclose(self) -> None:
        """Close the clients of the running loop (others are dropped with their loops)."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            entry = self._clients.pop(loop, None)
        if entry is not None:
            for client in entry[0]:
                await client.aclose()

    # --- request mapping -------------------------------------------------------------------------------------------

    def _invalid(self, message: str) -> UpstreamInvalidRequest:
        return UpstreamInvalidRequest(message, provider=self.name)

    def _body(self, request: ImageRequest) -> dict:
        model = request.model
        if request.mode == "variation":
            raise self._invalid(f"{model} on BFL has no variations; use an edit with flux-kontext-pro or "
                                "flux-kontext-max instead")
        if request.mode not in ("generate", "edit"):
            raise self._invalid(f"unknown mode {request.mode!r}")
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

    def _dimensions(self, request: ImageRequest) -> tuple[int, int]:
        try:
            width, height = request.width, request.height
        except (ValueError, IndexError):
            width = height = -1
        ok = all(DIMENSION_MIN <= v <= DIMENSION_MAX and v % DIMENSION_STEP == 0 for v in (width, height))
        if not ok:
            raise self._invalid(f"{request.model} takes width and height that are multiples of {DIMENSION_STEP} "
                                f"from {DIMENSION_MIN} to {DIMENSION_MAX} (e.g. 1024x1024, 1344x768, 768x1344, "
                                f"1440x1440), not {request.size!r}")
        return width, height

    # --- HTTP ------------------------------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        """A client of the running loop's set, round-robin: one task's calls all go through the client picked here.

        The set shares `max_connections` (1000 in all). It is a set rather than one client because httpcore's pool
        does work quadratic in its connection count on every request and response (its keep-alive bookkeeping): 1,000
        concurrent tasks against an emulator answering after 5 s took ~100 s through one pool of 1,000 connections
        and ~11 s through 64 pools of 16."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            entry = self._clients.get(loop)
            if entry is None or any(c.is_closed for c in entry[0]):
                per_shard = -(-self.max_connections // self.client_shards)
                if self._ssl_context is None:  # loading CA certificates takes tens of ms: once, not per client
                    self._ssl_context = httpx.create_ssl_context()
                clients = tuple(
                    httpx.AsyncClient(
                        verify=self._ssl_context,
                        timeout=httpx.Timeout(self.timeout),
                        limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
                        headers={"User-Agent": USER_AGENT},
                    )
                    for _ in range(self.client_shards)
                )
                entry = (clients, itertools.count())
                self._clients[loop] = entry
            clients, counter = entry
            return clients[next(counter) % len(clients)]

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

    async def _call(self, client: httpx.AsyncClient, method: str, url: str, what: str, **kwargs) -> httpx.Response:
        headers = {"x-key": self.api_key, "Accept": "application/json"}
        try:
            return await client.request(method, url, headers=headers, **kwargs)
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
            raise _transient(UpstreamTimeout(f"BFL {what} timed out after {self.timeout:g} s "
                                             f"({type(exc).__name__})", provider=self.name)) from None
        except httpx.HTTPError as exc:
            raise _transient(UpstreamUnavailable(f"BFL {what} failed: {type(exc).__name__}: {exc}".rstrip(": "),
                                                 provider=self.name)) from None

    def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        reason = _reason(response)
        if status in (401, 403):
            raise UpstreamUnavailable(f"BFL rejected the gateway's credentials (HTTP {status} on {what}: {reason}); "
                                      "check the configured BFL API key", provider=self.name)
        if status == 402:
            raise UpstreamUnavailable(f"BFL account is out of credits (HTTP 402 on {what}: {reason})",
                                      provider=self.name)
        if status == 429:
            retry = response.headers.get("retry-after")
            try:
                body = response.json()
                if isinstance(body, dict) and body.get("retry_after") is not None:
                    retry = body["retry_after"]
            except ValueError:
                pass
            hint = f"; retry after {retry} s" if retry not in (None, "") else ""
            raise _transient(UpstreamRateLimited(f"BFL rate limit on {what} (HTTP 429: {reason}{hint})",
                                                 provider=self.name))
        if status in (400, 422):
            if "Moderated" in reason:
                raise ContentRefused(f"BFL refused the request: {reason}", provider=self.name)
            raise UpstreamInvalidRequest(f"BFL rejected the request: {reason}", provider=self.name)
        if status == 404 and what == "submit":
            raise UpstreamUnavailable(f"BFL does not know the endpoint {response.request.url.path} "
                                      f"(HTTP 404: {reason})", provider=self.name)
        exc = UpstreamUnavailable(f"BFL {what} failed with HTTP {status}: {reason}", provider=self.name)
        raise _transient(exc) if status >= 500 else exc

    def _json(self, response: httpx.Response, what: str) -> dict:
        try:
            data = response.json()
        except ValueError:
            snippet = response.text[:120].replace("\n", " ")
            raise _transient(UpstreamUnavailable(f"BFL {what} answered HTTP {response.status_code} with a body that "
                                                 f"is not JSON: {snippet!r}", provider=self.name)) from None
        if not isinstance(data, dict):
            raise _transient(UpstreamUnavailable(f"BFL {what} answered JSON that is not an object: "
                                                 f"{str(data)[:120]}", provider=self.name))
        return data

    # --- one task: submit, poll, download -----------------------------------------------------------------------------

    async def _one_task(self, client: httpx.AsyncClient, path: str, body: dict) -> tuple[GeneratedImage, int | None]:
        response = await self._call(client, "POST", self.base_url + path, "submit", json=body)
        self._raise_for_status(response, "submit")
        submitted = self._json(response, "submit")
        task_id = submitted.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise UpstreamUnavailable(f"BFL submit reply has no task id: {str(submitted)[:200]}", provider=self.name)
        polling_url = submitted.get("polling_url")
        if not isinstance(polling_url, str) or not polling_url:
            polling_url = f"{self.base_url}/v1/get_result?id={quote(task_id, safe='')}"
        cost = None
        credits = submitted.get("cost")
        if isinstance(credits, (int, float)) and not isinstance(credits, bool) and credits >= 0:
            cost = round(credits * MICROS_PER_CREDIT)

        result = await self._poll(client, task_id, polling_url)
        sample = result.get("sample") if isinstance(result, dict) else None
        if not isinstance(sample, str) or not sample:
            raise UpstreamUnavailable(f"BFL task {task_id} is Ready but its result has no sample URL",
                                      provider=self.name)
        data, content_type = await self._download(client, sample, task_id)
        revised = result.get("prompt")
        revised = revised if isinstance(revised, str) and revised and revised != body.get("prompt") else None
        return GeneratedImage(data=data, content_type=content_type, revised_prompt=revised), cost

    async def _poll(self, client: httpx.AsyncClient, task_id: str, polling_url: str) -> dict:
        failures = 0
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                response = await self._call(client, "GET", polling_url, "poll")
                self._raise_for_status(response, "poll")
                data = self._json(response, "poll")
                status = data.get("status")
                if not isinstance(status, str):
                    raise _transient(UpstreamUnavailable(f"BFL poll reply for task {task_id} has no status: "
                                                         f"{str(data)[:200]}", provider=self.name))
            except ProviderError as exc:
                # A passing failure (5xx, connection, malformed reply, 429): the task is paid for and may still
                # finish, so poll again a few times before giving up.
                failures += 1
                if not getattr(exc, "transient", False) or failures >= MAX_POLL_FAILURES:
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

    async def _download(self, client: httpx.AsyncClient, url: str, task_id: str) -> tuple[bytes, str]:
        last: ProviderError | None = None
        for _ in range(DOWNLOAD_ATTEMPTS):
            try:
                return await self._download_once(client, url, task_id)
            except ProviderError as exc:
                last = exc
                if not getattr(exc, "transient", False):
                    raise
        assert last is not None
        raise last

    async def _download_once(self, client: httpx.AsyncClient, url: str, task_id: str) -> tuple[bytes, str]:
        limit = self.max_download_bytes

        def fail(message: str, *, transient: bool = False, cls=UpstreamUnavailable):
            exc = cls(f"downloading the image of BFL task {task_id} failed: {message}", provider=self.name)
            return _transient(exc) if transient else exc

        try:
            # The sample URL is pre-signed on BFL's delivery host: no x-key.
            async with client.stream("GET", url, follow_redirects=True) as response:
                if response.status_code != 200:
                    await response.aread()
                    reason = response.text[:200].replace("\n", " ")
                    expired = " (the result URL may have expired)" if response.status_code in (403, 404, 410) else ""
                    raise fail(f"HTTP {response.status_code}{expired}: {reason}",
                               transient=response.status_code >= 500)
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise fail(f"the image is {int(declared)} bytes, over the {limit}-byte limit")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise fail(f"the image is over the {limit}-byte limit")
                    chunks.append(chunk)
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
            raise fail(f"timed out ({type(exc).__name__})", transient=True, cls=UpstreamTimeout) from None
        except httpx.HTTPError as exc:
            raise fail(f"{type(exc).__name__}: {exc}", transient=True) from None
        data = b"".join(chunks)
        content_type = sniff_image_type(data)
        if content_type is None:
            raise fail(f"the body is not a PNG, JPEG or WebP image ({len(data)} bytes starting {data[:16]!r})")
        return data, content_type
