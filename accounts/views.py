"""Dashboard pages for customers: API keys. Thin: forms in, services and selectors do the work."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from . import selectors, services
from .forms import ApiKeyCreateForm
from .models import ApiKey


def membership_or_404(request):
    membership = selectors.current_membership(request.user, request.session.get("organization_id"))
    if membership is None:
        raise Http404("You are not a member of any organization.")
    request._membership_cache = membership
    return membership


@login_required
def api_keys(request):
    membership = membership_or_404(request)
    organization = membership.organization
    new_key = None
    form = ApiKeyCreateForm()
    if request.method == "POST":
        if not membership.can_manage:
            return HttpResponseForbidden("Only owners and admins can create API keys.")
        form = ApiKeyCreateForm(request.POST)
        if form.is_valid():
            api_key, new_key = services.create_api_key(
                organization=organization, name=form.cleaned_data["name"], created_by=request.user,
                rate_limit_rpm=form.cleaned_data.get("rate_limit_rpm") or 0,
            )
            messages.success(request, f"Key “{api_key.name}” created. Copy it now: it will not be shown again.")
            form = ApiKeyCreateForm()
    return render(request, "dashboard/api_keys.html", {
        "form": form,
        "new_key": new_key,
        "keys": selectors.api_keys_for_organization(organization),
        "api_base": request.build_absolute_uri("/v1"),
    })


@login_required
@require_POST
def revoke_api_key(request, key_id: int):
    membership = membership_or_404(request)
    if not membership.can_manage:
        return HttpResponseForbidden("Only owners and admins can revoke API keys.")
    try:
        api_key = ApiKey.objects.for_organization(membership.organization).get(pk=key_id)
    except ApiKey.DoesNotExist as exc:
        raise Http404("No such key.") from exc
    services.revoke_api_key(api_key=api_key)
    messages.success(request, f"Key “{api_key.name}” ({api_key.prefix}…) revoked. Requests using it now get 401.")
    return redirect("api-keys")
