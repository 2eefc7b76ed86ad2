"""Tenant isolation: every dashboard page, API endpoint and export, walked as tenant A with tenant B's ids and keys.

Two tenants are built for real: owners, admins, members, keys, pending invitations, spend limits (organization and
per key), invoices, and ledger rows / provider attempts / stored images made through the live server with the
official openai SDK (generations with response_format=url, an edit, a refused request).

The URL patterns are ENUMERATED from the resolver: every named pattern under /dashboard/, /billing/, /v1/ and
/images/ must be either in COVERAGE (how to exercise it with the other tenant's ids) or in ALLOW_LIST (public or
unscoped, with the reason). A URL added later without coverage fails `test_every_url_is_covered_or_allow_listed`.

Expectations: a request naming B's objects answers 400/403/404 (405 for a GET on a POST-only view), never 200 with
B's data; A's own pages (log, CSV, overview, audit API...) never contain B's request ids, key names, prefixes,
e-mails or invoices; after the walk B's keys, members, invitations, limits and ledger are unchanged.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from openai import OpenAI

from accounts import services as account_services
from accounts.models import ApiKey, Invitation, Membership
from billing import services as billing_services
from billing.models import BillingAccount, Invoice, KeySpendLimit, LedgerEntry
from generation.models import ProviderAttempt, StoredImage, WebhookDelivery, WebhookEvent
from generation.pipeline import webhooks

from .images_util import png

SCOPED_PREFIXES = ("dashboard/", "billing/", "v1/", "images/")
DENY = {400, 403, 404}
SHARED_INVITEE = "shared-invitee@example.com"   # invited by B; A's team POST invites the same address
# Each tenant sends its own Idempotency-Key in setup; A's probes re-send B's keys with B's exact bodies.
GEN_IDEMPOTENCY_KEY = "{}-generation-key"
EDIT_IDEMPOTENCY_KEY = "{}-edit-key"
GEN_PROMPT = "zebra quartz lighthouse"
EDIT_PROMPT = "add a red balloon"
INPUT_PNG = png(64, 64)


# --- building the two tenants ---------------------------------------------------------------------------------------

@dataclass
class Tenant:
    tag: str
    org: object
    owner: object
    owner_membership: Membership
    admin_membership: Membership
    member_membership: Membership
    key: ApiKey
    raw: str
    batch_key: ApiKey
    batch_raw: str
    invitation: Invitation
    invite_token: str
    shared_invitation: Invitation
    shared_token: str
    invoice: Invoice
    request_ids: list[str] = field(default_factory=list)
    image_paths: list[str] = field(default_factory=list)
    gen_request_id: str = ""
    edit_request_id: str = ""
    job_id: str = ""
    webhook_endpoint_id: str = ""
    webhook_delivery_id: int = 0

    @property
    def markers(self) -> list[str]:
        """Strings that identify this tenant's data and must never appear in the other tenant's answers."""
        return [*self.request_ids, self.key.name, self.batch_key.name, self.key.prefix, self.batch_key.prefix,
                self.owner.email, self.admin_membership.user.email, self.member_membership.user.email,
                self.invitation.email, self.invoice.number, self.invoice.stripe_invoice_id, self.org.name,
                f"{self.tag}-secret-upstream", self.job_id, self.webhook_endpoint_id, f"{self.tag}-hooks.example.com",
                *[p.rsplit("/", 1)[-1].split(".")[0] for p in self.image_paths]]


def _member(org, tag: str, role: str) -> Membership:
    user, _ = account_services.get_or_create_user(email=f"{tag}-{role}@example.com", password="x-horse-battery")
    return Membership.all_tenants_unsafe.create(organization=org, user=user, role=role)


def _build_tenant(tag: str, name: str, live_url: str) -> Tenant:
    owner, _ = account_services.get_or_create_user(email=f"{tag}-owner@example.com", password="owner horse battery")
    org = account_services.create_organization(name=name, owner=owner, slug=tag)
    owner_membership = Membership.all_tenants_unsafe.get(organization=org, user=owner)
    admin_membership = _member(org, tag, Membership.Role.ADMIN)
    member_membership = _member(org, tag, Membership.Role.MEMBER)
    key, raw = account_services.create_api_key(organization=org, name=f"{tag}-primary-key", created_by=owner)
    batch_key, batch_raw = account_services.create_api_key(organization=org, name=f"{tag}-batch-key")
    invitation, token = account_services.invite_member(
        organization=org, email=f"{tag}-invitee@example.com", role=Membership.Role.MEMBER,
        invited_by=owner_membership)
    shared_invitation, shared_token = account_services.invite_member(
        organization=org, email=SHARED_INVITEE, role=Membership.Role.ADMIN, invited_by=owner_membership)
    billing_services.set_spend_limit(organization=org, monthly_limit_micros=777_000_000)
    billing_services.set_spend_limit(organization=org, api_key=batch_key, monthly_limit_micros=55_000_000)
    invoice = Invoice.all_tenants_unsafe.create(
        organization=org, stripe_invoice_id=f"in_{tag}_0001", number=f"{tag.upper()}-INV-0001", status="paid",
        amount_due=4321, amount_paid=4321, hosted_invoice_url=f"https://invoice.stripe.test/{tag}",
        created=timezone.now() - timedelta(days=3))
    tenant = Tenant(tag=tag, org=org, owner=owner, owner_membership=owner_membership,
                    admin_membership=admin_membership, member_membership=member_membership, key=key, raw=raw,
                    batch_key=batch_key, batch_raw=batch_raw, invitation=invitation, invite_token=token,
                    shared_invitation=shared_invitation, shared_token=shared_token, invoice=invoice)

    # Real traffic through the live server and the official SDK.
    client = OpenAI(base_url=f"{live_url}/v1", api_key=raw, max_retries=0, timeout=30)
    raw_gen = client.images.with_raw_response.generate(
        model="local-preview", prompt=GEN_PROMPT, size="256x256", n=2, response_format="url",
        extra_headers={"Idempotency-Key": GEN_IDEMPOTENCY_KEY.format(tag)})
    tenant.gen_request_id = raw_gen.headers["x-request-id"]
    gen = raw_gen.parse()
    tenant.image_paths += [httpx.URL(d.url).path for d in gen.data]
    raw_edit = client.images.with_raw_response.edit(
        model="local-preview", image=("in.png", INPUT_PNG, "image/png"), prompt=EDIT_PROMPT, size="256x256",
        response_format="url", extra_headers={"Idempotency-Key": EDIT_IDEMPOTENCY_KEY.format(tag)})
    tenant.edit_request_id = raw_edit.headers["x-request-id"]
    tenant.image_paths += [httpx.URL(d.url).path for d in raw_edit.parse().data]
    # A refused request on the batch key: a zero-cost ledger row for the second key.
    refused = httpx.post(f"{live_url}/v1/images/generations", headers={"Authorization": f"Bearer {batch_raw}"},
                         json={"model": "local-preview", "prompt": "x", "size": "3x3"}, timeout=30)
    assert refused.status_code == 400, refused.text
    # A distinctive attempt row, so a leaked detail page would show it.
    ProviderAttempt.all_tenants_unsafe.create(
        organization=org, request_id=tenant.gen_request_id, attempt=99, provider=f"{tag}-secret-upstream",
        model="local-preview", status="failed", error_type="timeout", started_at=timezone.now())
    # An async job (run in-process), then a webhook endpoint and a delivery of the job's event to it.
    job = client.images.with_raw_response.generate(
        model="local-preview", prompt=GEN_PROMPT, size="256x256", response_format="b64_json",
        extra_headers={"Prefer": "respond-async"}).http_response.json()
    tenant.job_id = job["id"]
    endpoint = webhooks.create_endpoint(org, url=f"https://{tag}-hooks.example.com/imagegate")
    tenant.webhook_endpoint_id = endpoint.id
    event = WebhookEvent.all_tenants_unsafe.create(id=f"evt_{tag}", organization=org, type="image.job.succeeded",
                                                   job_id=job["id"], body="{}")
    tenant.webhook_delivery_id = WebhookDelivery.all_tenants_unsafe.create(
        organization=org, event=event, endpoint=endpoint, status="failed", attempts=1, response_code=500).pk

    tenant.request_ids = list(LedgerEntry.all_tenants_unsafe.filter(organization=org)
                              .values_list("request_id", flat=True))
    assert len(tenant.request_ids) == 4, tenant.request_ids  # generation, edit, refused, async job
    assert {tenant.gen_request_id, tenant.edit_request_id} <= set(tenant.request_ids)
    assert ProviderAttempt.all_tenants_unsafe.filter(organization=org).count() >= 3
    assert StoredImage.all_tenants_unsafe.filter(organization=org).count() == 3
    return tenant


@dataclass
class World:
    live_url: str
    a: Tenant
    b: Tenant
    a_replayable: set = field(default_factory=set)   # Idempotency-Keys A itself has already used (a replay is fine)


def _snapshot(t: Tenant) -> dict:
    """Everything of B's that A's POSTs could change."""
    account = BillingAccount.all_tenants_unsafe.get(organization=t.org)
    return {
        "keys": sorted(ApiKey.all_tenants_unsafe.filter(organization=t.org)
                       .values_list("pk", "name", "revoked_at", "expires_at")),
        "members": sorted(Membership.all_tenants_unsafe.filter(organization=t.org)
                          .values_list("pk", "user_id", "role")),
        "invitations": sorted(Invitation.all_tenants_unsafe.filter(organization=t.org)
                              .values_list("pk", "email", "role", "accepted_at", "accepted_by_id", "expires_at")),
        "org_limit": account.monthly_spend_limit_micros,
        "key_limits": sorted(KeySpendLimit.all_tenants_unsafe.filter(api_key__organization=t.org)
                             .values_list("api_key_id", "monthly_limit_micros")),
        "ledger": sorted(LedgerEntry.all_tenants_unsafe.filter(organization=t.org)
                         .values_list("request_id", "cost_micros")),
        "invoices": sorted(Invoice.all_tenants_unsafe.filter(organization=t.org)
                           .values_list("pk", "status", "amount_due")),
        "images": sorted(StoredImage.all_tenants_unsafe.filter(organization=t.org).values_list("pk", "deleted_at")),
    }


@pytest.fixture
def world(live_url, settings, tmp_path) -> World:
    settings.MEDIA_ROOT = str(tmp_path)
    a = _build_tenant("alphacorp", "Alphacorp Holdings", live_url)
    b = _build_tenant("betacorp", "Betacorp Holdings", live_url)
    return World(live_url=live_url, a=a, b=b)


# --- the coverage table -----------------------------------------------------------------------------------------------

@dataclass
class Probe:
    """One request made as tenant A. `via`: "session" (Django test client, logged in as A's owner) or "api" (httpx
    against the live server with A's API key). `expect`: "deny" (400/403/404), "deny_get" (a GET on a POST-only
    view: 405, or a deny status), "own" (answers about A's own organization: any status, but B's markers must not
    appear), or a callable(response, world) -> problem text or None."""
    via: str
    method: str
    path: Callable[[World], str]
    expect: str | Callable = "deny"
    data: Callable[[World], dict] | None = None
    note: str = ""


def _records_empty(response, w: World):
    if response.status_code in DENY:
        return None
    if response.status_code != 200:
        return f"unexpected status {response.status_code}"
    data = response.json()["data"]
    if data:
        return f"records filtered by B's key returned {len(data)} rows: {[r.get('id') for r in data]}"
    return None


def _buckets_empty(response, w: World):
    if response.status_code in DENY:
        return None
    if response.status_code != 200:
        return f"unexpected status {response.status_code}"
    results = [r for bucket in response.json()["data"] for r in bucket["results"]]
    if results:
        return f"buckets filtered by B's keys returned results: {results}"
    return None


def _buckets_without_b_keys(response, w: World):
    if response.status_code != 200:
        return f"unexpected status {response.status_code}: {response.text[:300]}"
    b_ids = {w.b.key.pk, w.b.batch_key.pk}
    leaked = [r for bucket in response.json()["data"] for r in bucket["results"] if r.get("api_key_id") in b_ids]
    return f"B's keys appear in A's grouped usage: {leaked}" if leaked else None


def _not_a_replay_of_b(response, w: World):
    """A sends B's Idempotency-Key with the same body: it must get its own fresh answer, never B's stored one."""
    if response.status_code != 200:
        return f"unexpected status {response.status_code}: {response.text[:300]}"
    replayed = response.headers.get("idempotent-replayed") == "true"
    first_use = response.request_key not in w.a_replayable
    w.a_replayable.add(response.request_key)
    if replayed and first_use:
        return "A's first use of B's Idempotency-Key was answered as a replay (of B's response)"
    if response.headers.get("x-request-id") in w.b.request_ids:
        return f"A got B's request id {response.headers.get('x-request-id')}"
    return None


def _b_cursor(w: World) -> str:
    page = httpx.get(f"{w.live_url}/v1/organization/usage/records", params={"limit": 1},
                     headers={"Authorization": f"Bearer {w.b.raw}"}, timeout=30)
    assert page.status_code == 200, page.text
    assert page.json()["next_cursor"]
    return page.json()["next_cursor"]


def _records_with_b_cursor(response, w: World):
    if response.status_code in DENY:
        return None
    if response.status_code != 200:
        return f"unexpected status {response.status_code}"
    foreign = [r["id"] for r in response.json()["data"] if r["id"] not in w.a.request_ids]
    return f"B's cursor returned rows that are not A's: {foreign}" if foreign else None


def _accept_invite_refused(response, w: World):
    if response.status_code not in DENY:
        return f"POSTing B's invitation token as A's owner answered {response.status_code}, expected a refusal"
    return None


KEY_IDS = lambda w: [w.b.key.pk, w.b.batch_key.pk]  # noqa: E731
MEMBER_IDS = lambda w: [w.b.owner_membership.pk, w.b.admin_membership.pk, w.b.member_membership.pk]  # noqa: E731


def _per_id(via, method, template, ids, expect="deny", data=None):
    """One probe per id of B's (`ids(world)` returns them; the table is built before the world, so index)."""
    return [Probe(via, method, (lambda w, i=i: template.format(ids(w)[i])), expect, data) for i in range(3)]


