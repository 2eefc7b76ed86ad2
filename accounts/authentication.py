"""`Authorization: Bearer <key>` for the /v1 API (a Django REST framework authentication class).

Failures raise DRF's own NotAuthenticated / AuthenticationFailed; the API's exception handler turns them into
OpenAI's error envelope (401, code null for a missing key, `invalid_api_key` for a wrong, revoked or expired one).
"""
from dataclasses import dataclass
from datetime import UTC

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated

from . import selectors, services
from .models import ApiKey, Organization

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY). You can create a key on your dashboard's API keys page."
)


@dataclass(frozen=True)
class KeyPrincipal:
    """Who is calling: an API key of an organization. Stands in for `request.user` on the API."""

    api_key: ApiKey
    organization: Organization
    is_authenticated: bool = True


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "bearer"

    def authenticate(self, request):
        raw_key = self._raw_key(request)
        principal, api_key = self._principal(raw_key, selectors.find_api_key(raw_key))
        services.touch_api_key(api_key=api_key)  # the image endpoints do it in their one transaction instead
        return principal, api_key

    async def authenticate_async(self, request) -> KeyPrincipal:
        """The same from async code (a plain Django request): a cache hit costs no I/O."""
        raw_key = self._raw_key(request)
        return self._principal(raw_key, await selectors.find_api_key_async(raw_key))[0]

    def _raw_key(self, request) -> str:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, raw_key = header.partition(" ")
        raw_key = raw_key.strip()
        if scheme.lower() != self.keyword or not raw_key:
            raise NotAuthenticated(MISSING_KEY_MESSAGE)
        return raw_key

    def _principal(self, raw_key: str, api_key):
        if api_key is None:
            shown = f"{raw_key[:6]}****{raw_key[-4:]}" if len(raw_key) > 12 else "****"
            raise AuthenticationFailed(
                f"Incorrect API key provided: {shown}. The key is unknown or has been revoked. "
                "You can find and create API keys on your dashboard's API keys page.",
                code="invalid_api_key",
            )
        if api_key.is_expired():
            raise AuthenticationFailed(
                f"The API key {api_key.prefix}_… expired on {api_key.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC. "
                "Create a new key on your dashboard's API keys page.",
                code="invalid_api_key",
            )
        return KeyPrincipal(api_key=api_key, organization=api_key.organization), api_key

    def authenticate_header(self, request):
        return 'Bearer realm="api"'
