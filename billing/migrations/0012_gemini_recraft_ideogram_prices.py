"""Price rows for the Gemini, Recraft and Ideogram models (issue 13), from billing/price_list.py (idempotent: rows
already present are left alone)."""
from django.db import migrations


def seed(apps, schema_editor):
    from billing import price_list

    price_list.sync(apps.get_model("billing", "Price"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0011_flux2_prices")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
