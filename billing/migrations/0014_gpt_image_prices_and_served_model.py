"""OpenAI's current GPT image models (issue 13): the ledger's `served_model` (the dated model behind an alias such as
chatgpt-image-latest) and the price rows of gpt-image-1-mini, gpt-image-1.5, gpt-image-2 and chatgpt-image-latest
from billing/price_list.py (idempotent: rows already present are left alone)."""
from django.db import migrations, models


def seed(apps, schema_editor):
    from billing import price_list

    price_list.sync(apps.get_model("billing", "Price"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0013_all_tenants_unsafe_managers")]
    operations = [
        migrations.AddField(
            model_name="ledgerentry",
            name="served_model",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
