"""One money format (billing/money.py, issue 15): every page shows micro-USD through the `usd` filter; the estimated
charge on the billing page agrees with the Stripe state shown beside it."""
import re
from pathlib import Path

import pytest
from django.template import Context, Template
from django.urls import reverse

from billing import money, policy
from billing.models import BillingAccount

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("micros", "text"), [
    (0, "$0.00"), (10_000, "$0.01"), (40_000, "$0.04"), (3_000, "$0.003"), (6_000, "$0.006"), (1, "$0.000001"),
    (12_340_000, "$12.34"), (1_234_567, "$1.234567"), (1_234_500_000, "$1,234.50"), (-5_000, "−$0.005"),
    (None, "—"),
])
def test_usd_shows_cents_and_sub_cent_digits_exactly(micros, text):
    assert money.usd(micros) == text


def test_exact_form_for_machines_and_cents_for_stripe():
    assert money.exact(3_000) == "0.003000" and money.exact(12_340_000) == "12.340000" and money.exact(None) == ""
    assert str(money.exact_decimal(1)) == "0.000001"
    assert money.usd_cents(1234) == "$12.34" and money.usd_cents(None) == "—"
    assert [money.round_to_cents(m) for m in (4_999, 5_000, 14_999, 15_000, 0)] == [0, 10_000, 10_000, 20_000, 0]


def test_the_template_filters_delegate_to_the_money_module():
    html = Template("{% load money %}{{ a|usd }} {{ b|usd }} {{ c|usd_cents }} {{ d|usd }}").render(
        Context({"a": 40_000, "b": 3_000, "c": 1234, "d": None}))
    assert html == "$0.04 $0.003 $12.34 —"


def test_no_template_or_module_formats_money_itself():
    """Templates use the filter (no floatformat, no "$" glued to a variable) and Python modules call billing/money.py
    (no dividing micro-USD by a million to print it)."""
    offenders = []
    for path in (ROOT / "templates").rglob("*.html"):
        text = path.read_text()
        if path.parts[-3:-1] == ("billing", "ledgerentry"):
            continue  # the staff ledger totals: billing.money.exact, computed in billing/admin.py
        if "floatformat" in text or "usd_micros" in text or re.search(r"\$\{\{", text):
            offenders.append(str(path.relative_to(ROOT)))
    for app in ("accounts", "billing", "generation"):
        for path in (ROOT / app).rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            # api/openapi.py's example prices are documentation; the /v1 amounts are money.api_number's.
            if rel in ("billing/money.py", "generation/api/openapi.py"):
                continue
            text = path.read_text()
            if re.search(r"micros\w* / (1_000_000|1e6|MICROS_PER_USD)", text):
                offenders.append(rel)
    assert offenders == []


@pytest.fixture
def signed_in(client, user, organization):
    client.force_login(user)
    return client


def _record(organization, micros):
    from billing import services as billing_services
    from billing.selectors import current_price

    price = current_price(model="local-preview", size="256x256", quality="standard")
    billing_services.record_usage(organization=organization, api_key=None, request_id=f"req_{micros}",
                                  status="succeeded", model="local-preview", provider="local", size="256x256",
                                  quality="standard", n=micros // price.unit_price_micros, price=price, latency_ms=5)


def _stat(html: str, testid: str) -> str:
    return re.search(rf'data-testid="{testid}">([^<]*)<', html).group(1)


def test_estimate_without_stripe_says_nothing_is_charged(signed_in, organization, prices, settings):
    settings.STRIPE_API_KEY = ""
    _record(organization, 6_000)
    html = signed_in.get(reverse("billing")).content.decode()
    assert _stat(html, "estimated-charge") == "$0.00"
    assert "Nothing is charged" in _stat(html, "estimate-note")
    assert "$0.006" in html  # the usage itself, exactly


@pytest.mark.parametrize(("status", "charged"), [("", False), ("active", True), ("past_due", True),
                                                  ("canceled", False)])
def test_estimate_follows_the_subscription(signed_in, organization, prices, settings, status, charged):
    settings.STRIPE_API_KEY = "sk_test_x"
    BillingAccount.objects.for_organization(organization).update_or_create(
        organization=organization, defaults={"subscription_status": status})
    _record(organization, 6_000)
    html = signed_in.get(reverse("billing")).content.decode()
    assert _stat(html, "estimated-charge") == ("$0.01" if charged else "$0.00")
    note = _stat(html, "estimate-note")
    assert ("Nothing" not in note) if charged else ("Nothing" in note)
    account = BillingAccount.objects.for_organization(organization).get()
    assert policy.estimated_charge(account, 6_000).charged is charged
