"""The image service: one request from validated input to stored images, a ledger row and OpenAI's response.

Async end to end: upstream waits never hold a thread. Before the upstream call nothing touches the database: the API
key, organization, limits, prices, the moderation policy and the model lifecycle come from per-process caches
(config/process_cache.py) and the rate limit and spend hold from Redis (one script each). After it, one
transaction writes everything the request leaves behind: its ledger row (and billing outbox row), its upstream
attempts, its stored images' rows, the key's last use, committed together with concurrent requests' (commit.py).
Order of work for every endpoint: the model's lifecycle (generation/lifecycle.py: a retired model is refused or
remapped to its replacement) → validate → moderate → fetch the input image (generations' `image` URL) → price and
hold the spend → provider call(s) → deliver → one transaction → settle the spend hold.
"""
import asyncio
import base64
import dataclasses
import logging
import math
import time
from dataclasses import dataclass

from accounts.models import ApiKey, Organization
from billing import money, spend
from billing import selectors as billing_selectors
from billing.models import LedgerEntry
from config import db, faults
from config.observability import metrics
from generation import catalog, lifecycle, prompts
from generation.errors import (
    APIError,
    ContentPolicyViolation,
    InsufficientQuota,
    InvalidRequest,
    RateLimited,
    ServerError,
    UpstreamError,
)
from generation.models import ProviderAttempt
from generation.pipeline import commit, idempotency, moderation, quote, router, storage
from generation.pipeline.health import HealthBook
from generation.pipeline.validation import ImageCall, validate
from generation.providers import base as pb
from generation.providers import registry

log = logging.getLogger(__name__)

REFUSAL_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed "
    "by our content policy."
)


@dataclass(frozen=True)
class Outcome:
    body: dict
    provider: str
    request_id: str | None = None  # set when the answer is an earlier attempt's (its request id, not this one's)
    cost_micros: int = 0  # what this request was charged (micro-USD); 0 when the answer is an earlier attempt's
    # Lifecycle headers: Deprecation / Sunset / Link for a deprecated model, x-model-remapped for a remapped one.
    headers: dict = dataclasses.field(default_factory=dict)


class _RemapAfterGone(Exception):
    """Every upstream said the model no longer exists, and the organization remaps retired models: run the request
    again for the replacement (once), keeping the attempts made so far for the audit trail."""

    def __init__(self, data: dict, requested: str, attempts: list):
        super().__init__(requested)
        self.data, self.requested, self.attempts = data, requested, attempts


_health: HealthBook | None = None


def health_book() -> HealthBook:
    global _health
    if _health is None:
        _health = HealthBook()
    return _health


def is_available(spec: catalog.ModelSpec) -> bool:
    """Some enabled provider serves the model."""
    return bool(router.candidates(spec, registry()))


def _servable(model_id: str) -> bool:
    spec = catalog.get_model(model_id)
    return spec is not None and is_available(spec)


def requested_model(data) -> str | None:
    """The model id a request body asks for (the default when it names none); None when the body is not an object
    or `model` is not a string (validation then answers)."""
    if not isinstance(data, dict):
        return None
    model = data.get("model")
    if model is None or model == "":
        return catalog.DEFAULT_MODEL
    return model if isinstance(model, str) else None


async def _resolve(data, organization, remapped_from: str | None) -> tuple[object, lifecycle.Resolution | None]:
    """(the body to validate, the lifecycle resolution): a retired model raises ModelRetired, or, for an
    organization that remaps, becomes its replacement in the body. `remapped_from`: the model a previous pass
    remapped from (after every upstream said the model was gone)."""
    model = requested_model(data)
    if model is None:
        return data, None
    table = await lifecycle.atable()
    resolution = lifecycle.resolve(model, table, remap=organization.remap_retired_models, exists=_servable)
    if resolution.remapped:
        data = {**data, "model": resolution.served}
    if remapped_from is not None:
        resolution = dataclasses.replace(resolution, requested=remapped_from)
    return data, resolution


