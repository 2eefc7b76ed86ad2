"""Staff edit the content policy and the model lifecycle here. Every change of the policy ends by calling
moderation.invalidate_policy(), so all processes use the new policy from their next check; lifecycle rows invalidate
their cache on save (generation/apps.py)."""
from django import forms
from django.contrib import admin
from django.db.models import Count

from generation import catalog, lifecycle
from generation.pipeline import moderation

from .models import ModelLifecycle, ModerationCategory, ModerationTerm


class ModerationTermForm(forms.ModelForm):
    class Meta:
        model = ModerationTerm
        fields = ["category", "term", "kind", "enabled"]

    def clean_term(self):
        term = self.cleaned_data["term"].strip()
        if not moderation.normalise(term).strip():
            raise forms.ValidationError("A term needs at least one letter or digit.")
        return term


class InvalidatesPolicy:
    """ModelAdmin mixin: saves, deletes and actions go through Django, then the policy is invalidated."""

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        moderation.invalidate_policy()

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)  # inline terms are saved (and deleted) here
        moderation.invalidate_policy()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        moderation.invalidate_policy()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        moderation.invalidate_policy()

    @admin.action(description="Enable selected")
    def enable_selected(self, request, queryset):
        changed = moderation.set_enabled(rows=queryset, enabled=True)
        self.message_user(request, f"Enabled {changed}.")

    @admin.action(description="Disable selected")
    def disable_selected(self, request, queryset):
        changed = moderation.set_enabled(rows=queryset, enabled=False)
        self.message_user(request, f"Disabled {changed}.")


class ModerationTermInline(admin.TabularInline):
    model = ModerationTerm
    form = ModerationTermForm
    fields = ["term", "kind", "enabled"]
    extra = 3


@admin.register(ModerationCategory)
class ModerationCategoryAdmin(InvalidatesPolicy, admin.ModelAdmin):
    list_display = ["name", "slug", "enabled", "term_count", "updated_at"]
    list_editable = ["enabled"]
    list_filter = ["enabled"]
    search_fields = ["name", "slug", "description", "terms__term"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at", "updated_at"]
    fields = ["name", "slug", "enabled", "description", "created_at", "updated_at"]
    inlines = [ModerationTermInline]
    actions = ["enable_selected", "disable_selected"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(term_count=Count("terms"))

    @admin.display(description="terms", ordering="term_count")
    def term_count(self, obj):
        return obj.term_count


@admin.register(ModerationTerm)
class ModerationTermAdmin(InvalidatesPolicy, admin.ModelAdmin):
    form = ModerationTermForm
    list_display = ["term", "category", "kind", "enabled", "updated_at"]
    list_editable = ["kind", "enabled"]
    list_filter = ["enabled", "kind", "category"]
    list_select_related = ["category"]
    search_fields = ["term", "category__name", "category__slug"]
    readonly_fields = ["created_at", "updated_at"]
    actions = ["enable_selected", "disable_selected"]


class ModelLifecycleForm(forms.ModelForm):
    info_url = forms.URLField(required=False, assume_scheme="https", label="Info URL",
                              help_text=ModelLifecycle._meta.get_field("info_url").help_text)

    class Meta:
        model = ModelLifecycle
        fields = ["model", "status", "deprecated_at", "sunset_at", "replacement", "info_url", "note"]

    def clean(self):
        data = super().clean()
        model, replacement = data.get("model"), (data.get("replacement") or "").strip()
        if model and catalog.get_model(model) is None:
            self.add_error("model", f"'{model}' is not a catalog model (generation/catalog.py).")
        if replacement:
            if replacement == model:
                self.add_error("replacement", "A model cannot replace itself.")
            elif catalog.get_model(replacement) is None:
                self.add_error("replacement", f"'{replacement}' is not a catalog model.")
        data["replacement"] = replacement
        status = data.get("status")
        if status != ModelLifecycle.Status.ACTIVE and not data.get("deprecated_at"):
            self.add_error("deprecated_at", "A deprecated or retired model needs its deprecation date.")
        if status == ModelLifecycle.Status.DEPRECATED and not data.get("sunset_at"):
            self.add_error("sunset_at", "A deprecated model needs the date it will be retired (the Sunset header).")
        sunset, deprecated = data.get("sunset_at"), data.get("deprecated_at")
        if sunset and deprecated and sunset < deprecated:
            self.add_error("sunset_at", "The sunset cannot come before the deprecation.")
        return data


@admin.register(ModelLifecycle)
class ModelLifecycleAdmin(admin.ModelAdmin):
    """Staff change a model's lifecycle here; the save drops every process's cached table (generation/lifecycle.py)
    within a second."""

    form = ModelLifecycleForm
    list_display = ["model", "status", "deprecated_at", "sunset_at", "replacement", "updated_at"]
    list_filter = ["status"]
    search_fields = ["model", "replacement"]

    def delete_queryset(self, request, queryset):  # bulk deletes send no per-row signal
        super().delete_queryset(request, queryset)
        lifecycle.invalidate()
