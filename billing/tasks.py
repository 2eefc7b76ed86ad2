"""Celery tasks: they only call services."""
import logging

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail

log = logging.getLogger(__name__)


@shared_task
def report_usage() -> dict:
    from billing import policy
    from billing.stripe import reporting

    if not policy.stripe_enabled():
        return {"skipped": "stripe not configured"}
    reporting.ensure_customers()
    stats = reporting.report_usage()
    return stats.__dict__


@shared_task
def reconcile_billing() -> dict:
    from billing import policy
    from billing.stripe import reconciliation

    if not policy.stripe_enabled():
        return {"skipped": "stripe not configured"}
    return reconciliation.reconcile().__dict__


@shared_task
def send_spend_alert(organization_id: int, api_key_id: int | None, month: str, spent_micros: int,
                     limit_micros: int) -> int:
    """E-mail the organization's owners and admins that a monthly spend limit (`month` is YYYYMM) is 80% used;
    `api_key_id` is a key's lineage id (None: the organization's limit). Once per limit and month: the SpendAlert
    row's unique constraint decides, whatever Redis forgot."""
    from datetime import date

    from django.db import IntegrityError, transaction

    from accounts.models import ApiKey, Membership, Organization

    from .models import SpendAlert

    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None:
        return 0
    api_key = None
    if api_key_id is not None:  # a key lineage (its rotations): name the newest key of it
        from django.db.models import Q

        api_key = (ApiKey.unscoped.filter(Q(pk=api_key_id) | Q(lineage=api_key_id)).order_by("-created_at").first())
    first_day = date(int(month[:4]), int(month[4:]), 1)
    try:
        with transaction.atomic():
            SpendAlert.unscoped.create(organization=organization, api_key=api_key, month=first_day,
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
        message=(f"{whose[0].upper() + whose[1:]} has spent ${spent_micros / 1e6:,.2f} of its "
                 f"${limit_micros / 1e6:,.2f} monthly limit for {first_day:%B %Y}.\n\nRequests beyond the limit "
                 "will be refused with insufficient_quota. You can raise the limit on the billing page.\n"),
        from_email=settings.DEFAULT_FROM_EMAIL, recipient_list=recipients,
    )


@shared_task
def seal_ledger(full: bool = False) -> dict:
    """Hash the ledger rows written since the last pass into their organizations' chains (every few seconds; with
    `full`, every unsealed row however old, hourly)."""
    from . import sealing

    return sealing.seal_pending(full=full).__dict__


@shared_task
def refresh_rollups() -> dict:
    """Add the settled ledger rows above the watermark into the usage rollups (every minute, from beat)."""
    from . import rollups

    return rollups.refresh_rollups().__dict__
