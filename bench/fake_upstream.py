"""A fake OpenAI Images upstream for the gateway benchmark: as fast as a Python server can answer.

Every `POST .../images/generations` gets OpenAI's response shape with one 64x64 PNG as `b64_json`, at once or after a
delay drawn uniformly from DELAY ± JITTER seconds. `POST /_control` with `{"delay": s, "jitter": s}` switches the
delay for the next requests (the benchmark sets it between phases, so the gateways under test keep one base URL).
`GET /_stats` answers how many generations were served.

It is a raw asyncio protocol over httptools (the parser uvicorn uses) on uvloop: the point is that the upstream
itself costs as little as possible, so what the benchmark measures is the gateways.

    python bench/fake_upstream.py --port 0     # prints its base URL (http://127.0.0.1:PORT/v1), then serves
"""
import argparse
import asyncio
import base64
import io
import json
import random
import socket
import sys
import time

import httptools

try:
    import uvloop
except ImportError:  # pragma: no cover - uvicorn[standard] brings it
    uvloop = None


def _png_64() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class State:
    delay = 0.0
    jitter = 0.0
    served = 0


def _body_for() -> bytes:
    return json.dumps({
        "created": int(time.time()),
        "data": [{"b64_json": PNG_B64, "revised_prompt": None}],
    }, separators=(",", ":")).encode()


PNG_B64 = base64.b64encode(_png_64()).decode()
RESPONSE_CACHE: dict[int, bytes] = {}


_REASONS = {200: b"OK", 404: b"Not Found"}


def _response(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: keep-alive\r\n\r\n"
            % (status, _REASONS[status], content_type, len(body))) + body


class Protocol(asyncio.Protocol):
    def __init__(self):
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.url = b""
        self.body = []
        self.method = b""

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self):
        self.url, self.body = b"", []

    def on_url(self, url):
        self.url += url

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        method = self.parser.get_method()
        url = self.url
        if method == b"POST" and url.endswith(b"/images/generations"):
            State.served += 1
            if State.delay > 0 or State.jitter > 0:
                wait = max(0.0, State.delay + random.uniform(-State.jitter, State.jitter))
                asyncio.get_running_loop().call_later(wait, self._send, _response(200, _body_for()))
            else:
                self._send(_response(200, _body_for()))
        elif method == b"POST" and url == b"/_control":
            params = json.loads(b"".join(self.body) or b"{}")
            State.delay = float(params.get("delay", State.delay))
            State.jitter = float(params.get("jitter", State.jitter))
            self._send(_response(200, b'{"ok":true}'))
        elif url == b"/_stats":
            self._send(_response(200, json.dumps({"served": State.served}).encode()))
        else:
            self._send(_response(404, b'{"error":{"message":"not found","type":"invalid_request_error",'
                                      b'"param":null,"code":null}}'))

    def _send(self, data: bytes):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc):
        self.transport = None


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Protocol, "127.0.0.1", port, backlog=4096, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{bound}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if uvloop is not None:
        uvloop.install()
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
