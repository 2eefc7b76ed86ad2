"""The one door to every customer page: who is asking, in which organization, allowed to do what.

    @organization_page(roles.MANAGE_KEYS)            # every request needs the permission
    @organization_page(roles.VIEW_USAGE, post=roles.MANAGE_BILLING)   # reading for all, changing for some

The decorator requires a signed-in user (else the login page), resolves the organization the session works in
(the member's first one by default; 404 page if they belong to none), checks the role's permission
(accounts/roles.py; the 403 page names what the role lacks), and hands the view `request.membership` and
`request.organization`. Objects named in the URL are then found with `scoped_or_404(Model, request, pk)`, through
the tenant manager (accounts/tenancy.py), so another organization's id is a 404.
"""
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404

from . import roles, selectors
from .models import Membership


def current_membership(request) -> Membership:
    """The signed-in user's membership in the session's organization (cached on the request); Http404 if none."""
    membership = getattr(request, "_membership_cache", None)
    if membership is None:
        membership = selectors.current_membership(request.user, request.session.get("organization_id"))
        if membership is None:
            raise Http404("You are not a member of any organization.")
        request._membership_cache = membership
    return membership


def require(membership: Membership, permission: str) -> None:
    """PermissionDenied (the 403 page, with the reason) unless the member's role grants `permission`."""
    if not membership.has_perm(permission):
        raise PermissionDenied(roles.refusal(membership.role, permission))


def organization_page(permission: str = roles.VIEW_USAGE, *, post: str | None = None):
    """Decorator for a customer page: sign-in, organization, `permission` for every request and `post` in addition
    for POST requests. Sets request.membership and request.organization."""

    def decorator(view):
        @login_required
        @wraps(view)
        def page(request, *args, **kwargs):
            membership = current_membership(request)
            require(membership, permission)
            if post is not None and request.method == "POST":
                require(membership, post)
            request.membership, request.organization = membership, membership.organization
            return view(request, *args, **kwargs)

        page.organization_permission = permission  # read by tests/test_architecture.py: every page has a door
        return page

    return decorator


def scoped_or_404(model, request, pk):
    """The request's organization's `model` row `pk` (through its tenant manager), or Http404."""
    try:
        return model.objects.for_organization(request.organization).get(pk=pk)
    except (model.DoesNotExist, ValueError, TypeError) as exc:
        raise Http404(f"No such {model._meta.verbose_name}.") from exc
