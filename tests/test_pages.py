"""Sign-up, log in / out, password reset and the API key pages, through Django's test client."""
import re

import pytest
from django.core import mail
from django.urls import reverse

from accounts import selectors, services
from accounts.models import ApiKey, Membership, Organization, User


@pytest.fixture
def signed_in(client, user, organization):
    client.force_login(user)
    return client


def test_signup_creates_user_and_organization_and_lands_on_dashboard(client, db):
    response = client.post(reverse("account_signup"), {
        "email": "new@startup.test", "password1": "a-long-enough-passphrase", "password2": "a-long-enough-passphrase",
        "organization_name": "Startup Inc",
    }, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse("dashboard")
    user = User.objects.get(email="new@startup.test")
    org = Organization.objects.get(name="Startup Inc")
    assert Membership.objects.for_organization(org).get(user=user).role == "owner"
    assert b"Startup Inc" in response.content
    assert len(mail.outbox) == 1  # the verification e-mail (console backend in development)


def test_signup_without_organization_name_names_it_after_the_user(client, db):
    client.post(reverse("account_signup"), {
        "email": "solo@dev.test", "password1": "a-long-enough-passphrase", "password2": "a-long-enough-passphrase",
    })
    assert Organization.objects.get().name == "solo's organization"


def test_signup_errors_are_shown_on_the_page(client, db):
    response = client.post(reverse("account_signup"), {"email": "bad", "password1": "x", "password2": "y"})
    assert response.status_code == 200
    assert b"valid email" in response.content.lower() or b"valid e-mail" in response.content.lower()
    assert User.objects.count() == 0


def test_login_logout(client, user, organization):
    response = client.post(reverse("account_login"),
                           {"login": "owner@example.com", "password": "correct horse battery"})
    assert response.status_code == 302 and response.url == reverse("dashboard")
    assert client.get(reverse("dashboard")).status_code == 200
    client.post(reverse("account_logout"))
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302 and reverse("account_login") in response.url


def test_password_reset_sends_a_working_link(client, user):
    client.post(reverse("account_reset_password"), {"email": "owner@example.com"})
    assert len(mail.outbox) == 1
    link = re.search(r"https?://[^/]+(/accounts/password/reset/key/\S+)", mail.outbox[0].body).group(1)
    response = client.get(link, follow=True)
    form_url = response.redirect_chain[-1][0] if response.redirect_chain else link
    response = client.post(form_url, {"password1": "brand-new-passphrase-1", "password2": "brand-new-passphrase-1"})
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("brand-new-passphrase-1")


def test_dashboard_requires_login(client, db):
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302 and reverse("account_login") in response.url


def test_create_key_shows_it_once_then_lists_prefix_only(signed_in, organization):
    response = signed_in.post(reverse("api-keys"), {"name": "backend", "rate_limit_rpm": "60"})
    assert response.status_code == 200
    raw = re.search(rb'data-testid="new-key">([^<]+)<', response.content).group(1).decode()
    row = selectors.find_active_api_key(raw)
    assert row.organization == organization and row.name == "backend" and row.rate_limit_rpm == 60
    listing = signed_in.get(reverse("api-keys"))
    assert raw.encode() not in listing.content
    assert row.prefix.encode() in listing.content and b"backend" in listing.content and b"never" in listing.content


def test_create_key_needs_a_name(signed_in):
    response = signed_in.post(reverse("api-keys"), {"name": ""})
    assert response.status_code == 200 and b"This field is required" in response.content
    assert not re.search(rb'data-testid="new-key"', response.content)


def test_revoke_key(signed_in, organization):
    row, raw = services.create_api_key(organization=organization, name="old")
    response = signed_in.post(reverse("api-key-revoke", args=[row.pk]), follow=True)
    assert b"revoked" in response.content
    assert selectors.find_active_api_key(raw) is None


def test_members_can_see_keys_but_not_create_or_revoke(client, organization):
    member, _ = services.get_or_create_user(email="member@example.com", password="member-pass-123")
    Membership.all_tenants_unsafe.create(organization=organization, user=member, role="member")
    row, _ = services.create_api_key(organization=organization, name="shared")
    client.force_login(member)
    assert client.get(reverse("api-keys")).status_code == 200
    assert client.post(reverse("api-keys"), {"name": "mine"}).status_code == 403
    assert client.post(reverse("api-key-revoke", args=[row.pk])).status_code == 403
    assert ApiKey.objects.for_organization(organization).count() == 1


def test_cannot_revoke_another_organizations_key(signed_in, other_tenant):
    _, their_key, raw = other_tenant
    assert signed_in.post(reverse("api-key-revoke", args=[their_key.pk])).status_code == 404
    assert selectors.find_active_api_key(raw) is not None


def test_overview_shows_month_to_date_usage(signed_in, organization, api_key):
    from billing import services as billing_services
    from billing.selectors import current_price

    price = current_price(model="local-preview", size="256x256", quality="standard")
    billing_services.record_usage(organization=organization, api_key=api_key[0], request_id="req_1",
                                  status="succeeded", model="local-preview", provider="local", size="256x256",
                                  quality="standard", n=4, price=price, latency_ms=12)
    response = signed_in.get(reverse("dashboard"))
    assert b"$0.004" in response.content
    assert b"req_1" in response.content


def test_pages_render_with_shared_layout(client, db):
    for name in ["account_login", "account_signup", "account_reset_password"]:
        response = client.get(reverse(name))
        assert response.status_code == 200
        assert b"css/app.css" in response.content and b"Imagegate" in response.content


def test_billing_page_sets_organization_and_key_spend_limits(signed_in, organization, api_key):
    from billing.models import BillingAccount, KeySpendLimit

    response = signed_in.post(reverse("billing"), {"monthly_limit_usd": "25.50"})
    assert response.status_code == 302
    assert BillingAccount.all_tenants_unsafe.get(organization=organization).monthly_spend_limit_micros == 25_500_000
    response = signed_in.post(reverse("billing"), {"api_key": api_key[0].pk, "monthly_limit_usd": "3"})
    assert response.status_code == 302
    assert KeySpendLimit.all_tenants_unsafe.get(api_key=api_key[0]).monthly_limit_micros == 3_000_000
    page = signed_in.get(reverse("billing"))
    assert b"$3.00" in page.content and b"test key" in page.content


def test_cannot_set_a_limit_on_another_organizations_key(signed_in, other_tenant):
    from billing.models import KeySpendLimit

    response = signed_in.post(reverse("billing"), {"api_key": other_tenant[1].pk, "monthly_limit_usd": "1"})
    assert response.status_code == 200 and not KeySpendLimit.all_tenants_unsafe.exists()
