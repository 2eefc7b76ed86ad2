from django.core.management.base import BaseCommand, CommandError

from billing.stripe import gateway as stripe_gateway
from billing.stripe import reporting


class Command(BaseCommand):
    help = "Run one pass of usage reporting to Stripe Billing Meters (the same code as the Celery beat task)."

    def handle(self, *args, **options):
        try:
            customers = reporting.ensure_customers()
            stats = reporting.report_usage()
        except stripe_gateway.StripeNotConfigured as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"customers created {customers}; reports created {stats.reports_created}; calls "
                          f"{stats.calls}; delivered {stats.delivered} (already at Stripe {stats.duplicates}); "
                          f"deferred {stats.deferred}; expired {stats.expired}")
        for error in stats.errors:
            self.stderr.write(error)
