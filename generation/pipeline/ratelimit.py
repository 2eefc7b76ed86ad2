"""Rate limits on the /v1 API: requests per minute per API key and per organization.

Limits. A key may make `ApiKey.rate_limit_rpm` requests per minute (`RATE_LIMIT_DEFAULT_RPM` when that is 0); an
organization's keys together may make `Organization.rate_limit_rpm` (0 = no organization-wide limit). A request must
pass both, and a request that is refused consumes nothing: one refused by the organization's limit does not use up the
key's budget, and vice versa.

Algorithm: GCRA (the generic cell rate algorithm, i.e. a token bucket kept as one timestamp). Each bucket stores a
single number, its "theoretical arrival time" (TAT): the moment it would be full again. A request adds one emission
interval (60 s / limit) to it and is allowed while the TAT stays within one minute of now. Why GCRA rather than the
alternatives:
  * it has OpenAI's semantics exactly: a key with limit N can make N requests at once, then one more every 60/N s;
    `remaining` is how many it could make right now and `reset` is the time until the bucket is back to its initial
    state (TAT - now), which is what `x-ratelimit-reset-requests` means;
  * O(1) state and work: one integer per bucket (a sliding-window log keeps one entry per request: 10,000 for a
    10,000-rpm key), and the key expires by itself when the bucket is full again (PX = TAT - now);
  * it is exact: no double burst at window edges (fixed windows) and no approximation (sliding-window counter).
Times are integer microseconds and the interval is rounded up to a whole microsecond, so the arithmetic is exact in
Lua's doubles and a limit of N allows exactly N at once, never N+1.

Atomicity. With Redis (REDIS_URL set) both buckets are checked and, only if both allow, advanced by one Lua script
(EVALSHA, one round trip, no database query: the key and organization rows were loaded by authentication). The
script takes its clock from Redis (TIME), so every process and host agrees on "now". Keys:
    <cache prefix>:ratelimit:{org:<organization id>}:key:<api key id>    the key's bucket
    <cache prefix>:ratelimit:{org:<organization id>}                     the organization's bucket
The `{org:…}` hash tag keeps both in one Redis Cluster slot. Without Redis (the embedded default, LocMemCache) the
same algorithm runs in-process under a lock, so `make run` limits too (per process, which is what a single process
needs). If Redis is unreachable the request is let through without headers and a warning is logged: an outage of
the limiter must not become an outage of the API.

Headers (OpenAI's): every authenticated /v1 response carries `x-ratelimit-limit-requests` (the binding limit: the
bucket with the fewest requests left), `x-ratelimit-remaining-requests` and `x-ratelimit-reset-requests` (a duration
like "1s", "6m0s", "12ms", "1m30.5s"). A refusal is a 429 (`type: requests`, `code: rate_limit_exceeded`) with
`retry-after` (whole seconds, at least 1) and `retry-after-ms`, which the OpenAI SDKs honour.

Wiring: `RequestRateThrottle` is a DRF throttle (DRF runs throttles after authentication, in `APIView.initial`); it
leaves its decision on the Django request as `request.rate_limit`, and `RateLimitHeadersMiddleware` copies the
headers onto the response, so errors raised later by the view (400, 404, ...) carry them too.
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from redis.exceptions import NoScriptError, RedisError
from rest_framework.throttling import BaseThrottle

from config.observability import metrics
from generation.errors import RateLimited

log = logging.getLogger(__name__)

PERIOD_US = 60_000_000  # the limits are per minute

HEADER_LIMIT = "x-ratelimit-limit-requests"
HEADER_REMAINING = "x-ratelimit-remaining-requests"
HEADER_RESET = "x-ratelimit-reset-requests"


# --- Durations in OpenAI's format -------------------------------------------------------------------------------------

def format_duration(seconds: float) -> str:
    """A duration as OpenAI writes it in `x-ratelimit-reset-*`: "12ms", "1s", "1.5s", "1m30.5s", "6m0s", "1h0m0s".

    Rounded up to a whole millisecond (a client that waits this long is never early); zero or less is "0s".
    """
    ms = math.ceil(seconds * 1000 - 1e-6) if seconds > 0 else 0
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    text = f"{hours}h" if hours else ""
    if hours or minutes:
        text += f"{minutes}m"
    text += str(whole)
    if frac:
        text += f".{frac:03d}".rstrip("0")
    return text + "s"


# --- Decisions --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bucket:
    """One limit's state after a request: `remaining` requests could be made now, full again in `reset_us`;
    `retry_us` > 0 only when this bucket refused the request (then it is the wait until it would allow it)."""

    scope: str  # "key" or "organization"
    label: str  # how the message names it, e.g. "API key ig_Ab3dE6gH…" (never the secret)
    limit: int
    remaining: int
    reset_us: int
    retry_us: int = 0

    @property
    def used(self) -> int:
        return self.limit - self.remaining


@dataclass(frozen=True)
class Decision:
    allowed: bool
    buckets: tuple[Bucket, ...]  # only the limits that apply (an organization without a limit has none)

    @property
    def binding(self) -> Bucket | None:
        """The bucket to report: when refused, the one that makes the client wait longest; otherwise the one with the
        fewest requests left (ties: the one that takes longer to refill)."""
        if not self.buckets:
            return None
        if not self.allowed:
            return max((b for b in self.buckets if b.retry_us > 0), key=lambda b: b.retry_us)
        return min(self.buckets, key=lambda b: (b.remaining, -b.reset_us))

    @property
    def retry_after_us(self) -> int:
        return max((b.retry_us for b in self.buckets), default=0)

    def headers(self) -> dict[str, str]:
        """The x-ratelimit-* headers (plus retry-after and retry-after-ms when refused)."""
        bucket = self.binding
        if bucket is None:
            return {}
        headers = {
            HEADER_LIMIT: str(bucket.limit),
            HEADER_REMAINING: str(bucket.remaining),
            HEADER_RESET: format_duration(bucket.reset_us / 1e6),
        }
        if not self.allowed:
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after_us / 1e6)))
            headers["retry-after-ms"] = str(max(1, math.ceil(self.retry_after_us / 1e3)))
        return headers

    def message(self) -> str:
        bucket = self.binding
        return (
            f"Rate limit reached for requests on {bucket.label}: limit {bucket.limit} / min, used {bucket.used}. "
            f"Please try again in {format_duration(self.retry_after_us / 1e6)}."
        )


# --- The limiters: Redis (shared by all processes) and in-process (the embedded default) ------------------------------

# KEYS[i]: one bucket per limit. ARGV[1]: now in µs ("" = Redis's clock), ARGV[2]: the period in µs,
# ARGV[2 + i]: the limit of KEYS[i] (0 = no limit). Returns {allowed, then per key: limit, remaining, reset, retry}.
# Keep in step with LocalLimiter._hit.
_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local period = tonumber(ARGV[2])
local allowed = 1
local state = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 + i])
  local s = {limit = limit}
  if limit > 0 then
    s.interval = math.ceil(period / limit)
    s.capacity = s.interval * limit
    local tat = tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
    s.tat = tat
    s.backlog = tat - now + s.interval
    if s.backlog > s.capacity then
      allowed = 0
      s.retry = s.backlog - s.capacity
    end
  end
  state[i] = s
end
local out = {allowed}
for i, key in ipairs(KEYS) do
  local s = state[i]
  if s.limit > 0 and allowed == 1 then
    redis.call('SET', key, string.format('%.0f', s.tat + s.interval),
               'PX', string.format('%.0f', math.ceil(s.backlog / 1000)))
    out[#out + 1] = s.limit
    out[#out + 1] = math.floor((s.capacity - s.backlog) / s.interval)
    out[#out + 1] = s.backlog
    out[#out + 1] = 0
  elseif s.limit > 0 then
    out[#out + 1] = s.limit
    out[#out + 1] = math.floor((s.capacity - (s.tat - now)) / s.interval)
    out[#out + 1] = s.tat - now
    out[#out + 1] = s.retry or 0
  else
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = 0
  end
end
return out
"""


