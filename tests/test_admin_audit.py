"""The staff admin: sign-in through allauth with TOTP, the read-only ledger (filters, totals, search, streamed CSV),
key revocation, prices, the other billing pages, and the audit log of staff actions."""
import csv
import io
import time
from datetime import timedelta

import pytest
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse
from django.utils import timezone

from accounts import services as account_services
from accounts.models import ApiKey
from billing import sealing
from billing import services as billing_services
from billing.models import (
    BillingAccount,
    BillingAlert,
    Discrepancy,
    Invoice,
    LedgerEntry,
    LedgerSeal,
    MeterReport,
    Price,
    SpendAlert,
    StripeEvent,
)
from billing.selectors import current_price

PASSWORD = "staff horse battery staple"
CHANGELIST = "admin:billing_ledgerentry_changelist"


def _record(org, key, request_id, n=1, status="succeeded", provider="local"):
    price = current_price(model="local-preview", size="256x256", quality="standard")
    return billing_services.record_usage(organization=org, api_key=key, request_id=request_id, status=status,
                                         model="local-preview", provider=provider, size="256x256",
                                         quality="standard", n=n, price=price, latency_ms=5)


def _make_staff(email, *, superuser=True, totp=True):
    user, _ = account_services.get_or_create_user(email=email, password=PASSWORD)
    user.is_staff = True
    user.is_superuser = superuser
    user.save(update_fields=["is_staff", "is_superuser"])
    secret = None
    if totp:
        secret = generate_totp_secret()
        TOTP.activate(user, secret)
    return user, secret


def _sign_in_with_mfa(client, user):
    """What allauth leaves in the session after a password + TOTP login (the full flow is tested below)."""
    client.force_login(user)
    session = client.session
    now = time.time()
    session["account_authentication_methods"] = [{"method": "password", "at": now, "email": user.email},
                                                 {"method": "mfa", "at": now, "type": "totp"}]
    session["account_authentication_methods_user"] = str(user.pk)
    session.save()
    return client


@pytest.fixture
def staff(db):
    return _make_staff("staff@imagegate.test")[0]


@pytest.fixture
def staff_client(client, staff):
    return _sign_in_with_mfa(client, staff)


@pytest.fixture
def ledger(api_key, other_tenant):
    """Rows in two organizations: acme has 3 successes (n=1,2,3), a failure and a refusal; rival has 2 successes."""
    org, key = api_key[0].organization, api_key[0]
    other_org, other_key, _ = other_tenant
    rows = [_record(org, key, f"req_acme_{i}", n=i) for i in (1, 2, 3)]
    rows.append(_record(org, key, "req_acme_failed", status="failed"))
    rows.append(_record(org, key, "req_acme_refused", status="refused"))
    rows += [_record(other_org, other_key, f"req_rival_{i}", n=2, provider="openai") for i in range(2)]
    return org, other_org, rows


def _totals(response):
    return response.context["ledger_totals"]


# --- signing in -------------------------------------------------------------------------------------------------

def _current_code(secret):
    period = 30
    if period - time.time() % period < 2:  # do not straddle a period boundary
        time.sleep(2.5)
    return format_hotp_value(hotp_value(secret, int(time.time()) // period))


def test_admin_login_goes_through_allauth_and_asks_for_the_totp_code(client, db):
    user, secret = _make_staff("totp@imagegate.test")
    response = client.get("/admin/")
    assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))
    response = client.get(response.url)
    assert response.status_code == 302
    assert response.url.startswith(reverse("account_login")) and "next=%2Fadmin%2F" in response.url
    response = client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302 and response.url.startswith(reverse("mfa_authenticate"))
    assert client.get("/admin/").status_code == 302  # the password alone does not open the admin
    response = client.post(reverse("mfa_authenticate"), {"code": _current_code(secret)})
    assert response.status_code == 302 and response.url == "/admin/"
    response = client.get("/admin/")
    assert response.status_code == 200
    assert b"Ledger entries" in response.content


def test_staff_without_a_second_factor_is_sent_to_totp_setup(client, db):
    user, _ = _make_staff("nomfa@imagegate.test", totp=False)
    client.force_login(user)
    response = client.get(reverse(CHANGELIST), follow=True)
    chain = [url for url, _ in response.redirect_chain]
    # the admin sends them to TOTP setup (allauth itself may first ask to re-enter the password)
    assert any(url.startswith(reverse("mfa_activate_totp")) for url in chain)
    assert chain[-1].startswith((reverse("mfa_activate_totp"), reverse("account_reauthenticate")))
    assert any("authenticator" in str(m) for m in response.context["messages"])


