"""Stripe webhooks: verified, processed once, tolerant of duplicates and of events arriving out of order.

Each event is stored by its id before it is handled; a second delivery of the same id changes nothing. Subscription
state is taken from the subscription object in the event, and an event older than the last one applied to that
subscription (Stripe does not guarantee order) is recorded but not applied. Invoices are mirrored the same way.
"""
import json
import logging
from datetime import UTC, datetime

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import spend
from billing.models import BillingAccount, Invoice, StripeEvent

log = logging.getLogger(__name__)

DOUBT_KEY = "_resync"  # subscription ids whose state an ambiguous event left in doubt (see _apply_subscription)
HANDLED = {
    "checkout.session.completed", "customer.subscription.created", "customer.subscription.updated",
    "customer.subscription.deleted", "invoice.finalized", "invoice.paid", "invoice.payment_failed",
}


class BadEvent(Exception):
    """A correctly signed body that is not a Stripe event object."""


class BadSignature(Exception):
    pass


def _ts(value) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=UTC) if value else None


def verify(payload: bytes, signature: str) -> dict:
    """The event, if the signature is Stripe's and fresh (5 minutes), else BadSignature; BadEvent if the signed body
    is not an event object (a JSON object with a string `id` and `type` and an object `data.object`)."""
    try:
        stripe.Webhook.construct_event(payload, signature, settings.STRIPE_WEBHOOK_SECRET, tolerance=300)
    except stripe.SignatureVerificationError as exc:
        raise BadSignature(str(exc)) from exc
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # signed, but not a JSON object stripe reads
        raise BadEvent(f"the body is not a Stripe event object ({type(exc).__name__})") from exc
    try:
        event = json.loads(payload)  # the verified bytes, as plain JSON (no StripeObject, no Decimals)
    except ValueError as exc:
        raise BadEvent("the body is not JSON") from exc
    data = event.get("data") if isinstance(event, dict) else None
    if not (isinstance(event, dict) and isinstance(event.get("id"), str) and event["id"]
            and isinstance(event.get("type"), str) and isinstance(data, dict) and isinstance(data.get("object"), dict)):
        raise BadEvent("the body is not a Stripe event object: it needs a string id and type and an object "
                       "data.object")
    if len(event["id"]) > 255 or len(event["type"]) > 100:
        raise BadEvent("the event's id or type is too long")
    return event


def _account_for_customer(customer_id: str | None) -> BillingAccount | None:
    if not customer_id:
        return None
    return BillingAccount.all_tenants_unsafe.filter(stripe_customer_id=customer_id).first()


def _fetch_subscription(subscription_id: str) -> dict | None:
    """Stripe's current copy of the subscription, or None when Stripe cannot be asked (not configured, down)."""
    from billing.stripe import gateway as stripe_gateway

    try:
        sub = stripe_gateway.client(max_network_retries=1).v1.subscriptions.retrieve(subscription_id)
    except (stripe_gateway.StripeNotConfigured, stripe.StripeError) as exc:
        log.warning("Could not fetch subscription %s from Stripe (%s); using the event's copy", subscription_id, exc)
        return None
    return sub.to_dict() if hasattr(sub, "to_dict") else dict(sub)


def _apply_subscription(sub: dict, event_created: datetime) -> None:
    """Mirror a subscription's state on its organization's billing account.

    Stripe may deliver events late and in any order, and two events of the same second cannot be ordered by their
    `created` (a `customer.subscription.updated` to active and the `created` of the same subscription, incomplete,
    did that). So the event only says *which* subscription changed: its state is fetched from Stripe and applied,
    whatever the order, and every order converges on Stripe's own. Only when Stripe cannot be asked is the event's
    copy applied, the newer one winning; a same-second tie keeps the state and marks the subscription for the next
    reconciliation pass to fetch (`resync_subscriptions`)."""
    account = _account_for_customer(sub.get("customer"))
    if account is None:
        log.warning("Subscription %s for unknown customer %s", sub.get("id"), sub.get("customer"))
        return
    state = dict(account.subscription_state or {})
    doubtful = set(state.pop(DOUBT_KEY, []))
    truth = _fetch_subscription(sub["id"])
    if truth is not None:
        doubtful.discard(sub["id"])
        chosen, observed = truth, timezone.now()
    else:
        last = state.get(sub["id"])
        if last is not None and last > event_created.timestamp():
            return  # an older event arriving late: the newer state stays
        if last is not None and last == event_created.timestamp() and sub.get("status") != account.subscription_status:
            doubtful.add(sub["id"])  # same second, different state: ask Stripe on the next reconciliation
            state[DOUBT_KEY] = sorted(doubtful)
            BillingAccount.all_tenants_unsafe.filter(pk=account.pk).update(subscription_state=state,
                                                                           updated_at=timezone.now())
            return
        chosen, observed = sub, event_created
    state[sub["id"]] = max(event_created.timestamp(), state.get(sub["id"], 0))
    if doubtful:
        state[DOUBT_KEY] = sorted(doubtful)
    _store_subscription(account, chosen, observed, state)


