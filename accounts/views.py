"""Dashboard pages for customers: API keys, the team and the organization's settings. Thin: forms in, services
and selectors do the work."""
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST

from . import identity, roles, selectors, services
from .access import organization_page, require, scoped_or_404
from .forms import ApiKeyCreateForm, ApiKeyRotateForm, InviteForm, OrganizationSettingsForm, RoleForm
from .models import ApiKey, Invitation, Membership, User


def _render_keys(request, *, form=None, new_key=None, status=200):
    response = render(request, "dashboard/api_keys.html", {
        "form": form or ApiKeyCreateForm(),
        "rotate_form": ApiKeyRotateForm(),
        "new_key": new_key,
        "keys": selectors.api_keys_for_organization(request.organization),
        "api_base": request.build_absolute_uri("/v1"),
    }, status=status)
    if new_key:
        # The raw key is in this page: no browser or proxy cache may keep it (Cache-Control: no-store, ...), nor
        # the back/forward cache restore it.
        add_never_cache_headers(response)
    return response


@organization_page(roles.VIEW_USAGE, post=roles.MANAGE_KEYS)
def api_keys(request):
    if request.method != "POST":
        return _render_keys(request)
    form = ApiKeyCreateForm(request.POST)
    if not form.is_valid():
        return _render_keys(request, form=form)
    api_key, new_key = services.create_api_key(
        organization=request.organization, name=form.cleaned_data["name"], created_by=request.user,
        rate_limit_rpm=form.cleaned_data.get("rate_limit_rpm") or 0,
        expires_at=form.cleaned_data.get("expires_on"), allowed_models=form.cleaned_data.get("allowed_models"),
        scopes=form.cleaned_data.get("scopes"), max_cost_micros=form.max_cost_micros(),
    )
    messages.success(request, f"Key “{api_key.name}” created. Copy it now: it will not be shown again.")
    return _render_keys(request, new_key=new_key)


@require_POST
@organization_page(roles.MANAGE_KEYS)
def revoke_api_key(request, key_id: int):
    api_key = scoped_or_404(ApiKey, request, key_id)
    services.revoke_api_key(api_key=api_key)
    messages.success(request, f"Key “{api_key.name}” ({api_key.prefix}…) revoked. Requests using it now get 401.")
    return redirect("api-keys")


@require_POST
@organization_page(roles.MANAGE_KEYS)
def rotate_api_key(request, key_id: int):
    api_key = scoped_or_404(ApiKey, request, key_id)
    form = ApiKeyRotateForm(request.POST)
    revoke_old = form.is_valid() and form.cleaned_data["revoke_old"]
    try:
        new_row, new_key = services.rotate_api_key(api_key=api_key, created_by=request.user, revoke_old=revoke_old)
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("api-keys")
    if revoke_old:
        old_note = "The old key is revoked."
    else:
        old_note = f"The old key keeps working until {api_key.expires_at:%Y-%m-%d %H:%M} UTC."
    messages.success(request, f"Key “{new_row.name}” created to replace {api_key.prefix}…. {old_note} "
                              "Copy the new key now: it will not be shown again.")
    return _render_keys(request, new_key=new_key)


# --- Team -------------------------------------------------------------------------------------------------------

def _render_team(request, *, invite_form=None, status=200):
    organization = request.organization
    return render(request, "dashboard/team.html", {
        "members": selectors.team_members(organization),
        "invitations": (selectors.pending_invitations(organization)
                        if request.membership.has_perm(roles.MANAGE_TEAM) else []),
        "invite_form": invite_form or InviteForm(),
        "roles": Membership.Role.choices,
        "owner_count": selectors.owner_count(organization),
        "permissions": roles.table(),
    }, status=status)


@organization_page(roles.VIEW_USAGE, post=roles.MANAGE_TEAM)
def team(request):
    if request.method != "POST":
        return _render_team(request)
    form = InviteForm(request.POST)
    if not form.is_valid():
        return _render_team(request, invite_form=form)
    try:
        invitation, token = services.invite_member(
            organization=request.organization, email=form.cleaned_data["email"], role=form.cleaned_data["role"],
            invited_by=request.membership,
        )
    except services.NotAllowed as exc:
        raise PermissionDenied(str(exc)) from exc
    except (services.TeamError, ValueError) as exc:
        form.add_error(None, str(exc))
        return _render_team(request, invite_form=form)
    services.send_invitation_email(
        invitation=invitation, accept_url=request.build_absolute_uri(reverse("invite-accept", args=[token])))
    messages.success(request, f"Invitation sent to {invitation.email} ({invitation.get_role_display().lower()}).")
    return redirect("team")


