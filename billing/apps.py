from django.apps import AppConfig


class BillingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "billing"
    verbose_name = "Billing and usage ledger"

    def ready(self):
        # accounts cannot import billing (imports point generation → billing → accounts), so a key rotation in
        # accounts announces itself and billing carries the key's monthly spend limit over to the new key here.
        from accounts.services import api_key_rotated

        from . import services

        api_key_rotated.connect(services.carry_spend_limit_to_rotated_key, dispatch_uid="billing-rotated-key-limit")

        # The request path reads these from per-process caches; every process drops them within a second of a change.
        from config.process_cache import invalidate_on_change

        from .models import BillingAccount, KeySpendLimit, Price

        invalidate_on_change(BillingAccount, "billing")
        invalidate_on_change(KeySpendLimit, "billing")
        invalidate_on_change(Price, "prices")

        # /metrics: the ledger's and Stripe's backlogs, computed at scrape time (billing/metrics.py).
        from . import metrics

        metrics.register()
