"""Provider health shared across processes: error rate and latency (EWMAs) and a circuit breaker with cooldown.

With REDIS_URL the state lives in one Redis hash per provider, updated by a Lua script so concurrent processes
never lose an update; without it (the embedded default) in this process. The router reads it to order candidates
(healthy before degraded before open circuits; then price) and skips open circuits while a healthy one remains.

Breaker: after FAILURE_THRESHOLD consecutive failures a provider's circuit opens for COOLDOWN seconds; after that
it is half-open: one trial request at a time (a short lock) may go through; a success closes the circuit, a failure
opens it again.
"""
import asyncio
import threading
import time
import weakref
from dataclasses import dataclass

from django.conf import settings

ALPHA = 0.2  # EWMA weight of the newest observation
FAILURE_THRESHOLD = 5
COOLDOWN = 30.0
TRIAL_LOCK = 10.0
DEGRADED_ERROR_RATE = 0.2
READ_CACHE_SECONDS = 1.0
FLUSH_SECONDS = 0.1  # successes are written to Redis in one round trip per provider this often

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"


@dataclass(frozen=True)
class Health:
    provider: str
    error_rate: float = 0.0
    latency_ms: float = 0.0
    consecutive_failures: int = 0
    open_until: float = 0.0

    def state(self, now: float) -> str:
        if self.open_until == 0.0:
            return CLOSED
        return OPEN if now < self.open_until else HALF_OPEN

    def tier(self, now: float) -> int:
        """0 healthy, 1 degraded (high error rate or half-open), 2 open."""
        state = self.state(now)
        if state == OPEN:
            return 2
        if state == HALF_OPEN or self.error_rate >= DEGRADED_ERROR_RATE:
            return 1
        return 0


# One script records `count` outcomes of one kind (mean latency `latency`): EWMAs, the consecutive-failure count and
# the breaker, atomically. count outcomes at once move an EWMA by 1 - (1 - alpha)^count towards their value.
_RECORD = """
local key = KEYS[1]
local ok = tonumber(ARGV[1]); local latency = tonumber(ARGV[2]); local now = tonumber(ARGV[3])
local alpha = tonumber(ARGV[4]); local threshold = tonumber(ARGV[5]); local cooldown = tonumber(ARGV[6])
local count = tonumber(ARGV[7]) or 1
local h = redis.call('HMGET', key, 'err', 'lat', 'fails', 'open_until')
local err = tonumber(h[1]) or 0; local lat = tonumber(h[2]) or latency
local fails = tonumber(h[3]) or 0; local open_until = tonumber(h[4]) or 0
local observed = 1 - ok
local weight = 1 - (1 - alpha) ^ count
err = err + weight * (observed - err)
lat = lat + weight * (latency - lat)
if ok == 1 then
  fails = 0; open_until = 0
else
  fails = fails + 1
  if fails >= threshold then open_until = now + cooldown end
end
redis.call('HSET', key, 'err', tostring(err), 'lat', tostring(lat), 'fails', fails, 'open_until', tostring(open_until))
redis.call('EXPIRE', key, 86400)
return fails
"""


class _LocalStore:
    def __init__(self):
        self._lock = threading.Lock()
        self._state: dict[str, dict] = {}
        self._trials: dict[str, float] = {}

    async def read(self, names: list[str]) -> dict[str, Health]:
        with self._lock:
            return {n: Health(provider=n, **self._state[n]) if n in self._state else Health(provider=n) for n in names}

    async def record(self, name: str, *, ok: bool, latency_ms: float, now: float, count: int = 1) -> None:
        with self._lock:
            h = self._state.get(name, {"error_rate": 0.0, "latency_ms": latency_ms, "consecutive_failures": 0,
                                       "open_until": 0.0})
            h["error_rate"] += ALPHA * ((0.0 if ok else 1.0) - h["error_rate"])
            h["latency_ms"] += ALPHA * (latency_ms - h["latency_ms"])
            if ok:
                h["consecutive_failures"], h["open_until"] = 0, 0.0
            else:
                h["consecutive_failures"] += 1
                if h["consecutive_failures"] >= FAILURE_THRESHOLD:
                    h["open_until"] = now + COOLDOWN
            self._state[name] = h

    def snapshot(self, names: list[str]) -> dict[str, Health]:
        with self._lock:
            return {n: Health(provider=n, **self._state[n]) if n in self._state else Health(provider=n) for n in names}

    async def try_trial(self, name: str, now: float) -> bool:
        with self._lock:
            if self._trials.get(name, 0.0) > now:
                return False
            self._trials[name] = now + TRIAL_LOCK
            return True

    async def reset(self) -> None:
        with self._lock:
            self._state.clear()
            self._trials.clear()


