"""API keys (expiry, allowed models, rotation) and the team (invitations, roles, removal): the dashboard through
Django's test client, the API behaviour through the official OpenAI SDK against the live server."""
import html
import re
from datetime import timedelta

import openai
import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from accounts import selectors, services
from accounts.models import ApiKey, Invitation, Membership
from config import process_cache


def _new_key(response) -> str:
    return re.search(rb'data-testid="new-key">([^<]+)<', response.content).group(1).decode()


def _client(live_url, raw):
    return openai.OpenAI(base_url=f"{live_url}/v1", api_key=raw, max_retries=0, timeout=30)


def _generate(client, model="local-preview"):
    return client.images.generate(model=model, prompt="a red fox", size="256x256", response_format="b64_json")


@pytest.fixture
def signed_in(client, user, organization):
    client.force_login(user)
    return client


def _join(organization, email, role):
    person, _ = services.get_or_create_user(email=email, password="a-long-enough-passphrase")
    return Membership.all_tenants_unsafe.create(organization=organization, user=person, role=role)


# --- Keys: creation with expiry and allowed models ---------------------------------------------------------------

def test_create_key_with_expiry_and_allowed_models(signed_in, organization):
    day = (timezone.now() + timedelta(days=10)).date()
    response = signed_in.post(reverse("api-keys"), {
        "name": "limited", "rate_limit_rpm": "30", "expires_on": day.isoformat(),
        "allowed_models": "local-preview, dall-e-3 local-preview",
    })
    assert response.status_code == 200
    raw = _new_key(response)
    row = selectors.find_active_api_key(raw)
    assert row.organization == organization and row.rate_limit_rpm == 30
    assert row.allowed_models == ["local-preview", "dall-e-3"]
    # The form offers the catalog's models as checkboxes.
    form = signed_in.get(reverse("api-keys")).content.decode()
    assert 'type="checkbox" name="allowed_models" value="dall-e-3"' in form
    assert row.expires_at.date() == day and row.expires_at.hour == 0
    listing = signed_in.get(reverse("api-keys")).content
    assert raw.encode() not in listing
    assert b"local-preview, dall-e-3" in listing and day.isoformat().encode() in listing


def test_create_key_refuses_past_expiry_and_bad_model_ids(signed_in, organization):
    yesterday = (timezone.now() - timedelta(days=1)).date()
    response = signed_in.post(reverse("api-keys"), {"name": "x", "expires_on": yesterday.isoformat()})
    assert b"must be in the future" in response.content and b'data-testid="new-key"' not in response.content
    response = signed_in.post(reverse("api-keys"), {"name": "x", "allowed_models": "local-preview, <script>"})
    assert b"is not a model id" in response.content and b'data-testid="new-key"' not in response.content
    # A misspelt model (ticked boxes post one value each; text may be comma-separated) is refused by name.
    response = signed_in.post(reverse("api-keys"), {"name": "x", "allowed_models": ["local-preview", "dall-e3"]})
    found = re.search(rb'data-testid="allowed-models-error">([^<]*)<', response.content)
    error = html.unescape(found.group(1).decode())
    assert "'dall-e3' is not a model in the catalog" in error and "Did you mean 'dall-e-3'?" in error
    with pytest.raises(ValueError, match="not a model in the catalog"):
        services.create_api_key(organization=organization, name="x", allowed_models=["gpt-image-one"])
    assert not ApiKey.objects.for_organization(organization).exists()
    with pytest.raises(ValueError):
        services.create_api_key(organization=organization, name="x", expires_at=timezone.now() - timedelta(seconds=1))


def test_key_allows_model_is_the_one_rule(organization):
    every, _ = services.create_api_key(organization=organization, name="all")
    some, _ = services.create_api_key(organization=organization, name="some", allowed_models=["dall-e-3"])
    assert selectors.key_allows_model(every, "local-preview") and selectors.key_allows_model(None, "anything")
    assert selectors.key_allows_model(some, "dall-e-3") and not selectors.key_allows_model(some, "local-preview")


# --- Keys: the API's answers -------------------------------------------------------------------------------------

