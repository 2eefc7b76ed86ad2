from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import AutocompleteSelect
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.forms.models import BaseInlineFormSet

from . import (
    admin_site,  # noqa: F401  (staff sign in through allauth with a second factor)
    keys,
    services,
)
from .admin_audit import log_staff_action
from .models import ApiKey, Membership, Organization, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "name"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


class SafeAutocompleteSelect(AutocompleteSelect):
    """Django's autocomplete widget queries the submitted value to show it again; a value that is not an id (a
    mistyped or hostile form) made that query raise (a 500) instead of showing the form's "Select a valid choice"."""

    def optgroups(self, name, value, attr=None):
        ids = [v for v in value if str(v).isdigit() and len(str(v)) < 19]
        return super().optgroups(name, ids, attr)


class SafeAutocomplete:
    """For admins with `autocomplete_fields`: their widgets show an invalid submitted value as an error."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        widget = getattr(field, "widget", None)
        inner = getattr(widget, "widget", widget)  # RelatedFieldWidgetWrapper around it, usually
        if type(inner) is AutocompleteSelect:
            inner.__class__ = SafeAutocompleteSelect
        return field


class BoundedInlineFormSet(BaseInlineFormSet):
    """A forged management form (INITIAL_FORMS below zero or beyond the rows) made Django's inline formset slice its
    queryset with it and fail; the count is kept to what exists."""

    def initial_form_count(self):
        count = super().initial_form_count()
        if self.is_bound:
            return max(0, min(count, len(self.get_queryset())))
        return count


class MembershipInlineFormSet(BoundedInlineFormSet):
    """One membership per person and organization: Django's own check leaves out the organization (the inline's
    parent), so a stale form adding someone who is already a member reached the database's constraint (a 500)."""

    def clean(self):
        super().clean()
        for form in self.forms:
            data = getattr(form, "cleaned_data", None) or {}
            user = data.get("user")
            if user is None or data.get("DELETE"):
                continue
            existing = Membership.all_tenants_unsafe.filter(organization=self.instance, user=user)
            if form.instance.pk is not None:
                existing = existing.exclude(pk=form.instance.pk)
            if existing.exists():
                form.add_error("user", f"{user} is already a member of this organization.")


class MembershipInline(SafeAutocomplete, admin.TabularInline):
    model = Membership
    formset = MembershipInlineFormSet
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "rate_limit_rpm", "remap_retired_models", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(SafeAutocomplete, admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role"]
    list_select_related = ["user", "organization"]
    search_fields = ["user__email", "organization__slug", "organization__name"]
    autocomplete_fields = ["user", "organization"]


class ApiKeyAdminForm(forms.ModelForm):
    """The key's allowed models as text (comma or newline separated; empty: every model), checked by the same rule as
    the keys page (accounts.services.normalize_allowed_models) instead of raw JSON that could be null."""

    allowed_models = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                     help_text="Model ids, comma or newline separated. Empty: every model.")
    scopes = forms.MultipleChoiceField(choices=list(keys.SCOPES.items()), widget=forms.CheckboxSelectMultiple,
                                       help_text="What the key may do (at least one).")

    class Meta:
        model = ApiKey
        fields = ["name", "rate_limit_rpm", "expires_at", "allowed_models", "scopes"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance is not None and not self.is_bound:
            self.initial["allowed_models"] = ", ".join(self.instance.allowed_models or [])

    def clean_scopes(self):
        try:
            return keys.normalize_scopes(self.cleaned_data.get("scopes"))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_allowed_models(self):
        raw = self.cleaned_data.get("allowed_models") or ""
        try:
            return services.normalize_allowed_models(raw.replace("\n", ",").split(","))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created by their organization (the raw secret is shown once) and never deleted: staff may rename,
    set the rate limit, or revoke."""

    form = ApiKeyAdminForm

    list_display = ["name", "prefix", "organization", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["organization"]
    search_fields = ["name", "=prefix", "organization__slug"]
    readonly_fields = ["organization", "prefix", "secret_hash", "created_by", "created_at", "last_used_at",
                       "revoked_at"]
    actions = ["revoke_selected"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request, queryset):
        revoked = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            services.revoke_api_key(api_key=api_key)
            log_staff_action(request, obj=api_key, message=f"Revoked API key {api_key.prefix}.")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key{'s' if revoked != 1 else ''}.")
