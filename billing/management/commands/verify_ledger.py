from django.core.management.base import BaseCommand, CommandError

from billing import ledger
from billing.models import LedgerEntry, LedgerHead


class Command(BaseCommand):
    help = "Verify every organization's ledger hash chain; exits non-zero naming each edited or deleted row."

    def add_arguments(self, parser):
        parser.add_argument("--organization", type=int, help="only this organization id")

    def handle(self, *args, organization=None, **options):
        heads = {h.organization_id: h for h in LedgerHead.objects.all()}
        org_ids = set(LedgerEntry.unscoped.values_list("organization_id", flat=True).distinct()) | set(heads)
        if organization is not None:
            org_ids &= {organization}
        breaks, rows = [], 0
        for org_id in sorted(org_ids):
            entries = LedgerEntry.unscoped.filter(organization_id=org_id).order_by("sequence").iterator(chunk_size=5000)
            counted = []

            def counting(it):
                for e in it:
                    counted.append(1)
                    yield e

            head = heads.get(org_id)
            breaks += ledger.verify_chain(org_id, counting(entries), head.sequence if head else None,
                                          head.last_hash if head else None)
            rows += len(counted)
        for b in breaks:
            self.stderr.write(str(b))
        if breaks:
            raise CommandError(f"The ledger chain is broken in {len(breaks)} place(s); see above.")
        self.stdout.write(f"Ledger OK: {rows} rows in {len(org_ids)} organizations verified.")
