from django.core.management.base import BaseCommand

from billing import rollups


class Command(BaseCommand):
    help = "Roll the settled ledger rows above the watermark up into the usage rollups (the Celery beat task's code)."

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=int, default=50_000, help="ledger rows per transaction (default 50000)")

    def handle(self, *args, batch, **options):
        stats = rollups.refresh_rollups(batch=batch)
        self.stdout.write(f"rolled up {stats.rows} ledger rows in {stats.batches} batches ({stats.groups} rollup "
                          f"rows written); watermark ledger id {stats.watermark}")
