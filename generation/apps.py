from django.apps import AppConfig


class GenerationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "generation"
    verbose_name = "Image generation"

    def ready(self):
        # The compiled moderation policy is cached per process (generation/pipeline/moderation.py); any edit drops it
        # everywhere.
        from django.db.models.signals import post_migrate

        from config import checks  # noqa: F401  (registers the deployment checks: static manifest, https URLs)
        from config.process_cache import invalidate_on_change

        from .models import ModelLifecycle, ModerationCategory, ModerationTerm

        invalidate_on_change(ModerationCategory, "moderation")
        invalidate_on_change(ModerationTerm, "moderation")

        # The keys page offers the catalog's models and refuses misspelt ones (accounts cannot import generation).
        from accounts import model_catalog

        from . import catalog

        model_catalog.register(lambda: [(spec.id, spec.description) for spec in catalog.MODELS.values()])

        # /metrics: each provider's circuit state, read at scrape time (generation/metrics.py).
        from . import metrics

        metrics.register()

        # The model lifecycle table is cached per process too (generation/lifecycle.py); every catalog model gets
        # a row (active) after every migrate, so staff can see and change each one.
        invalidate_on_change(ModelLifecycle, "model_lifecycle")
        post_migrate.connect(_ensure_lifecycle_rows, sender=self, dispatch_uid="generation:lifecycle-rows")



def _ensure_lifecycle_rows(sender, using="default", **kwargs):
    from .lifecycle import ensure_rows

    ensure_rows(using)
