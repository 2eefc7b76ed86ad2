"""Reads for accounts."""
from django.db.models import QuerySet

from . import keys
from .models import ApiKey, Membership, Organization, User


def find_active_api_key(raw_key: str) -> ApiKey | None:
    """The active key whose secret is `raw_key`: looked up by prefix, then the hash compared in constant time."""
    prefix = keys.split_prefix(raw_key or "")
    if prefix is None:
        return None
    api_key = ApiKey.unscoped.select_related("organization").filter(prefix=prefix).first()
    if api_key is None or not keys.matches(raw_key, api_key.secret_hash) or not api_key.is_active:
        return None
    return api_key


def memberships_for_user(user: User) -> QuerySet[Membership]:
    return Membership.unscoped.filter(user=user).select_related("organization").order_by("created_at")


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
