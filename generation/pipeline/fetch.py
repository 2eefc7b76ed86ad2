"""Fetching the customer's `image` URL without letting it reach anything but the public internet (SSRF defence).

A URL parameter makes our server send a request the customer chose. Left unguarded it reads cloud metadata
(169.254.169.254 hands out credentials), internal services and loopback ports, so every hop is checked:

* the URL: http or https only, a host, no user name or password, port 80 or 443 (below);
* the addresses: we resolve the host ourselves and refuse it if ANY address is not publicly routable (private,
  loopback, link-local, cloud metadata, shared/CGNAT, multicast, reserved, documentation, and IPv6 forms that embed
  such an IPv4 address). Hosts written as integers or in hex (http://2130706433/, http://0x7f.1/) go through the
  same resolver and are judged by the address they become;
* the connection goes to the address we validated, not to the name, so a second DNS answer cannot swap in
  127.0.0.1 between check and use (DNS rebinding). The original name travels in the Host header and, for https,
  as SNI, and the certificate is verified against that name;
* redirects are followed here, not by httpx, and each target goes through all of the above (at most
  `max_redirects`); every hop gets a fresh client, so no connection, TLS session or cookie crosses hosts;
* one deadline covers DNS, every hop and the body; the body is streamed and abandoned as soon as it passes
  `max_bytes` (at once if Content-Length already says so); compressed transfer encodings are refused so the
  limit counts the bytes we hold;
* the bytes decide the type (PNG, JPEG or WebP magic numbers; headers are never trusted), then Pillow decodes
  the whole image in a worker thread, which proves it is complete and yields its size. A pixel limit checked
  before decoding stops decompression bombs.

Ports: only 80 and 443. Public hosts answer HTTP on other ports too, but allowing them would let customers aim
our servers at third parties' SMTP, Redis or SSH ports (cross-protocol attacks from our IP addresses); image hosts
and CDNs serve on the default ports.

Error messages name the refused address only when the URL itself contains it: for a hostname they say which
kind of address it resolves to, not which, so the API does not become a lookup service for internal DNS names.

Like the provider adapters this module reads no settings: limits arrive as arguments.
"""
import asyncio
import functools
import io
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

import certifi
import httpx
from PIL import Image

from generation.providers.base import sniff_image_type

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_PIXELS = 50_000_000  # 50 megapixels: beyond any upstream's input size, below Pillow's own bomb threshold
MAX_URL_LENGTH = 8192
DEFAULT_PORTS = frozenset({80, 443})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "Imagegate-ImageFetcher/1.0 (+https://imagegate.ai)"

# Magic numbers of the formats upstream edit endpoints accept, with the Pillow plugin that must decode each.
# GIF is left out on purpose: upstreams do not take it and animated GIFs have no single "the image".
_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
_FORMAT_NAMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP"}
ALLOWED_TYPES_TEXT = "PNG, JPEG or WebP"

_SUBJECT = "The 'image' URL"
_REDIRECT_SUBJECT = "The 'image' URL redirects to a URL that"
_ONLY_PUBLIC = "Only addresses on the public internet can be fetched."


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    content_type: str  # sniffed from the bytes, never taken from the response headers
    width: int
    height: int