class _RedisStore:
    """redis.asyncio, one client per event loop (a client is bound to the loop it was created on)."""

    def __init__(self, url: str, prefix: str):
        self.url = url
        self.prefix = prefix
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._scripts: dict = {}
        self._sync = None

    def _client(self):
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = aioredis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
            self._clients[loop] = client
        return client

    def _key(self, name: str) -> str:
        return f"{self.prefix}:health:{name}"

    async def read(self, names: list[str]) -> dict[str, Health]:
        client = self._client()
        async with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(self._key(name), "err", "lat", "fails", "open_until")
            rows = await pipe.execute()
        out = {}
        for name, (err, lat, fails, open_until) in zip(names, rows):
            out[name] = Health(provider=name, error_rate=float(err or 0), latency_ms=float(lat or 0),
                               consecutive_failures=int(fails or 0), open_until=float(open_until or 0))
        return out

    def snapshot(self, names: list[str]) -> dict[str, Health]:
        """`read` from sync code (a metrics scrape), on a client of its own."""
        import redis

        if self._sync is None:
            self._sync = redis.Redis.from_url(self.url, socket_timeout=1.0, socket_connect_timeout=1.0)
        with self._sync.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(self._key(name), "err", "lat", "fails", "open_until")
            rows = pipe.execute()
        return {name: Health(provider=name, error_rate=float(err or 0), latency_ms=float(lat or 0),
                             consecutive_failures=int(fails or 0), open_until=float(open_until or 0))
                for name, (err, lat, fails, open_until) in zip(names, rows)}

    async def record(self, name: str, *, ok: bool, latency_ms: float, now: float, count: int = 1) -> None:
        client = self._client()
        script = self._scripts.get(id(client))
        if script is None:
            script = self._scripts[id(client)] = client.register_script(_RECORD)
        await script(keys=[self._key(name)], args=[int(ok), latency_ms, now, ALPHA, FAILURE_THRESHOLD, COOLDOWN, count])

    async def try_trial(self, name: str, now: float) -> bool:
        return bool(await self._client().set(f"{self._key(name)}:trial", "1", nx=True, px=int(TRIAL_LOCK * 1000)))

    async def reset(self) -> None:
        client = self._client()
        keys = [k async for k in client.scan_iter(f"{self.prefix}:health:*")]
        if keys:
            await client.delete(*keys)


class HealthBook:
    """Reads and records provider health. Errors of the store itself never fail a request: health is advisory."""

    def __init__(self):
        url = getattr(settings, "REDIS_URL", "")
        prefix = settings.CACHES["default"].get("KEY_PREFIX", "ig") or "ig"
        self.store = _RedisStore(url, prefix) if url else _LocalStore()
        self._read_cache: dict[tuple[str, ...], tuple[float, dict[str, Health]]] = {}
        self._pending: dict[str, list] = {}  # provider -> [successes, their summed latency] not yet written
        self._flusher: asyncio.Future | None = None

    async def read(self, names: list[str]) -> dict[str, Health]:
        """Health of `names`, at most READ_CACHE_SECONDS old (every request routes; a second-old view is enough and
        saves a Redis round trip per request; this process's own outcomes refresh it at once)."""
        key = tuple(names)
        hit = self._read_cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < READ_CACHE_SECONDS:
            return hit[1]
        try:
            states = await self.store.read(names)
        except Exception:  # Redis down: treat everyone as healthy rather than refuse traffic
            return {n: Health(provider=n) for n in names}
        self._read_cache[key] = (time.monotonic(), states)
        return states

    async def record(self, name: str, *, ok: bool, latency_ms: float) -> None:
        """Count one outcome. With Redis, the successes of a healthy provider are summed in this process and written
        every FLUSH_SECONDS (one round trip for many requests); a failure, or a success after failures (a recovery),
        writes at once, after the successes before it."""
        stale = not ok or any(  # a failure, or a recovery, must show in this process's next routing at once
            states[name].consecutive_failures or states[name].open_until
            for _, states in self._read_cache.values() if name in states)
        if stale:
            self._read_cache.clear()
        if ok and not stale and isinstance(self.store, _RedisStore):
            pending = self._pending.setdefault(name, [0, 0.0])
            pending[0] += 1
            pending[1] += latency_ms
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.ensure_future(self._flush_later())
            return
        try:
            await self._flush(name)
            await self.store.record(name, ok=ok, latency_ms=latency_ms, now=time.time())
        except Exception:
            pass

    async def _flush_later(self) -> None:
        await asyncio.sleep(FLUSH_SECONDS)
        for name in list(self._pending):
            try:
                await self._flush(name)
            except Exception:
                pass

    async def _flush(self, name: str) -> None:
        pending = self._pending.pop(name, None)
        if pending:
            count, total = pending
            await self.store.record(name, ok=True, latency_ms=total / count, now=time.time(), count=count)

    async def try_trial(self, name: str) -> bool:
        try:
            return await self.store.try_trial(name, time.time())
        except Exception:
            return True

    async def reset(self) -> None:
        self._read_cache.clear()
        self._pending.clear()
        await self.store.reset()
