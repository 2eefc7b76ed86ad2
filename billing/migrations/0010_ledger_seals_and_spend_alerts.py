"""The hash chain moves off the request path: each row's chain position (sequence, previous hash, hash) moves from
the ledger row into a LedgerSeal row that the sealer writes shortly after (billing/sealing.py); the existing chain is
copied over unchanged (the hash covers the same values). Spend counters move to Redis (billing/spend.py); the
80% e-mail keeps a row (SpendAlert) so it goes out once. Both ledger tables are append-only in the database."""
import django.db.models.deletion
import django.db.models.manager
import django.utils.timezone
from django.db import migrations, models

COPY_CHAIN = [
    "INSERT INTO billing_ledgerseal (entry_id, organization_id, sequence, prev_hash, entry_hash, sealed_at) "
    "SELECT id, organization_id, sequence, prev_hash, entry_hash, created_at FROM billing_ledgerentry",
    "INSERT INTO billing_sealstate (id, last_ledger_id, sealed_at, max_lag_ms) "
    "SELECT 1, COALESCE(MAX(id), 0), NULL, 0 FROM billing_ledgerentry",
]

POSTGRES_LEDGER_TRIGGER = """
CREATE TRIGGER billing_ledger_append_only BEFORE UPDATE OR DELETE ON billing_ledgerentry
  FOR EACH ROW EXECUTE FUNCTION billing_ledger_append_only();
"""
POSTGRES_SEAL_TRIGGER = """
CREATE OR REPLACE FUNCTION billing_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'the ledger is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_ledgerseal_append_only BEFORE UPDATE OR DELETE ON billing_ledgerseal
  FOR EACH ROW EXECUTE FUNCTION billing_append_only();
"""
SQLITE_TRIGGER = ("CREATE TRIGGER IF NOT EXISTS {name}_no_{op} BEFORE {OP} ON {table} "
                  "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {OP} on {table} is not allowed'); END;")
# (trigger name stem, table): the ledger's were created by migration 0006 as billing_ledger_no_update / _no_delete.
SQLITE_TABLES = [("billing_ledger", "billing_ledgerentry"), ("billing_ledgerseal", "billing_ledgerseal")]
SQLITE_LEDGER_NAMES = ("billing_ledger_no_update", "billing_ledger_no_delete")


def copy_chain(apps, schema_editor):
    for sql in COPY_CHAIN:
        schema_editor.execute(sql)


def drop_ledger_triggers(apps, schema_editor):
    """The columns are dropped next (SQLite rebuilds the table for that): take the triggers off first."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP TRIGGER IF EXISTS billing_ledger_append_only ON billing_ledgerentry")
    elif schema_editor.connection.vendor == "sqlite":
        for name in SQLITE_LEDGER_NAMES:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


def add_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_LEDGER_TRIGGER, None)
        schema_editor.execute(POSTGRES_SEAL_TRIGGER, None)
    elif schema_editor.connection.vendor == "sqlite":
        for name, table in SQLITE_TABLES:
            for op in ("update", "delete"):
                schema_editor.execute(SQLITE_TRIGGER.format(name=name, op=op, OP=op.upper(), table=table))


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0002_keys_expiry_models_invitations'),
        ('billing', '0009_drop_rollup_day_index'),
    ]

    operations = [
        migrations.CreateModel(
            name='LedgerSeal',
            fields=[
                ('entry', models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, primary_key=True, related_name='seal', serialize=False, to='billing.ledgerentry')),
                ('organization', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='accounts.organization')),
                ('sequence', models.BigIntegerField()),
                ('prev_hash', models.CharField(max_length=64)),
                ('entry_hash', models.CharField(max_length=64)),
                ('sealed_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            managers=[
                ('unscoped', django.db.models.manager.Manager()),
            ],
        ),
        migrations.AddConstraint(
            model_name='ledgerseal',
            constraint=models.UniqueConstraint(fields=('organization', 'sequence'), name='ledger_seal_sequence'),
        ),
        migrations.CreateModel(
            name='SealState',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('last_ledger_id', models.BigIntegerField(default=0)),
                ('sealed_at', models.DateTimeField(blank=True, null=True)),
                ('max_lag_ms', models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(copy_chain),
        migrations.RunPython(drop_ledger_triggers),
        migrations.RemoveConstraint(
            model_name='ledgerentry',
            name='ledger_chain_sequence',
        ),
        migrations.RemoveField(
            model_name='ledgerentry',
            name='entry_hash',
        ),
        migrations.RemoveField(
            model_name='ledgerentry',
            name='prev_hash',
        ),
        migrations.RemoveField(
            model_name='ledgerentry',
            name='sequence',
        ),
        migrations.RunPython(add_triggers),
        migrations.CreateModel(
            name='SpendAlert',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('organization', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.organization')),
                ('api_key', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.apikey')),
                ('scope', models.CharField(max_length=40)),
                ('month', models.DateField()),
                ('spent_micros', models.BigIntegerField()),
                ('limit_micros', models.BigIntegerField()),
                ('sent_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            managers=[
                ('unscoped', django.db.models.manager.Manager()),
            ],
        ),
        migrations.AddConstraint(
            model_name='spendalert',
            constraint=models.UniqueConstraint(fields=('organization', 'scope', 'month'), name='uniq_spend_alert'),
        ),
        migrations.DeleteModel(
            name='SpendCounter',
        ),
    ]