def test_expired_key_is_refused_with_invalid_api_key_naming_the_date(live_url, organization):
    row, raw = services.create_api_key(organization=organization, name="soon",
                                       expires_at=timezone.now() + timedelta(hours=1))
    client = _client(live_url, raw)
    assert _generate(client).data[0].b64_json
    ApiKey.all_tenants_unsafe.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    process_cache.invalidate("api_keys")  # a raw UPDATE sends no signal: tell the serving processes
    with pytest.raises(openai.AuthenticationError) as info:
        _generate(client)
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    row.refresh_from_db()
    assert "expired on" in info.value.message and row.expires_at.strftime("%Y-%m-%d") in info.value.message
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_disallowed_model_is_403_model_not_allowed(live_url, organization):
    _, raw = services.create_api_key(organization=organization, name="narrow", allowed_models=["dall-e-3"])
    with pytest.raises(openai.PermissionDeniedError) as info:
        _generate(_client(live_url, raw), model="local-preview")
    assert info.value.status_code == 403
    assert info.value.code == "model_not_allowed" and info.value.param == "model"
    assert "dall-e-3" in info.value.message and "local-preview" in info.value.message
    assert info.value.body["type"] == "invalid_request_error"
    # A key that lists the model may use it; /v1/models still lists every model.
    _, ok = services.create_api_key(organization=organization, name="wide", allowed_models=["local-preview"])
    assert _generate(_client(live_url, ok)).data[0].b64_json
    assert "local-preview" in [m.id for m in _client(live_url, raw).models.list().data]


def test_rotate_with_grace_period_keeps_the_old_key_working(live_url, client, user, organization):
    old, old_raw = services.create_api_key(organization=organization, name="backend", rate_limit_rpm=50,
                                           allowed_models=["local-preview"])
    client.force_login(user)
    response = client.post(reverse("api-key-rotate", args=[old.pk]))
    assert response.status_code == 200
    new_raw = _new_key(response)
    new = selectors.find_active_api_key(new_raw)
    assert new.pk != old.pk and new.name == "backend (rotated)" and new.rate_limit_rpm == 50
    assert new.allowed_models == ["local-preview"] and new.expires_at is None
    old.refresh_from_db()
    assert old.revoked_at is None
    assert timedelta(hours=23) < old.expires_at - timezone.now() <= timedelta(hours=24)
    assert _generate(_client(live_url, new_raw)).data[0].b64_json
    assert _generate(_client(live_url, old_raw)).data[0].b64_json
    assert new_raw.encode() not in client.get(reverse("api-keys")).content
    # When the grace period is over, the old key is refused as expired.
    ApiKey.all_tenants_unsafe.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    process_cache.invalidate("api_keys")  # a raw UPDATE sends no signal: tell the serving processes
    with pytest.raises(openai.AuthenticationError) as info:
        _generate(_client(live_url, old_raw))
    assert "expired" in info.value.message


def test_rotate_and_revoke_now(live_url, client, user, organization):
    old, old_raw = services.create_api_key(organization=organization, name="ci")
    client.force_login(user)
    response = client.post(reverse("api-key-rotate", args=[old.pk]), {"revoke_old": "on"})
    new_raw = _new_key(response)
    old.refresh_from_db()
    assert old.revoked_at is not None
    with pytest.raises(openai.AuthenticationError):
        _generate(_client(live_url, old_raw))
    assert _generate(_client(live_url, new_raw)).data[0].b64_json


def test_rotate_keeps_an_earlier_expiry_and_refuses_revoked_keys(organization):
    soon = timezone.now() + timedelta(hours=2)
    old, _ = services.create_api_key(organization=organization, name="short", expires_at=soon)
    new, _ = services.rotate_api_key(api_key=old)
    old.refresh_from_db()
    assert old.expires_at == soon and new.expires_at == soon
    services.revoke_api_key(api_key=new)
    with pytest.raises(ValueError):
        services.rotate_api_key(api_key=new)


def test_rotation_signal_carries_old_and_new(organization, django_capture_on_commit_callbacks):
    seen = []

    def receiver(sender, old_key, new_key, **kwargs):
        seen.append((old_key.pk, new_key.pk))

    services.api_key_rotated.connect(receiver)
    try:
        old, _ = services.create_api_key(organization=organization, name="sig")
        with django_capture_on_commit_callbacks(execute=True):
            new, _ = services.rotate_api_key(api_key=old)
    finally:
        services.api_key_rotated.disconnect(receiver)
    assert seen == [(old.pk, new.pk)]


def test_members_cannot_rotate_and_other_tenants_keys_are_404(client, organization, other_tenant):
    _, their_key, _ = other_tenant
    mine, _ = services.create_api_key(organization=organization, name="mine")
    member = _join(organization, "member@example.com", "member")
    client.force_login(member.user)
    assert client.post(reverse("api-key-rotate", args=[mine.pk])).status_code == 403
    admin = _join(organization, "admin@example.com", "admin")
    client.force_login(admin.user)
    assert client.post(reverse("api-key-rotate", args=[their_key.pk])).status_code == 404
    assert ApiKey.objects.for_organization(other_tenant[0]).count() == 1


