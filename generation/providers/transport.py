"""The one HTTP transport every upstream adapter speaks through: connection pools, capped reads, error mapping and
the user agent, so an adapter only maps its wire format.

Built on aiohttp. httpx, which the adapters used first, cost ~830 µs of CPU per upstream call on this machine
against ~85 µs for aiohttp (same request, same loopback server, bench/gateway.py's method; docs/decisions.md), and
its connection pool rescans every connection per request (the sharded pools that worked around that are gone too:
aiohttp's connector keeps idle connections in a per-host deque).

One ClientSession per event loop (a session is bound to the loop that made it): tests and the gateway call from
several loops. Errors become the provider interface's (base.py):
  * a connection that cannot be made (refused, DNS, TLS, connect timeout) → UpstreamUnavailable "could not reach";
  * no complete answer within the request's timeout → UpstreamTimeout;
  * a body over `max_bytes` (by Content-Length, then while reading) → UpstreamUnavailable "larger than";
  * any other transport failure mid-answer → UpstreamUnavailable.
HTTP error statuses are the adapter's to map: `request` returns every answer it could read.
"""
from __future__ import annotations

import asyncio
import json as jsonlib
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
import certifi
from multidict import CIMultiDictProxy

from .base import UpstreamTimeout, UpstreamUnavailable

USER_AGENT = "imagegate/1.0"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # an upstream reply (JSON with base64 images, or one image)
MAX_CONNECTIONS = 1000  # per provider and event loop: the gateway holds 1,000 generations in flight
CONNECT_TIMEOUT = 10.0

_ssl_context: ssl.SSLContext | None = None


def _ssl() -> ssl.SSLContext:
    """One verifying TLS context for every session (building one costs tens of milliseconds)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context(cafile=certifi.where())
    return _ssl_context


@dataclass(frozen=True)
class Reply:
    """An upstream's answer, read in full: status, headers (case-insensitive), body bytes."""

    status: int
    reason: str
    headers: CIMultiDictProxy
    body: bytes

    def json(self) -> Any:
        """The body as JSON; ValueError (json.JSONDecodeError or UnicodeDecodeError) if it is not."""
        return jsonlib.loads(self.body)

    def snippet(self, limit: int = 160) -> str:
        """The start of the body, for error messages."""
        text = self.body[:limit].decode("utf-8", "replace").replace("\n", " ").strip()
        return repr(text + ("…" if len(self.body) > limit else "")) if text else "(empty body)"


class Transport:
    """HTTP for one provider: `request` and `download`, each bounded in time and size."""

    def __init__(self, *, provider: str, timeout: float, max_connections: int = MAX_CONNECTIONS,
                 connect_timeout: float = CONNECT_TIMEOUT, headers: dict[str, str] | None = None):
        self.provider = provider
        self.timeout = float(timeout)
        self.connect_timeout = min(float(connect_timeout), self.timeout)
        self.max_connections = max_connections
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            for old in [lp for lp in self._sessions if lp.is_closed()]:
                self._sessions.pop(old).detach()  # its loop is gone, and its connections with it
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=self.max_connections,
                                             ssl=_ssl(), ttl_dns_cache=60, keepalive_timeout=30)
            session = aiohttp.ClientSession(connector=connector, headers=self.headers, auto_decompress=True,
                                            timeout=aiohttp.ClientTimeout(total=None))
            self._sessions[loop] = session
        return session

    def __len__(self) -> int:
        return len(self._sessions)

    async def aclose(self) -> None:
        """Close the running loop's session (each loop has its own)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    async def request(self, method: str, url: str, *, headers: dict | None = None, json: Any = None,
                      data: dict | None = None, files: list | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                      timeout: float | None = None, follow_redirects: bool = False, label: str = "") -> Reply:
        """Send one request and read the whole answer. `files` is a list of (field, (filename, bytes, type)) as
        httpx takes them; with `files` (even an empty list) the body is multipart/form-data, its form fields from
        `data`; `data` alone is sent form-urlencoded.
        `label` names the request in error messages (default: the provider)."""
        body: Any = None
        if files is not None:
            form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
            for name, value in (data or {}).items():
                form.add_field(name, value)
            for name, (filename, content, content_type) in files:
                form.add_field(name, content, filename=filename, content_type=content_type)
            body = form
        elif data is not None:
            body = aiohttp.FormData(data)
        what = label or self.provider
        limit = self.timeout if timeout is None else float(timeout)
        client_timeout = aiohttp.ClientTimeout(total=limit, sock_connect=min(self.connect_timeout, limit))
        try:
            async with self.session().request(method, url, headers=headers, json=json, data=body,
                                              timeout=client_timeout, allow_redirects=follow_redirects) as response:
                content = await self._read(response, max_bytes, what)
                return Reply(status=response.status, reason=response.reason or "", headers=response.headers,
                             body=content)
        except (UpstreamUnavailable, UpstreamTimeout):
            raise
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnavailable(f"could not reach {what} at {_origin(url)}: {_reason(exc)}.",
                                      provider=self.provider) from exc
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise UpstreamUnavailable(f"could not reach {what} at {_origin(url)}: connect timeout.",
                                          provider=self.provider) from exc
            raise UpstreamTimeout(f"{what} did not answer within {limit:g} s.", provider=self.provider) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"could not reach {what} at {_origin(url)}: {_reason(exc)}.",
                                      provider=self.provider) from exc

    async def download(self, url: str, *, label: str, max_bytes: int, headers: dict | None = None,
                       follow_redirects: bool = False, timeout: float | None = None) -> bytes:
        """GET `url` and return its body, refusing more than `max_bytes`; anything but 200 is UpstreamUnavailable.
        `label` names the thing in messages ("image 0 from openai")."""
        try:
            reply = await self.request("GET", url, headers=headers, max_bytes=max_bytes, timeout=timeout,
                                       follow_redirects=follow_redirects, label=label)
        except UpstreamTimeout as exc:
            raise UpstreamTimeout(f"downloading {label} timed out.", provider=self.provider) from exc
        except UpstreamUnavailable as exc:
            raise UpstreamUnavailable(f"downloading {label} failed: {exc.message}", provider=self.provider) from exc
        if reply.status != 200:
            raise UpstreamUnavailable(f"downloading {label} failed: HTTP {reply.status}.", provider=self.provider)
        return reply.body

    async def _read(self, response: aiohttp.ClientResponse, max_bytes: int, what: str) -> bytes:
        too_large = f"the answer of {what} is larger than {max_bytes // (1024 * 1024)} MB."
        declared = response.content_length
        if declared is not None and declared > max_bytes:
            raise UpstreamUnavailable(too_large, provider=self.provider)
        chunks, total = [], 0
        async for chunk in response.content.iter_any():
            total += len(chunk)
            if total > max_bytes:
                raise UpstreamUnavailable(too_large, provider=self.provider)
            chunks.append(chunk)
        return b"".join(chunks)


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
