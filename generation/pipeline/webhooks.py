"""Signed webhooks for async image jobs: endpoints, events, deliveries.

- Endpoints (WebhookEndpoint, `we_...`): an organization's HTTPS URLs, registered on the dashboard's Webhooks page
  or through /v1/webhook_endpoints; each has a secret (`whsec_...`) shown once. Rotating it gives a new secret and
  keeps signing with the old one too for ROTATION_OVERLAP (24 hours), so receivers can switch without a gap.
- Events (WebhookEvent, `evt_...`): one per job that ended (`image.job.succeeded`, `image.job.failed`,
  `image.job.cancelled`), written in the same transaction as the job's end (jobs.py), so there is exactly one
  event per ending; its body (`{"id", "object": "event", "type", "created", "data": {"object": <the job>}}`) is
  fixed then and every delivery sends the same bytes.
- Deliveries (WebhookDelivery): one per event and endpoint subscribed to its type. Each attempt POSTs the body with
  `Imagegate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` (one v1 per live secret; the
  scheme Stripe documents for its own webhooks: https://docs.stripe.com/webhooks#verify-manually) and
  `Imagegate-Event-Id: evt_...`. A 2xx answer ends it; anything else is retried with exponential backoff
  (BACKOFF_BASE doubling, at most BACKOFF_MAX apart) until RETRY_WINDOW (3 days) after the event, then it is failed.
  The beat task generation.tasks.retry_webhooks hands due deliveries to the workers; "resend" makes one due now.
- The address guard is input-image fetching's (fetch.post_guarded): public addresses on ports 80/443 only, checked
  after DNS and on every redirect. settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES (off by default) lets development and
  tests deliver to loopback and private addresses (never link-local or cloud metadata), over http too.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import timedelta

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from generation.pipeline import fetch

EVENTS = ("image.job.succeeded", "image.job.failed", "image.job.cancelled")
SIGNATURE_HEADER = "Imagegate-Signature"
EVENT_HEADER = "Imagegate-Event-Id"
USER_AGENT = "Imagegate-Webhooks/1.0 (+https://imagegate.ai)"
ROTATION_OVERLAP = timedelta(hours=24)
RETRY_WINDOW = timedelta(days=3)
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=6)
CLAIM = timedelta(minutes=2)  # an attempt in flight; another worker may try again after this
TIMEOUT_SECONDS = 10.0
MAX_ENDPOINTS = 16  # per organization
MAX_URL_LENGTH = 2000


class EndpointError(ValueError):
    """An endpoint URL or event list that cannot be registered; the message says why."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message, self.param = message, param


class EndpointNotFound(Exception):
    pass


def _token(prefix: str, nbytes: int = 15) -> str:
    return prefix + base64.b32encode(secrets.token_bytes(nbytes)).decode("ascii").lower()


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """hex HMAC-SHA256 of "<timestamp>.<body>" under `secret`."""
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def live_secrets(endpoint: WebhookEndpoint, now=None) -> list[str]:
    """The secrets that sign now: the current one, and the previous one during a rotation's overlap."""
    now = now or timezone.now()
    found = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        found.append(endpoint.previous_secret)
    return found


def signature_header(endpoint: WebhookEndpoint, body: bytes, timestamp: int) -> str:
    return ",".join([f"t={timestamp}", *(f"v1={sign(s, timestamp, body)}" for s in live_secrets(endpoint))])


# --- Endpoints (sync: the API runs these on a database thread) --------------------------------------------------------

def check_url(url) -> str:
    """The URL if it can be registered: https (http too when WEBHOOKS_ALLOW_PRIVATE_ADDRESSES is on), a host, no
    user name or password. Where it points is checked at every delivery (after DNS), not here."""
    if not isinstance(url, str) or not url.strip():
        raise EndpointError("'url' is required: the HTTPS URL to deliver events to.", "url")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise EndpointError(f"'url' is longer than {MAX_URL_LENGTH} characters.", "url")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise EndpointError("'url' is not a valid URL.", "url") from None
    schemes = ("https", "http") if settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES else ("https",)
    if parsed.scheme not in schemes:
        raise EndpointError("'url' must be an https:// URL.", "url")
    if not parsed.host or parsed.userinfo:
        raise EndpointError("'url' must name a host and carry no user name or password.", "url")
    return url


