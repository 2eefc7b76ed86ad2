"""The one HTTP transport every upstream adapter speaks through: connection pools, capped reads, error mapping and
the user agent, so an adapter only maps its wire format.

Built on aiohttp. httpx, which the adapters used first, cost ~830 µs of CPU per upstream call on this machine
against ~85 µs for aiohttp (same request, same loopback server, bench/gateway.py's method; docs/decisions.md), and
its connection pool rescans every connection per request (the sharded pools that worked around that are gone too:
aiohttp's connector keeps idle connections in a per-host deque).

One ClientSession per event loop (a session is bound to the loop that made it): tests and the gateway call from
several loops. Errors become the provider interface's (base.py):
  * a connection that cannot be made (refused, DNS, TLS, connect timeout) → UpstreamUnavailable "could not reach";
  * no complete answer within the request's timeout → UpstreamTimeout "did not answer in time";
  * a body over `max_bytes` (by Content-Length, then while reading) → UpstreamUnavailable "larger than the … limit";
  * any other transport failure mid-answer → UpstreamUnavailable.
All but the size refusal are marked `transient` (another attempt may succeed: adapters that poll or download decide
whether to make one). HTTP error statuses are the adapter's to map: `request` returns every answer it could read,
and `Reply` offers what several adapters need to read one (content type, `retry_after`, `error_text`). `download`
is a GET whose anything-but-200 is DownloadFailed (with the status). `request(..., on_event=...)` reads a 2xx
`text/event-stream` answer as Server-Sent Events while they arrive (WHATWG HTML §9.2, "Server-sent events").
"""
from __future__ import annotations

