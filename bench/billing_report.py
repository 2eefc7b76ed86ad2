"""Billing throughput: report 100,000 ledger rows of 100 organizations to Stripe Billing Meters (the Stripe emulator
in its own process) and print the calls made, the seconds taken and rows per second.

The rows are built with their hash chain and outbox entries in bulk (as 100,000 API requests would leave them),
spread over the past 24 hours; then one reporting pass (`reporting.report_usage`, the code behind the Celery beat
task and `manage.py report_usage`) sends them: one meter event per organization per hour.

    .venv/bin/python bench/billing_report.py          (BENCH_ROWS, BENCH_ORGS to change the size)
"""
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _harness as h  # noqa: E402

ROWS = int(os.environ.get("BENCH_ROWS", "100000"))
ORGS = int(os.environ.get("BENCH_ORGS", "100"))


def build(django_env) -> None:
    from django.utils import timezone

    from accounts.models import Organization
    from billing import sealing
    from billing.models import LedgerEntry, Price, UsageEvent

    price = Price.objects.get(model="local-preview", size="256x256", quality="standard")
    orgs = Organization.objects.bulk_create([Organization(name=f"Bench {i}", slug=f"bench-{i}") for i in range(ORGS)])
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    per_org = ROWS // ORGS
    for org in orgs:
        entries = []
        for i in range(per_org):
            created = now - timedelta(hours=23) + timedelta(seconds=i * (23 * 3600 // per_org))
            entry = LedgerEntry(organization=org, request_id=f"req_bench_{org.pk}_{i}", endpoint="generations",
                                model="local-preview", provider="local", size="256x256", quality="standard", n=1,
                                price=price, unit_price_micros=1000, cost_micros=1000, upstream_cost_micros=0,
                                latency_ms=5, status="succeeded", error_code="", created_at=created)
            entries.append(entry)
        LedgerEntry.all_tenants_unsafe.bulk_create(entries, batch_size=2000)
        UsageEvent.all_tenants_unsafe.bulk_create(
            [UsageEvent(ledger_entry=e, organization=org, value_micros=e.cost_micros, occurred_at=e.created_at)
             for e in entries], batch_size=2000)
    sealing.seal_pending()


def main():
    db = h.fresh_database("imagegate_bench_billing")
    env = h.base_env(DATABASE_URL=db, REDIS_URL="redis://127.0.0.1:6379/8")
    import redis

    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    h.manage(env, "migrate", "--noinput")
    with h.process([h.PYTHON, "bench/serve_emulator.py", "stripe", "--delay", "0"], env) as emu:
        url = emu.stdout.readline().strip()
        from tests.emulators import stripe as stripe_emu

        os.environ.update(env)
        os.environ.update({"STRIPE_API_KEY": stripe_emu.API_KEY, "STRIPE_API_BASE": url,
                           "DJANGO_SETTINGS_MODULE": "config.settings", "STRIPE_MAX_NETWORK_RETRIES": "2"})
        import django

        django.setup()
        from billing.models import LedgerEntry, MeterReport
        from billing.stripe import gateway as stripe_gateway
        from billing.stripe import reporting

        t0 = time.perf_counter()
        build(env)
        built = time.perf_counter() - t0
        stripe_gateway.setup()
        customers = reporting.ensure_customers()
        t0 = time.perf_counter()
        stats = reporting.report_usage()
        seconds = time.perf_counter() - t0
        import httpx

        stripe_total = int(httpx.get(f"{url}/_emulator/usage").json()["total"])
        ledger_total = sum(LedgerEntry.all_tenants_unsafe.values_list("cost_micros", flat=True))
        print(f"billing report: {ROWS} ledger rows of {ORGS} organizations (built in {built:.1f} s; "
              f"{customers} Stripe customers created)")
        print(f"  one pass: {stats.calls} meter-event calls ({stats.reports_created} reports), "
              f"{seconds:.2f} s, {ROWS / seconds:,.0f} rows/s, {stats.calls / seconds:.1f} calls/s")
        print(f"  delivered {stats.delivered}, deferred {stats.deferred}; ledger total {ledger_total} micro-USD, "
              f"Stripe total {stripe_total}")
        pending = MeterReport.all_tenants_unsafe.exclude(status="delivered").count()
        if pending or stats.deferred or stripe_total != ledger_total:
            sys.exit(1)


if __name__ == "__main__":
    main()