async def _gone_error(exc: pb.ModelGone, call: ImageCall, data, organization, resolution, attempts) -> Exception:
    """Every provider that serves the model said it no longer exists: answer like a retired model (404 naming the
    replacement), or, for an organization that remaps, run the request again for the replacement (once)."""
    table = await lifecycle.atable()
    replacement = lifecycle.of(call.spec.id, table).replacement
    first_pass = resolution is None or not resolution.remapped
    if organization.remap_retired_models and replacement and first_pass and _servable(replacement) \
            and isinstance(data, dict):
        return _RemapAfterGone({**data, "model": replacement}, call.spec.id, attempts)
    return lifecycle.ModelRetired(call.spec.id, replacement,
                                  reason="is no longer offered by any upstream provider we use")


def _map_provider_error(exc: pb.ProviderError) -> APIError:
    if isinstance(exc, pb.ContentRefused):
        return ContentPolicyViolation(REFUSAL_MESSAGE, param="prompt")
    if isinstance(exc, pb.UpstreamInvalidRequest):
        return InvalidRequest(f"The upstream provider rejected the request: {exc.message}", code="invalid_parameter")
    if isinstance(exc, pb.UpstreamRateLimited):
        return RateLimited("The upstream provider is rate limiting requests. Please retry after the time in the "
                           "retry-after header.", headers=upstream_retry_headers(exc.retry_after_seconds))
    if isinstance(exc, router.NoHealthyProvider):
        return UpstreamError(exc.message, status=503, code="provider_unavailable", headers={"retry-after": "5"})
    if isinstance(exc, pb.UpstreamTimeout):
        return UpstreamError(f"The upstream provider did not answer in time: {exc.message}", status=504,
                             code="upstream_timeout")
    return UpstreamError(f"The upstream provider failed: {exc.message}", status=502)


MAX_UPSTREAM_RETRY_AFTER = 3600  # seconds: a cap on absurd hints; anything an upstream means is below it
SDK_RETRY_LIMIT = 60  # the OpenAI SDKs wait out a retry-after up to about this long, then back off on their own


def upstream_retry_headers(hint_seconds: float | None) -> dict[str, str]:
    """`retry-after` (whole seconds, rounded up) and `retry-after-ms` for a 429 the upstream answered: its own wait
    when it gave one, never less (capped at MAX_UPSTREAM_RETRY_AFTER), else 1 s. Beyond what the SDKs wait for by
    themselves, `x-should-retry: false`: they would otherwise retry at once and meet the same 429."""
    if hint_seconds is None or not hint_seconds > 0:
        hint_seconds = 1.0
    ms = min(MAX_UPSTREAM_RETRY_AFTER * 1000, max(1, math.ceil(hint_seconds * 1000)))
    headers = {"retry-after": str(max(1, math.ceil(ms / 1000))), "retry-after-ms": str(ms)}
    if ms > SDK_RETRY_LIMIT * 1000:
        headers["x-should-retry"] = "false"
    return headers


def _status_for(exc: APIError) -> str:
    if isinstance(exc, ContentPolicyViolation):
        return LedgerEntry.Status.REFUSED
    if exc.status < 500 and exc.status != 429:
        return LedgerEntry.Status.INVALID
    return LedgerEntry.Status.FAILED


def split_n(n: int, native_max: int) -> list[int]:
    """How many images each parallel upstream call asks for: [native, native, ..., rest]."""
    full, rest = divmod(n, native_max)
    return [native_max] * full + ([rest] if rest else [])


async def _call_provider(provider, req: pb.ImageRequest, native_max: int) -> pb.ProviderResult:
    """One upstream call, or several in parallel when n is beyond what one call returns; one result either way."""
    chunks = split_n(req.n, native_max)
    if len(chunks) == 1:
        return await provider.run(req)
    offsets = [sum(chunks[:i]) for i in range(len(chunks))]
    # With a seed, each call gets its own (seed + offset) so images stay distinct and reproducible.
    results = await asyncio.gather(*[
        provider.run(dataclasses.replace(req, n=count, seed=None if req.seed is None else req.seed + offset))
        for count, offset in zip(chunks, offsets)
    ])
    upstream = [r.upstream_cost_micros for r in results]
    first = results[0]
    return pb.ProviderResult(
        images=[image for r in results for image in r.images],
        upstream_cost_micros=None if any(c is None for c in upstream) else sum(upstream),
        resolved_size=first.resolved_size, resolved_quality=first.resolved_quality,
        resolved_background=first.resolved_background, resolved_output_format=first.resolved_output_format,
        served_model=first.served_model,
        usage=_sum_usage([r.usage for r in results]),
    )