def _b_request_ids(w):
    refused = [r for r in w.b.request_ids if r not in (w.b.gen_request_id, w.b.edit_request_id)]
    return [w.b.gen_request_id, w.b.edit_request_id, *refused]


def _b_key_ids(w):
    return [w.b.key.pk, w.b.batch_key.pk, w.b.key.pk]


def _b_member_ids(w):
    return MEMBER_IDS(w)


def _b_invitation_ids(w):
    return [w.b.invitation.pk, w.b.shared_invitation.pk, w.b.invitation.pk]


ROLE_DATA = lambda w: {"role": Membership.Role.OWNER}  # noqa: E731
ROTATE_DATA = lambda w: {"revoke_old": "on"}  # noqa: E731
START = {"start_time": 0}

COVERAGE: dict[str, list[Probe]] = {
    # ---- /dashboard/ (billing/urls.py dashboard_urlpatterns) ----
    "dashboard": [
        Probe("session", "GET", lambda w: "/dashboard/", "own"),
        Probe("session", "GET", lambda w: "/dashboard/?from=2000-01-01&to=2000-12-31", "own"),
    ],
    "billing": [
        Probe("session", "GET", lambda w: "/dashboard/billing/", "own"),
        # Sets A's own limit (no id in the form); B's limit must be unchanged afterwards.
        Probe("session", "POST", lambda w: "/dashboard/billing/", "own", lambda w: {"monthly_limit_usd": "1"}),
    ],
    # ---- /dashboard/ (accounts.urls) ----
    "api-keys": [
        Probe("session", "GET", lambda w: "/dashboard/keys/", "own"),
        # Creates a key for A; carries no id to point at B.
        Probe("session", "POST", lambda w: "/dashboard/keys/", "own", lambda w: {"name": "alpha probe key"}),
    ],
    "api-key-revoke": [
        *_per_id("session", "POST", "/dashboard/keys/{}/revoke/", _b_key_ids),
        Probe("session", "GET", lambda w: f"/dashboard/keys/{w.b.key.pk}/revoke/", "deny_get"),
    ],
    "api-key-rotate": [
        *_per_id("session", "POST", "/dashboard/keys/{}/rotate/", _b_key_ids, data=ROTATE_DATA),
        *_per_id("session", "POST", "/dashboard/keys/{}/rotate/", _b_key_ids),
        Probe("session", "GET", lambda w: f"/dashboard/keys/{w.b.key.pk}/rotate/", "deny_get"),
    ],
    "team": [
        Probe("session", "GET", lambda w: "/dashboard/team/", "own"),
        # Invites, into A, the address B has a pending invitation for: B's invitation must stay pending.
        Probe("session", "POST", lambda w: "/dashboard/team/", "own",
              lambda w: {"email": SHARED_INVITEE, "role": Membership.Role.MEMBER}),
    ],
    "organization-settings": [
        Probe("session", "GET", lambda w: "/dashboard/settings/", "own"),
        # Changes A's own setting; carries no id to point at B.
        Probe("session", "POST", lambda w: "/dashboard/settings/", "own", lambda w: {"remap_retired_models": "on"}),
    ],
    "team-role": [
        *_per_id("session", "POST", "/dashboard/team/members/{}/role/", _b_member_ids, data=ROLE_DATA),
        *_per_id("session", "POST", "/dashboard/team/members/{}/role/", _b_member_ids,
                 data=lambda w: {"role": Membership.Role.MEMBER}),
        Probe("session", "GET", lambda w: f"/dashboard/team/members/{w.b.admin_membership.pk}/role/", "deny_get"),
    ],
    "team-remove": [
        *_per_id("session", "POST", "/dashboard/team/members/{}/remove/", _b_member_ids),
        Probe("session", "GET", lambda w: f"/dashboard/team/members/{w.b.member_membership.pk}/remove/",
              "deny_get"),
    ],
    "team-invitation-revoke": [
        *_per_id("session", "POST", "/dashboard/team/invitations/{}/revoke/", _b_invitation_ids),
        Probe("session", "GET", lambda w: f"/dashboard/team/invitations/{w.b.invitation.pk}/revoke/", "deny_get"),
    ],
    "invite-accept": [
        # The token is a bearer secret e-mailed to the invitee: its holder sees the invitation (GET answers 200
        # with "this invitation is for ..."); that is by design, like a signed image URL. What must hold: A's owner
        # (not the invited address) cannot accept B's invitation, and a token that is not B's is a 404.
        Probe("session", "POST", lambda w: f"/dashboard/invite/{w.b.invite_token}/", _accept_invite_refused),
        Probe("session", "POST", lambda w: f"/dashboard/invite/{w.b.shared_token}/", _accept_invite_refused),
        Probe("session", "GET", lambda w: f"/dashboard/invite/{w.b.invite_token[:-4]}zzzz/", "deny"),
        Probe("session", "GET", lambda w: f"/dashboard/invite/{w.b.invitation.pk}/", "deny"),
    ],
    # ---- /dashboard/ (generation.pages.urls) ----
    "playground": [
        Probe("session", "GET", lambda w: "/dashboard/playground/", "own"),
        # Generates for the member's organization (no id in the form): the ledger row must land in A, never in B
        # (the snapshot of B's ledger is compared after the walk, also with the session's organization forged to B).
        Probe("session", "POST", lambda w: "/dashboard/playground/", "own",
              lambda w: {"prompt": GEN_PROMPT, "model": "local-preview", "size": "256x256", "n": 1}),
    ],
    "request-log": [
        Probe("session", "GET", lambda w: "/dashboard/requests/", "own"),
        Probe("session", "GET", lambda w: f"/dashboard/requests/?key={w.b.key.pk}", "deny"),
        Probe("session", "GET", lambda w: f"/dashboard/requests/?key={w.b.batch_key.pk}&status=invalid", "deny"),
        Probe("session", "GET", lambda w: "/dashboard/requests/?model=local-preview&provider=local", "own"),
    ],
    "request-export": [
        Probe("session", "GET", lambda w: "/dashboard/requests/export.csv", "own"),
        Probe("session", "GET", lambda w: f"/dashboard/requests/export.csv?key={w.b.key.pk}", "deny"),
        Probe("session", "GET", lambda w: f"/dashboard/requests/export.csv?key={w.b.batch_key.pk}", "deny"),
    ],
    "request-detail": [
        *_per_id("session", "GET", "/dashboard/requests/{}/", _b_request_ids),
    ],
    "request-prompt-delete": [
        # B's request ids: a 404, and B's prompts (if any) stay (B's rows are compared after the walk).
        *_per_id("session", "POST", "/dashboard/requests/{}/prompt/delete/", _b_request_ids),
        Probe("session", "GET", lambda w: f"/dashboard/requests/{w.b.request_ids[0]}/prompt/delete/", "deny_get"),
    ],
    # Sets A's own retention (no id in the form).
    "prompt-retention": [Probe("session", "POST", lambda w: "/dashboard/requests/prompt-retention/", "own",
                               lambda w: {"prompt_retention_days": "7"})],
    # ---- /billing/ ----
    # Both act on the member's own organization only (no id in the request); Stripe is off in the suite, so they
    # redirect back to the billing page. B's billing account must be unchanged.
    "billing-checkout": [Probe("session", "POST", lambda w: "/billing/checkout/", "own")],
    "billing-portal": [Probe("session", "POST", lambda w: "/billing/portal/", "own")],
    # ---- /v1/ (API key of A) ----
    "images-generations": [
        Probe("api", "POST", lambda w: "/v1/images/generations", _not_a_replay_of_b,
              lambda w: {"json": {"model": "local-preview", "prompt": GEN_PROMPT, "size": "256x256", "n": 2,
                                  "response_format": "url"},
                         "headers": {"Idempotency-Key": GEN_IDEMPOTENCY_KEY.format(w.b.tag)}}),
    ],
    "images-edits": [
        Probe("api", "POST", lambda w: "/v1/images/edits", _not_a_replay_of_b,
              lambda w: {"files": {"image": ("in.png", INPUT_PNG, "image/png")},
                         "data": {"model": "local-preview", "prompt": EDIT_PROMPT, "size": "256x256",
                                  "response_format": "url"},
                         "headers": {"Idempotency-Key": EDIT_IDEMPOTENCY_KEY.format(w.b.tag)}}),
    ],
    "images-variations": [
        Probe("api", "POST", lambda w: "/v1/images/variations", "own",
              lambda w: {"files": {"image": ("in.png", INPUT_PNG, "image/png")},
                         "data": {"model": "local-preview", "size": "256x256", "response_format": "url"}}),
    ],
    # A quote reads only the list prices and the caller's own key (its allowed models, its default ceiling).
    "images-quote": [
        Probe("api", "POST", lambda w: "/v1/images/quote", "own",
              lambda w: {"json": {"model": "local-preview", "prompt": GEN_PROMPT, "size": "256x256", "n": 2}}),
    ],
    "images-jobs": [
        Probe("api", "GET", lambda w: "/v1/images/jobs", "own"),
        Probe("api", "GET", lambda w: f"/v1/images/jobs?after={w.b.job_id}"),
    ],
    "images-job": [Probe("api", "GET", lambda w: f"/v1/images/jobs/{w.b.job_id}")],
    "images-job-cancel": [Probe("api", "POST", lambda w: f"/v1/images/jobs/{w.b.job_id}/cancel")],
    "webhook-endpoints": [
        Probe("api", "GET", lambda w: "/v1/webhook_endpoints", "own"),
        Probe("api", "POST", lambda w: "/v1/webhook_endpoints", "own",
              lambda w: {"json": {"url": "https://alpha-probe.example.com/hook"}}),
    ],
    "webhook-endpoint": [
        Probe("api", "GET", lambda w: f"/v1/webhook_endpoints/{w.b.webhook_endpoint_id}"),
        Probe("api", "DELETE", lambda w: f"/v1/webhook_endpoints/{w.b.webhook_endpoint_id}"),
    ],
    "webhook-endpoint-rotate": [
        Probe("api", "POST", lambda w: f"/v1/webhook_endpoints/{w.b.webhook_endpoint_id}/rotate_secret"),
    ],
    "webhooks": [
        Probe("session", "GET", lambda w: "/dashboard/webhooks/", "own"),
        Probe("session", "POST", lambda w: "/dashboard/webhooks/", "deny",
              lambda w: {"action": "rotate", "endpoint": w.b.webhook_endpoint_id}),
        Probe("session", "POST", lambda w: "/dashboard/webhooks/", "deny",
              lambda w: {"action": "delete", "endpoint": w.b.webhook_endpoint_id}),
        Probe("session", "POST", lambda w: "/dashboard/webhooks/", "deny",
              lambda w: {"action": "resend", "delivery": str(w.b.webhook_delivery_id)}),
    ],
    "models-list": [Probe("api", "GET", lambda w: "/v1/models", "own")],
    "models-detail": [Probe("api", "GET", lambda w: "/v1/models/local-preview", "own")],
    "organization-usage-images": [
        Probe("api", "GET", lambda w: f"/v1/organization/usage/images?start_time=0&api_key_ids={w.b.key.pk},"
                                      f"{w.b.batch_key.pk}", _buckets_empty),
        Probe("api", "GET", lambda w: f"/v1/organization/usage/images?start_time=0&api_key_ids={w.b.key.pk}"
                                      f"&group_by=api_key", _buckets_empty),
        Probe("api", "GET", lambda w: "/v1/organization/usage/images?start_time=0&group_by=api_key",
              _buckets_without_b_keys),
        Probe("api", "GET", lambda w: "/v1/organization/usage/images?start_time=0&group_by=api_key,model,provider",
              "own"),
        Probe("api", "GET", lambda w: "/v1/organization/usage/images?start_time=0&group_by=user", "own"),
    ],
    "organization-costs": [
        Probe("api", "GET", lambda w: f"/v1/organization/costs?start_time=0&api_key_ids={w.b.key.pk},"
                                      f"{w.b.batch_key.pk}", _buckets_empty),
        Probe("api", "GET", lambda w: "/v1/organization/costs?start_time=0&group_by=api_key",
              _buckets_without_b_keys),
        Probe("api", "GET", lambda w: "/v1/organization/costs?start_time=0&group_by=api_key,line_item", "own"),
    ],
    "organization-usage-records": [
        Probe("api", "GET", lambda w: "/v1/organization/usage/records", "own"),
        Probe("api", "GET", lambda w: f"/v1/organization/usage/records?api_key_id={w.b.key.pk}", _records_empty),
        Probe("api", "GET", lambda w: f"/v1/organization/usage/records?api_key_id={w.b.batch_key.pk}",
              _records_empty),
        Probe("api", "GET", lambda w: "/v1/organization/usage/records?status=invalid", "own"),
        Probe("api", "GET", lambda w: f"/v1/organization/usage/records?limit=1&cursor={_b_cursor(w)}",
              _records_with_b_cursor),
    ],
}

