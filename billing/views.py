"""Billing endpoints: the Stripe webhook, and the dashboard's Checkout / customer-portal buttons."""
from django.contrib import messages
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from accounts import roles
from accounts.access import organization_page
from billing import money, policy
from billing.stripe import gateway as stripe_gateway
from billing.stripe import webhooks


@csrf_exempt
@require_POST
def stripe_webhook(request):
    try:
        event = webhooks.verify(request.body, request.headers.get("Stripe-Signature", ""))
    except webhooks.BadSignature:
        return HttpResponseBadRequest("invalid signature")
    except webhooks.BadEvent as exc:
        return HttpResponseBadRequest(f"invalid event: {exc}")
    duplicate = not webhooks.receive(event)
    return HttpResponse("duplicate" if duplicate else "ok")


@require_POST
@organization_page(roles.MANAGE_BILLING)
def checkout(request):
    if not policy.stripe_enabled():
        messages.error(request, "Billing is not configured on this server.")
        return redirect("billing")
    url = stripe_gateway.checkout_url(
        request.organization, success_url=request.build_absolute_uri(reverse("billing")) + "?checkout=success",
        cancel_url=request.build_absolute_uri(reverse("billing")) + "?checkout=cancelled",
    )
    return redirect(url)


@require_POST
@organization_page(roles.MANAGE_BILLING)
def portal(request):
    if not policy.stripe_enabled():
        messages.error(request, "Billing is not configured on this server.")
        return redirect("billing")
    return redirect(stripe_gateway.portal_url(request.organization,
                                              return_url=request.build_absolute_uri(reverse("billing"))))


@organization_page(roles.VIEW_USAGE)
def overview(request):
    """The dashboard's home: month-to-date spend, images and requests; for a chosen date range (this month by
    default) the totals, spend and images per day, and breakdowns by model, provider and API key."""
    from datetime import datetime, timedelta
    from datetime import time as dt_time

    from django.utils import timezone

    from accounts.selectors import api_keys_for_organization

    from . import selectors
    from .forms import UsageRangeForm

    organization = request.organization
    tz = timezone.get_current_timezone()
    today = timezone.localdate()
    default_from, default_to = today.replace(day=1), today
    range_errors = []

    form = UsageRangeForm({"date_from": request.GET.get("from", "").strip()[:40],
                           "date_to": request.GET.get("to", "").strip()[:40]})
    form.is_valid()
    for name, errors in form.errors.items():
        raw = request.GET.get("from" if name == "date_from" else "to", "")[:40]
        range_errors.append(f"“{raw}”: {' '.join(errors)}")
    date_from = form.cleaned_data.get("date_from") or default_from
    date_to = form.cleaned_data.get("date_to") or default_to
    if date_from > date_to:
        range_errors.append("The start date is after the end date.")
        date_from, date_to = default_from, default_to
    if (date_to - date_from).days >= OVERVIEW_MAX_DAYS:
        range_errors.append(f"A range covers at most {OVERVIEW_MAX_DAYS} days; showing the last {OVERVIEW_MAX_DAYS}.")
        date_from = date_to - timedelta(days=OVERVIEW_MAX_DAYS - 1)
    start = datetime.combine(date_from, dt_time.min, tzinfo=tz)
    end = datetime.combine(date_to + timedelta(days=1), dt_time.min, tzinfo=tz)

    days = selectors.daily_usage(organization=organization, start=start, end=end)
    return render(request, "dashboard/overview.html", {
        "usage": selectors.month_to_date(organization=organization),
        "recent": selectors.recent_entries(organization=organization, limit=10),
        "key_count": api_keys_for_organization(organization).filter(revoked_at__isnull=True).count(),
        "api_base": request.build_absolute_uri("/v1"),
        "date_from": date_from,
        "date_to": date_to,
        "range_errors": range_errors,
        "range_usage": selectors.usage_between(organization=organization, start=start, end=end),
        "days": days,
        "chart_data": selectors.usage_chart_data(organization=organization, start=start, end=end, days=days),
        "has_usage": any(d["requests"] for d in days),
        "breakdowns": [
            {"title": title, "column": column, "id": html_id,
             "rows": selectors.usage_breakdown(organization=organization, start=start, end=end, by=by)}
            for by, html_id, title, column in (("model", "by-model", "By model", "Model"),
                                               ("provider", "by-provider", "By provider", "Provider"),
                                               ("api_key", "by-key", "By API key", "Key"))
        ],
    })


OVERVIEW_MAX_DAYS = 366


@organization_page(roles.VIEW_USAGE, post=roles.MANAGE_BILLING)
def billing_page(request):
    """Stripe status, this period's usage and estimated charge, spend limit, invoices, Checkout and portal."""
    from accounts.selectors import api_keys_for_organization

    from . import selectors, services
    from .forms import KeySpendLimitForm, SpendLimitForm

    organization = request.organization
    account = selectors.billing_account(organization=organization)
    form = SpendLimitForm(initial={"monthly_limit_usd": money.dollars_for_input(
        account.monthly_spend_limit_micros if account else None)})
    keys = api_keys_for_organization(organization).filter(revoked_at__isnull=True)
    key_form = KeySpendLimitForm(keys=keys)
    if request.method == "POST":
        if "api_key" in request.POST:
            key_form = KeySpendLimitForm(request.POST, keys=keys)
            if key_form.is_valid():
                services.set_spend_limit(organization=organization, api_key=key_form.cleaned_data["api_key"],
                                         monthly_limit_micros=key_form.limit_micros())
                name = key_form.cleaned_data["api_key"].name
                messages.success(request, f"Monthly spend limit saved for key “{name}”.")
                return redirect("billing")
        else:
            form = SpendLimitForm(request.POST)
            if form.is_valid():
                services.set_spend_limit(organization=organization, monthly_limit_micros=form.limit_micros())
                messages.success(request, "Monthly spend limit saved.")
                return redirect("billing")
    usage = selectors.month_to_date(organization=organization)
    return render(request, "dashboard/billing.html", {
        "stripe_enabled": policy.stripe_enabled(),
        "account": account,
        "usage": usage,
        "estimate": policy.estimated_charge(account, usage.cost_micros),
        "invoices": selectors.invoices(organization=organization),
        "form": form,
        "key_form": key_form,
        "key_limits": selectors.key_spend_limits(organization=organization),
        "refusal": policy.access_refusal(account),
        "free_tier_limit": policy.free_tier_limit(account),
        "checkout_state": request.GET.get("checkout", ""),
    })
