"""413 for oversized request bodies on every path, decided before Django reads (and spools) the body.

Django's ASGI handler reads the whole body into a temporary file before any middleware runs, so the limit has to sit
in front of it: a Content-Length over the route's limit is refused at once; a chunked body is counted as it arrives
and refused as soon as it passes the limit. Limits are per route (settings.BODY_LIMITS: the longest matching path
prefix wins): large for the image upload endpoints, small for JSON, forms and webhooks. The answer is OpenAI's error
envelope under /v1, a short JSON error for webhooks, and a plain page elsewhere.
"""
import json
import uuid


def _api_body(limit: int) -> bytes:
    return json.dumps({"error": {
        "message": f"Request body too large: the limit for this endpoint is {_size(limit)}.",
        "type": "invalid_request_error", "param": None, "code": "request_too_large",
    }}).encode()


def _size(limit: int) -> str:
    return f"{limit // 1_048_576} MB" if limit >= 1_048_576 else f"{limit // 1024} KB"


class BodyLimitMiddleware:
    """ASGI middleware: `limits` is [(path prefix, max bytes)]; the longest matching prefix applies."""

    def __init__(self, app, *, limits: list[tuple[str, int]]):
        self.app = app
        self.limits = sorted(limits, key=lambda item: len(item[0]), reverse=True)

    def limit_for(self, path: str) -> int | None:
        for prefix, limit in self.limits:
            if path.startswith(prefix):
                return limit
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_bytes = self.limit_for(scope["path"])
        if max_bytes is None:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > max_bytes
            except ValueError:
                too_big = False
            if too_big:
                return await self._refuse(scope, send, max_bytes)
            return await self.app(scope, receive, send)
        if scope["method"] in ("GET", "HEAD", "OPTIONS") and b"transfer-encoding" not in headers:
            return await self.app(scope, receive, send)
        # No Content-Length (chunked): buffer up to the limit, then replay to Django.
        messages, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            total += len(message.get("body", b""))
            if total > max_bytes:
                return await self._refuse(scope, send, max_bytes)
            messages.append(message)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, send, max_bytes: int):
        path = scope["path"]
        if path.startswith("/v1/"):
            body, content_type = _api_body(max_bytes), b"application/json"
        elif path.startswith("/billing/stripe/"):
            body = json.dumps({"error": f"Request body too large (limit {_size(max_bytes)})."}).encode()
            content_type = b"application/json"
        else:
            body = (f"Request body too large: this page accepts at most {_size(max_bytes)}. Go back and send less "
                    "(for example, a shorter text).\n").encode()
            content_type = b"text/plain; charset=utf-8"
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", f"req_{uuid.uuid4().hex}".encode()), (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})
