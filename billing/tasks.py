"""Celery tasks: they only call services. Every billing task is registered from here (Celery's autodiscovery imports
this module); nothing in billing imports it, so the tasks can import anything without a cycle."""
import logging

from celery import shared_task

from .alerts import send_spend_alert  # noqa: F401  (a task defined beside the code that queues it; registered here)

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
