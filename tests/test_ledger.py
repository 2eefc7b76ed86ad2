"""The ledger: exact, append-only in the database, hash-chained per organization; spend limits; price versions."""
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from io import StringIO

import openai
import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from accounts import services as account_services
from billing import sealing
from billing import services as billing_services
from billing.models import LedgerEntry, LedgerHead, LedgerSeal, Price, SealState, UsageEvent
from billing.selectors import clear_price_cache, current_price


def _record(org, key, request_id, n=1, status="succeeded"):
    price = current_price(model="local-preview", size="256x256", quality="standard")
    return billing_services.record_usage(organization=org, api_key=key, request_id=request_id, status=status,
                                         model="local-preview", provider="local", size="256x256",
                                         quality="standard", n=n, price=price, latency_ms=5)


def test_rows_chain_per_organization_and_verify(api_key, other_tenant):
    org, key = api_key[0].organization, api_key[0]
    other_org, other_key, _ = other_tenant
    for i in range(3):
        _record(org, key, f"req_a{i}")
        _record(other_org, other_key, f"req_b{i}")
    assert not LedgerSeal.all_tenants_unsafe.exists()  # the request path touches no chain row: the sealer does it
    stats = sealing.seal_pending()
    assert (stats.sealed, stats.organizations) == (6, 2)
    seals = list(LedgerSeal.objects.for_organization(org).order_by("sequence").select_related("entry"))
    assert [s.sequence for s in seals] == [1, 2, 3]
    assert [s.entry.request_id for s in seals] == ["req_a0", "req_a1", "req_a2"]  # in the order they were written
    assert seals[0].prev_hash == "0" * 64 and seals[1].prev_hash == seals[0].entry_hash
    assert LedgerHead.all_tenants_unsafe.get(pk=org.pk).sequence == 3
    out = StringIO()
    call_command("verify_ledger", stdout=out)
    assert "Ledger OK: 6 rows in 2 organizations" in out.getvalue()


def test_success_writes_one_outbox_row_failure_none(api_key):
    org, key = api_key[0].organization, api_key[0]
    ok = _record(org, key, "req_ok", n=3)
    _record(org, key, "req_bad", status="failed")
    assert UsageEvent.objects.for_organization(org).get().ledger_entry == ok
    assert UsageEvent.objects.for_organization(org).get().value_micros == ok.cost_micros == 3000


@pytest.mark.parametrize("operation", ["update", "delete"])
def test_database_refuses_to_change_ledger_rows(api_key, operation):
    row = _record(api_key[0].organization, api_key[0], "req_x")
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic():
            if operation == "update":
                LedgerEntry.all_tenants_unsafe.filter(pk=row.pk).update(cost_micros=0)
            else:
                with connection.cursor() as cursor:  # raw SQL too: the rule is in PostgreSQL, not in Python
                    cursor.execute("DELETE FROM billing_ledgerentry WHERE id = %s", [row.pk])


def test_verify_seals_what_waits_and_reports_rows_left_unsealed_too_long(api_key):
    org, key = api_key[0].organization, api_key[0]
    _record(org, key, "req_fresh")
    out = StringIO()
    call_command("verify_ledger", "--no-seal", stdout=out)  # a row waiting for the sealer is not a fault...
    assert "1 row(s) waiting for the sealer" in out.getvalue()
    old = _record(org, key, "req_old")
    _tamper("UPDATE billing_ledgerentry SET created_at = created_at - interval '5 minutes' WHERE id = %s", [old.pk])
    err = StringIO()
    with pytest.raises(CommandError):  # ...but one left unsealed past LEDGER_SEAL_MAX_LAG_SECONDS is
        call_command("verify_ledger", "--no-seal", stderr=err)
    assert "(req_old): unsealed for 300 s, more than LEDGER_SEAL_MAX_LAG_SECONDS (60 s)" in err.getvalue()
    out = StringIO()
    call_command("verify_ledger", stdout=out)  # sealing first (the default) makes it healthy again
    assert "Ledger OK: 2 rows in 1 organizations verified." in out.getvalue()


def test_seal_rows_are_append_only_too(api_key):
    _record(api_key[0].organization, api_key[0], "req_x")
    sealing.seal_pending()
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic():
            LedgerSeal.all_tenants_unsafe.update(entry_hash="0" * 64)


def test_a_row_that_commits_late_with_a_lower_id_is_still_sealed(api_key):
    """The watermark moves only past rows older than SEAL_SETTLE_SECONDS: a lower id committing after a higher one
    is found on the next pass."""
    org, key = api_key[0].organization, api_key[0]
    first = _record(org, key, "req_1")
    sealing.seal_pending()
    later = _record(org, key, "req_2")
    # pretend req_2 committed before a row with a lower id: hide it, seal, then let it appear
    sealing.seal_pending(now=timezone.now() + timedelta(minutes=5))
    state = SealState.objects.get(pk=1)
    assert state.last_ledger_id == later.pk and LedgerSeal.all_tenants_unsafe.filter(entry=later).exists()
    assert LedgerSeal.all_tenants_unsafe.get(entry=first).sequence == 1


