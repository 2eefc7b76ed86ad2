"""HTTP plumbing shared by the httpx-based adapters.

httpcore's connection pool scans every connection each time it places a request, which costs O(connections²)
under load: 1,000 concurrent requests through one pool spend most of their time there (measured by the Replicate
and BFL adapters' authors: 63-96 s instead of 11-16 s for 1,000 concurrent 5-second calls). `ShardedTransport`
splits one connection budget over a few pools; each provider call sticks to one shard (`shard_scope`) so its
requests reuse the same keep-alive connections, and calls take the shards in turn.
"""
import asyncio
import contextlib
import contextvars
import itertools
import ssl
import weakref

import httpx

USER_AGENT = "imagegate/1.0"
_SHARD: contextvars.ContextVar[int | None] = contextvars.ContextVar("imagegate_pool_shard", default=None)
_turn = itertools.count()


@contextlib.contextmanager
def shard_scope():
    """Within this block, every request of the current task uses one pool shard."""
    token = _SHARD.set(next(_turn))
    try:
        yield
    finally:
        _SHARD.reset(token)


class ShardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int, shards: int, verify: ssl.SSLContext | bool = True):
        per_shard = max(1, -(-max_connections // shards))
        if verify is True:  # one SSL context for all shards (loading the CA bundle costs ~35 ms each)
            verify = httpx.create_ssl_context()
        self._pools = [httpx.AsyncHTTPTransport(verify=verify, limits=httpx.Limits(
            max_connections=per_shard, max_keepalive_connections=per_shard)) for _ in range(shards)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = _SHARD.get()
        if shard is None:
            shard = next(_turn)
        return await self._pools[shard % len(self._pools)].handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class LoopClients:
    """One AsyncClient per running event loop (a client cannot cross loops), built by `factory`."""

    def __init__(self, factory):
        self._factory = factory
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [lp for lp in list(self._clients) if lp.is_closed()]:
                del self._clients[old]
            client = self._clients[loop] = self._factory()
        return client

    def __len__(self) -> int:
        return len(self._clients)

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


def sharded_client(*, timeout: float, max_connections: int = 1000, shards: int = 16,
                   verify: ssl.SSLContext | bool = True, **kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        transport=ShardedTransport(max_connections=max_connections, shards=shards, verify=verify),
        headers={"User-Agent": USER_AGENT, **kwargs.pop("headers", {})},
        **kwargs,
    )


async def download_capped(client: httpx.AsyncClient, url: str, *, label: str, provider: str, max_bytes: int,
                          headers: dict | None = None, follow_redirects: bool = False) -> bytes:
    """GET `url` and return its body, refusing more than `max_bytes` (by Content-Length, then while streaming).
    Failures are the provider interface's errors; `label` names the thing in the messages ("image 0 from openai")."""
    from .base import UpstreamTimeout, UpstreamUnavailable

    too_large = f"{label} is larger than {max_bytes // (1024 * 1024)} MB."
    try:
        async with client.stream("GET", url, headers=headers, follow_redirects=follow_redirects) as response:
            if response.status_code != 200:
                raise UpstreamUnavailable(f"downloading {label} failed: HTTP {response.status_code}.",
                                          provider=provider)
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise UpstreamUnavailable(too_large, provider=provider)
            chunks, total = [], 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise UpstreamUnavailable(too_large, provider=provider)
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"downloading {label} timed out.", provider=provider) from exc
    except httpx.HTTPError as exc:
        raise UpstreamUnavailable(f"downloading {label} failed: {type(exc).__name__}: {exc}.",
                                  provider=provider) from exc
