"""Speed at scale: 10 million ledger rows (100 organizations, 20 models over 7 providers, 90 days), the usage
rollups refreshed over them, then the two pages staff and customers open most, timed as full requests through
Django's test client: the dashboard overview of the largest organization (as its owner) and the admin ledger list
filtered by organization + model + status (as a superuser). Each figure is the median of 5 after 1 warm-up, with
whether it is under 200 ms.

The rows go in with PostgreSQL COPY into a fresh database, secondary indexes and unique constraints dropped during
the load and rebuilt after (as a bulk load would), foreign-key triggers off for the loading session. Bench rows are
not sealed into the hash chain (the sealer would take its own minutes; nothing timed here reads the chain). The
append-only trigger refuses UPDATE/DELETE only, not COPY.

    .venv/bin/python bench/scale.py          (BENCH_SCALE_ROWS to change the size, default 10,000,000)
"""
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _harness as h  # noqa: E402

ROWS = int(os.environ.get("BENCH_SCALE_ROWS", "10000000"))
ORGS = 100
DAYS = 90
BIG_SHARE = 10  # the largest organization has one row in BIG_SHARE (the rest share the others evenly)
LIMIT_MS = 200.0
PROVIDERS = ["local", "openai", "openai_compatible", "stability", "bfl", "replicate", "bedrock"]
COLUMNS = ("organization_id", "api_key_id", "request_id", "endpoint", "model", "provider", "size", "quality", "n",
           "unit_price_micros", "cost_micros", "upstream_cost_micros", "latency_ms", "status", "error_code",
           "created_at")


def setup_tenants():
    from accounts import services as account_services
    from billing.models import Price

    owner, _ = account_services.get_or_create_user(email="owner@bench.example", password="bench horse battery staple")
    orgs, keys = [], {}
    for i in range(ORGS):
        if i == 0:
            org = account_services.create_organization(name="Bench Big", owner=owner, slug="bench-big")
        else:
            user, _ = account_services.get_or_create_user(email=f"o{i}@bench.example", password="bench horse battery")
            org = account_services.create_organization(name=f"Bench {i}", owner=user, slug=f"bench-{i}")
        orgs.append(org)
        keys[org.pk] = [account_services.create_api_key(organization=org, name=f"key {k}")[0].pk for k in range(3)]
    models = list(Price.objects.order_by("model").values_list("model", flat=True).distinct())[:20]
    while len(models) < 20:
        models.append(f"bench-model-{len(models)}")
    return owner, orgs, keys, models