def _store_subscription(account: BillingAccount, sub: dict, observed: datetime, state: dict) -> None:
    status = sub.get("status", "")
    item = ((sub.get("items") or {}).get("data") or [{}])[0]
    period_start = sub.get("current_period_start") or item.get("current_period_start")
    period_end = sub.get("current_period_end") or item.get("current_period_end")
    past_due_since = account.past_due_since if status == "past_due" else None
    if status == "past_due" and past_due_since is None:
        past_due_since = observed
    BillingAccount.all_tenants_unsafe.filter(pk=account.pk).update(
        stripe_subscription_id=sub["id"], subscription_status=status, current_period_start=_ts(period_start),
        current_period_end=_ts(period_end), past_due_since=past_due_since, subscription_state=state,
        updated_at=timezone.now(),
    )


def resync_subscriptions() -> int:
    """Fetch and apply every subscription a same-second tie left in doubt while Stripe could not be asked (from
    reconciliation, hourly); returns how many were settled."""
    settled = 0
    for account in BillingAccount.all_tenants_unsafe.filter(subscription_state__has_key=DOUBT_KEY):
        for subscription_id in list((account.subscription_state or {}).get(DOUBT_KEY, [])):
            truth = _fetch_subscription(subscription_id)
            if truth is None:
                continue
            with transaction.atomic():
                account = BillingAccount.all_tenants_unsafe.select_for_update().get(pk=account.pk)
                state = dict(account.subscription_state or {})
                state[DOUBT_KEY] = [s for s in state.get(DOUBT_KEY, []) if s != subscription_id]
                if not state[DOUBT_KEY]:
                    del state[DOUBT_KEY]
                _store_subscription(account, truth, timezone.now(), state)
            settled += 1
    if settled:
        spend.invalidate_limits()
    return settled


def _apply_invoice(inv: dict, event_created: datetime) -> None:
    account = _account_for_customer(inv.get("customer"))
    if account is None:
        log.warning("Invoice %s for unknown customer %s", inv.get("id"), inv.get("customer"))
        return
    existing = Invoice.all_tenants_unsafe.filter(stripe_invoice_id=inv["id"]).first()
    if existing is not None and existing.event_at and existing.event_at > event_created:
        return
    Invoice.all_tenants_unsafe.update_or_create(stripe_invoice_id=inv["id"], defaults={
        "organization_id": account.organization_id, "number": inv.get("number") or "",
        "status": inv.get("status") or "", "currency": inv.get("currency") or "usd",
        "amount_due": inv.get("amount_due") or 0, "amount_paid": inv.get("amount_paid") or 0,
        "hosted_invoice_url": inv.get("hosted_invoice_url") or "", "period_start": _ts(inv.get("period_start")),
        "period_end": _ts(inv.get("period_end")), "created": _ts(inv.get("created")) or event_created,
        "event_at": event_created,
    })


def _apply(event: dict) -> None:
    kind, obj = event["type"], event["data"]["object"]
    created = _ts(event.get("created")) or timezone.now()
    if kind == "checkout.session.completed":
        account = _account_for_customer(obj.get("customer"))
        if account is None and obj.get("client_reference_id"):
            organization_id = int(obj["client_reference_id"])
            account, _ = BillingAccount.all_tenants_unsafe.get_or_create(organization_id=organization_id)
            if not account.stripe_customer_id and obj.get("customer"):
                BillingAccount.all_tenants_unsafe.filter(pk=account.pk).update(stripe_customer_id=obj["customer"])
        if account is not None and obj.get("subscription") and not account.stripe_subscription_id:
            BillingAccount.all_tenants_unsafe.filter(pk=account.pk).update(stripe_subscription_id=obj["subscription"],
                                                                subscription_status="active")
    elif kind.startswith("customer.subscription."):
        _apply_subscription(obj, created)
    elif kind.startswith("invoice."):
        _apply_invoice(obj, created)
        if kind == "invoice.payment_failed":
            account = _account_for_customer(obj.get("customer"))
            if account is not None and account.past_due_since is None:
                BillingAccount.all_tenants_unsafe.filter(pk=account.pk).update(past_due_since=created)


def receive(event: dict) -> bool:
    """Store and apply one verified event; False if it was a duplicate delivery."""
    try:
        with transaction.atomic():
            row = StripeEvent.objects.create(event_id=event["id"], type=event["type"], payload=event)
    except IntegrityError:
        return False
    if event["type"] in HANDLED:
        try:
            with transaction.atomic():
                _apply(event)
                spend.invalidate_limits()  # a subscription's state decides the free tier and refusals
        except Exception as exc:  # keep the event for staff; answer 200 so Stripe does not hammer us
            log.exception("Webhook %s failed", event["id"])
            StripeEvent.objects.filter(pk=row.pk).update(error=repr(exc)[:2000])
            return True
    StripeEvent.objects.filter(pk=row.pk).update(processed_at=timezone.now())
    return True