def check_events(events) -> list[str]:
    if events is None:
        return list(EVENTS)
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise EndpointError(f"'enabled_events' must be a non-empty list of: {', '.join(EVENTS)} (or '*').",
                            "enabled_events")
    if "*" in events:
        return list(EVENTS)
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise EndpointError(f"Unknown event '{unknown[0][:60]}'. Events: {', '.join(EVENTS)}.", "enabled_events")
    return [e for e in EVENTS if e in events]


def create_endpoint(organization, *, url, description: str = "", enabled_events=None) -> WebhookEndpoint:
    """A new endpoint with a fresh secret (EndpointError for a bad URL or event list, or too many endpoints)."""
    url, events = check_url(url), check_events(enabled_events)
    if not isinstance(description, str) or len(description) > 200:
        raise EndpointError("'description' must be a string of at most 200 characters.", "description")
    if WebhookEndpoint.objects.for_organization(organization).count() >= MAX_ENDPOINTS:
        raise EndpointError(f"An organization can have at most {MAX_ENDPOINTS} webhook endpoints.", "url")
    return WebhookEndpoint.objects.for_organization(organization).create(
        id=_token("we_"), organization=organization, url=url, description=description, enabled_events=events,
        secret=new_secret())


def endpoints(organization) -> list[WebhookEndpoint]:
    return list(WebhookEndpoint.objects.for_organization(organization).order_by("created_at", "id"))


def get_endpoint(organization, endpoint_id: str) -> WebhookEndpoint:
    found = WebhookEndpoint.objects.for_organization(organization).filter(pk=endpoint_id).first()
    if found is None:
        raise EndpointNotFound(endpoint_id)
    return found


def delete_endpoint(organization, endpoint_id: str) -> None:
    deleted, _ = WebhookEndpoint.objects.for_organization(organization).filter(pk=endpoint_id).delete()
    if not deleted:
        raise EndpointNotFound(endpoint_id)


def rotate_secret(organization, endpoint_id: str) -> WebhookEndpoint:
    """A new secret; the old one keeps signing (a second v1=) for ROTATION_OVERLAP."""
    with transaction.atomic():
        endpoint = (WebhookEndpoint.objects.for_organization(organization).select_for_update()
                    .filter(pk=endpoint_id).first())
        if endpoint is None:
            raise EndpointNotFound(endpoint_id)
        endpoint.previous_secret, endpoint.secret = endpoint.secret, new_secret()
        endpoint.previous_secret_expires_at = timezone.now() + ROTATION_OVERLAP
        endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    return endpoint


def as_object(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict:
    """The API's webhook_endpoint object; `secret` only when it was just created or rotated."""
    body = {"id": endpoint.id, "object": "webhook_endpoint", "url": endpoint.url,
            "description": endpoint.description, "enabled_events": endpoint.enabled_events,
            "created": int(endpoint.created_at.timestamp())}
    if with_secret:
        body["secret"] = endpoint.secret
    return body


# --- Events (inside the transaction that ends a job) ---------------------------------------------------------------

def emit(*, organization_id: int, job_id: str, event_type: str, job_object: dict) -> list[int]:
    """Write the event and one pending delivery per subscribed endpoint; returns the deliveries' ids (hand them
    to `deliver` after the commit; the beat task finds any that were not)."""
    endpoints_for = [e for e in WebhookEndpoint.objects.for_organization(organization_id)
                     if event_type in e.enabled_events]
    if not endpoints_for:
        return []
    now = timezone.now()
    event_id = _token("evt_", 18)
    body = {"id": event_id, "object": "event", "type": event_type, "created": int(now.timestamp()),
            "data": {"object": job_object}}
    event = WebhookEvent.objects.for_organization(organization_id).create(
        id=event_id, organization_id=organization_id, type=event_type, job_id=job_id,
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False), created_at=now)
    rows = WebhookDelivery.objects.for_organization(organization_id).bulk_create([
        WebhookDelivery(organization_id=organization_id, event=event, endpoint=e, next_attempt_at=now)
        for e in endpoints_for])
    return [row.pk for row in rows]


