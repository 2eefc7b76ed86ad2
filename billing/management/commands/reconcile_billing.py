from django.core.management.base import BaseCommand, CommandError

from billing.stripe import gateway as stripe_gateway
from billing.stripe import reconciliation


class Command(BaseCommand):
    help = "Compare the ledger with Stripe's meter event summaries per customer and hour; record discrepancies."

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=int, default=48, help="how many past hours to check (default 48)")

    def handle(self, *args, hours, **options):
        try:
            stats = reconciliation.reconcile(lookback_hours=hours)
        except stripe_gateway.StripeNotConfigured as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"customers {stats.customers}; windows checked {stats.windows_checked}; new "
                          f"discrepancies {stats.discrepancies}; resolved {stats.resolved}")