class RedisLimiter:
    """The buckets live in Redis; one EVALSHA checks and advances all of a request's buckets atomically."""

    script = _LUA
    sha = hashlib.sha1(_LUA.encode()).hexdigest()

    def hit(self, keys: list[str], limits: list[int], *, now_us: int | None = None) -> list[int]:
        from django_redis import get_redis_connection

        client = get_redis_connection("default")
        args = ["" if now_us is None else str(int(now_us)), str(PERIOD_US), *(str(int(n)) for n in limits)]
        try:
            return [int(x) for x in client.evalsha(self.sha, len(keys), *keys, *args)]
        except NoScriptError:  # first use on this server (or after SCRIPT FLUSH / a restart): load it, once
            client.script_load(self.script)
            return [int(x) for x in client.evalsha(self.sha, len(keys), *keys, *args)]


class LocalLimiter:
    """The same algorithm in this process, under a lock: the embedded default (no Redis), per process."""

    SWEEP_EVERY = 1024

    def __init__(self):
        self._lock = threading.Lock()
        self._tats: dict[str, int] = {}
        self._hits = 0

    def reset(self) -> None:
        with self._lock:
            self._tats.clear()

    def hit(self, keys: list[str], limits: list[int], *, now_us: int | None = None) -> list[int]:
        with self._lock:
            now = time.time_ns() // 1000 if now_us is None else int(now_us)
            out = self._hit(keys, limits, now)
            self._hits += 1
            if self._hits % self.SWEEP_EVERY == 0:  # forget full buckets (Redis expires them with PX)
                self._tats = {k: tat for k, tat in self._tats.items() if tat > now}
            return out

    def _hit(self, keys: list[str], limits: list[int], now: int) -> list[int]:
        allowed = 1
        state = []
        for key, limit in zip(keys, limits):
            if limit <= 0:
                state.append(None)
                continue
            interval = -(-PERIOD_US // limit)
            capacity = interval * limit
            tat = max(self._tats.get(key, now), now)
            backlog = tat - now + interval
            retry = backlog - capacity if backlog > capacity else 0
            if retry:
                allowed = 0
            state.append((limit, interval, capacity, tat, backlog, retry))
        out = [allowed]
        for key, s in zip(keys, state):
            if s is None:
                out += [0, 0, 0, 0]
                continue
            limit, interval, capacity, tat, backlog, retry = s
            if allowed:
                self._tats[key] = tat + interval
                out += [limit, (capacity - backlog) // interval, backlog, 0]
            else:
                out += [limit, (capacity - (tat - now)) // interval, tat - now, retry]
        return out


_local_limiter = LocalLimiter()
_redis_limiter = RedisLimiter()


def get_limiter() -> RedisLimiter | LocalLimiter:
    """Redis when REDIS_URL is set (the cache is django-redis), else the in-process limiter."""
    return _redis_limiter if settings.REDIS_URL else _local_limiter


def bucket_keys(api_key, organization) -> tuple[str, str]:
    """The Redis keys of (the key's bucket, the organization's bucket)."""
    prefix = settings.CACHES["default"].get("KEY_PREFIX") or "ig"
    org = f"{prefix}:ratelimit:{{org:{organization.pk}}}"
    return f"{org}:key:{api_key.pk if api_key is not None else '-'}", org


def check(api_key, organization, *, now_us: int | None = None) -> Decision:
    """Count one request against the key's and the organization's limits (only if both allow it)."""
    key_limit = api_key.rate_limit_rpm or settings.RATE_LIMIT_DEFAULT_RPM
    keys = list(bucket_keys(api_key, organization))
    raw = get_limiter().hit(keys, [key_limit, organization.rate_limit_rpm], now_us=now_us)
    return _decision(api_key, organization, raw)


def check_playground(user, organization) -> Decision:
    """Count one playground generation against the organization's limit and the person's own (the default key
    limit, as if the playground were one more key): the playground spends like the API, so it is limited like it."""
    org_bucket = bucket_keys(None, organization)[1]
    keys = [f"{org_bucket}:user:{user.pk}", org_bucket]
    raw = get_limiter().hit(keys, [settings.RATE_LIMIT_DEFAULT_RPM, organization.rate_limit_rpm])
    labels = [("key", "your playground"), ("organization", f"organization {organization.slug}")]
    return _decision(None, organization, raw, labels=labels)


_async_scripts: dict = {}


async def acheck(api_key, organization) -> Decision:
    """`check` from async code: one EVALSHA on the async Redis client (no thread), or the in-process limiter."""
    from config import redis as shared_redis

    key_limit = api_key.rate_limit_rpm or settings.RATE_LIMIT_DEFAULT_RPM
    keys = list(bucket_keys(api_key, organization))
    limits = [key_limit, organization.rate_limit_rpm]
    if not settings.REDIS_URL:
        return _decision(api_key, organization, _local_limiter.hit(keys, limits))
    client = shared_redis.async_client()
    script = _async_scripts.get(id(client))
    if script is None:
        script = _async_scripts[id(client)] = client.register_script(_LUA)
    raw = await script(keys=keys, args=["", str(PERIOD_US), *(str(int(n)) for n in limits)])
    return _decision(api_key, organization, [int(x) for x in raw])


async def enforce(request, api_key, organization) -> None:
    """Count the request; leave the decision on `request` for the headers; raise RateLimited when refused. If Redis
    is unreachable the request goes through unlimited (logged): an outage of the limiter is not one of the API."""
    try:
        decision = await acheck(api_key, organization)
    except (RedisError, OSError):
        log.warning("Rate limiter unavailable; request %s not limited", getattr(request, "request_id", "?"),
                    exc_info=True)
        return
    request.rate_limit = decision
    if not decision.allowed:
        metrics.count_rate_limit_refusal(decision.binding.scope)
        raise RateLimited(decision.message(), headers=decision.headers())


def _decision(api_key, organization, raw: list[int], labels=None) -> Decision:
    labels = labels or [("key", f"API key {api_key.prefix}…"), ("organization", f"organization {organization.slug}")]
    buckets = []
    for i, (scope, label) in enumerate(labels):
        limit, remaining, reset_us, retry_us = raw[1 + 4 * i: 5 + 4 * i]
        if limit > 0:
            buckets.append(Bucket(scope, label, limit, remaining, reset_us, retry_us))
    return Decision(allowed=bool(raw[0]), buckets=tuple(buckets))


# --- Enforcement: a DRF throttle, and a middleware for the headers ---------------------------------------------------

class RequestRateThrottle(BaseThrottle):
    """Refuses a request over its key's or organization's limit with a 429 in OpenAI's shape.

    Sync code: DRF (and adrf, through sync_to_async) calls throttles from `initial()` in a worker thread.
    """

    def allow_request(self, request, view) -> bool:
        principal = request.user
        api_key = getattr(principal, "api_key", None)
        if api_key is None:  # not called with an API key: nothing to count against
            return True
        try:
            decision = check(api_key, principal.organization)
        except RedisError:  # the limiter is down: serve rather than fail every request
            log.warning("Rate limiter unavailable; request %s not limited", getattr(request, "request_id", "?"),
                        exc_info=True)
            return True
        request._request.rate_limit = decision
        if not decision.allowed:
            metrics.count_rate_limit_refusal(decision.binding.scope)
            raise RateLimited(decision.message(), headers=decision.headers())
        return True

    def wait(self):
        return None


class RateLimitHeadersMiddleware:
    """Copies the throttle's x-ratelimit-* headers onto every /v1 response (successes and errors alike)."""

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
        return self._add_headers(request, self.get_response(request))

    async def _acall(self, request):
        return self._add_headers(request, await self.get_response(request))

    @staticmethod
    def _add_headers(request, response):
        decision = getattr(request, "rate_limit", None)
        if decision is not None and request.path.startswith("/v1"):
            for name, value in decision.headers().items():
                response[name] = value
        return response