def _sum_usage(blocks: list[dict | None]) -> dict | None:
    """The token usage of parallel upstream calls added up (None unless every call reported it)."""
    if not blocks or any(b is None for b in blocks):
        return None
    total = {k: sum(b[k] for b in blocks) for k in ("input_tokens", "output_tokens", "total_tokens")}
    total["input_tokens_details"] = {k: sum(b["input_tokens_details"][k] for b in blocks)
                                     for k in ("text_tokens", "image_tokens")}
    if all("output_tokens_details" in b for b in blocks):
        total["output_tokens_details"] = {k: sum(b["output_tokens_details"][k] for b in blocks)
                                          for k in ("text_tokens", "image_tokens")}
    return total


async def run(
    *,
    endpoint: str,
    organization: Organization,
    api_key: ApiKey | None,
    request_id: str,
    data,
    files: dict | None = None,
    form: bool = False,
    base_url: str,
    idempotency_key: tuple[str, str] | None = None,
) -> Outcome:
    """Serve one image request; `idempotency_key` is (the client's Idempotency-Key, the request's fingerprint) when it
    sent one: the charged answer is then committed with the charge (generation/pipeline/idempotency.py). Raises
    APIError (ModelRetired for a retired model: 404 model_not_found naming its replacement)."""
    kwargs = dict(endpoint=endpoint, organization=organization, api_key=api_key, request_id=request_id, files=files,
                  form=form, base_url=base_url, idempotency_key=idempotency_key, started=time.monotonic())
    try:
        return await _run(data=data, **kwargs)
    except _RemapAfterGone as remap:
        return await _run(data=remap.data, remapped_from=remap.requested, prior_attempts=remap.attempts, **kwargs)


