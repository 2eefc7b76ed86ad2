"""Money in templates: integers in, dollars out (never floats in the data, only in display)."""
from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def usd_micros(value, places: int = 2) -> str:
    """Micro-USD as dollars: 1234567 → "$1.23" (places=2) or "$1.234567" (places=6)."""
    if value is None:
        return "—"
    amount = (Decimal(int(value)) / Decimal(1_000_000)).quantize(Decimal(1).scaleb(-int(places)))
    return f"${amount:,}"


@register.filter
def usd_cents(value) -> str:
    if value is None:
        return "—"
    return f"${Decimal(int(value)) / 100:,.2f}"