class ImageFetchError(Exception):
    """The URL was refused or did not yield an acceptable image. `message` is written for the customer: map it
    to a 400 with param "image"."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# --- Addresses -------------------------------------------------------------------------------------------------------

def _nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Cloud instance-metadata endpoints (AWS incl. IPv6, ECS and EKS agents, GCP, Azure, OpenStack, Alibaba, Oracle).
# All are non-public anyway; naming them makes the refusal message say what it prevented.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.170.23", "fd00:ec2::254", "fd00:ec2::23",
    "100.100.100.200", "192.0.0.192",
))

# Checked in order; the first match labels the refusal. Written out rather than left to `is_global`, whose
# answers changed between Python patch releases (3.11.7 calls 224.0.0.1 and fec0::1 global).
_V4_SPECIAL = (
    (_nets("0.0.0.0/8"), "an unspecified ('this network') address"),
    (_nets("127.0.0.0/8"), "a loopback address"),
    (_nets("169.254.0.0/16"), "a link-local address"),
    (_nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), "a private address"),
    (_nets("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
    (_nets("224.0.0.0/4"), "a multicast address"),
    (_nets("240.0.0.0/4"), "a reserved address"),  # includes 255.255.255.255
    (_nets("192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24",
           "203.0.113.0/24"), "a special-purpose (non-routable) address"),
)
_V6_SPECIAL = (
    (_nets("::/128"), "an unspecified address"),
    (_nets("::1/128"), "a loopback address"),
    (_nets("fe80::/10"), "a link-local address"),
    (_nets("fc00::/7", "fec0::/10"), "a private address"),
    (_nets("ff00::/8"), "a multicast address"),
    (_nets("2001::/23", "2001:db8::/32", "3fff::/20"), "a special-purpose (non-routable) address"),
)
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def canonical_address(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (::ffff:a.b.c.d) is that IPv4 address: judge it, and connect to it, as such."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def non_public_kind(ip: IPAddress) -> str | None:
    """Why `ip` is not a public internet address, as a noun phrase ("a loopback address"), or None if it is."""
    ip = canonical_address(ip)
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv4Address):
        for networks, label in _V4_SPECIAL:
            if any(ip in n for n in networks):
                return label
        return None if ip.is_global else "a non-public address"
    # IPv6 forms that carry an IPv4 address, which translators (NAT64, 6to4 relays) would deliver to.
    if ip in _NAT64:
        return non_public_kind(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None and (kind := non_public_kind(ip.sixtofour)):
        return kind
    for networks, label in _V6_SPECIAL:
        if any(ip in n for n in networks):
            return label
    if ip not in _GLOBAL_UNICAST_V6:
        return "a reserved address"  # ::/96 IPv4-compatible, 100::/64 discard, and all unassigned space
    return None if ip.is_global else "a non-public address"


@dataclass(frozen=True)
class Refusal:
    reason: str  # "address" or "port"
    kind: str  # for "address": non_public_kind's phrase


class AddressPolicy:
    """Decides which (address, port) pairs a fetch may connect to.

    The default refuses every non-public address and every port but 80 and 443. `allow` names exact
    (address, port) pairs that are let through regardless; it exists so tests can reach a server on 127.0.0.1,
    and production code never passes it. It is deliberately narrow: one port on one address, nothing nearby.
    """

    def __init__(self, *, allow: Iterable[tuple[str, int]] = (), ports: Iterable[int] = DEFAULT_PORTS):
        self.allow = frozenset((canonical_address(ipaddress.ip_address(a)), int(p)) for a, p in allow)
        self.ports = frozenset(ports)

    def refusal(self, ip: IPAddress, port: int) -> Refusal | None:
        ip = canonical_address(ip)
        if (ip, port) in self.allow:
            return None
        if kind := non_public_kind(ip):
            return Refusal("address", kind)
        if port not in self.ports:
            return Refusal("port", "")
        return None

    def ports_text(self) -> str:
        ports = sorted(self.ports)
        if not ports:
            return "no ports are allowed"
        if len(ports) == 1:
            return f"only port {ports[0]} is allowed"
        return f"only ports {', '.join(map(str, ports[:-1]))} and {ports[-1]} are allowed"


DEFAULT_POLICY = AddressPolicy()


# --- Fetching --------------------------------------------------------------------------------------------------------

@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying context for every fetch: loading the CA bundle costs milliseconds. (httpcore sets the same
    ALPN list on it for each connection; nothing else changes it.)"""
    return ssl.create_default_context(cafile=certifi.where())


