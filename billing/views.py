"""Billing endpoints: the Stripe webhook, and the dashboard's Checkout / customer-portal buttons."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseBadRequest, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from accounts.selectors import current_membership

from . import policy, stripe_gateway, webhooks


@csrf_exempt
@require_POST
def stripe_webhook(request):
    try:
        event = webhooks.verify(request.body, request.headers.get("Stripe-Signature", ""))
    except webhooks.BadSignature:
        return HttpResponseBadRequest("invalid signature")
    duplicate = not webhooks.receive(event)
    return HttpResponse("duplicate" if duplicate else "ok")


def _manager_membership(request):
    membership = current_membership(request.user, request.session.get("organization_id"))
    if membership is None or not membership.can_manage:
        return None
    return membership


@login_required
@require_POST
def checkout(request):
    membership = _manager_membership(request)
    if membership is None:
        return HttpResponseForbidden("Only owners and admins manage billing.")
    if not policy.stripe_enabled():
        messages.error(request, "Billing is not configured on this server.")
        return redirect("billing")
    url = stripe_gateway.checkout_url(
        membership.organization, success_url=request.build_absolute_uri(reverse("billing")) + "?checkout=success",
        cancel_url=request.build_absolute_uri(reverse("billing")) + "?checkout=cancelled",
    )
    return redirect(url)


@login_required
@require_POST
def portal(request):
    membership = _manager_membership(request)
    if membership is None:
        return HttpResponseForbidden("Only owners and admins manage billing.")
    if not policy.stripe_enabled():
        messages.error(request, "Billing is not configured on this server.")
        return redirect("billing")
    return redirect(stripe_gateway.portal_url(membership.organization,
                                              return_url=request.build_absolute_uri(reverse("billing"))))


def _membership(request):
    from accounts.views import membership_or_404

    return membership_or_404(request)


@login_required
def overview(request):
    """The dashboard's home: month-to-date spend, images and requests, and the latest requests."""
    from accounts.selectors import api_keys_for_organization

    from . import selectors

    organization = _membership(request).organization
    return render(request, "dashboard/overview.html", {
        "usage": selectors.month_to_date(organization=organization),
        "recent": selectors.recent_entries(organization=organization, limit=10),
        "key_count": api_keys_for_organization(organization).filter(revoked_at__isnull=True).count(),
        "api_base": request.build_absolute_uri("/v1"),
    })


@login_required
def billing_page(request):
    """Stripe status, this period's usage and estimated charge, spend limit, invoices, Checkout and portal."""
    from . import selectors, services
    from .forms import SpendLimitForm

    membership = _membership(request)
    organization = membership.organization
    account = selectors.billing_account(organization=organization)
    form = SpendLimitForm(initial={"monthly_limit_usd": (account.monthly_spend_limit_micros / 1e6)
                                   if account and account.monthly_spend_limit_micros is not None else None})
    if request.method == "POST":
        if not membership.can_manage:
            return HttpResponseForbidden("Only owners and admins manage billing.")
        form = SpendLimitForm(request.POST)
        if form.is_valid():
            services.set_spend_limit(organization=organization, monthly_limit_micros=form.limit_micros())
            messages.success(request, "Monthly spend limit saved.")
            return redirect("billing")
    return render(request, "dashboard/billing.html", {
        "stripe_enabled": policy.stripe_enabled(),
        "account": account,
        "usage": selectors.month_to_date(organization=organization),
        "invoices": selectors.invoices(organization=organization),
        "form": form,
        "refusal": policy.access_refusal(account),
        "free_tier_limit": policy.free_tier_limit(account),
        "checkout_state": request.GET.get("checkout", ""),
    })
