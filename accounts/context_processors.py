from .selectors import current_membership


def current_organization(request):
    membership = getattr(request, "_membership_cache", None)
    if membership is None and getattr(request, "user", None) is not None and request.user.is_authenticated:
        membership = current_membership(request.user, request.session.get("organization_id"))
        request._membership_cache = membership
    return {"membership": membership, "organization": membership.organization if membership else None}