# --- Team: invitations -------------------------------------------------------------------------------------------

def _invite_link(message) -> str:
    return re.search(r"https?://[^/\s]+(/dashboard/invite/[^\s/]+/)", message.body).group(1)


def test_invite_flow_end_to_end(signed_in, client, organization):
    response = signed_in.post(reverse("team"), {"email": "New.Person@Example.com", "role": "admin"})
    assert response.status_code == 302 and response.url == reverse("team")
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["new.person@example.com"]
    assert "Acme" in mail.outbox[0].subject
    link = _invite_link(mail.outbox[0])
    invitation = Invitation.objects.for_organization(organization).get()
    assert invitation.role == "admin" and link.split("/")[-2] not in invitation.token_hash
    assert timedelta(days=6, hours=23) < invitation.expires_at - timezone.now() <= timedelta(days=7)
    assert b"new.person@example.com" in signed_in.get(reverse("team")).content

    signed_in.post(reverse("account_logout"))
    # Logged out: the link sends the visitor to sign up (no account yet) and back.
    response = client.get(link)
    assert response.status_code == 302
    assert response.url.startswith(reverse("account_signup")) and "next=" in response.url
    newcomer, _ = services.get_or_create_user(email="new.person@example.com", password="a-long-enough-passphrase")
    response = client.get(link)
    assert response.url.startswith(reverse("account_login"))
    client.force_login(newcomer)
    page = client.get(link)
    assert page.status_code == 200 and b"Accept invitation" in page.content
    assert not Membership.objects.for_organization(organization).filter(user=newcomer).exists()  # GET changes nothing
    response = client.post(link, follow=True)
    assert response.redirect_chain[-1][0] == reverse("team")
    membership = Membership.objects.for_organization(organization).get(user=newcomer)
    assert membership.role == "admin"
    assert b"Acme" in response.content  # now working in the invited organization
    invitation.refresh_from_db()
    assert invitation.accepted_at is not None and invitation.accepted_by == newcomer
    # Used once only.
    assert b"already been used" in client.post(link).content


def test_invite_link_refuses_another_address_and_expired_or_forged_tokens(signed_in, client, organization):
    signed_in.post(reverse("team"), {"email": "invitee@example.com", "role": "member"})
    link = _invite_link(mail.outbox[0])
    stranger, _ = services.get_or_create_user(email="stranger@example.com", password="a-long-enough-passphrase")
    client.force_login(stranger)
    response = client.post(link)
    assert response.status_code == 400 and b"This invitation is for invitee@example.com" in response.content
    assert not Membership.objects.for_organization(organization).filter(user=stranger).exists()
    assert client.get("/dashboard/invite/not-a-real-token/").status_code == 404
    Invitation.objects.for_organization(organization).update(expires_at=timezone.now() - timedelta(seconds=1))
    invitee, _ = services.get_or_create_user(email="invitee@example.com", password="a-long-enough-passphrase")
    client.force_login(invitee)
    assert b"expired" in client.post(link).content
    assert not Membership.objects.for_organization(organization).filter(user=invitee).exists()


def test_invite_rules(client, organization):
    admin = _join(organization, "admin@example.com", "admin")
    member = _join(organization, "member@example.com", "member")
    client.force_login(member.user)
    page = client.get(reverse("team"))
    assert page.status_code == 200 and b"admin@example.com" in page.content and b"Send invitation" not in page.content
    assert client.post(reverse("team"), {"email": "x@example.com", "role": "member"}).status_code == 403
    client.force_login(admin.user)
    assert client.post(reverse("team"), {"email": "x@example.com", "role": "owner"}).status_code == 403
    response = client.post(reverse("team"), {"email": "member@example.com", "role": "member"})
    assert b"already a member" in response.content
    assert client.post(reverse("team"), {"email": "x@example.com", "role": "member"}).status_code == 302
    assert client.post(reverse("team"), {"email": "x@example.com", "role": "admin"}).status_code == 302
    pending = Invitation.objects.for_organization(organization).get()  # the second replaced the first
    assert pending.role == "admin" and len(mail.outbox) == 2
    assert client.post(reverse("team-invitation-revoke", args=[pending.pk])).status_code == 302
    assert not Invitation.objects.for_organization(organization).exists()


# --- Team: roles and removal ---------------------------------------------------------------------------------------

