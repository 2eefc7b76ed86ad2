"""The 80% spend-limit e-mail: queued by spend.settle() when a hold's settlement crosses the threshold, sent once per
limit and month by a Celery task (task name billing.tasks.send_spend_alert, kept from when it lived in tasks.py).

It lives here rather than in tasks.py so that spend.py can queue it without importing tasks.py, which imports the
Stripe code that imports spend.py (docs/architecture.md: no import cycles).
"""
from datetime import date

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q

from accounts.models import ApiKey, Membership, Organization

from . import money
from .models import SpendAlert


@shared_task(name="billing.tasks.send_spend_alert")
def send_spend_alert(organization_id: int, api_key_id: int | None, month: str, spent_micros: int,
                     limit_micros: int) -> int:
    """E-mail the organization's owners and admins that a monthly spend limit (`month` is YYYYMM) is 80% used;
    `api_key_id` is a key's lineage id (None: the organization's limit). Once per limit and month: the SpendAlert
    row's unique constraint decides, whatever Redis forgot."""
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None:
        return 0
    api_key = None
    if api_key_id is not None:  # a key lineage (its rotations): name the newest key of it
        api_key = (ApiKey.all_tenants_unsafe.filter(Q(pk=api_key_id) | Q(lineage=api_key_id))
                   .order_by("-created_at").first())
    first_day = date(int(month[:4]), int(month[4:]), 1)
    try:
        with transaction.atomic():
            SpendAlert.all_tenants_unsafe.create(organization=organization, api_key=api_key, month=first_day,
                                       scope="organization" if api_key_id is None else f"key:{api_key_id}",
                                       spent_micros=spent_micros, limit_micros=limit_micros)
    except IntegrityError:
        return 0  # already sent for this limit and month
    whose = f"API key “{api_key.name}” ({api_key.prefix}…)" if api_key else "your organization"
    recipients = list(
        Membership.objects.for_organization(organization).filter(role__in=["owner", "admin"])
        .values_list("user__email", flat=True)
    )
    if not recipients:
        return 0
    return send_mail(
        subject=f"Imagegate: {organization.name} has used 80% of its monthly spend limit",
        message=(f"{whose[0].upper() + whose[1:]} has spent {money.usd(spent_micros)} of its "
                 f"{money.usd(limit_micros)} monthly limit for {first_day:%B %Y}.\n\nRequests beyond the limit "
                 "will be refused with insufficient_quota. You can raise the limit on the billing page.\n"),
        from_email=settings.DEFAULT_FROM_EMAIL, recipient_list=recipients,
    )