def pending_for_job(job_id: str) -> list[int]:
    return list(WebhookDelivery.all_tenants_unsafe.filter(event__job_id=job_id, status=WebhookDelivery.Status.PENDING)
                .values_list("pk", flat=True))


# --- Deliveries (the Celery tasks) -----------------------------------------------------------------------------------

def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: 30 s, 1 min, 2 min, ... at most 6 h apart."""
    return min(BACKOFF_MAX, BACKOFF_BASE * (2 ** max(0, attempts - 1)))


def policy() -> fetch.AddressPolicy:
    return _DevelopmentPolicy() if settings.WEBHOOKS_ALLOW_PRIVATE_ADDRESSES else fetch.DEFAULT_POLICY


class _DevelopmentPolicy(fetch.AddressPolicy):
    """Loopback and private addresses on any port (development and tests); link-local and metadata never."""

    def refusal(self, ip, port):
        ip = fetch.canonical_address(ip)
        if ip not in fetch.METADATA_ADDRESSES and not ip.is_link_local and (ip.is_loopback or ip.is_private):
            return None
        return super().refusal(ip, port)


def _claim(delivery_id: int) -> WebhookDelivery | None:
    now = timezone.now()
    claimed = WebhookDelivery.all_tenants_unsafe.filter(
        pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now,
    ).update(next_attempt_at=now + CLAIM)
    if not claimed:
        return None
    return WebhookDelivery.all_tenants_unsafe.select_related("event", "endpoint").get(pk=delivery_id)


def deliver(delivery_id: int) -> str | None:
    """One attempt of a due delivery (None when it is not due or already ended); returns its status after it."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return None
    body = delivery.event.body.encode("utf-8")
    timestamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               SIGNATURE_HEADER: signature_header(delivery.endpoint, body, timestamp),
               EVENT_HEADER: delivery.event.id}
    code, error = None, ""
    try:
        code = asyncio.run(fetch.post_guarded(delivery.endpoint.url, body=body, headers=headers, policy=policy(),
                                              timeout=TIMEOUT_SECONDS))
    except fetch.ImageFetchError as exc:
        error = str(exc)
    except TimeoutError:
        error = f"No answer within {TIMEOUT_SECONDS:.0f} seconds."
    now = timezone.now()
    delivery.attempts += 1
    delivery.response_code, delivery.last_error, delivery.last_attempt_at = code, error[:500], now
    if code is not None and 200 <= code < 300:
        delivery.status, delivery.next_attempt_at = WebhookDelivery.Status.SUCCEEDED, None
    else:
        following = now + backoff(delivery.attempts)
        if following > delivery.event.created_at + RETRY_WINDOW:
            delivery.status, delivery.next_attempt_at = WebhookDelivery.Status.FAILED, None
        else:
            delivery.next_attempt_at = following
    delivery.save(update_fields=["attempts", "response_code", "last_error", "last_attempt_at", "status",
                                 "next_attempt_at"])
    return delivery.status


def due(limit: int = 500) -> list[int]:
    """Pending deliveries whose next attempt is due (the beat task hands them to workers)."""
    return list(WebhookDelivery.all_tenants_unsafe.filter(
        status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=timezone.now()).order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit])


def resend(organization, delivery_id: int) -> WebhookDelivery:
    """Make a delivery due now again: its event (same id, same body) signed afresh. A delivery past its 3-day
    window gets this one attempt."""
    delivery = WebhookDelivery.objects.for_organization(organization).filter(pk=delivery_id).first()
    if delivery is None:
        raise EndpointNotFound(str(delivery_id))
    delivery.status, delivery.next_attempt_at = WebhookDelivery.Status.PENDING, timezone.now()
    delivery.save(update_fields=["status", "next_attempt_at"])
    return delivery


def log(organization, limit: int = 50) -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.for_organization(organization).select_related("event", "endpoint")
                .order_by("-created_at", "-id")[:limit])
