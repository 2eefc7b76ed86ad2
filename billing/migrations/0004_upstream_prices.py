from django.db import migrations


def seed(apps, schema_editor):
    from billing import price_list

    price_list.sync(apps.get_model("billing", "Price"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_openai_prices")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
