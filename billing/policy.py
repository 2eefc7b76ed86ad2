"""What an organization may do depending on its billing state: the documented policy, in one place.

With Stripe off (the embedded default) nothing is restricted: usage is recorded and reporting waits.
With Stripe on:
  * active or trialing subscription: full access within the organization's and keys' spend limits;
  * no subscription yet (never checked out): a free allowance of FREE_TIER_MONTHLY_MICROS per month ($1 by
    default), enforced as a spend limit, so people can try the API before entering a card;
  * past_due: full access for BILLING_GRACE_DAYS (7) after the first failed payment, while Stripe retries;
  * past_due beyond the grace period, unpaid, canceled, incomplete_expired: the API refuses image requests with
    429 `insufficient_quota` (x-should-retry: false). The dashboard, keys, usage history and the billing page keep
    working, so the customer can pay (Checkout / customer portal) and look at what they owe.
"""
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

BLOCKED_STATUSES = {"unpaid", "canceled", "incomplete_expired"}
ACTIVE_STATUSES = {"active", "trialing", "past_due"}


def stripe_enabled() -> bool:
    return bool(settings.STRIPE_API_KEY)


def free_tier_limit(account) -> int | None:
    """The free allowance that applies as a spend limit, or None."""
    if not stripe_enabled():
        return None
    if account is not None and account.subscription_status in ACTIVE_STATUSES:
        return None
    if account is not None and account.subscription_status in BLOCKED_STATUSES:
        return None  # refused outright by access_refusal
    return settings.FREE_TIER_MONTHLY_MICROS


def access_refusal(account) -> str | None:
    """Why the organization may not make paid requests right now, or None."""
    if not stripe_enabled() or account is None:
        return None
    status = account.subscription_status
    if status in BLOCKED_STATUSES:
        return (f"Your organization's subscription is {status.replace('_', ' ')}. Update your payment method on the "
                "billing page to continue using the API.")
    if status == "past_due" and account.past_due_since is not None:
        grace = timedelta(days=settings.BILLING_GRACE_DAYS)
        if timezone.now() - account.past_due_since > grace:
            return ("Your organization's payment is more than "
                    f"{settings.BILLING_GRACE_DAYS} days past due. Pay the open invoice on the billing page to "
                    "continue using the API.")
    return None


@dataclass(frozen=True)
class ChargeEstimate:
    """What this period's usage will cost the organization, as the billing page shows it beside the Stripe state.

    `micros`: integer micro-USD, a whole number of cents (what Stripe would invoice); `charged`: whether anything is
    billed at all; `note`: one sentence saying why."""

    micros: int
    charged: bool
    note: str


def estimated_charge(account, usage_micros: int) -> ChargeEstimate:
    """The estimate that agrees with the Stripe state: $0.00 when nothing is charged (Stripe off, no subscription,
    free allowance, blocked subscription); otherwise the usage rounded half-up to a cent, as Stripe invoices whole
    cents of a meter counted in micro-dollars (billing/stripe/gateway.py)."""
    from .money import round_to_cents

    if not stripe_enabled():
        return ChargeEstimate(0, False, "Nothing is charged: billing is not configured on this server.")
    status = account.subscription_status if account is not None else ""
    if status in ACTIVE_STATUSES:
        return ChargeEstimate(round_to_cents(usage_micros), True,
                              "Billed by Stripe at the end of the period, rounded to the cent.")
    if status in BLOCKED_STATUSES:
        return ChargeEstimate(0, False, f"Nothing more is charged: the subscription is {status.replace('_', ' ')}.")
    return ChargeEstimate(0, False, "Nothing is charged until you subscribe: this is the free allowance.")