async def _run(*, endpoint, organization, api_key, request_id, data, files, form, base_url, idempotency_key,
               started: float, remapped_from: str | None = None, prior_attempts: list | None = None) -> Outcome:

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    call: ImageCall | None = None
    provider_name = ""
    attempts: list[router.Attempt] = list(prior_attempts or [])
    hold = spend.NO_HOLD
    resolution: lifecycle.Resolution | None = None
    requested = requested_model(data)
    try:
        registry()  # built on first use; it also registers configured self-hosted models in the catalog
        data, resolution = await _resolve(data, organization, remapped_from)
        if resolution is not None:
            requested = resolution.requested
        call = validate(endpoint, data, files=files, form=form, is_available=is_available, api_key=api_key)
        if call.end_user:  # upstreams see a keyed hash of the end user, never the customer's own identifier
            call = dataclasses.replace(call, request=dataclasses.replace(
                call.request, user=spend.end_user_pseudonym(organization.pk, call.end_user)))
        await _moderate(call)  # refuse before fetching anything for a refused prompt
        if call.image_url:
            call = await _with_fetched_image(call)
        req = call.request
        price, hold = await _price_and_hold(call, organization, api_key)
        try:
            async with spend.renewing(hold):
                result, provider_name = await router.route(
                    spec=call.spec, request=req, providers=registry(), health=health_book(), explicit=call.provider,
                    call=lambda provider, r: _call_provider(provider, r, call.spec.native_max_n), attempts=attempts,
                )
        except pb.ModelGone as exc:
            raise await _gone_error(exc, call, data, organization, resolution, attempts) from exc
        except pb.ProviderError as exc:
            raise _map_provider_error(exc) from exc
        if len(result.images) != req.n:
            raise UpstreamError(f"The upstream provider returned {len(result.images)} images instead of {req.n}.")
        if price is None:  # "auto" size or quality: price what the upstream actually produced
            size = result.resolved_size if result.resolved_size not in (None, "auto") else req.size
            quality = result.resolved_quality if result.resolved_quality not in (None, "auto") else req.quality
            size = catalog.AUTO_SIZE if size == "auto" else size
            quality = catalog.AUTO_QUALITY if quality == "auto" else quality
            req = dataclasses.replace(req, size=size, quality=quality)
            call = dataclasses.replace(call, request=req)
            price = await _price(req.model, req.size, req.quality)
        items, files_saved = await _deliver(result.images, call=call, request_id=request_id, base_url=base_url)
        latency = elapsed_ms()
        body = _response_body(call, items, cost_micros=price.unit_price_micros * req.n, latency=latency,
                              result=result)
        rows = [*_attempt_rows(attempts, organization=organization, request_id=request_id, call=call),
                *(storage.image_row(organization_id=organization.pk, request_id=request_id, saved=saved)
                  for saved in files_saved)]
        text = prompts.row_for(organization=organization, request_id=request_id, prompt=req.prompt)
        if text is not None:
            rows.append(text)
        headers = resolution.headers() if resolution is not None else {}
        if idempotency_key is not None:
            rows.append(idempotency.durable_row(
                organization_id=organization.pk, key=idempotency_key[0], fingerprint=idempotency_key[1],
                response=idempotency.StoredResponse(200, body, {**headers, "x-provider": provider_name,
                                                                "x-request-id": request_id})))
        try:
            entry = await commit.commit(commit.Write(
                usage=dict(organization=organization, api_key=api_key, request_id=request_id, endpoint=endpoint,
                           status=LedgerEntry.Status.SUCCEEDED, model=req.model,
                           requested_model=requested or req.model, provider=provider_name,
                           size=req.size, quality=req.quality, n=req.n, price=price, latency_ms=latency,
                           upstream_cost_micros=result.upstream_cost_micros,
                           served_model=_served_model(req.model, result), end_user=call.end_user),
                rows=rows, touch_key=api_key,
            ))
        except Exception as exc:
            await _discard(files_saved)
            if idempotency_key is not None and _is_duplicate(exc):
                # An earlier attempt with this key committed its charge (its process died before the answer was
                # stored): answer with that, and charge nothing now.
                first = await db.run(idempotency.load_durable, organization_id=organization.pk,
                                     key=idempotency_key[0])
                if first is not None:
                    await spend.release(hold)
                    return Outcome(body=first.body, provider=first.headers.get("x-provider", ""),
                                   request_id=first.headers.get("x-request-id"),
                                   headers={k: v for k, v in first.headers.items()
                                            if k not in ("x-provider", "x-request-id")})
            raise
        except BaseException:
            await _discard(files_saved)
            raise
        faults.point("after_commit")
        attempts = []  # written with the ledger row
    except _RemapAfterGone:  # run() serves the replacement; this pass leaves nothing but its attempts behind
        await spend.release(hold)
        raise
    except APIError as exc:
        await _record_failure(exc, endpoint=endpoint, organization=organization, api_key=api_key,
                              request_id=request_id, data=data, call=call, attempts=attempts,
                              provider=provider_name or (attempts[-1].provider if attempts else ""),
                              latency_ms=elapsed_ms(), requested=requested)
        await spend.release(hold)
        raise
    except Exception:
        await _record_failure(ServerError("internal error"), endpoint=endpoint, organization=organization,
                              api_key=api_key, request_id=request_id, data=data, call=call, attempts=attempts,
                              provider=provider_name, latency_ms=elapsed_ms(), requested=requested)
        await spend.release(hold)
        raise
    await spend.settle(hold, entry.cost_micros)
    return Outcome(body=body, provider=provider_name, cost_micros=entry.cost_micros, headers=headers)


ZERO_TOKENS = {"input_tokens": 0, "input_tokens_details": {"text_tokens": 0, "image_tokens": 0}, "output_tokens": 0,
               "total_tokens": 0}


def _served_model(model: str, result: pb.ProviderResult | None) -> str:
    """The dated model that served the request when the upstream named one other than `model`, else ""."""
    served = result.served_model if result is not None else None
    return served if served and served != model else ""


def usage_block(call: ImageCall, *, cost_micros: int, latency: int, result: pb.ProviderResult | None = None) -> dict:
    """The response's `usage`: OpenAI's token fields (input_tokens, input_tokens_details {text_tokens, image_tokens},
    output_tokens, total_tokens, and output_tokens_details when the upstream gives them) — the upstream's own counts
    when it reports them (OpenAI's GPT image models), else zeros — beside ours: `cost` (USD, the ledger row's: unit
    price × n), `latency_ms`, `image_size` (the size produced), `model_used` (for an alias such as
    chatgpt-image-latest, the dated model the upstream says served it; else the model asked for). Streaming's
    completed event carries the same block."""
    req = call.request
    tokens = result.usage if result is not None and result.usage else ZERO_TOKENS
    block = {key: dict(value) if isinstance(value, dict) else value for key, value in tokens.items()}
    block.update({
        "cost": money.api_number(cost_micros),
        "latency_ms": latency,
        "image_size": req.size,
        "model_used": (_served_model(req.model, result) if call.spec.alias_of else "") or req.model,
    })
    return block


