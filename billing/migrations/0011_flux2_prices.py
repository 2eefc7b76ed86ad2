"""Prices for Black Forest Labs' FLUX.2 models (flux-2-klein-4b, flux-2-klein-9b, flux-2-pro, flux-2-flex,
flux-2-max) at every catalog size: BFL's per-megapixel price + 10%, rounded up to a whole micro-dollar
(billing/price_list.py, docs/providers/bfl.md). Inserts only the rows the table lacks, as 0004 does."""
from django.db import migrations


def seed(apps, schema_editor):
    from billing import price_list

    price_list.sync(apps.get_model("billing", "Price"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0010_ledger_seals_and_spend_alerts")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
