from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email, validate_slug

from accounts import services


class Command(BaseCommand):
    help = "Create an organization (idempotent) with an owner, creating the owner user if needed."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="URL-safe organization identifier, e.g. acme")
        parser.add_argument("--owner", required=True, help="the owner's e-mail address")
        parser.add_argument("--password", help="password for the owner (sets it if the user exists)")
        parser.add_argument("--name", help="display name (default: from the slug)")

    def handle(self, *args, slug, owner, password=None, name=None, **options):
        try:
            validate_slug(slug)
            validate_email(owner)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        user, user_created = services.get_or_create_user(email=owner, password=password)
        organization, org_created = services.ensure_organization(slug=slug, owner=user, name=name)
        self.stdout.write(
            f"{'Created' if org_created else 'Found'} organization {organization.slug} "
            f"({organization.name}); owner {user.email}{' (new user)' if user_created else ''}"
        )