def _response_body(call: ImageCall, items: list[dict], *, cost_micros: int, latency: int,
                   result: pb.ProviderResult | None = None) -> dict:
    """OpenAI's ImagesResponse with our `usage` (usage_block). GPT image models (those with output formats) also
    answer what was produced, as OpenAI does: `background` ("transparent"/"opaque", as the upstream said; absent
    when nobody knows), `output_format`, `quality` and `size` ("auto" resolved: by the upstream's answer, else as
    priced). `result` is the upstream's result (None: nothing more is known than the request)."""
    req = call.request
    body = {"created": int(time.time()), "data": items}
    if call.spec.output_formats:
        background = (result.resolved_background if result is not None else None) or req.options.get("background")
        if background in ("transparent", "opaque"):
            body["background"] = background
        body["output_format"] = ((result.resolved_output_format if result is not None else None)
                                 or req.options.get("output_format"))
        if req.quality in ("low", "medium", "high"):
            body["quality"] = req.quality
        if req.size != "auto":
            body["size"] = req.size
    body["usage"] = usage_block(call, cost_micros=cost_micros, latency=latency, result=result)
    return body


def _is_duplicate(exc: BaseException) -> bool:
    """The database refused a second row for a unique key (Django's IntegrityError or psycopg's own)."""
    from django.db import IntegrityError

    try:
        from psycopg.errors import UniqueViolation
    except ImportError:  # pragma: no cover - psycopg is a dependency
        UniqueViolation = IntegrityError
    return isinstance(exc, (IntegrityError, UniqueViolation))


async def _price_and_hold(call: ImageCall, organization, api_key):
    """Price the request (refusing what we could not price) and hold its cost against the spend limits, from caches
    and Redis: no database round trip. Returns (price, or None for "auto" sizes/qualities; the hold)."""
    req = call.request
    price = None
    if "auto" not in (req.size, req.quality):
        price = await _price(req.model, req.size, req.quality)
    estimate = price or await _price(req.model, catalog.AUTO_SIZE if req.size == "auto" else req.size,
                                     catalog.AUTO_QUALITY if req.quality == "auto" else req.quality)
    key_ceiling = getattr(api_key, "max_cost_micros", None)
    if call.max_cost_micros is not None or key_ceiling:  # checked before any upstream call; "auto": the dearest
        quote.check_ceiling(await quote.quote(call.spec, size=req.size, quality=req.quality, n=req.n),
                            max_cost_micros=call.max_cost_micros, key_default_micros=key_ceiling)
    try:
        limits = await spend.limits_for(organization=organization, api_key=api_key, end_user=call.end_user)
        hold = await spend.reserve(limits=limits, amount_micros=estimate.unit_price_micros * req.n)
    except spend.SpendLimitExceeded as exc:
        metrics.count_spend_limit_refusal(exc.limit)
        raise InsufficientQuota(exc.message) from exc
    return price, hold


async def _price(model: str, size: str, quality: str):
    price = await billing_selectors.current_price_async(model=model, size=size, quality=quality)
    if price is None:  # never serve an image we would record at $0 by accident
        log.error("No price for %s %s %s", model, size, quality)
        raise ServerError(f"Model '{model}' is not available at size {size} and quality {quality} right now "
                          "(no price is configured).", status=503, code="model_unavailable")
    return price


def _attempt_rows(attempts: list, *, organization, request_id: str, call) -> list[ProviderAttempt]:
    """The audit trail of every upstream call made for the request (written with its ledger row)."""
    return [ProviderAttempt(organization=organization, request_id=request_id, attempt=i, provider=a.provider,
                            model=call.request.model if call else "", status=a.status, error_type=a.error_type,
                            error=a.error, latency_ms=a.latency_ms, started_at=a.started_at)
            for i, a in enumerate(attempts)]


async def _moderate(call: ImageCall) -> None:
    """Refuse before any upstream call when the prompt breaks the content policy."""
    if not call.request.prompt:
        return
    verdict = await moderation.check_text_async(call.request.prompt)
    if verdict.flagged:
        log.info("Prompt refused by moderation (category %s)", verdict.category)
        raise ContentPolicyViolation(REFUSAL_MESSAGE, param="prompt")