# Named patterns under the scoped prefixes that take no tenant ids and return no tenant data.
ALLOW_LIST: dict[str, str] = {
    # Public by design: Stripe calls it, authenticated by the Stripe-Signature header, carries no tenant id in the
    # URL (the event names the Stripe customer; webhooks.receive maps it).
    "stripe-webhook": "Stripe webhook, signature-authenticated, no tenant id in the URL",
    # The OpenAPI description of /v1: public, static, no tenant data.
    "openapi-schema": "public OpenAPI schema, no key needed, no tenant data",
    # The /v1 catch-all: every other path is an unknown-URL error in the envelope (404), whoever asks.
    "unknown-url": "catch-all 404 in the error envelope",
    # Signed image URLs are bearer links by design (decision 4, like OpenAI's): whoever holds the URL may fetch the
    # image for 60 minutes, with or without a session or key. A's session fetching B's URL is therefore not a leak;
    # forged or altered tokens are 404 (checked in test_image_urls_are_bearer_links_and_forgeries_404).
    "image-file": "signed bearer image URL (decision 4); forgeries checked separately",
}
# Outside the scoped prefixes, classified for completeness (not required by the walk): "home" (a redirect to the
# dashboard), "api-reference" (/docs/api/, public human reference). admin/ (staff only, its own permission system) and
# accounts/ (allauth: login, signup, password reset; acts on the caller's own user) carry no tenant ids.


