from django.core.management.base import BaseCommand

from billing import price_list
from billing.models import Price


class Command(BaseCommand):
    help = "Insert the prices of billing/price_list.py that the database lacks (idempotent)."

    def handle(self, *args, **options):
        added = price_list.sync(Price)
        self.stdout.write(f"{added} price rows added; {Price.objects.count()} in the table.")