async def _with_fetched_image(call: ImageCall) -> ImageCall:
    """Fetch generations' `image` URL safely and check it as an input image of the model."""
    from generation.pipeline import fetch
    from generation.pipeline import input_images as images

    try:
        fetched = await fetch.fetch_image(call.image_url, max_bytes=call.spec.input_images.max_bytes)
    except fetch.ImageFetchError as exc:
        raise InvalidRequest(exc.message, param="image", code="invalid_image_url") from exc
    spec = call.spec
    keep, limit = images.keep_policy(spec, call.request.size)
    kept = images.current_kept()
    known = images.header(fetched.data, param="image", max_pixels=spec.input_images.max_pixels)
    if keep and kept is not None:
        await kept.reserve(images.kept_size(known[1], known[2], limit))
    image = await images.inspect(fetched.data, param="image", filename="image", rules=spec.input_images,
                                 keep_pixels=keep and kept is not None, limit=limit, known=known)
    images.check_one(image, spec.input_images, spec, param="image")
    return dataclasses.replace(call, request=dataclasses.replace(call.request, images=(image,)))


async def _deliver(images: list[pb.GeneratedImage], *, call: ImageCall, request_id: str,
                   base_url: str) -> tuple[list[dict], list[storage.SavedImage]]:
    """The response's `data` items; for URL delivery the files are saved first (their rows are written with the
    ledger row, so a URL is handed out only for an image the ledger knows)."""
    items, saved = [], []
    if call.response_format != "b64_json":
        saved = await asyncio.to_thread(storage.save_files, request_id=request_id, images=images)
    for index, image in enumerate(images):
        item: dict = {}
        if call.response_format == "b64_json":
            item["b64_json"] = base64.b64encode(image.data).decode("ascii")
        else:
            item["url"] = base_url.rstrip("/") + storage.signed_path(saved[index].name, saved[index].content_type)
        if call.endpoint != "variations":
            item["revised_prompt"] = image.revised_prompt if image.revised_prompt is not None else call.request.prompt
        items.append(item)
    return items, saved


async def _discard(saved: list) -> None:
    if saved:
        await asyncio.to_thread(storage.delete_files, saved)


def _printable(value) -> str:
    """What a client sent, made storable: text without NUL, valid UTF-8."""
    text = str(value or "").replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8")


def _text_rows(exc: APIError, *, organization, request_id: str, data, call) -> list:
    """The failed request's prompt (as sent, per the organization's retention) and full error message."""
    prompt = call.request.prompt if call is not None else (data.get("prompt") if isinstance(data, dict) else None)
    text = prompts.row_for(organization=organization, request_id=request_id, prompt=prompt,
                           error_message=exc.message)
    return [text] if text is not None else []


async def _record_failure(exc: APIError, *, endpoint, organization, api_key, request_id, data, call, attempts,
                          provider, latency_ms, requested: str | None = None):
    """The failed request's ledger row (cost 0) and its attempts, in one transaction."""
    if call is not None:
        req = call.request
        fields = {"model": req.model, "size": req.size, "quality": req.quality, "n": req.n, "end_user": call.end_user}
    else:  # invalid before validation finished: keep what the client sent, as text
        raw = data if isinstance(data, dict) else {}
        fields = {k: _printable(raw.get(k)) for k in ("model", "size", "quality")}
        named = raw.get("safety_identifier") or raw.get("user")
        fields["end_user"] = _printable(named)[:256] if isinstance(named, str) else ""
        n = raw.get("n")
        fields["n"] = n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1000 else 0
    fields["requested_model"] = _printable(requested) if requested is not None else fields["model"]

    try:
        await commit.commit(commit.Write(
            usage=dict(organization=organization, api_key=api_key, request_id=request_id, endpoint=endpoint,
                       status=_status_for(exc), provider=provider, latency_ms=latency_ms,
                       error_code=exc.code or exc.type, **fields),
            rows=[*_attempt_rows(attempts, organization=organization, request_id=request_id, call=call),
                  *_text_rows(exc, organization=organization, request_id=request_id, data=data, call=call)],
        ))
    except Exception:  # the client's error matters more than our audit row; log loudly, answer with the error
        log.exception("Could not record failed request %s", request_id)