def _tamper(sql, params):
    """Go around the trigger as only a superuser could (session_replication_role skips triggers)."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(sql, params)
        finally:
            cursor.execute("SET session_replication_role = DEFAULT")


def test_verify_catches_an_edited_row(api_key):
    org = api_key[0].organization
    rows = [_record(org, api_key[0], f"req_{i}") for i in range(4)]
    sealing.seal_pending()
    _tamper("UPDATE billing_ledgerentry SET cost_micros = 1 WHERE id = %s", [rows[1].pk])
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_ledger", stderr=err)
    assert "sequence 2 (req_1): content does not match its hash (the row was edited)" in err.getvalue()


def test_verify_catches_a_deleted_row_and_a_deleted_tail(api_key):
    org = api_key[0].organization
    rows = [_record(org, api_key[0], f"req_{i}") for i in range(5)]
    sealing.seal_pending()
    _tamper("DELETE FROM billing_usageevent WHERE ledger_entry_id IN (%s, %s)", [rows[2].pk, rows[4].pk])
    _tamper("DELETE FROM billing_ledgerentry WHERE id IN (%s, %s)", [rows[2].pk, rows[4].pk])
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_ledger", stderr=err)
    text = err.getvalue()
    assert "rows 3..3 are missing (deleted)" in text
    assert "newest rows were deleted" in text
    # the seals still name the deleted rows; drop them too, or the test database's deferred foreign keys complain
    _tamper("DELETE FROM billing_ledgerseal WHERE entry_id IN (%s, %s)", [rows[2].pk, rows[4].pk])


def test_each_row_keeps_the_price_version_it_was_charged_at(api_key):
    org = api_key[0].organization
    first = _record(org, api_key[0], "req_old")
    Price.objects.create(model="local-preview", size="256x256", quality="standard", unit_price_micros=2_500,
                         effective_from=timezone.now() - timedelta(seconds=1))
    clear_price_cache()
    second = _record(org, api_key[0], "req_new")
    assert (first.unit_price_micros, second.unit_price_micros) == (1_000, 2_500)
    assert first.price_id != second.price_id and second.price.effective_from > first.price.effective_from


# --- Spend limits ----------------------------------------------------------------------------------------------------

def test_org_limit_refuses_with_insufficient_quota(openai_client, api_key):
    billing_services.set_spend_limit(organization=api_key[0].organization, monthly_limit_micros=2_500)
    for _ in range(2):
        openai_client.images.generate(model="local-preview", prompt="x", size="256x256", response_format="b64_json")
    with pytest.raises(openai.RateLimitError) as info:
        openai_client.images.generate(model="local-preview", prompt="x", size="256x256", response_format="b64_json")
    assert info.value.code == "insufficient_quota" and info.value.type == "insufficient_quota"
    assert info.value.response.headers["x-should-retry"] == "false"
    assert "$0.00" in info.value.message or "spend limit" in info.value.message
    charged = sum(LedgerEntry.objects.for_organization(api_key[0].organization).values_list("cost_micros", flat=True))
    assert charged == 2_000


def test_key_limit_is_separate_from_the_org(openai_client, live_url, api_key):
    org = api_key[0].organization
    capped, raw = account_services.create_api_key(organization=org, name="capped")
    billing_services.set_spend_limit(organization=org, api_key=capped, monthly_limit_micros=1_000)
    client = openai.OpenAI(base_url=f"{live_url}/v1", api_key=raw, max_retries=0)
    client.images.generate(model="local-preview", prompt="x", size="256x256", response_format="b64_json")
    with pytest.raises(openai.RateLimitError):
        client.images.generate(model="local-preview", prompt="x", size="256x256", response_format="b64_json")
    openai_client.images.generate(model="local-preview", prompt="x", size="256x256", response_format="b64_json")


def test_concurrent_requests_at_the_limit_overshoot_by_at_most_one_request(live_url, api_key):
    org = api_key[0].organization
    account_services.get_or_create_user(email="owner@example.com")
    limit = 10_500  # ten and a half requests of 2 images at $0.001
    billing_services.set_spend_limit(organization=org, monthly_limit_micros=limit)
    clients = [openai.OpenAI(base_url=f"{live_url}/v1", api_key=api_key[1], max_retries=0) for _ in range(4)]

    def one(i):
        try:
            clients[i % 4].images.generate(model="local-preview", prompt=f"p{i}", n=2, size="256x256",
                                           response_format="b64_json")
            return "ok"
        except openai.RateLimitError as exc:
            return exc.code

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(one, range(30)))
    charged = sum(LedgerEntry.objects.for_organization(org).values_list("cost_micros", flat=True))
    assert charged <= limit + 2_000  # at most one request's cost over
    assert charged == 2_000 * outcomes.count("ok")
    assert set(outcomes) == {"ok", "insufficient_quota"}


def test_eighty_percent_email_once(openai_client, api_key):
    billing_services.set_spend_limit(organization=api_key[0].organization, monthly_limit_micros=5_000)
    mail.outbox.clear()
    for _ in range(5):
        openai_client.images.generate(model="local-preview", prompt="x", size="256x256", response_format="b64_json")
    alerts = [m for m in mail.outbox if "80%" in m.subject]
    assert len(alerts) == 1 and alerts[0].to == ["owner@example.com"]
