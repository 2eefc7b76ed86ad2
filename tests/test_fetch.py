"""generation.pipeline.fetch against real HTTP servers on 127.0.0.1 (no mocks of httpx, no network beyond loopback).

The servers are reached through AddressPolicy's narrow test allowance (one address, one port); everything else
on loopback stays forbidden, which several tests rely on. No database.
"""
import asyncio
import datetime
import io
import ipaddress
import os
import socket
import ssl
import struct
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from generation.pipeline import fetch as fetch_module
from generation.pipeline.fetch import AddressPolicy, FetchedImage, ImageFetchError, fetch_image, non_public_kind, sniff

# --- Helpers ---------------------------------------------------------------------------------------------------------


def image_bytes(fmt: str, size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(buf, fmt)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` (a decompression bomb as far as the header goes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.hits.append((self.path, dict(self.headers)))
        route = self.server.routes.get(self.path)
        if route is None:
            self.reply(404, b"not here", "text/plain")
        else:
            route(self)

    def reply(self, status: int, body: bytes = b"", content_type: str = "application/octet-stream", **headers):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, OSError):  # the fetcher hung up on purpose (size limit, deadline)
            pass

    def log_message(self, *args):
        pass


class Server:
    def __init__(self, tls: ssl.SSLContext | None = None):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.routes = {}
        self.httpd.hits = []
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def routes(self) -> dict:
        return self.httpd.routes

    @property
    def hits(self) -> list:
        return self.httpd.hits

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def policy(self) -> AddressPolicy:
        return AddressPolicy(allow=[("127.0.0.1", self.port)])

    def serve(self, path: str, body: bytes, content_type="application/octet-stream", status=200, **headers):
        self.routes[path] = lambda h: h.reply(status, body, content_type, **headers)

    def redirect(self, path: str, location: str, status=302):
        self.routes[path] = lambda h: h.reply(status, b"", "text/plain", Location=location)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def other_server():
    """A second loopback server the policy does NOT allow: nothing may ever reach it."""
    s = Server()
    yield s
    s.close()


def resolve_names(monkeypatch, names: dict[str, list[str]]) -> list[str]:
    """Answer DNS for `names` (made-up names, so only our resolver call can find them); returns the lookups made.
    Everything else goes to the real resolver."""
    lookups = []
    real = asyncio.base_events.BaseEventLoop.getaddrinfo

    async def getaddrinfo(self, host, port, *args, **kwargs):
        if host in names:
            lookups.append(host)
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                     (a, port)) for a in names[host]]
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", getaddrinfo)
    return lookups


def fetch(url: str, **kwargs) -> FetchedImage:
    return asyncio.run(fetch_image(url, **kwargs))


def refused(url: str, **kwargs) -> str:
    with pytest.raises(ImageFetchError) as info:
        fetch(url, **kwargs)
    assert str(info.value) == info.value.message
    return info.value.message


# --- Success ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, content_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                               ("WEBP", "image/webp")])
def test_fetches_and_sniffs_an_image(server, fmt, content_type):
    data = image_bytes(fmt, (40, 30))
    server.serve("/img", data, content_type="text/plain")  # a wrong header: the bytes decide
    result = fetch(server.url("/img"), policy=server.policy)
    assert result == FetchedImage(data=data, content_type=content_type, width=40, height=30)
    path, headers = server.hits[0]
    assert headers["Host"] == f"127.0.0.1:{server.port}"
    assert headers["Accept-Encoding"] == "identity"


def test_follows_up_to_three_redirects_on_the_same_allowed_server(server):
    server.redirect("/a", "/b", status=301)
    server.redirect("/b", server.url("/c"), status=307)
    server.redirect("/c", "d", status=308)
    server.serve("/d", image_bytes("PNG"))
    assert fetch(server.url("/a"), policy=server.policy).content_type == "image/png"
    assert [p for p, _ in server.hits] == ["/a", "/b", "/c", "/d"]


def test_connects_to_the_validated_address_and_sends_the_name_as_host(server, monkeypatch):
    """Pinning: the name is resolved once, by us; httpx only ever sees the address (it could not resolve this
    name at all), and the server still gets the name in Host."""
    lookups = resolve_names(monkeypatch, {"images.example": ["127.0.0.1"]})
    server.serve("/img", image_bytes("PNG"))
    result = fetch(f"http://images.example:{server.port}/img", policy=server.policy)
    assert result.content_type == "image/png"
    assert lookups == ["images.example"]
    assert server.hits[0][1]["Host"] == f"images.example:{server.port}"


def _tls_for(name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with a certificate for `name`, client context trusting only its throwaway CA)."""
    from cryptography import x509  # installed with moto (dev dependencies)
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject, issuer, key, signer, *, ca):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imagegate test CA")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, ca=True)
    leaf = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_name, leaf_key, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain only reads files
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(leaf.public_bytes(pem) + ca.public_bytes(pem))
        with open(key_path, "wb") as f:
            f.write(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        server_ctx.load_cert_chain(cert_path, key_path)
    client_ctx = ssl.create_default_context(cadata=ca.public_bytes(pem).decode("ascii"))
    return server_ctx, client_ctx


def test_https_is_pinned_with_sni_and_the_certificate_checked_against_the_name(monkeypatch):
    server_ctx, client_ctx = _tls_for("images.example")
    sni = []
    server_ctx.sni_callback = lambda sock, server_name, ctx: sni.append(server_name)
    monkeypatch.setattr(fetch_module, "_ssl_context", lambda: client_ctx)
    resolve_names(monkeypatch, {"images.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]})
    tls_server = Server(tls=server_ctx)
    try:
        tls_server.serve("/img", image_bytes("WEBP"))
        result = fetch(f"https://images.example:{tls_server.port}/img", policy=tls_server.policy)
        assert result.content_type == "image/webp"
        assert sni == ["images.example"]
        assert tls_server.hits[0][1]["Host"] == f"images.example:{tls_server.port}"

        # Same address, a name the certificate does not cover: the check is against the name, not the address.
        assert refused(f"https://other.example:{tls_server.port}/img", policy=tls_server.policy) == (
            "We could not establish a verified https connection to the 'image' URL's host (other.example): "
            "its TLS certificate is not valid for that name.")
    finally:
        tls_server.close()


# --- URL refusals ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, scheme", [
    ("ftp://example.com/cat.png", "ftp"),
    ("file:///etc/passwd", "file"),
    ("data:image/png;base64,iVBORw0KGgo=", "data"),
    ("gopher://127.0.0.1:70/_stats", "gopher"),
    ("javascript:alert(1)", "javascript"),
])
def test_refuses_schemes_other_than_http_and_https(url, scheme):
    assert refused(url) == f"The 'image' URL must use http or https, not '{scheme}'."


@pytest.mark.parametrize("url", ["http://user:secret@example.com/cat.png", "https://token@example.com/cat.png"])
def test_refuses_userinfo(url):
    assert refused(url) == "The 'image' URL contains a user name or password, which is not allowed."


def test_refuses_userinfo_even_on_an_allowed_server(server):
    server.serve("/img", image_bytes("PNG"))
    assert "user name or password" in refused(f"http://u:p@127.0.0.1:{server.port}/img", policy=server.policy)
    assert server.hits == []


def test_refuses_missing_host_and_garbage():
    assert refused("http:///cat.png") == "The 'image' URL has no host."
    assert refused("") == "The 'image' parameter must be an http or https URL."
    assert "longer than 8192 characters" in refused("https://example.com/" + "a" * 9000)


def test_refuses_ports_other_than_80_and_443():
    # 8.8.8.8 is public, so only the port is wrong; refused before any connection is attempted.
    assert refused("http://8.8.8.8:22/x.png") == (
        "The 'image' URL uses port 22; only ports 80 and 443 are allowed.")


@pytest.mark.parametrize("url, phrase", [
    ("http://127.0.0.1/x.png", "a loopback address (127.0.0.1)"),
    ("http://10.0.0.5/x.png", "a private address (10.0.0.5)"),
    ("http://172.16.3.4/x.png", "a private address (172.16.3.4)"),
    ("http://192.168.1.1/x.png", "a private address (192.168.1.1)"),
    ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address (169.254.169.254)"),
    ("http://169.254.10.20/x.png", "a link-local address (169.254.10.20)"),
    ("http://100.64.0.1/x.png", "a shared (carrier-grade NAT) address (100.64.0.1)"),
    ("http://100.100.100.200/latest/meta-data/", "a cloud metadata address (100.100.100.200)"),
    ("http://0.0.0.0/x.png", "an unspecified ('this network') address (0.0.0.0)"),
    ("http://224.0.0.1/x.png", "a multicast address (224.0.0.1)"),
    ("http://255.255.255.255/x.png", "a reserved address (255.255.255.255)"),
    ("http://[::1]/x.png", "a loopback address (::1)"),
    ("http://[::ffff:127.0.0.1]/x.png", "a loopback address (::ffff:7f00:1)"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "a cloud metadata address (fd00:ec2::254)"),
    ("http://[fe80::1]/x.png", "a link-local address (fe80::1)"),
    ("http://[fc00::5]/x.png", "a private address (fc00::5)"),
    ("http://[::]/x.png", "an unspecified address (::)"),
    ("http://[64:ff9b::7f00:1]/x.png", "a loopback address (64:ff9b::7f00:1)"),  # NAT64 to 127.0.0.1
    ("http://[2002:a00:5::1]/x.png", "a private address (2002:a00:5::1)"),  # 6to4 of 10.0.0.5
])
def test_refuses_non_public_literal_addresses(url, phrase):
    assert refused(url) == (f"The 'image' URL points to {phrase}, which is not allowed. "
                            "Only addresses on the public internet can be fetched.")


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "0x7f000001", "017700000001", "127.1", "localhost"])
def test_refuses_numeric_forms_and_names_that_resolve_to_loopback(host):
    assert refused(f"http://{host}/x.png") == (
        f"The 'image' URL names the host '{host}'; it resolves to a loopback address, which is not allowed. "
        "Only addresses on the public internet can be fetched.")


def test_dotted_octal_is_not_even_a_url():
    # httpx reads four dotted numbers as an IPv4 literal and rejects the leading zeros; either way it is refused.
    assert refused("http://0177.0.0.1/x.png") == "The 'image' URL is not a valid URL."


def test_refuses_a_name_if_any_of_its_addresses_is_not_public(monkeypatch):
    """A rebinding server answers with a public and a private address; one bad answer is enough."""
    resolve_names(monkeypatch, {"rebind.example": ["93.184.216.34", "10.1.2.3"],
                                "v6.example": ["2606:4700:4700::1111", "fd12:3456::1"]})
    message = refused("https://rebind.example/x.png")
    assert message.startswith("The 'image' URL names the host 'rebind.example'; it resolves to a private address")
    assert "10.1.2.3" not in message  # internal addresses of names are not echoed
    assert "'v6.example'; it resolves to a private address" in refused("https://v6.example/x.png")


def test_the_test_allowance_is_one_address_and_one_port(server, other_server):
    other_server.serve("/img", image_bytes("PNG"))
    assert "a loopback address (127.0.0.1)" in refused(other_server.url("/img"), policy=server.policy)
    assert "a loopback address (127.0.0.2)" in refused(f"http://127.0.0.2:{server.port}/img", policy=server.policy)
    assert other_server.hits == []


def test_unknown_host():
    assert refused("http://no-such-host.invalid/x.png") == (
        "The 'image' URL names the host 'no-such-host.invalid', which could not be found.")


# --- Redirects -------------------------------------------------------------------------------------------------------

def test_redirect_to_the_metadata_address_is_refused(server):
    server.redirect("/img", "http://169.254.169.254/latest/meta-data/iam/security-credentials/")
    assert refused(server.url("/img"), policy=server.policy) == (
        "The 'image' URL redirects to a URL that points to a cloud metadata address (169.254.169.254), which is not "
        "allowed. Only addresses on the public internet can be fetched.")


def test_redirect_to_another_loopback_port_is_refused(server, other_server):
    other_server.serve("/secret", image_bytes("PNG"))
    server.redirect("/img", other_server.url("/secret"), status=307)
    message = refused(server.url("/img"), policy=server.policy)
    assert message.startswith("The 'image' URL redirects to a URL that points to a loopback address (127.0.0.1)")
    assert other_server.hits == []


def test_redirect_to_localhost_and_to_other_schemes_is_refused(server):
    server.redirect("/a", "http://localhost/img")  # (localhost on the allowed port would be the allowed pair)
    server.redirect("/b", "file:///etc/passwd")
    server.redirect("/c", "http://admin:pw@example.com/x.png")
    assert "redirects to a URL that names the host 'localhost'; it resolves to a loopback address" in refused(
        server.url("/a"), policy=server.policy)
    assert refused(server.url("/b"), policy=server.policy) == (
        "The 'image' URL redirects to a URL that uses 'file'; only http and https are allowed.")
    assert refused(server.url("/c"), policy=server.policy) == (
        "The 'image' URL redirects to a URL that contains a user name or password, which is not allowed.")


def test_too_many_redirects(server):
    for i in range(5):
        server.redirect(f"/r{i}", f"/r{i + 1}")
    server.serve("/r5", image_bytes("PNG"))
    assert refused(server.url("/r0"), policy=server.policy) == (
        "The 'image' URL redirected more than 3 times; at most 3 redirects are followed.")
    assert len(server.hits) == 4
    assert fetch(server.url("/r0"), policy=server.policy, max_redirects=5).content_type == "image/png"


# --- Size and time ---------------------------------------------------------------------------------------------------

def test_oversized_body_with_content_length_is_refused_before_reading_it(server):
    def huge_then_stall(h):
        h.send_response(200)
        h.send_header("Content-Length", str(50 * 1024 * 1024))
        h.end_headers()
        time.sleep(3)  # if the fetcher waited for the body, the deadline below would trip instead

    server.routes["/big"] = huge_then_stall
    started = time.monotonic()
    assert refused(server.url("/big"), policy=server.policy, max_bytes=1024 * 1024, timeout=2) == (
        "The image at the 'image' URL is larger than the 1 MB limit.")
    assert time.monotonic() - started < 1.5


def test_oversized_chunked_body_is_cut_off(server):
    sent = []

    def chunked(h):
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        block = b"\x89PNG\r\n\x1a\n" + b"\0" * (64 * 1024 - 8)
        for _ in range(64):  # 4 MB on offer
            h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            sent.append(len(block))
        h.wfile.write(b"0\r\n\r\n")

    server.routes["/chunked"] = chunked
    assert refused(server.url("/chunked"), policy=server.policy, max_bytes=1024 * 1024) == (
        "The image at the 'image' URL is larger than the 1 MB limit.")


def test_body_just_under_the_limit_is_accepted(server):
    data = image_bytes("PNG")
    server.serve("/img", data)
    assert fetch(server.url("/img"), policy=server.policy, max_bytes=len(data)).data == data
    assert f"larger than the {len(data) - 1} bytes limit" in refused(
        server.url("/img"), policy=server.policy, max_bytes=len(data) - 1)


def test_slow_server_hits_the_deadline(server):
    server.routes["/slow"] = lambda h: (time.sleep(3), h.reply(200, image_bytes("PNG")))
    started = time.monotonic()
    assert refused(server.url("/slow"), policy=server.policy, timeout=0.5) == (
        "The 'image' URL did not answer within 0.5 seconds.")
    assert time.monotonic() - started < 1.5


def test_the_deadline_covers_a_trickling_body_and_all_hops(server):
    def trickle(h):
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(1000):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.05)  # each read is quick; only an overall deadline stops this

    server.routes["/trickle"] = trickle
    server.redirect("/hop", "/trickle")
    started = time.monotonic()
    assert "did not answer within 0.5 seconds" in refused(server.url("/hop"), policy=server.policy, timeout=0.5)
    assert time.monotonic() - started < 1.5


# --- Status and content ----------------------------------------------------------------------------------------------

def test_error_status_is_named(server):
    server.serve("/gone", b"<h1>oops</h1>", "text/html", status=500)
    assert refused(server.url("/missing.png"), policy=server.policy) == (
        "The 'image' URL answered with HTTP 404 (Not Found); it must answer 200 with the image.")
    assert refused(server.url("/gone"), policy=server.policy).startswith(
        "The 'image' URL answered with HTTP 500 (Internal Server Error)")


def test_html_is_not_an_image_whatever_the_header_says(server):
    server.serve("/page", b"<!doctype html><html><body>hi</body></html>", "image/png")
    assert refused(server.url("/page"), policy=server.policy) == (
        "The file at the 'image' URL is not a PNG, JPEG or WebP image.")


def test_gif_and_empty_bodies_are_refused(server):
    server.serve("/gif", image_bytes("GIF"), "image/gif")
    server.serve("/empty", b"", "image/png")
    for path in ("/gif", "/empty"):
        assert refused(server.url(path), policy=server.policy) == (
            "The file at the 'image' URL is not a PNG, JPEG or WebP image.")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_truncated_or_corrupt_png_is_refused(server, damage):
    data = image_bytes("PNG", (256, 256))
    data = data[: len(data) // 2] if damage == "truncated" else data[:8] + b"\x13" * 200
    server.serve("/bad.png", data, "image/png")
    assert refused(server.url("/bad.png"), policy=server.policy) == (
        "The file at the 'image' URL is not a valid PNG image (it is truncated or corrupt).")


def test_truncated_jpeg_is_refused(server):
    data = image_bytes("JPEG", (256, 256))
    server.serve("/bad.jpg", data[: len(data) // 2], "image/jpeg")
    assert refused(server.url("/bad.jpg"), policy=server.policy) == (
        "The file at the 'image' URL is not a valid JPEG image (it is truncated or corrupt).")


def test_decompression_bombs_are_refused_from_the_header(server):
    server.serve("/60mp.png", png_claiming(10_000, 6_000), "image/png")
    server.serve("/10gp.png", png_claiming(100_000, 100_000), "image/png")
    assert refused(server.url("/60mp.png"), policy=server.policy) == (
        "The image at the 'image' URL is 10000x6000 pixels (60.0 megapixels), more than the 50 megapixels limit.")
    assert refused(server.url("/10gp.png"), policy=server.policy) == (
        "The image at the 'image' URL has more pixels than the 50 megapixels limit.")


def test_compressed_responses_are_refused(server):
    server.serve("/img", zlib.compress(image_bytes("PNG")), "image/png", Content_Encoding="deflate")
    assert "sent the image compressed ('deflate')" in refused(server.url("/img"), policy=server.policy)


def test_connection_refused(server, other_server):
    port = other_server.port
    other_server.close()
    message = refused(f"http://127.0.0.1:{port}/x.png", policy=AddressPolicy(allow=[("127.0.0.1", port)]))
    assert message == "We could not connect to the 'image' URL's host (127.0.0.1)."


# --- The address rules on their own ----------------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_pass(address):
    assert non_public_kind(ipaddress.ip_address(address)) is None
    assert AddressPolicy().refusal(ipaddress.ip_address(address), 443) is None


@pytest.mark.parametrize("address", ["198.18.0.1", "192.0.2.1", "203.0.113.9", "192.0.0.170", "240.0.0.1",
                                     "ff02::1", "fec0::1", "2001:db8::1", "2001::1", "::7f00:1", "100::1"])
def test_other_special_purpose_addresses_are_refused(address):
    assert non_public_kind(ipaddress.ip_address(address)) is not None


def test_sniff():
    assert sniff(image_bytes("PNG")) == "image/png"
    assert sniff(image_bytes("JPEG")) == "image/jpeg"
    assert sniff(image_bytes("WEBP")) == "image/webp"
    assert sniff(image_bytes("GIF")) is None
    assert sniff(b"RIFF\0\0\0\0WAVE") is None
