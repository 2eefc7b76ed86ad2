"""Celery tasks: they only call services."""
import logging

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail

log = logging.getLogger(__name__)


@shared_task
def report_usage() -> dict:
    from . import policy, reporting

    if not policy.stripe_enabled():
        return {"skipped": "stripe not configured"}
    reporting.ensure_customers()
    stats = reporting.report_usage()
    return stats.__dict__


@shared_task
def reconcile_billing() -> dict:
    from . import policy, reconciliation

    if not policy.stripe_enabled():
        return {"skipped": "stripe not configured"}
    return reconciliation.reconcile().__dict__


@shared_task
def send_spend_alert(counter_id: int) -> int:
    """E-mail the organization's owners and admins that a monthly spend limit is 80% used."""
    from accounts.models import Membership

    from .models import SpendCounter
    from .services import _limit_of

    counter = SpendCounter.objects.select_related("organization", "api_key").filter(pk=counter_id).first()
    if counter is None:
        return 0
    limit = _limit_of(counter) or 0
    whose = f"API key “{counter.api_key.name}” ({counter.api_key.prefix}…)" if counter.api_key else "your organization"
    recipients = list(
        Membership.objects.for_organization(counter.organization).filter(role__in=["owner", "admin"])
        .values_list("user__email", flat=True)
    )
    if not recipients:
        return 0
    return send_mail(
        subject=f"Imagegate: {counter.organization.name} has used 80% of its monthly spend limit",
        message=(f"{whose.capitalize()} has spent ${counter.spent_micros / 1e6:,.2f} of its ${limit / 1e6:,.2f} "
                 f"monthly limit for {counter.month:%B %Y}.\n\nRequests beyond the limit will be refused with "
                 "insufficient_quota. You can raise the limit on the billing page.\n"),
        from_email=settings.DEFAULT_FROM_EMAIL, recipient_list=recipients,
    )


@shared_task
def refresh_rollups() -> dict:
    """Add the settled ledger rows above the watermark into the usage rollups (every minute, from beat)."""
    from . import rollups

    return rollups.refresh_rollups().__dict__