def test_staff_whose_session_skipped_the_second_factor_must_confirm_it(client, db):
    user, _ = _make_staff("stale@imagegate.test")
    client.force_login(user)  # e.g. a session from before TOTP was set up
    response = client.get("/admin/", follow=True)
    assert response.redirect_chain[-1][0].startswith(reverse("mfa_reauthenticate"))


def test_mfa_requirement_can_be_switched_off(client, db, settings):
    settings.ADMIN_REQUIRE_MFA = False
    user, _ = _make_staff("relaxed@imagegate.test", totp=False)
    client.force_login(user)
    assert client.get("/admin/").status_code == 200


def test_non_staff_cannot_reach_the_admin(client, user):
    client.force_login(user)
    response = client.get(reverse(CHANGELIST), follow=True)
    assert response.status_code == 403
    assert client.get("/admin/").status_code == 302


# --- the ledger ---------------------------------------------------------------------------------------------------

def test_ledger_changelist_shows_rows_filters_and_totals(staff_client, ledger):
    org, other_org, rows = ledger
    response = staff_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    totals = _totals(response)
    assert totals["requests"] == LedgerEntry.all_tenants_unsafe.count() == 7
    assert totals["cost_micros"] == sum(r.cost_micros for r in rows) == 10_000
    assert totals["images"] == 1 + 2 + 3 + 2 + 2
    assert totals["cost_usd"] == "0.010000"
    html = response.content.decode()
    assert "Totals for the filtered set" in html and "$0.010000" in html and "Export CSV" in html
    for title in ("By organization", "By model", "By provider", "By status", "By endpoint"):
        assert title.lower() in html.lower()

    response = staff_client.get(reverse(CHANGELIST), {"organization__id__exact": org.pk})
    assert _totals(response)["requests"] == 5 and _totals(response)["cost_micros"] == 6_000
    response = staff_client.get(reverse(CHANGELIST), {"organization__id__exact": org.pk, "status__exact": "failed"})
    assert _totals(response) == {"requests": 1, "images": 0, "cost_micros": 0, "cost_usd": "0.000000"}
    response = staff_client.get(reverse(CHANGELIST), {"provider": "openai"})
    assert _totals(response)["requests"] == 2 and _totals(response)["cost_micros"] == 4_000
    response = staff_client.get(reverse(CHANGELIST), {"model": "local-preview", "endpoint": "generations"})
    assert _totals(response)["requests"] == 7
    today = timezone.now()
    response = staff_client.get(reverse(CHANGELIST), {"created_at__year": today.year, "created_at__month": today.month,
                                                      "created_at__day": today.day})
    assert response.status_code == 200 and _totals(response)["requests"] == 7


def test_search_by_request_id_finds_exactly_that_row(staff_client, ledger):
    response = staff_client.get(reverse(CHANGELIST), {"q": "req_acme_2"})
    results = list(response.context["cl"].result_list)
    assert [r.request_id for r in results] == ["req_acme_2"]
    assert _totals(response)["cost_micros"] == 2_000
    assert list(staff_client.get(reverse(CHANGELIST), {"q": "req_acme"}).context["cl"].result_list) == []


def test_csv_export_streams_the_filtered_rows(staff_client, ledger, staff):
    org, _, rows = ledger
    url = reverse("admin:billing_ledgerentry_export_csv")
    response = staff_client.get(url, {"organization__id__exact": org.pk})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    header, body = lines[0], lines[1:]
    assert header[:3] == ["created_at", "request_id", "organization"]
    assert "cost_micros" in header and "cost_usd" in header
    assert sorted(r[header.index("request_id")] for r in body) == sorted(
        r.request_id for r in rows if r.organization_id == org.pk)
    assert sum(int(r[header.index("cost_micros")]) for r in body) == 6_000
    by_id = {r[header.index("request_id")]: r for r in body}
    assert by_id["req_acme_3"][header.index("cost_usd")] == "0.003000"
    assert by_id["req_acme_3"][header.index("organization")] == "acme"
    log = LogEntry.objects.get(content_type=ContentType.objects.get_for_model(LedgerEntry))
    assert log.user == staff and "CSV" in log.change_message

    everything = staff_client.get(url)
    assert len(list(csv.reader(io.StringIO(b"".join(everything.streaming_content).decode())))) == 1 + 7


