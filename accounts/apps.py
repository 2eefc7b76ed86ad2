from django.apps import AppConfig


class AccountsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"
    verbose_name = "Accounts and organizations"

    def ready(self):
        # The API reads keys (with their organization) from a per-process cache (accounts/selectors.py); every
        # process drops it within a second of a change.
        from config.process_cache import invalidate_on_change

        from .models import ApiKey, Organization

        invalidate_on_change(ApiKey, "api_keys")
        invalidate_on_change(Organization, "api_keys")
