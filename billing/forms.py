from datetime import date
from decimal import Decimal

from django import forms

from billing import money

FIRST_DAY = date(2020, 1, 1)  # no usage can be older: the product did not exist
LAST_DAY = date(2099, 12, 31)  # a range end beyond this is a typo (and 9999-12-31 + 1 day overflows)


class UsageDateField(forms.DateField):
    """A day of a usage range (dashboard, request log, exports): YYYY-MM-DD between FIRST_DAY and LAST_DAY."""

    default_error_messages = {"invalid": "Enter a date as YYYY-MM-DD."}

    def __init__(self, **kwargs):
        kwargs.setdefault("widget", forms.DateInput(attrs={"type": "date", "min": FIRST_DAY.isoformat(),
                                                           "max": LAST_DAY.isoformat()}))
        super().__init__(**kwargs)

    def to_python(self, value):
        try:
            day = super().to_python(value)
        except (OverflowError, ValueError) as exc:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from exc
        if day is not None and not FIRST_DAY <= day <= LAST_DAY:
            raise forms.ValidationError(f"Choose a date between {FIRST_DAY:%Y-%m-%d} and {LAST_DAY:%Y-%m-%d}.",
                                        code="out_of_range")
        return day


class UsageRangeForm(forms.Form):
    """?from=YYYY-MM-DD&to=YYYY-MM-DD of the dashboard's overview."""

    date_from = UsageDateField(required=False, label="From")
    date_to = UsageDateField(required=False, label="To")


class SpendLimitForm(forms.Form):
    monthly_limit_usd = forms.DecimalField(
        label="Monthly spend limit (USD)", required=False, min_value=Decimal("0"), max_digits=12, decimal_places=2,
        help_text="Requests that would pass it are refused with insufficient_quota. Leave empty for no limit.",
    )

    def limit_micros(self) -> int | None:
        value = self.cleaned_data.get("monthly_limit_usd")
        return None if value is None else int(value * money.MICROS_PER_USD)


class KeySpendLimitForm(SpendLimitForm):
    """A monthly spend limit for one of the organization's keys."""

    api_key = forms.ModelChoiceField(queryset=None, label="API key")

    field_order = ["api_key", "monthly_limit_usd"]

    def __init__(self, *args, keys=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["api_key"].queryset = keys
