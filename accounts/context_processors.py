from . import roles
from .selectors import current_membership


def current_organization(request):
    """`membership`, `organization` and `org_perms` (the role's permissions, accounts/roles.py) for every template:
    templates show a control only when `"manage_keys" in org_perms` (and the like), as the views check it."""
    membership = getattr(request, "_membership_cache", None)
    if membership is None and getattr(request, "user", None) is not None and request.user.is_authenticated:
        membership = current_membership(request.user, request.session.get("organization_id"))
        request._membership_cache = membership
    return {"membership": membership, "organization": membership.organization if membership else None,
            "org_perms": roles.ROLE_PERMISSIONS.get(membership.role, frozenset()) if membership else frozenset()}
