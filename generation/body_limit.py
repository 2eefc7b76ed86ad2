"""413 for oversized /v1 request bodies, decided before Django reads (and spools) the body.

Django's ASGI handler reads the whole body before any middleware runs, so the limit has to sit in front of it:
a Content-Length over the limit is refused at once; a chunked body is counted as it arrives and refused as soon as
it passes the limit.
"""
import json
import uuid


def _too_large(max_bytes: int) -> bytes:
    return json.dumps({"error": {
        "message": f"Request body too large: the limit is {max_bytes // 1_048_576} MB.",
        "type": "invalid_request_error", "param": None, "code": "request_too_large",
    }}).encode()


class BodyLimitMiddleware:
    def __init__(self, app, *, max_bytes: int, prefix: str = "/v1/"):
        self.app = app
        self.max_bytes = max_bytes
        self.prefix = prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                return await self._refuse(send)
            return await self.app(scope, receive, send)
        # No Content-Length (chunked): buffer up to the limit, then replay to Django.
        messages, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                return await self._refuse(send)
            messages.append(message)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, send):
        body = _too_large(self.max_bytes)
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", f"req_{uuid.uuid4().hex}".encode()), (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})
