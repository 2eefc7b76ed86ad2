"""ASGI entry point.

Two Django handlers share one process: the API (/v1 and signed image URLs) runs through `APIHandler` and a lean
middleware list (settings.API_MIDDLEWARE: request ids and rate-limit headers, both async), the pages through
Django's stock handler and the full list (sessions, CSRF, auth, messages, allauth). Oversized bodies are refused on
every path before Django reads them, with a limit per route (config/http/body_limit.py, settings.BODY_LIMITS).
The operators' endpoints (/healthz, /readyz, /metrics) are answered before Django (config/observability/endpoints.py).
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()

from django.conf import settings  # noqa: E402  (after Django is set up)
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.test.signals import setting_changed  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from config.http.body_limit import BodyLimitMiddleware  # noqa: E402
from config.http.security import APISecurity  # noqa: E402
from config.observability import endpoints as operator_endpoints  # noqa: E402

API_PREFIXES = ("/v1/", "/images/")


class APIHandler(ASGIHandler):
    """Django's request objects, URL routing and middleware (settings.API_MIDDLEWARE), without the stock handler's
    per-request thread hops.

    The stock ASGIHandler sends `request_started` and `request_finished` through sync_to_async (their receiver,
    close_old_connections, is sync) inside a fresh thread-sensitive context, and starts a task per request to watch
    for a disconnect: about 800 µs of CPU for a trivial async view, against 100 µs here (docs/decisions.md). The
    API's database work runs on the threads of config/db.py, which give their connections back after every burst,
    so close_old_connections has nothing to do on this path. A client that disconnects is not watched for: the
    generation goes on (it is shielded anyway, so an image that was made is recorded once) and the answer is dropped.

    TLS and headers (config/http/security.py): with API_REQUIRE_HTTPS a request that did not come over HTTPS is
    refused (403 `https_required`) before any middleware or view runs; every answer gets the constant security
    headers (nosniff, a deny-all CSP, HSTS on HTTPS) in one dict merge.
    """

    def load_middleware(self, is_async=False):
        with override_settings(MIDDLEWARE=settings.API_MIDDLEWARE):
            super().load_middleware(is_async=is_async)
        self.security = APISecurity()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"The API serves HTTP only, not {scope['type']}.")
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                self.security.merge_headers(error_response, False)
                await self.send_response(error_response, send)
                return
            secure = request.is_secure()
            if not secure and self.security.require_https:
                await self.send_response(self.security.refusal(), send)
                return
            response = await self.get_response_async(request)
            self.security.merge_headers(response, secure)
            await self.send_response(response, send)
        finally:
            body_file.close()


api_application = APIHandler()


def _security_setting_changed(*, setting, **kwargs):
    """Tests that override the TLS settings get a handler that applies them (settings are read once per process)."""
    if setting in ("API_REQUIRE_HTTPS", "SECURE_PROXY_SSL_HEADER", "SECURE_HSTS_SECONDS", "SECURE_HSTS_PRELOAD",
                   "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_CONTENT_TYPE_NOSNIFF"):
        api_application.security = APISecurity()


setting_changed.connect(_security_setting_changed, dispatch_uid="api-security-settings")


async def _route(scope, receive, send):
    if scope["type"] == "http" and scope["path"].startswith(API_PREFIXES):
        return await api_application(scope, receive, send)
    if scope["type"] == "http" and scope["path"] in operator_endpoints.PATHS:  # /healthz, /readyz, /metrics
        return await operator_endpoints.app(scope, receive, send)
    return await django_application(scope, receive, send)


application = BodyLimitMiddleware(_route, limits=settings.BODY_LIMITS)
