import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()

from django.conf import settings  # noqa: E402  (after Django is set up)

from generation.body_limit import BodyLimitMiddleware  # noqa: E402

application = BodyLimitMiddleware(django_application, max_bytes=settings.API_MAX_BODY_BYTES)
