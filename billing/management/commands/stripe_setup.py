from django.core.management.base import BaseCommand, CommandError

from billing.stripe import gateway as stripe_gateway


class Command(BaseCommand):
    help = "Idempotently create the Stripe Billing Meter, product and metered price (STRIPE_API_KEY, STRIPE_API_BASE)."

    def handle(self, *args, **options):
        try:
            row = stripe_gateway.setup()
        except stripe_gateway.StripeNotConfigured as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"meter {row.meter_id} (event {row.meter_event_name}), product {row.product_id}, "
                          f"price {row.price_id}")
