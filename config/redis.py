"""Redis for state that every process and host must share: rate limits, spend holds, provider health, idempotency.

`sync_client()` is django-redis's own client (the cache's connection pool); `async_client()` is one redis.asyncio
client per event loop (a client is bound to the loop that created it), with short timeouts so a Redis outage costs
a request milliseconds, not seconds. `key(...)` puts the cache's prefix in front, so one Redis can serve several
deployments. Without REDIS_URL (the embedded default) `enabled()` is False and callers use their in-process variant.
"""
import asyncio
import weakref

from django.conf import settings

SOCKET_TIMEOUT = 1.0
MAX_CONNECTIONS = 64  # per process and event loop

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object]" = weakref.WeakKeyDictionary()


def enabled() -> bool:
    return bool(settings.REDIS_URL)


def prefix() -> str:
    return settings.CACHES["default"].get("KEY_PREFIX") or "ig"


def key(*parts) -> str:
    return ":".join([prefix(), *(str(p) for p in parts)])


def sync_client():
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def async_client():
    import redis.asyncio as aioredis

    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        # A blocking pool waits for a free connection instead of failing when 1,000 requests talk to Redis at once.
        pool = aioredis.BlockingConnectionPool.from_url(settings.REDIS_URL, max_connections=MAX_CONNECTIONS,
                                                        timeout=SOCKET_TIMEOUT, socket_timeout=SOCKET_TIMEOUT,
                                                        socket_connect_timeout=SOCKET_TIMEOUT)
        client = aioredis.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client