@require_POST
@organization_page(roles.MANAGE_TEAM)
def change_member_role(request, membership_id: int):
    target = scoped_or_404(Membership, request, membership_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a role: owner, admin or member.")
        return redirect("team")
    try:
        target = services.change_role(membership=target, role=form.cleaned_data["role"], actor=request.membership)
    except services.NotAllowed as exc:
        raise PermissionDenied(str(exc)) from exc
    except services.TeamError as exc:
        messages.error(request, str(exc))
        return redirect("team")
    messages.success(request, f"{target.user.email} is now {target.get_role_display().lower()}.")
    return redirect("team")


@require_POST
@organization_page(roles.VIEW_USAGE)
def remove_member(request, membership_id: int):
    membership = request.membership
    target = scoped_or_404(Membership, request, membership_id)
    leaving = target.pk == membership.pk
    if not leaving:  # anyone may leave; removing someone else is managing the team
        require(membership, roles.MANAGE_TEAM)
    try:
        services.remove_member(membership=target, actor=membership)
    except services.NotAllowed as exc:
        raise PermissionDenied(str(exc)) from exc
    except services.TeamError as exc:
        messages.error(request, str(exc))
        return redirect("team")
    if leaving:
        request.session.pop("organization_id", None)
        messages.success(request, f"You left {membership.organization.name}.")
        return redirect("dashboard")
    messages.success(request, f"{target.user.email} was removed from {membership.organization.name}.")
    return redirect("team")


@require_POST
@organization_page(roles.MANAGE_TEAM)
def revoke_invitation(request, invitation_id: int):
    invitation = scoped_or_404(Invitation, request, invitation_id)
    try:
        services.revoke_invitation(invitation=invitation, actor=request.membership)
    except services.NotAllowed as exc:
        raise PermissionDenied(str(exc)) from exc
    messages.success(request, f"Invitation for {invitation.email} withdrawn.")
    return redirect("team")


def accept_invite(request, token: str):
    """The e-mailed link. Logged out: off to log in (or sign up) and back here. Logged in: a page with the
    invitation and an Accept button (GET never changes anything, so link scanners cannot accept for you)."""
    invitation = selectors.find_invitation(token)
    if invitation is None:
        raise Http404("This invitation link is not valid.")
    if not request.user.is_authenticated:
        has_account = User.objects.filter(email=identity.normalize_email(invitation.email)).exists()
        target = reverse("account_login" if has_account else "account_signup")
        return redirect(f"{target}?{urlencode({'next': request.get_full_path()})}")
    problem = None
    if invitation.accepted_at is not None:
        problem = "This invitation has already been used."
    elif invitation.is_expired():
        problem = "This invitation has expired. Ask the person who invited you for a new one."
    elif identity.normalize_email(invitation.email) != identity.normalize_email(request.user.email):
        problem = (f"This invitation is for {invitation.email}, but you are signed in as {request.user.email}. "
                   "Sign in with the invited address to accept it.")
    if request.method == "POST" and problem is None:
        try:
            new_membership = services.accept_invitation(invitation=invitation, user=request.user)
        except services.TeamError as exc:
            problem = str(exc)
        else:
            request.session["organization_id"] = new_membership.organization_id
            messages.success(request, f"You joined {new_membership.organization.name} as "
                                      f"{new_membership.get_role_display().lower()}.")
            return redirect("team")
    return render(request, "dashboard/invite.html", {"invitation": invitation, "problem": problem},
                  status=400 if problem and request.method == "POST" else 200)


@organization_page(roles.VIEW_USAGE, post=roles.MANAGE_BILLING)
def organization_settings(request):
    """The organization's settings: whether retired models are served by their replacement (it changes what
    requests cost, so changing it needs the billing permission)."""
    organization = request.organization
    if request.method == "POST":
        form = OrganizationSettingsForm(request.POST)
        if form.is_valid():
            enabled = form.cleaned_data["remap_retired_models"]
            services.set_remap_retired_models(organization=organization, enabled=enabled)
            messages.success(request, "Retired models are now served by their replacement." if enabled else
                             "Requests for retired models now get 404 model_not_found.")
            return redirect("organization-settings")
    else:
        form = OrganizationSettingsForm(initial={"remap_retired_models": organization.remap_retired_models})
    can_change = request.membership.has_perm(roles.MANAGE_BILLING)
    form.fields["remap_retired_models"].disabled = not can_change
    return render(request, "dashboard/settings.html", {
        "form": form, "organization": organization,
        "can_change": can_change,
    })
