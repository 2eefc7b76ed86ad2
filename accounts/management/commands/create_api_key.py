from django.core.management.base import BaseCommand, CommandError

from accounts import keys, services
from accounts.models import Organization


class Command(BaseCommand):
    help = "Create an API key for an organization. The raw key is printed alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the organization's slug")
        parser.add_argument("--name", required=True, help="a name for the key")
        parser.add_argument("--rpm", type=int, default=0, help="requests per minute for this key (0 = default)")
        parser.add_argument("--scopes", default=",".join(keys.all_scopes()),
                            help=f"comma-separated: {', '.join(keys.SCOPES)} (default: all)")

    def handle(self, *args, slug, name, rpm, scopes, **options):
        organization = Organization.objects.filter(slug=slug).first()
        if organization is None:
            raise CommandError(f"No organization with slug '{slug}'. Create it with create_organization first.")
        if rpm < 0:
            raise CommandError("--rpm cannot be negative.")
        try:
            api_key, raw = services.create_api_key(organization=organization, name=name, rate_limit_rpm=rpm,
                                                   scopes=[s for s in scopes.split(",") if s.strip()])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Created key '{api_key.name}' ({api_key.prefix}…) for {organization.slug}; "
                          "it is shown once:")
        self.stdout.write(raw)
