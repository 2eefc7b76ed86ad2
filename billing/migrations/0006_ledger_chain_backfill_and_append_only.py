"""Backfill the hash chain for rows written before it existed, make it mandatory, and make the ledger append-only
in the database itself (a trigger refuses UPDATE and DELETE, on PostgreSQL and on SQLite)."""
from django.db import migrations, models


def backfill(apps, schema_editor):
    from billing.ledger import GENESIS, digest, row_values

    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    LedgerHead = apps.get_model("billing", "LedgerHead")
    org_ids = LedgerEntry._default_manager.values_list("organization_id", flat=True).distinct()
    for org_id in org_ids:
        prev, seq = GENESIS, 0
        for entry in LedgerEntry._default_manager.filter(organization_id=org_id).order_by("created_at", "id"):
            seq += 1
            entry.sequence, entry.prev_hash = seq, prev
            entry.entry_hash = digest(row_values(entry), prev)
            entry.save(update_fields=["sequence", "prev_hash", "entry_hash"])
            prev = entry.entry_hash
        LedgerHead._default_manager.update_or_create(organization_id=org_id, defaults={"sequence": seq, "last_hash": prev})


POSTGRES_TRIGGER = """
CREATE OR REPLACE FUNCTION billing_ledger_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'the ledger is append-only: % on billing_ledgerentry is not allowed', TG_OP
    USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_ledger_append_only BEFORE UPDATE OR DELETE ON billing_ledgerentry
  FOR EACH ROW EXECUTE FUNCTION billing_ledger_append_only();
"""
POSTGRES_DROP = """
DROP TRIGGER IF EXISTS billing_ledger_append_only ON billing_ledgerentry;
DROP FUNCTION IF EXISTS billing_ledger_append_only();
"""
SQLITE_TRIGGERS = [
    "CREATE TRIGGER billing_ledger_no_update BEFORE UPDATE ON billing_ledgerentry "
    "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: UPDATE on billing_ledgerentry is not allowed'); END;",
    "CREATE TRIGGER billing_ledger_no_delete BEFORE DELETE ON billing_ledgerentry "
    "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: DELETE on billing_ledgerentry is not allowed'); END;",
]


def add_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_TRIGGER, None)
    elif schema_editor.connection.vendor == "sqlite":
        for sql in SQLITE_TRIGGERS:
            schema_editor.execute(sql)


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_DROP)
    elif schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS billing_ledger_no_update")
        schema_editor.execute("DROP TRIGGER IF EXISTS billing_ledger_no_delete")


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_ledger_chain_and_stripe")]
    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AlterField("ledgerentry", "sequence", models.BigIntegerField()),
        migrations.AlterField("ledgerentry", "prev_hash", models.CharField(max_length=64)),
        migrations.AlterField("ledgerentry", "entry_hash", models.CharField(max_length=64)),
        migrations.RunPython(add_triggers, drop_triggers),
    ]
