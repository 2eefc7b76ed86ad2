"""Money in templates: `{{ micros|usd }}` and `{{ cents|usd_cents }}`, delegating to billing/money.py (the one
formatter). Integers in, text out; never a float."""
from django import template

from billing import money

register = template.Library()


@register.filter
def usd(value) -> str:
    """Micro-USD → "$12.34" / "$0.003" (billing.money.usd); "—" for None."""
    return money.usd(value)


@register.filter
def usd_cents(value) -> str:
    """Stripe's integer cents → "$12.34" (billing.money.usd_cents); "—" for None."""
    return money.usd_cents(value)