def _size_text(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KB"
    return f"{n} bytes"


@dataclass(frozen=True)
class _Target:
    url: httpx.URL  # as the customer (or the redirect) wrote it
    addresses: tuple[IPAddress, ...]  # validated; we connect to these, in order
    port: int


def _parse(raw: str) -> httpx.URL:
    try:
        return httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise ImageFetchError("The 'image' URL is not a valid URL.") from None


def _check_url(url: httpx.URL, *, subject: str) -> None:
    if url.scheme not in ("http", "https"):
        scheme = url.scheme
        if not scheme:
            raise ImageFetchError(f"{subject} must be an absolute URL starting with http:// or https://.")
        if subject == _SUBJECT:
            raise ImageFetchError(f"The 'image' URL must use http or https, not '{scheme}'.")
        raise ImageFetchError(f"{subject} uses '{scheme}'; only http and https are allowed.")
    if url.userinfo:
        raise ImageFetchError(f"{subject} contains a user name or password, which is not allowed.")
    if not url.raw_host:
        raise ImageFetchError(f"{subject} has no host.")


async def _resolve(url: httpx.URL, *, subject: str, policy: AddressPolicy) -> _Target:
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError):
            raise ImageFetchError(f"{subject} names the host '{url.host}', which could not be found.") from None
        addresses = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = ipaddress.ip_address(sockaddr[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise ImageFetchError(f"{subject} names the host '{url.host}', which could not be found.")
    for ip in addresses:  # every answer must pass: a rebinding server would hand out a good one and a bad one
        refusal = policy.refusal(ip, port)
        if refusal is None:
            continue
        if refusal.reason == "port":
            raise ImageFetchError(f"{subject} uses port {port}; {policy.ports_text()}.")
        log.warning("image fetch refused: %s -> %s (%s)", url.host, ip, refusal.kind)
        if literal is not None:
            raise ImageFetchError(f"{subject} points to {refusal.kind} ({ip}), which is not allowed. {_ONLY_PUBLIC}")
        raise ImageFetchError(f"{subject} names the host '{url.host}'; it resolves to {refusal.kind}, which is not "
                              f"allowed. {_ONLY_PUBLIC}")
    return _Target(url=url, addresses=tuple(canonical_address(ip) for ip in addresses), port=port)


def _pinned(target: _Target, ip: IPAddress) -> tuple[httpx.URL, dict[str, str], dict]:
    """The request for `target` sent to `ip`: the address in the URL, the name in Host and SNI."""
    url = target.url.copy_with(host=str(ip), port=target.port, fragment=None)
    headers = {
        "Host": target.url.netloc.decode("ascii"),
        "User-Agent": USER_AGENT,
        "Accept": ", ".join(_FORMATS),
        "Accept-Encoding": "identity",
    }
    extensions: dict = {}
    if target.url.scheme == "https":
        host = target.url.raw_host.decode("ascii")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            extensions["sni_hostname"] = host  # certificate verified against the name, not the address
    return url, headers, extensions


def _new_client(timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,  # no proxy from the environment (it would connect by name) and no .netrc credentials
        verify=_ssl_context(),
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
    )


async def _download(target: _Target, *, max_bytes: int, timeout: float) -> tuple[bytes | None, str | None]:
    """GET the target. Returns (body, None) for a 2xx, (None, location) for a redirect; raises otherwise."""
    last_error: Exception | None = None
    for ip in target.addresses:  # the next validated address only if this one cannot be reached at all
        url, headers, extensions = _pinned(target, ip)
        async with _new_client(timeout) as client:
            try:
                async with client.stream("GET", url, headers=headers, extensions=extensions) as response:
                    return await _read(response, max_bytes=max_bytes)
            except httpx.ConnectError as exc:
                last_error = exc
                continue
            except httpx.TimeoutException:
                raise TimeoutError from None
            except httpx.TransportError:
                raise ImageFetchError(f"The server at the 'image' URL ({target.url.host}) sent an incomplete or "
                                      "malformed HTTP response.") from None
    tls = _tls_cause(last_error)
    host = target.url.host
    if isinstance(tls, ssl.SSLCertVerificationError):
        raise ImageFetchError(f"We could not establish a verified https connection to the 'image' URL's host "
                              f"({host}): its TLS certificate is not valid for that name.")
    if tls is not None:
        raise ImageFetchError(f"We could not establish an https connection to the 'image' URL's host ({host}): "
                              "the TLS handshake failed.")
    raise ImageFetchError(f"We could not connect to the 'image' URL's host ({host}).")


def _tls_cause(exc: BaseException | None) -> ssl.SSLError | None:
    for _ in range(10):  # httpx.ConnectError <- httpcore.ConnectError <- ssl.SSLError
        if exc is None or isinstance(exc, ssl.SSLError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


async def _read(response: httpx.Response, *, max_bytes: int) -> tuple[bytes | None, str | None]:
    status = response.status_code
    if status in REDIRECT_STATUSES and "location" in response.headers:
        return None, response.headers["location"]
    if not 200 <= status < 300:
        reason = f" ({response.reason_phrase})" if response.reason_phrase else ""
        raise ImageFetchError(f"The 'image' URL answered with HTTP {status}{reason}; it must answer 200 with the "
                              "image.")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ImageFetchError(f"The server at the 'image' URL sent the image compressed ('{encoding}') although "
                              "we asked for it uncompressed; serve it as is.")
    too_large = ImageFetchError(f"The image at the 'image' URL is larger than the {_size_text(max_bytes)} limit.")
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body), None


async def _fetch_bytes(url: str, *, max_bytes: int, max_redirects: int, timeout: float,
                       policy: AddressPolicy) -> bytes:
    current = _parse(url)
    subject = _SUBJECT
    for _hop in range(max_redirects + 1):
        _check_url(current, subject=subject)
        target = await _resolve(current, subject=subject, policy=policy)
        body, location = await _download(target, max_bytes=max_bytes, timeout=timeout)
        if body is not None:
            return body
        subject = _REDIRECT_SUBJECT
        try:
            current = current.join(location)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise ImageFetchError("The 'image' URL redirects to an invalid URL.") from None
    raise ImageFetchError(f"The 'image' URL redirected more than {max_redirects} "
                          f"time{'s' if max_redirects != 1 else ''}; at most {max_redirects} redirects are followed.")


sniff = sniff_image_type  # the content type the bytes themselves announce, or None


def _decode(data: bytes, content_type: str, max_pixels: int) -> tuple[int, int]:
    """Open with exactly the sniffed format's plugin, refuse oversized images before decoding, then decode fully."""
    name = _FORMAT_NAMES[content_type]
    invalid = ImageFetchError(f"The file at the 'image' URL is not a valid {name} image (it is truncated or "
                              "corrupt).")
    try:
        with Image.open(io.BytesIO(data), formats=[_FORMATS[content_type]]) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise _too_many_pixels(width, height, max_pixels)
            image.load()
    except Image.DecompressionBombError:
        raise _too_many_pixels(None, None, max_pixels) from None
    except ImageFetchError:
        raise
    except Exception:  # Pillow reports damage as OSError, SyntaxError, ValueError, struct.error, ...
        raise invalid from None
    if width < 1 or height < 1:
        raise invalid
    return width, height


def _too_many_pixels(width: int | None, height: int | None, max_pixels: int) -> ImageFetchError:
    limit = f"{max_pixels / 1_000_000:g} megapixels"
    if width is None:
        return ImageFetchError(f"The image at the 'image' URL has more pixels than the {limit} limit.")
    return ImageFetchError(f"The image at the 'image' URL is {width}x{height} pixels "
                           f"({width * height / 1_000_000:.1f} megapixels), more than the {limit} limit.")


async def fetch_image(url: str, *, max_bytes: int = 10 * 1024 * 1024, timeout: float = 10.0, max_redirects: int = 3,
                      policy: AddressPolicy | None = None) -> FetchedImage:
    """Download the image at `url` (the API's `image` parameter) under the rules in the module docstring.

    `timeout` bounds the whole download (DNS, every redirect, the body); decoding afterwards runs in a worker
    thread. Raises ImageFetchError, with a message for the customer, for everything the customer can cause:
    a refused URL or address, an unreachable or slow host, an error status, an oversized or non-image body.
    """
    if not isinstance(url, str) or not url.strip():
        raise ImageFetchError("The 'image' parameter must be an http or https URL.")
    if len(url) > MAX_URL_LENGTH:
        raise ImageFetchError(f"The 'image' URL is longer than {MAX_URL_LENGTH} characters.")
    policy = policy or DEFAULT_POLICY
    try:
        async with asyncio.timeout(timeout):
            data = await _fetch_bytes(url, max_bytes=max_bytes, max_redirects=max_redirects, timeout=timeout,
                                      policy=policy)
    except TimeoutError:
        raise ImageFetchError(f"The 'image' URL did not answer within {timeout:g} seconds.") from None
    content_type = sniff(data)
    if content_type is None:
        raise ImageFetchError(f"The file at the 'image' URL is not a {ALLOWED_TYPES_TEXT} image.")
    width, height = await asyncio.to_thread(_decode, data, content_type, MAX_PIXELS)
    return FetchedImage(data=data, content_type=content_type, width=width, height=height)


# --- Posting (webhook deliveries) ------------------------------------------------------------------------------------

POST_REDIRECT_STATUSES = frozenset({307, 308})  # the redirects that keep the method and body


async def post_guarded(url: str, *, body: bytes, headers: dict[str, str], policy: AddressPolicy = DEFAULT_POLICY,
                       timeout: float = 10.0, max_redirects: int = 3, subject: str = "The webhook URL") -> int:
    """POST `body` to `url` under the same guard as fetching an image: every hop's URL checked, its host resolved
    here and every address judged by `policy`, the connection pinned to a validated address (name in Host and SNI),
    307/308 redirects followed (each target checked again, at most `max_redirects`); other statuses are answers.
    Returns the final HTTP status; ImageFetchError (the refusal or the failure, in words) or TimeoutError."""
    current = _parse(url)
    for _hop in range(max_redirects + 1):
        _check_url(current, subject=subject)
        target = await _resolve(current, subject=subject, policy=policy)
        status, location = await _post(target, body=body, headers=headers, timeout=timeout)
        if status not in POST_REDIRECT_STATUSES or not location:
            return status
        subject = f"{subject} redirects to a URL that"
        try:
            current = current.join(location)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise ImageFetchError(f"{subject} is not valid.") from None
    raise ImageFetchError(f"The webhook URL redirected more than {max_redirects} times.")


async def _post(target: _Target, *, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str | None]:
    last_error: Exception | None = None
    for ip in target.addresses:
        url, pinned, extensions = _pinned(target, ip)
        sent = {"Host": pinned["Host"], "Accept-Encoding": "identity", **headers}
        async with _new_client(timeout) as client:
            try:
                response = await client.post(url, content=body, headers=sent, extensions=extensions)
                return response.status_code, response.headers.get("location")
            except httpx.ConnectError as exc:
                last_error = exc
                continue
            except httpx.TimeoutException:
                raise TimeoutError from None
            except httpx.TransportError:
                raise ImageFetchError(f"The webhook endpoint ({target.url.host}) sent an incomplete or malformed "
                                      "HTTP response.") from None
    tls = _tls_cause(last_error)
    if tls is not None:
        raise ImageFetchError(f"We could not establish a verified https connection to {target.url.host}.")
    raise ImageFetchError(f"We could not connect to the webhook endpoint's host ({target.url.host}).")
