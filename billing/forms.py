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


class KeySpendLimitForm(SpendLimitForm):
    """A monthly spend limit for one of the organization's keys."""

    api_key = forms.ModelChoiceField(queryset=None, label="API key")

    field_order = ["api_key", "monthly_limit_usd"]

    def __init__(self, *args, keys=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["api_key"].queryset = keys
