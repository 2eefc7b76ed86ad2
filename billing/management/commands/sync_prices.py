from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing import price_list
from billing.models import Price
from billing.selectors import clear_price_cache


class Command(BaseCommand):
    help = ("Insert the prices of billing/price_list.py that the database lacks, and the prices of self-hosted "
            "models configured by OPENAI_COMPATIBLE_MODELS / OPENAI_COMPATIBLE_PRICE_MICROS (idempotent).")

    def handle(self, *args, **options):
        added = price_list.sync(Price)
        if settings.OPENAI_COMPATIBLE_MODELS:
            try:
                added += price_list.sync_self_hosted(Price, models=settings.OPENAI_COMPATIBLE_MODELS,
                                                     micros=settings.OPENAI_COMPATIBLE_PRICE_MICROS,
                                                     now=timezone.now())
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        if added:
            clear_price_cache()  # bulk inserts send no signal: tell every serving process
        self.stdout.write(f"{added} price rows added; {Price.objects.count()} in the table.")
