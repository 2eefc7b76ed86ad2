from django.core.management.base import BaseCommand

from accounts import services

DEMO_SLUG = "demo"
DEMO_EMAIL = "demo@imagegate.local"
DEMO_PASSWORD = "imagegate-demo"


class Command(BaseCommand):
    help = "Idempotently create the demo organization and user, mint a fresh API key, print the login and the key."

    def handle(self, *args, **options):
        user, _ = services.get_or_create_user(email=DEMO_EMAIL, password=DEMO_PASSWORD)
        organization, _ = services.ensure_organization(slug=DEMO_SLUG, owner=user, name="Demo")
        _, raw = services.create_api_key(organization=organization, name="make run", created_by=user)
        self.stdout.write("")
        self.stdout.write(f"  Log in:   {DEMO_EMAIL} / {DEMO_PASSWORD}")
        self.stdout.write(f"  API key:  {raw}")
        self.stdout.write("")
        self.stdout.write(f"IMAGEGATE_API_KEY={raw}")