def test_csv_export_action_on_selected_rows(staff_client, ledger):
    _, _, rows = ledger
    response = staff_client.post(reverse(CHANGELIST), {
        "action": "export_selected_csv", "_selected_action": [rows[0].pk, rows[1].pk]})
    assert response.status_code == 200 and response.streaming
    lines = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(lines) == 3


def test_ledger_is_read_only_in_the_admin(staff_client, ledger):
    row = ledger[2][0]
    assert staff_client.get(reverse("admin:billing_ledgerentry_add")).status_code == 403
    assert staff_client.get(reverse("admin:billing_ledgerentry_delete", args=[row.pk])).status_code == 403
    view = staff_client.get(reverse("admin:billing_ledgerentry_change", args=[row.pk]))
    assert view.status_code == 200 and b'name="_save"' not in view.content
    assert b"waiting for the sealer" in view.content  # not sealed yet: the sealer runs from beat
    sealing.seal_pending()
    view = staff_client.get(reverse("admin:billing_ledgerentry_change", args=[row.pk]))
    assert LedgerSeal.all_tenants_unsafe.get(entry=row).entry_hash.encode() in view.content
    response = staff_client.post(reverse("admin:billing_ledgerentry_change", args=[row.pk]),
                                 {"request_id": "tampered", "cost_micros": 0})
    assert response.status_code == 403
    changelist = staff_client.get(reverse(CHANGELIST))
    actions = [name for name, _ in changelist.context["action_form"].fields["action"].choices]
    assert "delete_selected" not in actions
    response = staff_client.post(reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": [row.pk]})
    assert LedgerEntry.all_tenants_unsafe.filter(pk=row.pk, request_id=row.request_id).exists()
    model_admin = admin.site._registry[LedgerEntry]
    request = changelist.wsgi_request
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, row)
    assert not model_admin.has_delete_permission(request, row)


# --- keys, prices, alerts, discrepancies ------------------------------------------------------------------------

def test_revoke_action_revokes_keys_and_writes_the_audit_log(staff_client, staff, api_key):
    key = api_key[0]
    second, _ = account_services.create_api_key(organization=key.organization, name="second")
    response = staff_client.post(reverse("admin:accounts_apikey_changelist"), {
        "action": "revoke_selected", "_selected_action": [key.pk, second.pk]}, follow=True)
    assert response.status_code == 200
    assert all(k.revoked_at is not None for k in ApiKey.all_tenants_unsafe.filter(pk__in=[key.pk, second.pk]))
    logs = LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(ApiKey))
    assert sorted(int(entry.object_id) for entry in logs) == sorted([key.pk, second.pk])
    assert all(entry.user == staff and "Revoked" in entry.change_message for entry in logs)
    assert staff_client.get(reverse("admin:accounts_apikey_delete", args=[key.pk])).status_code == 403
    audit = staff_client.get(reverse("admin:admin_logentry_changelist"), {"q": "second"})
    assert audit.status_code == 200 and b"Revoked API key" in audit.content


def test_price_admin_adds_a_new_price_row_and_protects_used_ones(staff_client, ledger):
    used = LedgerEntry.all_tenants_unsafe.filter(price__isnull=False).first().price
    effective = timezone.now() + timedelta(days=30)
    response = staff_client.post(reverse("admin:billing_price_add"), {
        "model": "local-preview", "size": "256x256", "quality": "standard", "unit_price_micros": 2000,
        "effective_from_0": effective.strftime("%Y-%m-%d"), "effective_from_1": effective.strftime("%H:%M:%S"),
    })
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    new = Price.objects.get(model="local-preview", size="256x256", quality="standard", unit_price_micros=2000)
    assert new.effective_from > timezone.now()
    assert LogEntry.objects.filter(object_id=str(new.pk), action_flag=1).exists()  # the admin logged the addition
    assert Price.objects.filter(pk=used.pk, unit_price_micros=used.unit_price_micros).exists()
    assert staff_client.post(reverse("admin:billing_price_change", args=[used.pk]),
                             {"unit_price_micros": 1}).status_code == 403
    assert staff_client.get(reverse("admin:billing_price_delete", args=[used.pk])).status_code == 403
    page = staff_client.get(reverse("admin:billing_price_changelist"), {"model": "local-preview"})
    assert page.status_code == 200 and b"effective" in page.content.lower()


