"""What every /v1 endpoint shares: the DRF base view, API-key authentication, the scope check, the unknown-URL
answer and the public base URL that image URLs are built on. Errors leave through errors.py."""
import asyncio

from adrf.views import APIView
from django.conf import settings
from django.views.decorators.csrf import csrf_exempt

from accounts.authentication import ApiKeyAuthentication, KeyPrincipal
from config import db
from config.observability.middleware import observe
from generation.errors import APIError, handler404


def base_url(request) -> str:
    return settings.PUBLIC_BASE_URL or request.build_absolute_uri("/")


class V1APIView(APIView):
    """Base of every /v1 endpoint: API-key authentication, OpenAI's error envelope (settings.REST_FRAMEWORK).

    Async endpoints run DRF's `initial()` (authentication, rate limits) on the database threads of db.py rather
    than on a thread of the request's own, so no connection is held while the request waits on an upstream."""

    metadata_class = None  # no DRF metadata on OPTIONS: the API's surface is what the OpenAPI schema says

    async def async_dispatch(self, request, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            await db.run(self.initial, request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), None) if request.method.lower() in \
                self.http_method_names else None
            if handler is None:
                handler = self.http_method_not_allowed
            if asyncio.iscoroutinefunction(handler):
                response = await handler(request, *args, **kwargs)
            else:
                response = await db.run(handler, request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        api_key = getattr(request._request, "auth", None)  # DRF puts the authenticated key there too
        if api_key is not None:
            observe(request._request, organization_id=api_key.organization_id, key_prefix=api_key.prefix)
        return self.response


def require_scope(api_key, scope: str) -> None:
    """401 as OpenAI answers a restricted key without the permission (missing scopes named), code missing_scope."""
    if not api_key.has_scope(scope):
        raise APIError(f"You have insufficient permissions for this operation. Missing scopes: {scope}. This API "
                       f"key may: {', '.join(api_key.scopes) or 'nothing'}; create a key with this permission on the "
                       "dashboard's API keys page.", status=401, code="missing_scope")


async def authenticate(request) -> KeyPrincipal:
    """The API key of `Authorization: Bearer ...`, from the per-process key cache (accounts/authentication.py)."""
    return await ApiKeyAuthentication().authenticate_async(request)


@csrf_exempt
def unknown_url(request, *args, **kwargs):
    return handler404(request)
