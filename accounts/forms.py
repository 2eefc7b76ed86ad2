import re
from datetime import datetime, time
from decimal import Decimal

from django import forms
from django.utils import timezone

from . import keys, model_catalog, services
from .models import Membership


class OrganizationSignupForm(forms.Form):
    """Extra fields on allauth's sign-up form: the organization the new user will own."""

    organization_name = forms.CharField(
        max_length=200, required=False, label="Organization name",
        help_text="Your team or company. You can leave it blank and we will name it after you.",
        widget=forms.TextInput(attrs={"placeholder": "Acme Inc.", "autocomplete": "organization"}),
    )

    def signup(self, request, user):
        """Called by allauth once the user exists: give them their organization, as its owner."""
        name = ((self.cleaned_data.get("organization_name") or "").strip()
                or f"{user.email.split('@')[0]}'s organization")
        services.create_organization(name=name, owner=user)


class CatalogModelsField(forms.MultipleChoiceField):
    """Model ids from the catalog (accounts/model_catalog.py), ticked as checkboxes; ids sent as text (an API client,
    an older form) may be separated by commas or spaces. Cleaned: the ids as stored, de-duplicated in order; a
    misspelt id is refused with a message naming it and the nearest catalog id."""

    def to_python(self, value) -> list[str]:
        return [part for item in super().to_python(value) for part in re.split(r"[,\s]+", item) if part]

    def validate(self, value) -> None:
        if self.required and not value:
            raise forms.ValidationError(self.error_messages["required"], code="required")

    def clean(self, value) -> list[str]:
        value = super().clean(value)
        try:
            return services.normalize_allowed_models(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc), code="invalid_choice") from exc


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, label="Key name",
                           widget=forms.TextInput(attrs={"placeholder": "production-backend", "autofocus": True}))
    rate_limit_rpm = forms.IntegerField(
        min_value=0, max_value=100000, required=False, initial=0, label="Requests per minute",
        help_text="0 or empty uses the default limit.",
    )
    max_cost_usd = forms.DecimalField(
        required=False, min_value=Decimal("0.000001"), max_value=Decimal("1000000"), decimal_places=6,
        max_digits=13, label="Default max cost per request (USD)",
        help_text="Optional. A request with this key that would cost more is refused (cost_limit_exceeded) before "
                  "any image is made, unless it sends its own max_cost.",
    )
    expires_on = forms.DateField(
        required=False, label="Expires on", widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Optional. The key stops working at 00:00 UTC on this date.",
    )
    permissions = forms.ChoiceField(
        choices=[("all", "All"), ("restricted", "Restricted")], initial="all", required=False,
        widget=forms.RadioSelect, label="Permissions",
        help_text="All: everything a key can do. Restricted: only what you tick below.",
    )
    scopes = forms.MultipleChoiceField(
        choices=list(keys.SCOPES.items()), initial=keys.all_scopes(), widget=forms.CheckboxSelectMultiple,
        required=False, label="Restricted to",
        help_text="A key that only generates images cannot read your usage, and the other way round.",
    )
    allowed_models = CatalogModelsField(
        required=False, label="Allowed models", widget=forms.CheckboxSelectMultiple,
        help_text="Optional. Tick the models this key may call; none ticked allows every model.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].choices = [(model, model) for model, _ in model_catalog.choices()]

    def clean(self):
        data = super().clean()
        if data.get("permissions") == "restricted":
            if not data.get("scopes"):
                self.add_error("scopes", "Choose at least one permission for a restricted key.")
        else:
            data["scopes"] = keys.all_scopes()
        return data

    def clean_expires_on(self):
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        expires_at = timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())
        if expires_at <= timezone.now():
            raise forms.ValidationError("The expiry date must be in the future.")
        return expires_at

    def clean_allowed_models(self):
        return self.cleaned_data.get("allowed_models") or []

    def max_cost_micros(self) -> int | None:
        """The default ceiling in micro-USD (None: none)."""
        value = self.cleaned_data.get("max_cost_usd")
        return None if value is None else int(value * 1_000_000)


class ApiKeyRotateForm(forms.Form):
    revoke_old = forms.BooleanField(
        required=False, label="Revoke the old key now",
        help_text="Otherwise the old key keeps working for 24 hours, time to deploy the new one.",
    )


class InviteForm(forms.Form):
    email = forms.EmailField(label="E-mail", widget=forms.EmailInput(attrs={"placeholder": "colleague@example.com"}))
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER, label="Role")


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)



class OrganizationSettingsForm(forms.Form):
    remap_retired_models = forms.BooleanField(
        required=False, label="Serve retired models with their replacement",
        help_text="On: a request for a retired model is served by its replacement, at the replacement's price, with "
                  "an x-model-remapped header. Off: such requests get 404 model_not_found naming the replacement.",
    )
