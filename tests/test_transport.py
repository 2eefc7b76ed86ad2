"""The shared upstream transport (generation/providers/transport.py) on its own: real aiohttp against a loopback
Starlette app, and the readings of an answer every adapter shares (retry hints, error bodies, content types)."""
import asyncio
import email.utils
import json
import time

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from generation.providers.base import UpstreamTimeout, UpstreamUnavailable, upload_filename
from generation.providers.transport import DownloadFailed, Reply, Transport
from tests.emulators.base import free_port, serve
from tests.emulators.stability import parse_multipart


def reply(status=200, body=b"", **headers) -> Reply:
    return Reply(status=status, reason="", headers=CIMultiDictProxy(CIMultiDict(headers)), body=body)


async def echo(request: Request) -> Response:
    """Answers with what it received: method, content type, the parsed form (files as [name, size, type])."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    form = None
    if content_type.startswith("multipart/form-data"):
        form = {k: (v if isinstance(v, str) else [v[0], len(v[1]), v[2]])
                for k, v in parse_multipart(content_type, body).items()}
    return Response(json.dumps({"method": request.method, "content_type": content_type, "form": form,
                                "user_agent": request.headers.get("user-agent")}), media_type="application/json")


async def status(request: Request) -> Response:
    code = int(request.path_params["code"])
    return Response(b'{"detail": "no such object"}', status_code=code, media_type="application/json")


async def big(request: Request) -> Response:
    return Response(b"x" * 4096, media_type="application/octet-stream")


async def slow(request: Request) -> Response:
    await asyncio.sleep(1.0)
    return Response(b"late")


@pytest.fixture(scope="module")
def server():
    app = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"]), Route("/status/{code}", status),
                            Route("/big", big), Route("/slow", slow)])
    with serve(app) as emu:
        yield emu.url


def call(coro_factory):
    async def go():
        transport = Transport(provider="test", timeout=2.0)
        try:
            return await coro_factory(transport)
        finally:
            await transport.aclose()

    return asyncio.run(go())


# --- bodies -----------------------------------------------------------------------------------------------------------

def test_multipart_without_files_when_asked(server):
    answer = call(lambda t: t.request("POST", server + "/echo", data={"prompt": "a fox", "seed": "3"},
                                      multipart=True)).json()
    assert answer["content_type"].startswith("multipart/form-data; boundary=")
    assert answer["form"] == {"prompt": "a fox", "seed": "3"}
    assert answer["user_agent"] == "imagegate/1.0"


def test_multipart_with_files_and_urlencoded_forms(server):
    answer = call(lambda t: t.request("POST", server + "/echo", data={"prompt": "x"},
                                      files=[("image", ("a.png", b"\x89PNG1234", "image/png"))])).json()
    assert answer["form"] == {"prompt": "x", "image": ["a.png", 8, "image/png"]}
    answer = call(lambda t: t.request("POST", server + "/echo", data={"prompt": "x"})).json()
    assert answer["content_type"] == "application/x-www-form-urlencoded" and answer["form"] is None


# --- bounds and failures ----------------------------------------------------------------------------------------------

def test_reply_over_max_bytes_is_refused_and_not_transient(server):
    with pytest.raises(UpstreamUnavailable) as err:
        call(lambda t: t.request("GET", server + "/big", max_bytes=100))
    assert "larger than the 100-byte limit" in err.value.message and not err.value.transient


def test_timeout_and_connection_failures_are_transient(server):
    with pytest.raises(UpstreamTimeout) as err:
        call(lambda t: t.request("GET", server + "/slow", timeout=0.2, label="the slow thing"))
    assert err.value.message == "the slow thing did not answer in time (timed out after 0.2 s)."
    assert err.value.transient and err.value.provider == "test"
    with pytest.raises(UpstreamUnavailable) as err:
        call(lambda t: t.request("GET", f"http://127.0.0.1:{free_port()}/x"))
    assert err.value.message.startswith("could not reach test at http://127.0.0.1:") and err.value.transient


@pytest.mark.parametrize("code, transient", [(404, False), (403, False), (429, True), (502, True)])
def test_download_failures_carry_the_status(server, code, transient):
    with pytest.raises(DownloadFailed) as err:
        call(lambda t: t.download(f"{server}/status/{code}", label="image 0", max_bytes=1000))
    assert err.value.status == code and err.value.transient is transient
    assert err.value.message == f"downloading image 0 failed: HTTP {code}: no such object"
    assert isinstance(err.value, UpstreamUnavailable)


def test_download_returns_the_body(server):
    assert call(lambda t: t.download(server + "/big", label="big", max_bytes=4096)) == b"x" * 4096


def test_sessions_of_closed_loops_are_dropped(server):
    transport = Transport(provider="test", timeout=2.0)
    for _ in range(3):
        asyncio.run(transport.request("GET", server + "/echo"))
    assert len(transport) == 1  # the last loop's; earlier ones were dropped when a new loop asked


# --- reading an answer ------------------------------------------------------------------------------------------------

def test_retry_after_forms():
    assert reply(429, **{"retry-after-ms": "1500", "retry-after": "9"}).retry_after() == 1.5
    assert reply(429, **{"retry-after": "3"}).retry_after() == 3.0
    assert reply(429, **{"retry-after": "0.5"}).retry_after() == 0.5
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= reply(429, **{"retry-after": later}).retry_after() <= 31
    assert reply(429, **{"retry-after": "soon"}).retry_after() is None
    assert reply(429).retry_after() is None


@pytest.mark.parametrize("body, text", [
    ({"detail": [{"loc": ["body", "width"], "msg": "Input should be a multiple of 32"},
                 {"loc": ["query", "id"], "msg": "Field required"}]},
     "width: Input should be a multiple of 32; id: Field required"),
    ({"detail": "Not authenticated"}, "Not authenticated"),
    ({"title": "Input validation failed", "detail": "- input.a: too big\n- input.b: too small\n", "status": 422},
     "Input validation failed: input.a: too big; input.b: too small"),
    ({"error": {"message": "Rate limit reached", "type": "requests"}}, "Rate limit reached"),
    ({"error": "rate_limit_exceeded", "message": "Too many active tasks", "retry_after": 1},
     "rate_limit_exceeded: Too many active tasks"),
    ({"id": "x", "name": "bad_request", "errors": ["prompt: is required", "seed: too big"]},
     "prompt: is required; seed: too big"),
    ({"id": "x", "name": "invalid", "message": "engine: not found"}, "engine: not found"),
])
def test_error_text_reads_the_upstreams_shapes(body, text):
    assert reply(400, json.dumps(body).encode()).error_text() == text


def test_error_text_falls_back_to_the_raw_body():
    assert reply(502, b"<html>502 Bad Gateway</html>").error_text() == "<html>502 Bad Gateway</html>"
    assert reply(500).error_text() == "HTTP 500 with an empty body"
    assert reply(500, b"x" * 500).error_text(10) == "x" * 10


def test_content_type_and_ok():
    assert reply(200, **{"content-type": "Image/PNG; charset=binary"}).content_type == "image/png"
    assert reply(204).ok and not reply(301).ok and reply(200).content_type == ""


def test_upload_filename_matches_the_content_type():
    assert upload_filename("photo", "image/jpeg") == "photo.jpg"
    assert upload_filename("photo.jpeg", "image/jpeg") == "photo.jpeg"
    assert upload_filename("a.png", "image/webp") == "a.webp"
    assert upload_filename("", "image/png", "mask") == "mask.png"
