"""Choosing and failing over between the providers that serve a model.

Order: the `provider` the client named, alone; otherwise every enabled provider serving the model, healthy before
degraded before open circuits (health.py), then cheapest upstream cost, then lowest latency. Open circuits are
skipped; a half-open one gets one trial request at a time. A retryable failure (timeout, 5xx, connection error,
malformed reply, upstream 429) moves on to the next provider; a refusal or an upstream validation error ends the
request at once (another upstream would refuse the same prompt, and must not be paid to try). Every attempt is
appended to `attempts` for the audit trail, whatever happens.

An upstream that answers that the model no longer exists (ModelGone: OpenAI's 404 `model_not_found` for dall-e-2
and dall-e-3 since 2026-05-12) is not unhealthy: the router moves on to the next provider that serves the model (an
OpenAI-compatible host), remembers the answer for GONE_TTL seconds in this process so later requests go straight to
the others, and raises ModelGone only when every provider it could try said so (the service then answers like a
retired model: generation/lifecycle.py).
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


GONE_TTL = 600.0  # seconds a provider's "no such model" is believed before the provider is asked again
# (provider name, model) → (monotonic time until which it is skipped, id of the provider object that said so): a
# rebuilt provider registry (new configuration) starts with a clean slate.
_gone: dict[tuple[str, str], tuple[float, int]] = {}


def forget_gone() -> None:
    """Forget every remembered "no such model" answer (tests; configuration changes)."""
    _gone.clear()


def _is_gone(provider: str, instance: object, model: str, now: float) -> bool:
    entry = _gone.get((provider, model))
    if entry is None:
        return False
    until, instance_id = entry
    if until <= now or instance_id != id(instance):
        _gone.pop((provider, model), None)
        return False
    return True


class NoHealthyProvider(pb.UpstreamUnavailable):
    """Every provider of the model has an open circuit (or is trialling): answer 503, retry later."""


def _status(exc: pb.ProviderError) -> str:
    if isinstance(exc, pb.ContentRefused):
        return "refused"
    if isinstance(exc, pb.UpstreamInvalidRequest):
        return "invalid"
    if isinstance(exc, pb.ModelGone):
        return "gone"
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
    gone: pb.ModelGone | None = None
    if explicit is None:
        known_gone = [n for n in ordered if _is_gone(n, providers[n], spec.id, time.monotonic())]
        if known_gone and len(known_gone) == len(ordered):
            raise pb.ModelGone(f"No provider serves model '{spec.id}' any longer ({', '.join(known_gone)} said so "
                               "recently).", provider=known_gone[-1])
        ordered = [n for n in ordered if n not in known_gone]
    for name in ordered:
        state = states[name].state(now)
        if explicit is None and (state == OPEN or (state == HALF_OPEN and not await health.try_trial(name))):
            continue
        started, t0 = datetime.now(UTC), time.monotonic()
        try:
            result = await call(providers[name], request)
        except pb.ProviderError as exc:
            latency = int((time.monotonic() - t0) * 1000)
            is_gone = isinstance(exc, pb.ModelGone)
            # A refusal, a validation error or "no such model" means the upstream is working: it counts as healthy.
            await health.record(name, ok=not exc.retryable or is_gone, latency_ms=latency)
            metrics.count_upstream_attempt(name, spec.id, _status(exc), latency / 1000, type(exc).__name__)
            attempts.append(Attempt(provider=name, started_at=started, latency_ms=latency, status=_status(exc),
                                    error=exc.message[:500], error_type=type(exc).__name__))
            if not exc.retryable:
                raise
            if is_gone:
                _gone[(name, spec.id)] = (time.monotonic() + GONE_TTL, id(providers[name]))
                gone = exc
            else:
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
    if last_error is not None:  # something failed that may work on a retry: say that, not "gone"
        raise last_error
    if gone is not None:
        raise gone
    retry_in = max(1, int(min(states[n].open_until for n in ordered) - now)) if ordered else 1
    raise NoHealthyProvider(f"Every provider for model '{spec.id}' is failing right now; retry in about "
                            f"{retry_in} s.")