def test_resolving_alerts_and_discrepancies_is_logged(staff_client, organization, staff):
    alert = BillingAlert.all_tenants_unsafe.create(organization=organization, kind="usage_expired", message="too old")
    now = timezone.now()
    gap = Discrepancy.all_tenants_unsafe.create(organization=organization, window_start=now - timedelta(hours=1),
                                     window_end=now, ledger_micros=5000, reported_micros=5000, stripe_micros=4000)
    staff_client.post(reverse("admin:billing_billingalert_changelist"),
                      {"action": "resolve_selected", "_selected_action": [alert.pk]})
    staff_client.post(reverse("admin:billing_discrepancy_changelist"),
                      {"action": "mark_resolved", "_selected_action": [gap.pk]})
    alert.refresh_from_db()
    gap.refresh_from_db()
    assert alert.resolved_at is not None and gap.resolved_at is not None
    assert LogEntry.objects.filter(user=staff, object_id=str(alert.pk), change_message="Resolved.").exists()
    assert LogEntry.objects.filter(user=staff, object_id=str(gap.pk), change_message="Marked resolved.").exists()
    # staff may annotate a discrepancy; its numbers stay as detected
    response = staff_client.post(reverse("admin:billing_discrepancy_change", args=[gap.pk]), {
        "resolved_at_0": now.strftime("%Y-%m-%d"), "resolved_at_1": now.strftime("%H:%M:%S"),
        "note": "Stripe late", "ledger_micros": 1})
    assert response.status_code == 302
    gap.refresh_from_db()
    assert gap.note == "Stripe late" and gap.ledger_micros == 5000


def test_every_registered_admin_page_renders(staff_client, ledger, staff):
    org = ledger[0]
    now = timezone.now()
    MeterReport.all_tenants_unsafe.create(organization=org, identifier="ig-1-2025010100-1", stripe_customer_id="cus_1",
                                window_start=now - timedelta(hours=1), window_end=now, value_micros=6000,
                                event_timestamp=now, attempts=2, last_error="HTTP 500")
    Discrepancy.all_tenants_unsafe.create(organization=org, window_start=now - timedelta(hours=1), window_end=now,
                               ledger_micros=6000, reported_micros=6000, stripe_micros=5000)
    StripeEvent.objects.create(event_id="evt_1", type="invoice.paid", payload={"id": "evt_1", "data": {"x": 1}})
    Invoice.all_tenants_unsafe.create(organization=org, stripe_invoice_id="in_1", status="paid", created=now)
    BillingAlert.all_tenants_unsafe.create(organization=org, kind="reconciliation", message="gap")
    BillingAccount.all_tenants_unsafe.update_or_create(organization=org,
                                                       defaults={"monthly_spend_limit_micros": 5_000_000})
    SpendAlert.all_tenants_unsafe.create(organization=org, scope="organization", month=now.date().replace(day=1),
                               spent_micros=4_000_000, limit_micros=5_000_000)
    staff_client.post(reverse("admin:accounts_apikey_changelist"), {
        "action": "revoke_selected",
        "_selected_action": [ApiKey.all_tenants_unsafe.filter(organization=org).first().pk]})

    ours = {"accounts", "billing", "admin"}
    checked = 0
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in ours:
            continue
        info = model._meta.app_label, model._meta.model_name
        response = staff_client.get(reverse("admin:{}_{}_changelist".format(*info)))
        assert response.status_code == 200, info
        obj = model_admin.get_queryset(response.wsgi_request).first()
        if obj is not None:
            response = staff_client.get(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
            assert response.status_code == 200, info
        checked += 1
    assert checked >= 13
    assert staff_client.get("/admin/").status_code == 200
    event = staff_client.get(reverse("admin:billing_stripeevent_change", args=[StripeEvent.objects.get().pk]))
    assert b"<pre" in event.content and b"&quot;data&quot;" in event.content


def test_huge_unfiltered_ledger_skips_totals_but_filtered_sets_get_them(staff_client, ledger, monkeypatch):
    import billing.admin as billing_admin

    monkeypatch.setattr(billing_admin, "UNFILTERED_EXACT_LIMIT", -1)  # pretend the table is huge
    response = staff_client.get(reverse(CHANGELIST))
    assert response.status_code == 200 and _totals(response) is None
    assert b"Totals are computed once the ledger is narrowed" in response.content
    response = staff_client.get(reverse(CHANGELIST), {"status__exact": "succeeded"})
    assert _totals(response)["requests"] == 5 and _totals(response)["cost_micros"] == 10_000


def test_export_link_carries_the_changelist_filters(staff_client, ledger):
    org = ledger[0]
    response = staff_client.get(reverse(CHANGELIST), {"organization__id__exact": org.pk})
    expected = f'{reverse("admin:billing_ledgerentry_export_csv")}?organization__id__exact={org.pk}'
    assert expected in response.content.decode()
