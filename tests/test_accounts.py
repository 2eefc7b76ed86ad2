"""Users, organizations, memberships and API keys: the model rules, services and management commands."""
import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import keys, selectors, services
from accounts.models import ApiKey, Membership, Organization, User
from accounts.tenancy import UnscopedQueryError


def test_user_logs_in_with_email_and_is_created_with_lowercased_email(db):
    user = User.objects.create_user(email="Ada@Example.COM", password="s3cret-pass-phrase")
    assert user.email == "ada@example.com"
    assert authenticate(email="ada@example.com", password="s3cret-pass-phrase") == user
    assert User._meta.get_field("email").unique
    assert not hasattr(User, "username") or User.USERNAME_FIELD == "email"


def test_create_organization_makes_the_user_its_owner(user):
    org = services.create_organization(name="Acme Rockets", owner=user)
    assert org.slug == "acme-rockets"
    membership = Membership.objects.for_organization(org).get()
    assert membership.user == user and membership.role == "owner" and membership.has_perm("manage_team")
    assert services.create_organization(name="Acme Rockets", owner=user).slug == "acme-rockets-2"


def test_roles_are_owner_admin_member(db):
    assert set(Membership.Role.values) == {"owner", "admin", "member"}


def test_key_is_stored_as_sha256_of_a_high_entropy_secret(organization):
    row, raw = services.create_api_key(organization=organization, name="ci")
    assert raw.startswith(row.prefix + "_") and len(raw) > 50
    assert row.secret_hash == hashlib.sha256(raw.encode()).hexdigest()
    stored = [getattr(row, f.attname) for f in ApiKey._meta.concrete_fields]
    assert raw not in {value for value in stored if isinstance(value, str)}
    assert selectors.find_active_api_key(raw) == row


