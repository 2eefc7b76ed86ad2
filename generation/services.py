"""The generation service: one request from validated input to stored images, a ledger row and OpenAI's response.

Async end to end: upstream waits never hold a thread. Database work (prices, storage rows, the ledger) is short
and runs through sync_to_async.
"""
import base64
import logging
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async

from accounts.models import ApiKey, Organization
from billing import selectors as billing_selectors
from billing import services as billing_services
from billing.models import LedgerEntry

from . import storage
from .errors import APIError, ContentPolicyViolation, InvalidRequest, RateLimited, ServerError, UpstreamError
from .providers import base as pb
from .providers import registry
from .validation import GenerationCall, validate_generation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationOutcome:
    body: dict
    provider: str


def _map_provider_error(exc: pb.ProviderError) -> APIError:
    if isinstance(exc, pb.ContentRefused):
        return ContentPolicyViolation(
            "Your request was rejected as a result of our safety system. Your prompt may contain text that is not "
            "allowed by the content policy.",
            param="prompt",
        )
    if isinstance(exc, pb.UpstreamInvalidRequest):
        return InvalidRequest(exc.message, code="invalid_parameter")
    if isinstance(exc, pb.UpstreamRateLimited):
        return RateLimited("The upstream provider is rate limiting requests. Please retry shortly.",
                           headers={"retry-after": "1"})
    if isinstance(exc, pb.UpstreamTimeout):
        return UpstreamError(f"The upstream provider did not answer in time ({exc.message}).", status=504,
                             code="upstream_timeout")
    return UpstreamError(f"The upstream provider failed: {exc.message}", status=502)


def _status_for(exc: APIError) -> str:
    if isinstance(exc, ContentPolicyViolation):
        return LedgerEntry.Status.REFUSED
    if exc.status in (400, 404) and not isinstance(exc, UpstreamError):
        return LedgerEntry.Status.INVALID
    return LedgerEntry.Status.FAILED


async def generate(
    *, organization: Organization, api_key: ApiKey | None, request_id: str, data, base_url: str
) -> GenerationOutcome:
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    call: GenerationCall | None = None
    provider_name = ""
    price = None
    try:
        call = validate_generation(data)
        req = call.request
        price = await sync_to_async(billing_selectors.current_price)(model=req.model, size=req.size,
                                                                      quality=req.quality)
        if price is None:  # never serve an image we would record at $0 by accident
            log.error("No price for %s %s %s", req.model, req.size, req.quality)
            raise ServerError(f"Model '{req.model}' is not available at size {req.size} and quality {req.quality} "
                              "right now (no price configured).", status=503, code="model_unavailable")
        provider_name = call.provider or call.spec.providers[0]
        provider = registry().get(provider_name)
        if provider is None:
            raise ServerError(f"Provider '{provider_name}' is not enabled.", status=503, code="provider_unavailable")
        try:
            result = await provider.generate(req)
        except pb.ProviderError as exc:
            raise _map_provider_error(exc) from exc
        if len(result.images) != req.n:
            raise UpstreamError(f"The upstream provider returned {len(result.images)} images instead of {req.n}.")
        items = await _deliver(result.images, call=call, organization_id=organization.pk, request_id=request_id,
                               base_url=base_url)
        latency = elapsed_ms()
        entry = await sync_to_async(billing_services.record_usage)(
            organization=organization, api_key=api_key, request_id=request_id,
            status=LedgerEntry.Status.SUCCEEDED, model=req.model, provider=provider_name, size=req.size,
            quality=req.quality, n=req.n, price=price, latency_ms=latency,
            upstream_cost_micros=result.upstream_cost_micros,
        )
    except APIError as exc:
        await _record_failure(exc, organization=organization, api_key=api_key, request_id=request_id, data=data,
                              call=call, provider=provider_name, latency_ms=elapsed_ms())
        raise
    body = {
        "created": int(time.time()),
        "data": items,
        "usage": {
            "cost": round(entry.cost_micros / 1_000_000, 6),
            "latency_ms": latency,
            "image_size": req.size,
            "model_used": req.model,
        },
    }
    return GenerationOutcome(body=body, provider=provider_name)


async def _deliver(images: list[pb.GeneratedImage], *, call: GenerationCall, organization_id: int, request_id: str,
                   base_url: str) -> list[dict]:
    items = []
    for index, image in enumerate(images):
        item: dict = {}
        if call.response_format == "b64_json":
            item["b64_json"] = base64.b64encode(image.data).decode("ascii")
        else:
            stored = await sync_to_async(storage.store_image)(
                organization_id=organization_id, request_id=request_id, index=index, data=image.data,
                content_type=image.content_type,
            )
            item["url"] = base_url.rstrip("/") + storage.signed_path(stored)
        item["revised_prompt"] = image.revised_prompt if image.revised_prompt is not None else call.request.prompt
        items.append(item)
    return items


async def _record_failure(exc: APIError, *, organization, api_key, request_id, data, call, provider, latency_ms):
    if call is not None:
        req = call.request
        fields = {"model": req.model, "size": req.size, "quality": req.quality, "n": req.n}
    else:  # invalid before validation finished: keep what the client sent, as text
        raw = data if isinstance(data, dict) else {}
        fields = {k: str(raw.get(k) or "") for k in ("model", "size", "quality")}
        fields["n"] = raw.get("n") if isinstance(raw.get("n"), int) and 0 <= raw.get("n") < 1000 else 0
    try:
        await sync_to_async(billing_services.record_usage)(
            organization=organization, api_key=api_key, request_id=request_id, status=_status_for(exc),
            provider=provider, latency_ms=latency_ms, error_code=exc.code or exc.type, **fields,
        )
    except Exception:  # the client's error matters more than our audit row; log loudly, answer with the error
        log.exception("Could not record failed request %s", request_id)
