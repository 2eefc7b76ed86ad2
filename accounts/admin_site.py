"""Staff sign in to the admin through allauth and must use a second factor.

The default `admin.site` is adjusted in place (config/urls.py mounts it; no settings change is needed):

* `admin.site.login` sends people to allauth's login (which asks for the TOTP code of a user who has one), keeping
  `next`; a signed-in user who is not staff gets 403.
* `admin.site.has_permission` additionally requires, when `ADMIN_REQUIRE_MFA` (default True), that the staff user has
  a TOTP authenticator *and* that this session passed a second-factor check (allauth records it in the session).
  A staff user without TOTP is sent to allauth's TOTP setup page; one with TOTP whose session did not use it (e.g. a
  session from before TOTP was set up) is sent to allauth's MFA re-authentication page.
"""
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme


def mfa_required() -> bool:
    return getattr(settings, "ADMIN_REQUIRE_MFA", True)


def has_totp(user) -> bool:
    from allauth.mfa.models import Authenticator

    return Authenticator.objects.filter(user_id=user.pk, type=Authenticator.Type.TOTP).exists()


def session_used_mfa(request, user) -> bool:
    """Did this session pass a second-factor check for this user (login stage or re-authentication)?"""
    from allauth.account.authentication import get_authentication_records

    return any(record.get("method") == "mfa" for record in get_authentication_records(request, user))


def staff_mfa_ok(request) -> bool:
    user = request.user
    if not mfa_required():
        return True
    cached = getattr(request, "_admin_mfa_ok", None)
    if cached is None:
        cached = has_totp(user) and session_used_mfa(request, user)
        request._admin_mfa_ok = cached
    return cached


def has_permission(request) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and staff_mfa_ok(request))


def _with_next(url_name: str, next_url: str) -> str:
    return f"{reverse(url_name)}?{urlencode({'next': next_url})}"


def login(request, extra_context=None):
    """The admin's login URL: allauth does the signing in; staff without a second factor are sent to set one up."""
    next_url = request.GET.get("next") or request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        next_url = ""
    next_url = next_url or reverse("admin:index")
    user = request.user
    if not user.is_authenticated:
        return redirect(_with_next("account_login", next_url))
    if not (user.is_active and user.is_staff):
        raise PermissionDenied("The admin is for staff.")
    if mfa_required():
        if not has_totp(user):
            messages.warning(request, "Staff must set up an authenticator app (TOTP) before using the admin.")
            return redirect(_with_next("mfa_activate_totp", next_url))
        if not session_used_mfa(request, user):
            messages.info(request, "Confirm with your authenticator code to open the admin.")
            return redirect(_with_next("mfa_reauthenticate", next_url))
    return redirect(next_url)


def install(site=admin.site) -> None:
    site.login = login
    site.has_permission = has_permission


install()