import asyncio
import json as jsonlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

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

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str:
        """The media type of the body, lower case and without parameters ("" when none was sent)."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def retry_after(self) -> float | None:
        """The wait the upstream asks for, in seconds: `retry-after-ms` (milliseconds, as OpenAI sends), else
        `retry-after` (delay-seconds or an HTTP-date, RFC 9110 §10.2.3); None when absent or unreadable."""
        try:
            ms = self.headers.get("retry-after-ms")
            if ms is not None:
                return max(0.0, float(ms) / 1000.0)
            value = self.headers.get("retry-after")
            if value is None:
                return None
            if value.strip().replace(".", "", 1).isdigit():
                return float(value)
            when = parsedate_to_datetime(value)
        except (ValueError, TypeError, IndexError):
            return None
        return max(0.0, when.timestamp() - time.time())

    def error_text(self, limit: int = 300) -> str:
        """The upstream's own reason from an error body, in the shapes the upstreams use:
        FastAPI/pydantic `{"detail": [{loc, msg}]}` ("width: Input should be …; …") or `{"detail": "…"}`;
        problem+json `{title, detail}` (Replicate; one "- input.x: reason" line each, joined by "; ");
        `{"error": {"message"}}` (OpenAI), `{"error": "code", "message": "…"}` (BFL's 429) → "code: …";
        `{"errors": [...]}` (Stability v2beta) or `{"message"}`. Anything else: the start of the raw body, or
        "HTTP <status> with an empty body"."""
        try:
            body = self.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        text = _reason_from(body) if isinstance(body, dict) else ""
        if not text:
            raw = self.body[:limit].decode("utf-8", "replace").replace("\n", " ").strip()
            text = raw or f"HTTP {self.status} with an empty body"
        return text[:limit]


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
            self._drop_dead_sessions()
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=self.max_connections,
                                             ssl=_ssl(), ttl_dns_cache=60, keepalive_timeout=30)
            session = aiohttp.ClientSession(connector=connector, headers=self.headers, auto_decompress=True,
                                            timeout=aiohttp.ClientTimeout(total=None))
            self._sessions[loop] = session
        return session

    def __len__(self) -> int:
        return len(self._sessions)

    def _drop_dead_sessions(self) -> None:
        """Forget the sessions of closed event loops: their connections went with their loop, so there is nothing
        to await; the connector is only marked closed (aiohttp's synchronous `_close`, which returns at once for a
        closed loop) so that it is not reported as leaked when it is collected."""
        for loop in [lp for lp in self._sessions if lp.is_closed()]:
            session = self._sessions.pop(loop)
            connector = session.connector
            session.detach()
            if connector is not None:
                connector._close()

    def __del__(self) -> None:
        self._drop_dead_sessions()

    async def aclose(self) -> None:
        """Close the running loop's session (each loop has its own)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    async def request(self, method: str, url: str, *, headers: dict | None = None, json: Any = None,
                      data: dict | None = None, files: list | None = None, multipart: bool | None = None,
                      max_bytes: int = DEFAULT_MAX_BYTES, timeout: float | None = None,
                      follow_redirects: bool = False, label: str = "",
                      on_event: Callable[[str, str], None] | None = None) -> Reply:
        """Send one request and read the whole answer (at most `max_bytes`, within `timeout` seconds, default the
        transport's). Body: `json`, or a form from `data` (field → str) and `files`, a list of
        (field, (filename, bytes, content type)) in order. A form is multipart/form-data when it has `files` or
        `multipart=True` (upstreams that take multipart even without a file), else urlencoded.
        `label` names the request in error messages (default: the provider). With `on_event`, a 2xx answer of
        type text/event-stream is read as Server-Sent Events: `on_event(event name, data)` for each as it arrives
        (name "message" when the event has none; data lines joined by "\n"), within the same time and size limits,
        and the Reply's body is empty; whatever `on_event` raises ends the request. Any other answer is read whole."""
        body: Any = None
        if files is not None or multipart:
            form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
            for name, value in (data or {}).items():
                form.add_field(name, value)
            for name, (filename, content, content_type) in files or ():
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
                if on_event is not None and 200 <= response.status < 300 and \
                        response.content_type == "text/event-stream":
                    await self._read_events(response, max_bytes, what, on_event)
                    return Reply(status=response.status, reason=response.reason or "", headers=response.headers,
                                 body=b"")
                content = await self._read(response, max_bytes, what)
                return Reply(status=response.status, reason=response.reason or "", headers=response.headers,
                             body=content)
        except (UpstreamUnavailable, UpstreamTimeout):
            raise
        except aiohttp.ClientConnectorError as exc:
            raise self._unreachable(what, url, _reason(exc)) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise self._unreachable(what, url, "connect timeout") from exc
            raise UpstreamTimeout(f"{what} did not answer in time (timed out after {limit:g} s).",
                                  provider=self.provider, transient=True) from exc
        except aiohttp.ClientError as exc:
            raise self._unreachable(what, url, _reason(exc)) from exc

    def _unreachable(self, what: str, url: str, reason: str) -> UpstreamUnavailable:
        return UpstreamUnavailable(f"could not reach {what} at {_origin(url)}: {reason}.", provider=self.provider,
                                   transient=True)

    async def download(self, url: str, *, label: str, max_bytes: int, headers: dict | None = None,
                       follow_redirects: bool = False, timeout: float | None = None) -> bytes:
        """GET `url` and return its body (bytes), refusing more than `max_bytes`. `label` names the thing in
        messages ("image 0 from openai"). Raises UpstreamTimeout "downloading … timed out", UpstreamUnavailable
        "downloading … failed: …" for transport failures, and DownloadFailed (an UpstreamUnavailable carrying the
        status; transient for 408, 429 and 5xx) for any answer but 200."""
        try:
            reply = await self.request("GET", url, headers=headers, max_bytes=max_bytes, timeout=timeout,
                                       follow_redirects=follow_redirects, label=label)
        except UpstreamTimeout as exc:
            raise UpstreamTimeout(f"downloading {label} timed out.", provider=self.provider,
                                  transient=exc.transient) from exc
        except UpstreamUnavailable as exc:
            raise UpstreamUnavailable(f"downloading {label} failed: {exc.message}", provider=self.provider,
                                      transient=exc.transient) from exc
        if reply.status != 200:
            raise DownloadFailed(f"downloading {label} failed: HTTP {reply.status}: {reply.error_text(200)}",
                                 provider=self.provider, status=reply.status)
        return reply.body

    async def _read(self, response: aiohttp.ClientResponse, max_bytes: int, what: str) -> bytes:
        too_large = f"the answer of {what} is larger than the {_size(max_bytes)} limit."
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


    async def _read_events(self, response: aiohttp.ClientResponse, max_bytes: int, what: str,
                           on_event: Callable[[str, str], None]) -> None:
        """Dispatch each Server-Sent Event of the body as it completes (a blank line ends an event; `event:` names
        it, `data:` lines are its data, lines starting with ':' are comments; a final event without its blank line
        is dropped, as the standard says)."""
        too_large = f"the answer of {what} is larger than the {_size(max_bytes)} limit."
        total, name, data = 0, "", []
        pending, scanned = bytearray(), 0  # bytes of an unfinished line; how far it holds no newline
        async for chunk in response.content.iter_any():
            total += len(chunk)
            if total > max_bytes:
                raise UpstreamUnavailable(too_large, provider=self.provider)
            pending += chunk
            while (end := pending.find(b"\n", scanned)) != -1:
                text = pending[:end].decode("utf-8", "replace").rstrip("\r")
                del pending[:end + 1]
                scanned = 0
                if not text:
                    if data:
                        on_event(name or "message", "\n".join(data))
                    name, data = "", []
                    continue
                field, _, value = text.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
            scanned = len(pending)


class DownloadFailed(UpstreamUnavailable):
    """A download answered something other than 200. `status` is the HTTP status; 408, 429 and 5xx are transient."""

    def __init__(self, message: str, *, provider: str, status: int):
        super().__init__(message, provider=provider, transient=status in (408, 429) or status >= 500)
        self.status = status


def _reason_from(body: dict) -> str:
    """Reply.error_text's reading of a JSON object ("" when it has none of the known keys)."""
    detail, title, error, message = body.get("detail"), body.get("title"), body.get("error"), body.get("message")
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = [str(p) for p in item.get("loc") or () if p not in ("body", "query")]
                msg = str(item.get("msg") or item.get("type") or item)
                parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, str) and detail.strip():
        lines = [line.strip().lstrip("-").strip() for line in detail.strip().splitlines() if line.strip()]
        text = "; ".join(lines)
        if isinstance(title, str) and title and title.lower() not in text.lower():
            return f"{title}: {text}"
        return text
    if isinstance(detail, dict) and detail:
        return jsonlib.dumps(detail)
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)
    if isinstance(errors, str) and errors:
        return errors
    if isinstance(error, str) and error and isinstance(message, str) and message:
        return f"{error}: {message}"
    for value in (message, error, title):
        if isinstance(value, str) and value:
            return value
    return ""


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MB" if n >= 1024 * 1024 and n % (1024 * 1024) == 0 else f"{n}-byte"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