def test_lookup_is_by_prefix_and_rejects_wrong_secret_or_revoked(organization):
    row, raw = services.create_api_key(organization=organization, name="ci")
    assert selectors.find_active_api_key(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    assert selectors.find_active_api_key("sk-something") is None
    assert selectors.find_active_api_key("") is None
    services.revoke_api_key(api_key=row)
    assert selectors.find_active_api_key(raw) is None


def test_key_lookup_is_one_indexed_query(organization):
    _, raw = services.create_api_key(organization=organization, name="ci")
    with CaptureQueriesContext(connection) as ctx:
        selectors.find_active_api_key(raw)
    assert len(ctx.captured_queries) == 1
    assert "prefix" in ctx.captured_queries[0]["sql"]
    assert ApiKey._meta.get_field("prefix").unique


def test_last_used_at_is_written_at_most_once_per_interval(organization, settings):
    settings.API_KEY_LAST_USED_RESOLUTION_SECONDS = 60
    row, _ = services.create_api_key(organization=organization, name="ci")
    now = timezone.now()
    assert services.touch_api_key(api_key=row, now=now) is True
    with CaptureQueriesContext(connection) as ctx:
        for i in range(50):
            assert services.touch_api_key(api_key=row, now=now + timedelta(seconds=i)) is False
    assert len(ctx.captured_queries) == 0
    # A stale copy held by another process cannot write twice within the interval either.
    stale = ApiKey.all_tenants_unsafe.get(pk=row.pk)
    stale.last_used_at = None
    assert services.touch_api_key(api_key=stale, now=now + timedelta(seconds=5)) is False
    assert services.touch_api_key(api_key=row, now=now + timedelta(seconds=61)) is True
    row.refresh_from_db()
    assert row.last_used_at == now + timedelta(seconds=61)


def test_tenant_manager_refuses_unscoped_queries(organization):
    with pytest.raises(UnscopedQueryError):
        list(ApiKey.objects.all())
    with pytest.raises(UnscopedQueryError):
        ApiKey.objects.filter(name="x").exists()
    with pytest.raises(UnscopedQueryError):
        ApiKey.objects.for_organization(None)
    services.create_api_key(organization=organization, name="mine")
    other = Organization.objects.create(name="Other", slug="other")
    services.create_api_key(organization=other, name="theirs")
    assert [k.name for k in ApiKey.objects.for_organization(organization)] == ["mine"]


def test_create_organization_command_is_idempotent_and_creates_the_owner(db):
    out = StringIO()
    call_command("create_organization", "acme", owner="boss@acme.test", password="pw-for-boss-123", stdout=out)
    call_command("create_organization", "acme", owner="boss@acme.test", stdout=out)
    org = Organization.objects.get(slug="acme")
    assert Membership.objects.for_organization(org).get().user.email == "boss@acme.test"
    assert authenticate(email="boss@acme.test", password="pw-for-boss-123") is not None
    assert Organization.objects.count() == 1 and User.objects.count() == 1
    with pytest.raises(CommandError):
        call_command("create_organization", "not a slug", owner="boss@acme.test")


def test_create_api_key_command_prints_the_raw_key_alone_on_the_last_line(db):
    call_command("create_organization", "acme", owner="boss@acme.test")
    out = StringIO()
    call_command("create_api_key", "acme", name="deploy", rpm=120, stdout=out)
    raw = out.getvalue().rstrip("\n").splitlines()[-1]
    row = selectors.find_active_api_key(raw)
    assert row is not None and row.name == "deploy" and row.rate_limit_rpm == 120
    assert raw.strip() == raw and " " not in raw
    with pytest.raises(CommandError):
        call_command("create_api_key", "nope", name="x")


def test_seed_demo_is_idempotent_and_mints_a_fresh_key_each_time(db):
    first, second = StringIO(), StringIO()
    call_command("seed_demo", stdout=first)
    call_command("seed_demo", stdout=second)
    key1 = first.getvalue().strip().splitlines()[-1].split("=", 1)[1]
    key2 = second.getvalue().strip().splitlines()[-1].split("=", 1)[1]
    assert key1 != key2
    assert selectors.find_active_api_key(key1) and selectors.find_active_api_key(key2)
    assert Organization.objects.filter(slug="demo").count() == 1
    assert User.objects.filter(email="demo@imagegate.local").count() == 1
    assert authenticate(email="demo@imagegate.local", password="imagegate-demo") is not None


def test_key_format_parsing():
    prefix = keys.new_prefix()
    raw = keys.build_key(prefix)
    assert keys.split_prefix(raw) == prefix
    assert keys.split_prefix("ig_short") is None
    assert keys.split_prefix("Bearer xyz") is None


# --- E-mail identity: one rule everywhere (accounts/identity.py) ----------------------------------------------------

NFD_EMAIL = "Bob@Bu\u0308cher.Example"  # "bücher" with a combining diaeresis, mixed case
NFC_EMAIL = "bob@b\u00fccher.example"


def test_one_email_rule_from_sign_up_to_login_invitations_and_commands(client, db):
    from io import StringIO

    from django.core.management import call_command
    from django.urls import reverse

    from accounts import services
    from accounts.models import Invitation, Membership, User

    response = client.post(reverse("account_signup"), {"email": f"  {NFD_EMAIL} ",
                                                       "password1": "sturdy horse 42 battery",
                                                        "password2": "sturdy horse 42 battery"})
    assert response.status_code == 302
    user = User.objects.get()
    assert user.email == NFC_EMAIL
    client.logout()
    login = client.post(reverse("account_login"), {"login": NFD_EMAIL.upper(), "password": "sturdy horse 42 battery"})
    assert login.status_code == 302  # the NFD, upper-case spelling finds the account
    out = StringIO()
    call_command("create_organization", "second", "--owner", NFD_EMAIL, stdout=out)
    assert User.objects.count() == 1  # the command found the same person
    org = Membership.all_tenants_unsafe.filter(user=user).first().organization
    owner = Membership.objects.for_organization(org).get(user=user)
    invitation, _ = services.invite_member(organization=org, email="Someone@Example.com", role="member",
                                           invited_by=owner)
    assert invitation.email == "someone@example.com"
    other, _ = services.get_or_create_user(email="SOMEONE@example.COM ")
    services.accept_invitation(invitation=invitation, user=other)
    assert Invitation.objects.for_organization(org).get().accepted_by == other


def test_different_addresses_stay_different(db):
    from django.db import IntegrityError, transaction

    from accounts import services
    from accounts.models import User

    pairs = [("stra\u00dfe@example.com", "strasse@example.com"),  # ß is not ss (casefold would fold them)
             ("\uff42\uff4f\uff42@example.com", "bob@example.com"),  # full-width is not ASCII (NFKC would fold)
             ("first.last@example.com", "firstlast@example.com"),  # dots are part of the address
             ("bob+tag@example.com", "bob@example.com")]
    for a, b in pairs:
        ua, _ = services.get_or_create_user(email=a)
        ub, _ = services.get_or_create_user(email=b)
        assert ua.pk != ub.pk, (a, b)
    with pytest.raises(IntegrityError), transaction.atomic():  # the database refuses a case twin written around it
        User.objects.bulk_create([User(email="STRASSE@example.com")])
