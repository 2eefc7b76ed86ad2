"""TLS and security headers on the API's own path (/v1 and /images/, served by config/asgi.py's APIHandler).

The pages get theirs from Django's SecurityMiddleware (HSTS, nosniff, the HTTPS redirect) and django-csp (the
Content-Security-Policy); the API skips that middleware stack (decision 8), so its handler applies this instead:

  * `refuses(request)`: with settings.API_REQUIRE_HTTPS (on when DJANGO_DEBUG is off), a request that did not come
    over HTTPS (Django's own `request.is_secure()`, which honours SECURE_PROXY_SSL_HEADER, i.e. the proxy's
    `X-Forwarded-Proto`) is answered 403 `https_required` in OpenAI's envelope. Not redirected: the key has already
    crossed the network in clear text, and a client that follows a redirect would go on sending it that way unnoticed
    (and most clients turn a redirected POST into a GET).
  * `merge_headers(response, secure)`: constant headers, precomputed once per process as Django's ResponseHeaders
    stores them (lower-case name -> (name, value)), merged with one dict update: `X-Content-Type-Options: nosniff`
    (clients must not sniff a JSON error or an image as HTML), `Content-Security-Policy: default-src 'none';
    frame-ancestors 'none'` (OWASP's advice for API responses: nothing in them may load or be framed), and on HTTPS
    requests `Strict-Transport-Security` as Django's SecurityMiddleware builds it from SECURE_HSTS_SECONDS,
    SECURE_HSTS_INCLUDE_SUBDOMAINS and SECURE_HSTS_PRELOAD (RFC 6797 §7.2: never over plain HTTP).

Sources: RFC 6797 (HSTS); OWASP REST Security Cheat Sheet, "Security Headers"; Django's SecurityMiddleware
(django/middleware/security.py) for the HSTS value's format.
"""
import json

from django.conf import settings
from django.http import HttpResponse
from django.http.response import ResponseHeaders

from config.http.middleware import new_request_id

API_CSP = "default-src 'none'; frame-ancestors 'none'"

HTTPS_REQUIRED_MESSAGE = (
    "This API is served over HTTPS only: use https:// in your base URL (e.g. https://<host>/v1). The request was "
    "refused, not redirected, because it carried your API key in clear text; if the key may have been seen on the "
    "way, rotate it on the dashboard's API keys page.")


def _store(headers: dict[str, str]) -> dict[str, tuple[str, str]]:
    """`headers` validated and encoded by Django's ResponseHeaders, in the shape of its store."""
    return dict(ResponseHeaders(headers)._store)


def hsts_value() -> str | None:
    """The Strict-Transport-Security value Django's SecurityMiddleware would send, or None when HSTS is off."""
    if not settings.SECURE_HSTS_SECONDS:
        return None
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return value


class APISecurity:
    """Built once per process from settings (APIHandler.load_middleware); every request then costs one
    `is_secure()` and one dict update."""

    def __init__(self):
        self.require_https = bool(getattr(settings, "API_REQUIRE_HTTPS", False))
        plain = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": API_CSP}
        if not settings.SECURE_CONTENT_TYPE_NOSNIFF:
            del plain["X-Content-Type-Options"]
        hsts = hsts_value()
        self.plain_headers = _store(plain)
        self.secure_headers = _store({**plain, "Strict-Transport-Security": hsts} if hsts else plain)
        self.refusal_body = json.dumps({"error": {
            "message": HTTPS_REQUIRED_MESSAGE, "type": "invalid_request_error", "param": None,
            "code": "https_required",
        }}).encode()

    def refusal(self) -> HttpResponse:
        """403 `https_required` in OpenAI's envelope, with the plain-HTTP headers and a request id."""
        response = HttpResponse(self.refusal_body, status=403, content_type="application/json")
        response.headers._store.update(self.plain_headers)
        response["x-request-id"] = new_request_id()
        return response

    def merge_headers(self, response, secure: bool) -> None:
        # ResponseHeaders validates and encodes each value it is given; these constants were validated by it once
        # (`_store`), so they go straight into its store (0.14 µs against 1.6 µs for three __setitem__ calls, measured).
        response.headers._store.update(self.secure_headers if secure else self.plain_headers)
