"""Choosing and failing over between the providers that serve a model.

Order: the `provider` the client named, alone; otherwise every enabled provider serving the model, healthy before
degraded before open circuits (health.py), then cheapest upstream cost, then lowest latency. Open circuits are
skipped; a half-open one gets one trial request at a time. A retryable failure (timeout, 5xx, connection error,
malformed reply, upstream 429) moves on to the next provider; a refusal or an upstream validation error ends the
request at once (another upstream would refuse the same prompt, and must not be paid to try). Every attempt is
appended to `attempts` for the audit trail, whatever happens.
"""
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from config.observability import metrics
from generation.catalog import ModelSpec
from generation.pipeline.health import HALF_OPEN, OPEN, HealthBook
from generation.providers import base as pb


@dataclass(frozen=True)
class Attempt:
    provider: str
    started_at: datetime
    latency_ms: int
    status: str  # succeeded | failed | refused | invalid
    error: str = ""
    error_type: str = ""


class NoHealthyProvider(pb.UpstreamUnavailable):
    """Every provider of the model has an open circuit (or is trialling): answer 503, retry later."""


def _status(exc: pb.ProviderError) -> str:
    if isinstance(exc, pb.ContentRefused):
        return "refused"
    if isinstance(exc, pb.UpstreamInvalidRequest):
        return "invalid"
    return "failed"


def candidates(spec: ModelSpec, providers: dict[str, pb.Provider]) -> list[str]:
    return [name for name in spec.providers if name in providers and spec.id in providers[name].serves()]


async def route(
    *,
    spec: ModelSpec,
    request: pb.ImageRequest,
    providers: dict[str, pb.Provider],
    health: HealthBook,
    explicit: str | None,
    call: Callable[[pb.Provider, pb.ImageRequest], Awaitable[pb.ProviderResult]],
    attempts: list[Attempt],
) -> tuple[pb.ProviderResult, str]:
    names = candidates(spec, providers)
    if explicit is not None:
        if explicit not in names:
            raise pb.UpstreamUnavailable(f"Provider '{explicit}' is not enabled for model '{spec.id}' on this "
                                         "deployment.", provider=explicit)
        names = [explicit]
    if not names:
        raise pb.UpstreamUnavailable(f"No provider for model '{spec.id}' is enabled.")
    states = await health.read(names)
    now = time.time()
    ordered = sorted(names, key=lambda n: (states[n].tier(now), providers[n].upstream_cost_micros(request),
                                           states[n].latency_ms))
    last_error: pb.ProviderError | None = None
    for name in ordered:
        state = states[name].state(now)
        if explicit is None and (state == OPEN or (state == HALF_OPEN and not await health.try_trial(name))):
            continue
        started, t0 = datetime.now(UTC), time.monotonic()
        try:
            result = await call(providers[name], request)
        except pb.ProviderError as exc:
            latency = int((time.monotonic() - t0) * 1000)
            # A refusal or a validation error means the upstream is working: it counts as healthy.
            await health.record(name, ok=not exc.retryable, latency_ms=latency)
            metrics.count_upstream_attempt(name, spec.id, _status(exc), latency / 1000, type(exc).__name__)
            attempts.append(Attempt(provider=name, started_at=started, latency_ms=latency, status=_status(exc),
                                    error=exc.message[:500], error_type=type(exc).__name__))
            if not exc.retryable:
                raise
            last_error = exc
            continue
        except Exception as exc:  # a bug in an adapter: record it, count it, and let the 500 handler answer
            latency = int((time.monotonic() - t0) * 1000)
            await health.record(name, ok=False, latency_ms=latency)
            metrics.count_upstream_attempt(name, spec.id, "failed", latency / 1000, type(exc).__name__)
            attempts.append(Attempt(provider=name, started_at=started, latency_ms=latency, status="failed",
                                    error=repr(exc)[:500], error_type=type(exc).__name__))
            raise
        latency = int((time.monotonic() - t0) * 1000)
        await health.record(name, ok=True, latency_ms=latency)
        metrics.count_upstream_attempt(name, spec.id, "succeeded", latency / 1000)
        attempts.append(Attempt(provider=name, started_at=started, latency_ms=latency, status="succeeded"))
        return result, name
    if last_error is not None:
        raise last_error
    retry_in = max(1, int(min(states[n].open_until for n in ordered) - now)) if ordered else 1
    raise NoHealthyProvider(f"Every provider for model '{spec.id}' is failing right now; retry in about "
                            f"{retry_in} s.")
