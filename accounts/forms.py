from django import forms

from . import services


class OrganizationSignupForm(forms.Form):
    """Extra fields on allauth's sign-up form: the organization the new user will own."""

    organization_name = forms.CharField(
        max_length=200, required=False, label="Organization name",
        help_text="Your team or company. You can leave it blank and we will name it after you.",
        widget=forms.TextInput(attrs={"placeholder": "Acme Inc.", "autocomplete": "organization"}),
    )

    def signup(self, request, user):
        """Called by allauth once the user exists: give them their organization, as its owner."""
        name = (self.cleaned_data.get("organization_name") or "").strip() or f"{user.email.split('@')[0]}'s organization"
        services.create_organization(name=name, owner=user)


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, label="Key name",
                           widget=forms.TextInput(attrs={"placeholder": "production-backend", "autofocus": True}))
    rate_limit_rpm = forms.IntegerField(
        min_value=0, max_value=100000, required=False, initial=0, label="Requests per minute",
        help_text="0 or empty uses the default limit.",
    )
