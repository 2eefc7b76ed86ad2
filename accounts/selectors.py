"""Reads for accounts."""
from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.utils import timezone

from config import process_cache

from . import keys
from .models import ApiKey, Invitation, Membership, Organization, User

# Keys by prefix, with their organization, kept per process: authenticating an API call costs no query. Any change
# to a key or an organization drops the cache in every process within a second (accounts/apps.py).
_keys_by_prefix = process_cache.ProcessCache("api_keys")


def _load_key(prefix: str) -> ApiKey | None:
    return ApiKey.all_tenants_unsafe.select_related("organization").filter(prefix=prefix).first()


def _check(raw_key: str, api_key: ApiKey | None) -> ApiKey | None:
    if api_key is None or not keys.matches(raw_key, api_key.secret_hash) or api_key.is_revoked:
        return None
    return api_key


def find_api_key(raw_key: str) -> ApiKey | None:
    """The unrevoked key whose secret is `raw_key`, expired or not (so the caller can say it expired): looked up by
    prefix (per-process cache), then the hash compared in constant time. The returned row is shared by concurrent
    requests of this process: read it, never change it."""
    prefix = keys.split_prefix(raw_key or "")
    if prefix is None:
        return None
    return _check(raw_key, _keys_by_prefix.get(prefix, _load_key))


async def find_api_key_async(raw_key: str) -> ApiKey | None:
    """find_api_key from async code: a cache hit costs no I/O; a miss queries on a database thread."""
    prefix = keys.split_prefix(raw_key or "")
    if prefix is None:
        return None
    return _check(raw_key, await _keys_by_prefix.aget(prefix, _load_key))


def find_active_api_key(raw_key: str) -> ApiKey | None:
    """The usable (unrevoked, unexpired) key whose secret is `raw_key`."""
    api_key = find_api_key(raw_key)
    if api_key is None or api_key.is_expired():
        return None
    return api_key


def key_allows_model(api_key: ApiKey | None, model: str) -> bool:
    """Whether `api_key` may use `model`: the one place the per-key model allow-list is read. An empty list (or no
    key) allows every model."""
    if api_key is None:
        return True
    allowed = api_key.allowed_models or []
    return not allowed or model in allowed


def memberships_for_user(user: User) -> QuerySet[Membership]:
    return Membership.all_tenants_unsafe.filter(user=user).select_related("organization").order_by("created_at")


def current_membership(user: User, organization_id: int | None = None) -> Membership | None:
    """The membership the user is working in: the one chosen in the session if still valid, else their first."""
    if not getattr(user, "is_authenticated", False):
        return None
    memberships = memberships_for_user(user)
    if organization_id is not None:
        chosen = memberships.filter(organization_id=organization_id).first()
        if chosen is not None:
            return chosen
    return memberships.first()


def api_keys_for_organization(organization: Organization) -> QuerySet[ApiKey]:
    return ApiKey.objects.for_organization(organization).select_related("created_by").order_by("-created_at")


def team_members(organization: Organization) -> QuerySet[Membership]:
    """The organization's memberships, owners first, then admins, then members."""
    rank = Case(When(role=Membership.Role.OWNER, then=Value(0)), When(role=Membership.Role.ADMIN, then=Value(1)),
                default=Value(2), output_field=IntegerField())
    return (Membership.objects.for_organization(organization).select_related("user")
            .annotate(role_rank=rank).order_by("role_rank", "created_at"))


def owner_count(organization: Organization) -> int:
    return Membership.objects.for_organization(organization).filter(role=Membership.Role.OWNER).count()


def pending_invitations(organization: Organization) -> QuerySet[Invitation]:
    return (Invitation.objects.for_organization(organization)
            .filter(accepted_at__isnull=True, expires_at__gt=timezone.now())
            .select_related("invited_by").order_by("-created_at"))


def find_invitation(raw_token: str) -> Invitation | None:
    """The invitation whose link carries `raw_token` (any state: the caller says why it cannot be used)."""
    if not raw_token or len(raw_token) > 200:
        return None
    return Invitation.all_tenants_unsafe.select_related("organization", "invited_by").filter(
        token_hash=keys.hash_key(raw_token)).first()
