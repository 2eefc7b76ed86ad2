from django.core.management.base import BaseCommand, CommandError

from billing import sealing


class Command(BaseCommand):
    help = ("Seal the ledger rows still waiting for the sealer, then verify every organization's hash chain; exits "
            "non-zero naming each edited or deleted row and each row left unsealed longer than "
            "LEDGER_SEAL_MAX_LAG_SECONDS.")

    def add_arguments(self, parser):
        parser.add_argument("--organization", type=int, help="only this organization id")
        parser.add_argument("--no-seal", action="store_true", help="verify only; do not run the sealer first")

    def handle(self, *args, organization=None, no_seal=False, **options):
        result = sealing.verify(organization_id=organization, seal_first=not no_seal)
        for b in result.breaks:
            self.stderr.write(str(b))
        if result.breaks:
            raise CommandError(f"The ledger chain is broken in {len(result.breaks)} place(s); see above.")
        waiting = f"; {result.waiting} row(s) waiting for the sealer" if result.waiting else ""
        self.stdout.write(f"Ledger OK: {result.rows} rows in {result.organizations} organizations verified{waiting}.")
