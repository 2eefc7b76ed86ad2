"""Everything that talks to Stripe: the client, set-up (meter, product, metered price), customers, Checkout and the
customer portal. Configured by STRIPE_API_KEY and STRIPE_API_BASE (emulators and proxies)."""
import hashlib

import stripe
from django.conf import settings
from django.db import transaction

from accounts.models import Organization
from billing.models import BillingAccount, StripeSetup

PRICE_LOOKUP_KEY = "imagegate_usage_micros"
# One meter unit is one micro-dollar of usage: 0.0001 US cents.
UNIT_AMOUNT_DECIMAL = "0.0001"


class StripeNotConfigured(Exception):
    pass


def client(*, max_network_retries: int | None = None) -> stripe.StripeClient:
    if not settings.STRIPE_API_KEY:
        raise StripeNotConfigured("Stripe is not configured (STRIPE_API_KEY is empty).")
    base_addresses = {}
    if settings.STRIPE_API_BASE:
        base = settings.STRIPE_API_BASE.rstrip("/")
        base_addresses = {"api": base, "meter_events": base, "files": base, "connect": base}
    return stripe.StripeClient(
        settings.STRIPE_API_KEY,
        base_addresses=base_addresses,
        max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES if max_network_retries is None else max_network_retries,
        http_client=stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS),
    )


def account_key() -> str:
    """Identifies the Stripe account (API base + key) our set-up rows belong to, without storing the key."""
    return hashlib.sha256(f"{settings.STRIPE_API_BASE}|{settings.STRIPE_API_KEY}".encode()).hexdigest()


def current_setup() -> StripeSetup | None:
    return StripeSetup.objects.filter(account_key=account_key()).first()


def setup(*, sc: stripe.StripeClient | None = None) -> StripeSetup:
    """Idempotently create the Billing Meter, the product and the metered price; remember them."""
    sc = sc or client()
    event_name = settings.STRIPE_METER_EVENT_NAME
    meter = next((m for m in sc.v1.billing.meters.list(params={"status": "active", "limit": 100}).auto_paging_iter()
                  if m.event_name == event_name), None)
    if meter is None:
        meter = sc.v1.billing.meters.create(params={
            "display_name": "Imagegate usage (micro-USD)",
            "event_name": event_name,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }, options={"idempotency_key": f"imagegate-meter-{event_name}"})
    prices = sc.v1.prices.list(params={"lookup_keys": [PRICE_LOOKUP_KEY], "active": True, "limit": 1}).data
    if prices:
        price = prices[0]
        product_id = price.product if isinstance(price.product, str) else price.product.id
    else:
        product = sc.v1.products.create(params={"name": "Imagegate image generation",
                                                "description": "Images generated through the Imagegate API, "
                                                               "billed by usage."},
                                        options={"idempotency_key": f"imagegate-product-{event_name}"})
        product_id = product.id
        price = sc.v1.prices.create(params={
            "product": product_id, "currency": "usd", "lookup_key": PRICE_LOOKUP_KEY,
            "unit_amount_decimal": UNIT_AMOUNT_DECIMAL, "billing_scheme": "per_unit",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }, options={"idempotency_key": f"imagegate-price-{event_name}"})
    row, _ = StripeSetup.objects.update_or_create(
        account_key=account_key(),
        defaults={"meter_id": meter.id, "meter_event_name": event_name, "product_id": product_id,
                  "price_id": price.id},
    )
    return row


def ensure_customer(organization: Organization, *, sc: stripe.StripeClient | None = None) -> BillingAccount:
    """The organization's Stripe customer, created once (the idempotency key makes a retried create safe)."""
    account, _ = BillingAccount.objects.for_organization(organization).get_or_create(organization=organization)
    if account.stripe_customer_id:
        return account
    sc = sc or client()
    owner = organization.memberships.filter(role="owner").select_related("user").first()
    customer = sc.v1.customers.create(params={
        "name": organization.name,
        "email": owner.user.email if owner else None,
        "metadata": {"organization_id": str(organization.pk), "organization_slug": organization.slug},
    }, options={"idempotency_key": f"imagegate-customer-{account_key()[:16]}-{organization.pk}"})
    with transaction.atomic():
        updated = BillingAccount.objects.for_organization(organization).filter(stripe_customer_id="").update(
            stripe_customer_id=customer.id)
    account.refresh_from_db()
    return account if updated or account.stripe_customer_id else account


def checkout_url(organization: Organization, *, success_url: str, cancel_url: str) -> str:
    sc = client()
    setup_row = current_setup() or setup(sc=sc)
    account = ensure_customer(organization, sc=sc)
    session = sc.v1.checkout.sessions.create(params={
        "mode": "subscription",
        "customer": account.stripe_customer_id,
        "line_items": [{"price": setup_row.price_id}],  # metered: no quantity
        "success_url": success_url,
        "cancel_url": cancel_url,
        "client_reference_id": str(organization.pk),
        "metadata": {"organization_id": str(organization.pk)},
    })
    return session.url


def portal_url(organization: Organization, *, return_url: str) -> str:
    sc = client()
    account = ensure_customer(organization, sc=sc)
    session = sc.v1.billing_portal.sessions.create(params={"customer": account.stripe_customer_id,
                                                           "return_url": return_url})
    return session.url
