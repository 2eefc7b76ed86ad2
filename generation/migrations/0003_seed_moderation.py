from django.db import migrations


def seed(apps, schema_editor):
    from generation.pipeline import moderation

    moderation.sync_default_policy(
        category_model=apps.get_model("generation", "ModerationCategory"),
        term_model=apps.get_model("generation", "ModerationTerm"),
    )


class Migration(migrations.Migration):
    dependencies = [("generation", "0002_moderation")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