def load(orgs, keys, models) -> float:
    """COPY ROWS ledger rows (oldest first, the newest a few seconds ago); return the seconds taken."""
    from django.db import connection
    from django.utils import timezone

    table = "billing_ledgerentry"
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
                       "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)", [table, table])
        plain_indexes = cursor.fetchall()
        cursor.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
                       "AND contype = 'u'", [table])
        unique_constraints = cursor.fetchall()
        for name, _ in plain_indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        for name, _ in unique_constraints:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        cursor.execute("SET session_replication_role = replica")  # no FK triggers while loading
    org_ids = [o.pk for o in orgs]
    now = timezone.now()
    first = now - timedelta(days=DAYS)
    step = (DAYS * 86400 - 5) / ROWS
    NULL = "\\N"
    sizes = ["256x256", "512x512", "1024x1024"]
    raw = connection.connection  # psycopg 3
    with raw.cursor() as cur:
        with cur.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            lines = []
            for i in range(ROWS):
                org = org_ids[0] if i % BIG_SHARE == 0 else org_ids[1 + (i * 7919) % (ORGS - 1)]
                r = (i * 2654435761 // 1000) % 100
                if r < 90:
                    status, cost, err, upstream = "succeeded", 1000 * (1 + r % 4), "", str(600 * (1 + r % 4))
                elif r < 96:
                    status, cost, err, upstream = "failed", 0, "upstream_error", NULL
                elif r < 98:
                    status, cost, err, upstream = "refused", 0, "content_policy_violation", NULL
                else:
                    status, cost, err, upstream = "invalid", 0, "invalid_size", NULL
                m = (i * 7 + i // 10) % 20
                key = keys[org][i % 3] if r % 10 else None
                created = first + timedelta(seconds=i * step)
                lines.append(
                    f"{org}\t{NULL if key is None else key}\tbench_{i}\tgenerations\t{models[m]}\t"
                    f"{PROVIDERS[m % 7]}\t{sizes[m % 3]}\tstandard\t{1 + r % 4}\t1000\t{cost}\t{upstream}\t"
                    f"{100 + r}\t{status}\t{err}\t{created.isoformat()}\n")
                if len(lines) >= 20000:
                    copy.write("".join(lines))
                    lines.clear()
            if lines:
                copy.write("".join(lines))
    loaded = time.perf_counter() - t0
    print(f"  COPY {ROWS:,} rows: {loaded:.1f} s", flush=True)
    t1 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("SET maintenance_work_mem = '256MB'")
        cursor.execute("SET max_parallel_maintenance_workers = 2")
        for name, definition in unique_constraints:
            cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for _, definition in plain_indexes:
            cursor.execute(definition)
        cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
        cursor.execute(f"VACUUM ANALYZE {table}")
    print(f"  indexes and constraints rebuilt, analyzed: {time.perf_counter() - t1:.1f} s", flush=True)
    return time.perf_counter() - t0


def timed(client, url, params) -> tuple[float, int]:
    response = client.get(url, params)  # warm-up
    assert response.status_code == 200, (url, response.status_code)
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        response = client.get(url, params)
        samples.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200
    return statistics.median(samples), response


def main():
    db = h.fresh_database("imagegate_bench_scale")
    env = h.base_env(DATABASE_URL=db, REDIS_URL="redis://127.0.0.1:6379/9",
                     DJANGO_ALLOWED_HOSTS="testserver,127.0.0.1,localhost")
    h.manage(env, "migrate", "--noinput")
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's response.context
    from django.db import connection
    from django.test import Client, override_settings
    from django.urls import reverse

    from accounts.models import User
    from billing import rollups
    from billing.models import UsageRollup

    print(f"scale: {ROWS:,} ledger rows, {ORGS} organizations, 20 models, {DAYS} days "
          f"(the largest organization has {ROWS // BIG_SHARE:,})", flush=True)
    owner, orgs, keys, models = setup_tenants()
    seconds = load(orgs, keys, models)
    print(f"  built in {seconds:.1f} s", flush=True)

    t0 = time.perf_counter()
    stats = rollups.refresh_rollups(settle_seconds=0)
    refresh = time.perf_counter() - t0
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {UsageRollup._meta.db_table}")
    print(f"  refresh_rollups: {stats.rows:,} rows in {stats.batches} batches -> {stats.groups:,} rollup upserts "
          f"({UsageRollup.all_tenants_unsafe.count():,} rollup rows), {refresh:.1f} s", flush=True)
    t0 = time.perf_counter()
    again = rollups.refresh_rollups()
    print(f"  refresh_rollups with nothing new: {(time.perf_counter() - t0) * 1000:.0f} ms ({again.rows} rows)")

    from django.conf import settings

    # no collectstatic here: plain static URLs instead of the production manifest
    override_settings(STORAGES={**settings.STORAGES, "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}).enable()
    big = orgs[0]
    results = []
    client = Client()
    client.force_login(owner)
    ms, _ = timed(client, reverse("dashboard"), {})
    results.append(("dashboard overview (largest organization, this month)", ms))
    ms, _ = timed(client, reverse("dashboard"), {"from": (django.utils.timezone.localdate() - timedelta(days=89))
                                                 .isoformat()})
    results.append(("dashboard overview (largest organization, 90 days)", ms))

    admin = User.objects.create_superuser(email="staff@bench.example", password="bench staff horse battery")
    staff = Client()
    staff.force_login(admin)
    with override_settings(ADMIN_REQUIRE_MFA=False):
        params = {"organization__id__exact": big.pk, "model": models[1], "status__exact": "succeeded"}
        ms, response = timed(staff, "/admin/billing/ledgerentry/", params)
        totals = response.context["ledger_totals"]
        results.append((f"admin ledger list (organization + model + status; {totals['rows']:,} rows)", ms))
        ms, _ = timed(staff, "/admin/billing/ledgerentry/", {**params, "status__exact": "refused"})
        results.append(("admin ledger list (organization + model + status=refused)", ms))
    worst = 0.0
    for label, ms in results:
        print(f"  {label}: {ms:.1f} ms median of 5 -> {'under' if ms < LIMIT_MS else 'OVER'} {LIMIT_MS:.0f} ms")
        worst = max(worst, ms)
    if worst >= LIMIT_MS:
        sys.exit(1)


if __name__ == "__main__":
    main()
