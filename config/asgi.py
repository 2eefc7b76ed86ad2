"""ASGI entry point.

Two Django handlers share one process: the API (/v1 and signed image URLs) runs through a lean middleware list
(settings.API_MIDDLEWARE: request ids and rate-limit headers, both async), the pages through the full one
(sessions, CSRF, auth, messages, allauth). Django's sync middleware costs a thread hop per request in both
directions; the API does not need sessions or CSRF, and skipping them is what lets one process hold 1,000
generations in flight (docs/decisions.md, bench/capacity.py). Oversized API bodies are refused before Django reads
them (generation/body_limit.py).
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()

from django.conf import settings  # noqa: E402  (after Django is set up)
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from generation.body_limit import BodyLimitMiddleware  # noqa: E402

API_PREFIXES = ("/v1/", "/images/")


class APIHandler(ASGIHandler):
    def load_middleware(self, is_async=False):
        with override_settings(MIDDLEWARE=settings.API_MIDDLEWARE):
            super().load_middleware(is_async=is_async)


api_application = BodyLimitMiddleware(APIHandler(), max_bytes=settings.API_MAX_BODY_BYTES)


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"].startswith(API_PREFIXES):
        return await api_application(scope, receive, send)
    return await django_application(scope, receive, send)
