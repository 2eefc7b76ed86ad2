from decimal import Decimal

from django import forms


class SpendLimitForm(forms.Form):
    monthly_limit_usd = forms.DecimalField(
        label="Monthly spend limit (USD)", required=False, min_value=Decimal("0"), max_digits=12, decimal_places=2,
        help_text="Requests that would pass it are refused with insufficient_quota. Leave empty for no limit.",
    )

    def limit_micros(self) -> int | None:
        value = self.cleaned_data.get("monthly_limit_usd")
        return None if value is None else int(value * 1_000_000)