def _walk(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.name


def scoped_patterns() -> list[tuple[str, str | None]]:
    return [(route, name) for route, name in _walk(get_resolver().url_patterns) if route.startswith(SCOPED_PREFIXES)]


# --- running probes ---------------------------------------------------------------------------------------------------

def _body(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode("utf-8", "replace")
    content = response.content
    return content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)


class _Answer:
    """The same view of a Django test-client response and an httpx response."""

    def __init__(self, status_code, text, headers):
        self.status_code, self.text, self.headers = status_code, text, headers

    def json(self):
        import json

        return json.loads(self.text)


def _run_probe(probe: Probe, w: World, django_client, http: httpx.Client) -> tuple[str, _Answer]:
    path = probe.path(w)
    extra = probe.data(w) if probe.data else {}
    if probe.via == "session":
        call = django_client.get if probe.method == "GET" else django_client.post
        response = call(path, extra) if probe.method == "POST" else call(path)
        return path, _Answer(response.status_code, _body(response), {k.lower(): v for k, v in response.items()})
    response = http.request(probe.method, path, **extra)
    answer = _Answer(response.status_code, response.text, response.headers)
    answer.request_key = (path, extra.get("headers", {}).get("Idempotency-Key"))
    return path, answer


def _check(probe: Probe, answer: _Answer, w: World) -> list[str]:
    problems = []
    if probe.expect == "deny" and answer.status_code not in DENY:
        problems.append(f"expected 400/403/404, got {answer.status_code}")
    elif probe.expect == "deny_get" and answer.status_code not in DENY | {405}:
        problems.append(f"expected 405 (or 400/403/404), got {answer.status_code}")
    elif probe.expect == "own" and answer.status_code >= 500:
        problems.append(f"server error {answer.status_code}")
    elif callable(probe.expect):
        problem = probe.expect(answer, w)
        if problem:
            problems.append(problem)
    if probe.expect is not _accept_invite_refused:  # the invitee-facing page names B's invitation by design
        leaked = [m for m in w.b.markers if m and m in answer.text]
        if leaked:
            problems.append(f"status {answer.status_code} contains B's data: {leaked}")
    return problems


def _walk_as_a(w: World, django_client, http) -> list[str]:
    failures = []
    for name, probes in COVERAGE.items():
        for probe in probes:
            path, answer = _run_probe(probe, w, django_client, http)
            for problem in _check(probe, answer, w):
                failures.append(f"[{name}] {probe.method} {path} ({probe.via}): {problem}")
    return failures


@pytest.fixture
def a_session(client, world):
    client.force_login(world.a.owner)
    return client


@pytest.fixture
def a_http(world):
    with httpx.Client(base_url=world.live_url, headers={"Authorization": f"Bearer {world.a.raw}"},
                      timeout=30) as http:
        yield http


# --- tests ------------------------------------------------------------------------------------------------------------

def test_every_url_is_covered_or_allow_listed():
    """A named URL under /dashboard/, /billing/, /v1/ or /images/ added without an isolation probe fails here."""
    patterns = scoped_patterns()
    unnamed = [route for route, name in patterns if not name]
    assert not unnamed, f"unnamed URL patterns cannot be tracked by the isolation table: {unnamed}"
    names = {name for _, name in patterns}
    uncovered = sorted(names - COVERAGE.keys() - ALLOW_LIST.keys())
    assert not uncovered, (f"URLs without a tenant-isolation probe: {uncovered}. Add them to COVERAGE in "
                           f"tests/test_tenant_isolation.py (or, if public/unscoped, to ALLOW_LIST with the reason).")
    stale = sorted((COVERAGE.keys() | ALLOW_LIST.keys()) - names)
    assert not stale, f"isolation table names URLs that no longer exist: {stale}"
    assert not COVERAGE.keys() & ALLOW_LIST.keys()


def test_walk_every_url_with_the_other_tenants_ids(world, a_session, a_http):
    before = _snapshot(world.b)
    failures = _walk_as_a(world, a_session, a_http)

    # Again, with the session claiming B's organization (a forged organization switch): the dashboard must fall
    # back to A's own membership, never B's.
    session = a_session.session
    session["organization_id"] = world.b.org.pk
    session.save()
    failures += [f"(session org forged to B) {f}" for f in _walk_as_a(world, a_session, a_http)]

    after = _snapshot(world.b)
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not failures, "tenant isolation failures:\n" + "\n".join(failures)
    assert not changed, f"A's requests changed B's data: {changed}"


def test_other_tenants_objects_are_untouched_after_the_walk(world, a_session, a_http):
    _walk_as_a(world, a_session, a_http)
    b = world.b
    keys = {k.pk: k for k in ApiKey.all_tenants_unsafe.filter(organization=b.org)}
    assert set(keys) == {b.key.pk, b.batch_key.pk}, "a key was created in B (rotation of B's key?)"
    for key in keys.values():
        assert key.revoked_at is None and key.expires_at is None, f"B's key {key.name} was revoked or rotated"
    for raw in (b.raw, b.batch_raw):
        assert httpx.get(f"{world.live_url}/v1/models", headers={"Authorization": f"Bearer {raw}"},
                         timeout=30).status_code == 200
    members = dict(Membership.all_tenants_unsafe.filter(organization=b.org).values_list("user__email", "role"))
    assert members == {"betacorp-owner@example.com": "owner", "betacorp-admin@example.com": "admin",
                       "betacorp-member@example.com": "member"}
    pending = Invitation.all_tenants_unsafe.filter(organization=b.org, accepted_at__isnull=True)
    assert set(pending.values_list("pk", flat=True)) == {b.invitation.pk, b.shared_invitation.pk}
    assert not Membership.all_tenants_unsafe.filter(organization=b.org, user=world.a.owner).exists()
    assert BillingAccount.all_tenants_unsafe.get(organization=b.org).monthly_spend_limit_micros == 777_000_000
    assert KeySpendLimit.all_tenants_unsafe.get(api_key=b.batch_key).monthly_limit_micros == 55_000_000
    assert LedgerEntry.all_tenants_unsafe.filter(organization=b.org).count() == 4


def test_own_lists_show_own_requests_and_never_the_other_tenants(world, a_session, a_http):
    a, b = world.a, world.b
    pages = {
        "request log": _body(a_session.get("/dashboard/requests/")),
        "CSV export": _body(a_session.get("/dashboard/requests/export.csv")),
        "overview": _body(a_session.get("/dashboard/")),
        "billing page": _body(a_session.get("/dashboard/billing/")),
        "keys page": _body(a_session.get("/dashboard/keys/")),
        "team page": _body(a_session.get("/dashboard/team/")),
        "audit records": a_http.get("/v1/organization/usage/records").text,
        "audit usage by key": a_http.get("/v1/organization/usage/images",
                                         params={"start_time": 0, "group_by": "api_key"}).text,
    }
    for what in ("request log", "CSV export", "audit records"):
        for request_id in a.request_ids:
            assert request_id in pages[what], f"A's {request_id} missing from A's {what} (the check would be vacuous)"
    assert a.invoice.number in pages["billing page"]
    assert a.key.prefix in pages["keys page"]
    assert a.invitation.email in pages["team page"]
    leaks = {what: [m for m in b.markers if m in text] for what, text in pages.items()}
    assert not any(leaks.values()), f"B's data in A's pages: {leaks}"
    records = a_http.get("/v1/organization/usage/records").json()["data"]
    assert {r["id"] for r in records} == set(a.request_ids)
    for request_id in b.request_ids:
        detail = a_session.get(f"/dashboard/requests/{request_id}/")
        assert detail.status_code == 404


def test_image_urls_are_bearer_links_and_forgeries_404(world, a_session):
    """Signed image URLs are bearer links (decision 4): B's URL works for anyone holding it; an altered one is 404."""
    b_path = world.b.image_paths[0]
    assert a_session.get(b_path).status_code == 200
    token, ext = b_path.rsplit("/", 1)[-1].rsplit(".", 1)
    forged = f"/images/{token[:-3]}{'AAA' if not token.endswith('AAA') else 'BBB'}.{ext}"
    assert a_session.get(forged).status_code == 404
    a_token = world.a.image_paths[0].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    spliced = f"/images/{token.split(':')[0]}:{a_token.split(':', 1)[-1]}.{ext}" if ":" in token else forged
    assert a_session.get(spliced).status_code in (404, 410)