def _role(membership):
    membership.refresh_from_db()
    return membership.role


def test_role_changes_follow_the_rules(client, user, organization):
    owner = Membership.objects.for_organization(organization).get(user=user)
    admin = _join(organization, "admin@example.com", "admin")
    member = _join(organization, "member@example.com", "member")

    client.force_login(member.user)  # members see the team but change nothing
    assert client.post(reverse("team-role", args=[admin.pk]), {"role": "member"}).status_code == 403
    assert client.post(reverse("team-remove", args=[admin.pk])).status_code == 403
    assert _role(admin) == "admin"

    client.force_login(admin.user)  # admins move people between member and admin, never touch owners
    assert client.post(reverse("team-role", args=[member.pk]), {"role": "admin"}).status_code == 302
    assert _role(member) == "admin"
    assert client.post(reverse("team-role", args=[member.pk]), {"role": "owner"}).status_code == 403
    assert client.post(reverse("team-role", args=[owner.pk]), {"role": "member"}).status_code == 403
    assert client.post(reverse("team-remove", args=[owner.pk])).status_code == 403
    assert _role(owner) == "owner"

    client.force_login(user)  # the last owner cannot step down
    response = client.post(reverse("team-role", args=[owner.pk]), {"role": "admin"}, follow=True)
    assert b"last owner" in response.content and _role(owner) == "owner"
    response = client.post(reverse("team-remove", args=[owner.pk]), follow=True)
    assert b"last owner" in response.content
    assert client.post(reverse("team-role", args=[admin.pk]), {"role": "owner"}).status_code == 302
    assert _role(admin) == "owner"
    assert client.post(reverse("team-role", args=[owner.pk]), {"role": "member"}).status_code == 302
    assert _role(owner) == "member"
    assert client.post(reverse("team-role", args=[admin.pk]), {"role": "member"}).status_code == 403


def test_last_owner_rule_in_the_service(organization, user):
    owner = Membership.objects.for_organization(organization).get(user=user)
    with pytest.raises(services.TeamError):
        services.change_role(membership=owner, role="member", actor=owner)
    with pytest.raises(services.TeamError):
        services.remove_member(membership=owner, actor=owner)
    assert selectors.owner_count(organization) == 1


def test_remove_member_and_leave(client, user, organization):
    admin = _join(organization, "admin@example.com", "admin")
    member = _join(organization, "member@example.com", "member")
    leaver = _join(organization, "leaver@example.com", "member")
    client.force_login(admin.user)
    response = client.post(reverse("team-remove", args=[member.pk]), follow=True)
    assert b"was removed" in response.content
    assert not Membership.objects.for_organization(organization).filter(pk=member.pk).exists()
    client.force_login(member.user)
    assert client.get(reverse("team")).status_code == 404  # no organization left
    client.force_login(leaver.user)
    response = client.post(reverse("team-remove", args=[leaver.pk]))
    assert response.status_code == 302 and response.url == reverse("dashboard")
    assert set(Membership.objects.for_organization(organization).values_list("user__email", flat=True)) == {
        "owner@example.com", "admin@example.com"}


def test_team_is_tenant_isolated(signed_in, organization, other_tenant):
    their_org = other_tenant[0]
    their_owner = Membership.objects.for_organization(their_org).get()
    their_invite, _ = services.invite_member(organization=their_org, email="x@example.com", role="member",
                                             invited_by=their_owner)
    assert signed_in.post(reverse("team-role", args=[their_owner.pk]), {"role": "member"}).status_code == 404
    assert signed_in.post(reverse("team-remove", args=[their_owner.pk])).status_code == 404
    assert signed_in.post(reverse("team-invitation-revoke", args=[their_invite.pk])).status_code == 404
    page = signed_in.get(reverse("team")).content
    assert b"rival@example.com" not in page and b"x@example.com" not in page
    assert _role(their_owner) == "owner" and Invitation.objects.for_organization(their_org).exists()


def test_nav_links_to_team(signed_in):
    assert reverse("team").encode() in signed_in.get(reverse("api-keys")).content


def test_rotation_carries_the_keys_monthly_spend_limit(transactional_db, api_key):
    from accounts import services
    from billing import services as billing_services
    from billing.models import KeySpendLimit

    old, _ = api_key
    billing_services.set_spend_limit(organization=old.organization, api_key=old, monthly_limit_micros=4_200_000)
    new, _ = services.rotate_api_key(api_key=old)
    assert KeySpendLimit.all_tenants_unsafe.get(api_key=new).monthly_limit_micros == 4_200_000
