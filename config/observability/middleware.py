"""Counts and logs every API request (settings.API_MIDDLEWARE, after the request-id middleware).

The view tells what only it knows through `observe(request, ...)`: the organization and key prefix once the key is
authenticated, the model once it is known to the catalog (anything else is counted as model "other", so a client
cannot make new series), the provider that served it and the micro-USD it was charged. The endpoint is the URL
pattern's name (settings' URLconf), "unmatched" before routing. A streamed answer (Server-Sent Events) is counted
and logged when its stream ends.
"""
from __future__ import annotations

import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from . import logs, metrics

_DEFAULTS = {"organization_id": None, "key_prefix": "", "model": "", "provider": "", "cost_micros": 0}


def observe(request, **fields) -> None:
    """Record `fields` (organization_id, key_prefix, model, provider, cost_micros) for the request's access line and
    metrics; a no-op for requests outside the API middleware (pages, tests calling a view directly)."""
    observed = getattr(request, "observed", None)
    if observed is not None:
        observed.update(fields)


class ObservabilityMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        started = time.perf_counter()
        request.observed = dict(_DEFAULTS)
        response = self.get_response(request)
        return _record_when_done(request, response, started)

    async def _acall(self, request):
        started = time.perf_counter()
        request.observed = dict(_DEFAULTS)
        response = await self.get_response(request)
        return _record_when_done(request, response, started)


def _record_when_done(request, response, started: float):
    """Record now, or for a streamed response (Server-Sent Events) once its last byte went out or the client left:
    the provider, the cost and the latency are known only then."""
    if not getattr(response, "streaming", False):
        _record(request, response, started)
        return response
    content = response.streaming_content
    if response.is_async:
        async def recorded():
            try:
                async for part in content:
                    yield part
            finally:
                _record(request, response, started)
    else:
        def recorded():
            try:
                yield from content
            finally:
                _record(request, response, started)
    response.streaming_content = recorded()
    return response


def _record(request, response, started: float) -> None:
    seconds = time.perf_counter() - started
    observed = request.observed
    match = getattr(request, "resolver_match", None)
    endpoint = (match.url_name or "unnamed") if match is not None else "unmatched"
    status = response.status_code
    metrics.count_request(endpoint, observed["model"], observed["provider"], status, seconds)
    path = request.path
    if not path.startswith("/v1/"):  # a signed image URL's token grants the image: not for the logs
        path = "/" + path.split("/", 2)[1] + "/…"
    logs.log_request({
        "request_id": getattr(request, "request_id", None), "method": request.method, "path": path,
        "endpoint": endpoint, "status": status, "latency_ms": round(seconds * 1000, 1), **observed,
    })
