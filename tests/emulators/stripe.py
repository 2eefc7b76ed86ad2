"""Stripe emulator (docs/stripe.md): the slice of the v1 API a usage-billed SaaS touches, on loopback, driven through
the real stripe-python client:

    client = stripe.StripeClient(stripe_emu.API_KEY, base_addresses={"api": emu.url, "meter_events": emu.url},
                                 max_network_retries=0, http_client=stripe.RequestsClient(timeout=2))

Wire format as stripe-python speaks it: form-encoded POST bodies with nested keys (`payload[value]`,
`line_items[0][price]`, `lookup_keys[0]`, `expand[0]`; `a[]` is accepted too), query strings on GET/DELETE, JSON answers
with `Request-Id`, `Stripe-Version` and (POST) `Idempotency-Key` headers, errors as
`{"error": {"type", "message", "code"?, "param"?, "doc_url"?}}`. Unknown parameters are refused
(400 parameter_unknown "Received unknown parameter: x"), as Stripe does.

Routes (fault name in brackets):
  customers        POST/GET /v1/customers, GET/POST/DELETE /v1/customers/{id}
  products         POST/GET /v1/products, GET/POST /v1/products/{id}
  prices           POST/GET /v1/prices (lookup_keys[], product, active, type, currency, recurring filters),
                   GET/POST /v1/prices/{id}; metered prices need recurring[meter]; lookup_key unique
                   (transfer_lookup_key=true moves it)
  meters           POST/GET /v1/billing/meters, GET/POST /v1/billing/meters/{id}, POST .../deactivate, .../reactivate;
                   event_name unique among active meters
  event_summaries  GET /v1/billing/meters/{id}/event_summaries
  meter_events     POST /v1/billing/meter_events
  meter_event_adjustments  POST /v1/billing/meter_event_adjustments
  checkout_sessions        POST/GET /v1/checkout/sessions, GET /v1/checkout/sessions/{id}[/line_items]
  billing_portal_sessions  POST /v1/billing_portal/sessions
  subscriptions    POST/GET /v1/subscriptions, GET/POST/DELETE /v1/subscriptions/{id}
  invoices         GET /v1/invoices, GET /v1/invoices/{id}[/lines], POST /v1/invoices/create_preview
  events           GET /v1/events, GET /v1/events/{id} (the events the webhook helpers built)
  Unknown URL → 404 "Unrecognized request URL (GET: /v1/x). ..."; hosted pages (no auth): GET /c/pay/{cs},
  GET /p/session/{bps}, GET /i/{in}.

Rules (all 400 invalid_request_error unless noted):
  * auth: `Authorization: Bearer API_KEY` (or basic auth) else 401 "Invalid API Key provided: sk_test_****..." /
    "You did not provide an API key. ..." (stripe.AuthenticationError).
  * meter events: event_name must name an active meter (code no_meter, param event_name); the meter's customer key
    (customer_mapping.event_payload_key) must be in the payload (code meter_event_no_customer_defined) and name an
    existing customer (code resource_missing "No such customer: 'cus_x'"); the value key must hold a whole number
    (codes meter_event_value_not_found / meter_event_invalid_value; not needed for formula=count); identifier
    ≤ 100 chars; timestamp ≤ 35 days in the past (code timestamp_too_far_in_past) and ≤ 5 minutes in the future
    (code timestamp_in_future), measured against the emulator's now; a repeated identifier (unique forever here,
    Stripe: ≥ 24 h) → 400 "An event already exists with identifier <id>." + header `Stripe-Should-Retry: false`.
    One concurrent call per (customer, meter): a second call while one is in flight → 429
    {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many concurrent requests ..."}
    (stripe.RateLimitError; no Stripe-Should-Retry header, so stripe-python does not retry it).
  * global rate limit: `state["rate_limit"]` calls per second (default 25, Stripe's test mode; None/0 = off) over every
    API call → 429 code rate_limit "Request rate limit exceeded. ...".
  * adjustments: type=cancel, cancel[identifier] of an accepted event of that event_name, within 24 h of its receipt,
    once. Applied at once (answer status "pending" as Stripe's).
  * event summaries: customer, start_time, end_time required; both multiples of 60 ("... must be aligned with minute
    boundaries"), end > start; value_grouping_window=hour|day needs hour/day-aligned bounds; one summary for the range
    (even when 0), or one per hour/day bucket holding events, newest first, paginated (limit ≤ 100, default 10);
    aggregated_value (float) = formula (sum|count|last) over accepted, not cancelled events with
    start ≤ timestamp < end.
  * checkout sessions: mode required; subscription mode needs line_items with recurring prices; a metered line item
    with quantity → "Quantity should not be specified where usage_type is `metered`. Remove quantity from
    `line_items[0]`." (param line_items[0][quantity]); a licensed one without quantity → "Quantity is required. ...";
    customer and customer_email are exclusive. `url` points at this emulator.
  * idempotency (POST): a repeated Idempotency-Key with the same parameters replays the first successful answer (status,
    body) with `Idempotent-Replayed: true` and `Original-Request: req_...`; different parameters → 400
    {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used with the same parameters
    they were first used with. ..."} (stripe.IdempotencyError); the same key while its first request is executing →
    409 idempotency_error code idempotency_key_in_use. Only successes are saved (errors re-execute, which answers the
    same for every rule here). Keys never expire.

Time: the emulator's "now" is `state["now"]` (unix seconds) when set, else real time (objects' `created`, windows).

State keys (emulator.state; `reset()` clears them all, objects included):
  "now"                unix seconds, or absent for real time
  "rate_limit"         calls per second over all API calls (default 25; None or 0 switches it off)
  "delay"              seconds every API call waits before executing (a slow Stripe)
  "meter_event_delay"  seconds a meter-event call stays in flight (holding its customer/meter slot) before it commits
  "store"              the StripeStore (created on first use; get it with `store(emu)`)

Faults (`emu.faults.set(name, Fault(...))`, name = a route's fault name above or "*" for every route; the specific
name wins; use times=1 for one-shot faults):
  Fault(status=429)          Stripe's rate-limit body (code rate_limit), no Stripe-Should-Retry header
  Fault(status=500|502|503)  {"error": {"type": "api_error", "message": ...}} + `Stripe-Should-Retry: true`
  Fault(status=other)        a Stripe-shaped error for that status; `body` (dict/str/bytes) and `headers` override
  Fault(delay=s)             wait s seconds before executing; if the client has gone (timeout) the call is abandoned
                             without executing (a timeout before Stripe got it). Combines with status/kind.
  Fault(kind="drop")         never answers, executes nothing (until the client gives up)
  Fault(kind="process_then_drop")  executes (records the event, saves the idempotent result), then never answers:
                             the client times out (stripe.APIConnectionError) although Stripe committed. A retry with
                             the same Idempotency-Key is replayed; a new key with the same identifier gets the
                             duplicate-identifier 400.
  Fault(kind="process_then_500")   executes, then answers 500 api_error with `Stripe-Should-Retry: true`.
Never-answering calls hang until the client disconnects or the emulator stops (DROP_HANG seconds at most); give the
client a timeout (stripe.RequestsClient(timeout=...)).

Inspection (Python, on `store(emu)`): total(customer=, meter=) → int, totals_by_customer(meter=) → {cus: int},
totals_by_meter(customer=) → {mtr: int}, events(customer=, meter=, include_cancelled=False) → [event dicts:
identifier, event_name, meter, customer, value, timestamp, created, cancelled, idempotency_key], call_count(name=None),
calls (Counter per fault name), rejections (Counter: duplicate, concurrency, rate_limit, timestamp, invalid),
max_concurrency(customer=, meter=) → the most calls seen in flight at once for one (customer, meter) (rejected ones
included), get(id) → the stored object. Over HTTP (no auth): GET /_emulator/usage?customer=&meter=,
GET /_emulator/meter_events, GET /_emulator/stats.

Webhooks (Python helpers; they create/modify objects inside the emulator so GETs of them work, store the event so
GET /v1/events/{id} works, and return the event dict):
  sign(payload, secret=WEBHOOK_SECRET, t=None) -> "t=<unix>,v1=<hex HMAC-SHA256(secret, f'{t}.{payload}')>"
  deliver(url, event, secret=WEBHOOK_SECRET, t=None, *, headers=None, timeout=10) -> httpx.Response
  make_event(emu, type, obj, previous_attributes=None) -> event
  complete_checkout(emu, session_id, *, email=None) -> [customer.subscription.created, checkout.session.completed]
  create_subscription(emu, customer, price | [prices], *, status="active", metadata=None, quantity=None) -> subscription
  subscription_created(emu, customer, price, **kw) / subscription_updated(emu, sub_id, **changes) /
  subscription_deleted(emu, sub_id) -> event
  create_invoice(emu, sub_id, *, period_start=None, period_end=None, amount_due=None, advance_period=False) -> invoice
      (draft; metered lines priced from the accepted usage in the period × unit_amount_decimal, rounded half-up)
  invoice_finalized(emu, in_id) / invoice_paid(emu, in_id) / invoice_payment_failed(emu, in_id) -> event
Object shapes follow API version 2026-10-28 (basil and later): subscription periods on items
(items.data[0].current_period_start/end, items.data[0].price), invoice.parent.subscription_details.subscription,
line.pricing.price_details.price, line.parent.subscription_item_details.

Notes for callers:
  * stripe-python builds RateLimitError/APIError without `code`: read `exc.error.code` (or
    `exc.json_body["error"]["code"]`); InvalidRequestError has `.code` and `.param`. Response headers are on
    `exc.headers` (case-insensitive) and, on success, `obj.last_response.headers`.
  * Real Stripe validates some meter-event facts (e.g. an unknown customer) asynchronously and reports them as
    v1.billing.meter.error_report_triggered; the emulator answers them synchronously with a 400, the strict reading.
  * API calls do not emit events by themselves; only the helpers above build events.
"""
import asyncio
import base64
import calendar
import contextlib
import copy
import datetime
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
from collections import Counter, deque
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .base import Fault, Faults, Recorded, serve

__all__ = ["API_KEY", "WEBHOOK_SECRET", "API_VERSION", "Fault", "StripeStore", "emulator", "build_app", "store",
           "sign", "deliver", "make_event", "complete_checkout", "create_subscription", "subscription_created",
           "subscription_updated", "subscription_deleted", "create_invoice", "invoice_finalized", "invoice_paid",
           "invoice_payment_failed"]

API_KEY = "sk_test_emulator"
WEBHOOK_SECRET = "whsec_emulator"
API_VERSION = "2026-10-28.endive"
DEFAULT_RATE_LIMIT = 25
MAX_PAST = 35 * 86400
MAX_FUTURE = 5 * 60
MAX_IDENTIFIER = 100
CANCEL_WINDOW = 24 * 3600
DROP_HANG = 60.0

RATE_LIMIT_MESSAGE = ("Request rate limit exceeded. You can learn more about rate limits here "
                      "https://stripe.com/docs/rate-limits.")
API_ERROR_MESSAGE = ("An unknown error occurred while processing your request. Please retry the request with the same "
                     "idempotency key.")
IDEMPOTENCY_MISMATCH = ("Keys for idempotent requests can only be used with the same parameters they were first used "
                        "with. Try using a key other than '{key}' if you meant to execute a different request.")
IDEMPOTENCY_IN_USE = ("There is currently another in-progress request using this idempotent key (that probably means "
                      "you submitted twice, and the other request is still going through): {key}. Please try again "
                      "later.")

_ALNUM = string.ascii_letters + string.digits


def _rand(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _new_id(prefix: str) -> str:
    lengths = {"cus": 14, "prod": 14, "si": 14, "req": 14, "mtr_test": 32, "cs_test": 58, "li": 24}
    return f"{prefix}_{_rand(lengths.get(prefix, 24))}"


def _now(state: dict) -> int:
    now = state.get("now")
    return int(now) if now is not None else int(time.time())


def _add_months(ts: int, months: int) -> int:
    d = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    month0 = d.month - 1 + months
    year, month = d.year + month0 // 12, month0 % 12 + 1
    day = min(d.day, calendar.monthrange(year, month)[1])
    return int(d.replace(year=year, month=month, day=day).timestamp())


def _period_end(start: int, interval: str, count: int) -> int:
    if interval == "day":
        return start + 86400 * count
    if interval == "week":
        return start + 7 * 86400 * count
    if interval == "year":
        return _add_months(start, 12 * count)
    return _add_months(start, count)


# ---------------------------------------------------------------------------------------------------------- errors


class StripeError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return _error_body(self.message, type=self.type, code=self.code, param=self.param)


def _error_body(message: str, *, type: str = "invalid_request_error", code: str | None = None,
                param: str | None = None) -> dict:
    err = {"message": message, "type": type}
    if code:
        err["code"] = code
        err["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        err["param"] = param
    return {"error": err}


def _missing(param: str) -> StripeError:
    return StripeError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def _no_such(label: str, ident, param: str | None = None, status: int = 400) -> StripeError:
    return StripeError(status, f"No such {label}: '{ident}'", code="resource_missing", param=param)


def _invalid(message: str, param: str | None = None, code: str | None = "parameter_invalid") -> StripeError:
    return StripeError(400, message, code=code, param=param)


# ------------------------------------------------------------------------------------------------- param handling

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


def parse_params(pairs) -> dict:
    """Form pairs as stripe-python encodes them (`a[b][0][c]=v`, `a[]=v`) → nested dicts/lists of strings."""
    root: dict = {}
    for raw_key, value in pairs:
        head, bracket, rest = raw_key.partition("[")
        parts = [head] + (_BRACKETS.findall(bracket + rest) if bracket else [])
        node = root
        for i, part in enumerate(parts):
            if part == "":
                part = str(len(node))
            if i == len(parts) - 1:
                node[part] = value
            else:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = node[part] = {}
                node = nxt
    return _listify(root)


def _listify(value):
    if isinstance(value, dict):
        value = {k: _listify(v) for k, v in value.items()}
        if value and all(k.isdigit() for k in value):
            return [value[k] for k in sorted(value, key=int)]
    return value


def _check_keys(params: dict, allowed, prefix: str = "") -> None:
    for key in params:
        if key not in allowed:
            name = f"{prefix}[{key}]" if prefix else key
            raise StripeError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)


def _dict(params: dict, key: str, param: str | None = None) -> dict:
    value = params.get(key)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise _invalid("Invalid object", param or key)
    return value


def _str(params: dict, key: str, *, required: bool = False, param: str | None = None, max_len: int = 5000):
    param = param or key
    value = params.get(key)
    if value is None or value == "":
        if required:
            raise _missing(param)
        return None
    if not isinstance(value, str):
        raise _invalid(f"Invalid string: {value!r}", param)
    if len(value) > max_len:
        raise _invalid(f"Invalid string: {value[:40]}...; must be at most {max_len} characters", param)
    return value


def _int(value, param: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value.strip())
    raise StripeError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param)


def _opt_int(params: dict, key: str, param: str | None = None) -> int | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    return _int(value, param or key)


def _bool(value, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise StripeError(400, f"Invalid boolean: {value}", code="parameter_invalid_boolean", param=param)


def _opt_bool(params: dict, key: str) -> bool | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    return _bool(value, key)


def _enum(params: dict, key: str, choices, *, required: bool = False, param: str | None = None):
    value = _str(params, key, required=required, param=param)
    if value is not None and value not in choices:
        raise _invalid(f"Invalid {param or key}: must be one of {', '.join(choices)}", param or key)
    return value


def _metadata(params: dict, current: dict | None = None) -> dict:
    meta = dict(current or {})
    given = params.get("metadata")
    if given is None:
        return meta
    if given == "":
        return {}
    if not isinstance(given, dict):
        raise _invalid("Invalid object", "metadata")
    for k, v in given.items():
        if v == "":
            meta.pop(k, None)
        else:
            meta[k] = str(v)
    return meta


def _expand_list(params: dict) -> list:
    value = params.get("expand")
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    raise _invalid("Invalid array", "expand")


def _fingerprint(method: str, path: str, raw: bytes) -> str:
    pairs = sorted(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    return hashlib.sha256(json.dumps([method, path, pairs]).encode()).hexdigest()


def _decimal_str(value, param: str) -> str:
    try:
        dec = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise StripeError(400, f"Invalid decimal: {value}", code="parameter_invalid", param=param) from None
    if not dec.is_finite() or dec < 0:
        raise StripeError(400, f"Invalid decimal: {value}", code="parameter_invalid", param=param)
    if -dec.normalize().as_tuple().exponent > 12:
        raise StripeError(400, f"Invalid decimal: {value}; must have at most 12 decimal places",
                          code="parameter_invalid", param=param)
    return format(dec.normalize(), "f")


# ------------------------------------------------------------------------------------------------------- store

KINDS = ("customer", "product", "price", "billing.meter", "checkout.session", "billing_portal.session", "subscription",
         "invoice", "event")
_PREFIX_KIND = {"cus": "customer", "prod": "product", "price": "price", "mtr": "billing.meter",
                "cs": "checkout.session", "bps": "billing_portal.session", "sub": "subscription", "in": "invoice",
                "evt": "event"}


class StripeStore:
    """Everything the emulator holds. Mutated from the server's event loop and from test helpers, under `lock`."""

    def __init__(self):
        self.lock = threading.RLock()
        self.objects: dict[str, dict[str, dict]] = {kind: {} for kind in KINDS}
        self.checkout_items: dict[str, list] = {}  # cs id → [{"price": id, "quantity": int|None}]
        self.meter_events: list[dict] = []
        self.identifiers: dict[str, dict] = {}
        self.idempotency: dict[str, dict] = {}
        self.idempotency_in_flight: set[str] = set()
        self.in_flight: Counter = Counter()
        self.max_concurrent: dict[tuple, int] = {}
        self.calls: Counter = Counter()
        self.rejections: Counter = Counter()
        self.rate_window: deque = deque()

    # ---- objects
    def put(self, obj: dict) -> dict:
        with self.lock:
            self.objects[obj["object"]][obj["id"]] = obj
        return obj

    def get(self, ident: str, kind: str | None = None) -> dict | None:
        with self.lock:
            if kind is not None:
                return self.objects[kind].get(ident)
            for objects in self.objects.values():
                if ident in objects:
                    return objects[ident]
        return None

    def all(self, kind: str) -> list[dict]:
        with self.lock:
            return list(self.objects[kind].values())

    def active_meter(self, event_name: str) -> dict | None:
        with self.lock:
            for meter in self.objects["billing.meter"].values():
                if meter["event_name"] == event_name and meter["status"] == "active":
                    return meter
        return None

    def _meter_id(self, meter: str | None) -> str | None:
        if meter is None or meter.startswith("mtr_"):
            return meter
        found = self.active_meter(meter)
        return found["id"] if found else meter

    # ---- inspection
    def events(self, customer: str | None = None, meter: str | None = None, include_cancelled: bool = False) -> list:
        """Accepted meter events (copies), oldest first. `meter` is a meter id or an event name."""
        meter = self._meter_id(meter)
        with self.lock:
            return [dict(e) for e in self.meter_events
                    if (customer is None or e["customer"] == customer) and (meter is None or e["meter"] == meter)
                    and (include_cancelled or not e["cancelled"])]

    def total(self, customer: str | None = None, meter: str | None = None) -> int:
        """Sum of the values of accepted, not cancelled meter events."""
        return sum(e["value"] or 0 for e in self.events(customer, meter))

    def totals_by_customer(self, meter: str | None = None) -> dict:
        out: Counter = Counter()
        for e in self.events(meter=meter):
            out[e["customer"]] += e["value"] or 0
        return dict(out)

    def totals_by_meter(self, customer: str | None = None) -> dict:
        out: Counter = Counter()
        for e in self.events(customer=customer):
            out[e["meter"]] += e["value"] or 0
        return dict(out)

    def call_count(self, name: str | None = None) -> int:
        with self.lock:
            return sum(self.calls.values()) if name is None else self.calls[name]

    def max_concurrency(self, customer: str | None = None, meter: str | None = None) -> int:
        meter = self._meter_id(meter)
        with self.lock:
            return max((n for (c, m), n in self.max_concurrent.items()
                        if (customer is None or c == customer) and (meter is None or m == meter)), default=0)


def store(emu) -> StripeStore:
    """The StripeStore of a running emulator (base.Emulator) or of a state dict."""
    state = emu if isinstance(emu, dict) else emu.state
    return _store(state)


_STORE_LOCK = threading.Lock()


def _store(state: dict) -> StripeStore:
    st = state.get("store")
    if st is None:
        with _STORE_LOCK:
            st = state.get("store")
            if st is None:
                st = state["store"] = StripeStore()
    return st


# ------------------------------------------------------------------------------------------------- aggregation


def _aggregate(meter: dict, events: list) -> float:
    window = {"hour": 3600, "day": 86400}.get(meter.get("event_time_window") or "")
    if window:
        latest: dict = {}
        for e in events:
            key = e["timestamp"] // window
            if key not in latest or (e["timestamp"], e["seq"]) >= (latest[key]["timestamp"], latest[key]["seq"]):
                latest[key] = e
        events = list(latest.values())
    formula = meter["default_aggregation"]["formula"]
    if formula == "count":
        return float(len(events))
    if formula == "last":
        if not events:
            return 0.0
        return float(max(events, key=lambda e: (e["timestamp"], e["seq"]))["value"] or 0)
    return float(sum(e["value"] or 0 for e in events))


def _usage(st: StripeStore, meter: dict, customer: str, start: int, end: int) -> float:
    with st.lock:
        events = [e for e in st.meter_events if e["meter"] == meter["id"] and e["customer"] == customer
                  and not e["cancelled"] and start <= e["timestamp"] < end]
    return _aggregate(meter, events)


# ----------------------------------------------------------------------------------------------- object builders


def _customer_obj(st, now, params) -> dict:
    return {
        "id": _new_id("cus"), "object": "customer", "address": params.get("address") or None, "balance": 0,
        "created": now, "currency": None, "default_source": None, "delinquent": False,
        "description": params.get("description") or None, "discount": None, "email": params.get("email") or None,
        "invoice_prefix": _rand(8).upper(), "invoice_settings": {"custom_fields": None, "default_payment_method": None,
                                                                 "footer": None, "rendering_options": None},
        "livemode": False, "metadata": _metadata(params), "name": params.get("name") or None,
        "next_invoice_sequence": 1, "phone": params.get("phone") or None, "preferred_locales": [],
        "shipping": None, "tax_exempt": "none", "test_clock": None,
    }


def _plan_from_price(price: dict) -> dict:
    rec = price["recurring"] or {}
    return {
        "id": price["id"], "object": "plan", "active": price["active"], "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"], "billing_scheme": price["billing_scheme"],
        "created": price["created"], "currency": price["currency"], "interval": rec.get("interval"),
        "interval_count": rec.get("interval_count"), "livemode": False, "metadata": dict(price["metadata"]),
        "meter": rec.get("meter"), "nickname": price["nickname"], "product": price["product"], "tiers_mode": None,
        "transform_usage": None, "trial_period_days": rec.get("trial_period_days"), "usage_type": rec.get("usage_type"),
    }


def _new_subscription(st: StripeStore, now: int, customer: str, items: list, *, status: str = "active",
                      metadata: dict | None = None, description: str | None = None) -> dict:
    """items: [{"price": price id, "quantity": int | None}]"""
    sub_id = _new_id("sub")
    sub_items = []
    currency = "usd"
    for item in items:
        price = st.get(item["price"], "price")
        if price is None:
            raise _no_such("price", item["price"], "items")
        currency = price["currency"]
        rec = price["recurring"] or {"interval": "month", "interval_count": 1}
        metered = rec.get("usage_type") == "metered"
        sub_items.append({
            "id": _new_id("si"), "object": "subscription_item", "billing_thresholds": None, "created": now,
            "current_period_start": now,
            "current_period_end": _period_end(now, rec.get("interval", "month"), int(rec.get("interval_count", 1))),
            "discounts": [], "metadata": {}, "plan": _plan_from_price(price), "price": copy.deepcopy(price),
            "quantity": None if metered else int(item.get("quantity") or 1), "subscription": sub_id, "tax_rates": [],
        })
    sub = {
        "id": sub_id, "object": "subscription", "application": None, "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": now, "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic"}, "billing_thresholds": None, "cancel_at": None,
        "cancel_at_period_end": False, "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically", "created": now, "currency": currency, "customer": customer,
        "days_until_due": None, "default_payment_method": None, "default_source": None, "default_tax_rates": [],
        "description": description, "discounts": [], "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {"object": "list", "data": sub_items, "has_more": False, "total_count": len(sub_items),
                  "url": f"/v1/subscription_items?subscription={sub_id}"},
        "latest_invoice": None, "livemode": False, "metadata": dict(metadata or {}),
        "next_pending_invoice_item_invoice": None, "on_behalf_of": None, "pause_collection": None,
        "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                             "save_default_payment_method": "off"},
        "pending_invoice_item_interval": None, "pending_setup_intent": None, "pending_update": None,
        "schedule": None, "start_date": now, "status": status, "test_clock": None, "transfer_data": None,
        "trial_end": None, "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }
    return st.put(sub)


def _build_invoice(st: StripeStore, base_url: str, now: int, sub: dict, *, period_start: int | None = None,
                   period_end: int | None = None, amount_due: int | None = None, preview: bool = False) -> dict:
    inv_id = ("upcoming_" if preview else "") + _new_id("in")
    customer = st.get(sub["customer"], "customer") or {}
    lines = []
    for item in sub["items"]["data"]:
        price = st.get(item["price"]["id"], "price") or item["price"]
        rec = price["recurring"] or {}
        start = period_start if period_start is not None else item["current_period_start"]
        end = period_end if period_end is not None else item["current_period_end"]
        unit = Decimal(price["unit_amount_decimal"] or "0")
        if rec.get("usage_type") == "metered":
            meter = st.get(rec.get("meter") or "", "billing.meter")
            quantity = int(_usage(st, meter, sub["customer"], start, end)) if meter else 0
        else:
            quantity = int(item["quantity"] or 1)
        amount = int((unit * quantity).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        product = st.get(price["product"], "product") or {}
        lines.append({
            "id": _new_id("il"), "object": "line_item", "amount": amount, "currency": price["currency"],
            "description": f"{quantity} × {product.get('name', 'Usage')} (at {unit} ¢ / unit)",
            "discount_amounts": [], "discountable": True, "discounts": [], "invoice": inv_id, "livemode": False,
            "metadata": {},
            "parent": {"type": "subscription_item_details", "invoice_item_details": None,
                       "subscription_item_details": {"invoice_item": None, "proration": False,
                                                     "proration_details": {"credited_items": None},
                                                     "subscription": sub["id"], "subscription_item": item["id"]}},
            "period": {"end": end, "start": start}, "pretax_credit_amounts": [],
            "pricing": {"type": "price_details", "price_details": {"price": price["id"], "product": price["product"]},
                        "unit_amount_decimal": price["unit_amount_decimal"]},
            "quantity": quantity, "subscription": sub["id"], "subtotal": amount, "taxes": [],
        })
    total = sum(line["amount"] for line in lines) if amount_due is None else int(amount_due)
    first = sub["items"]["data"][0] if sub["items"]["data"] else {"current_period_start": now,
                                                                   "current_period_end": now}
    return {
        "id": inv_id, "object": "invoice", "account_country": "US", "account_name": "Imagegate (Stripe emulator)",
        "account_tax_ids": None, "amount_due": total, "amount_overpaid": 0, "amount_paid": 0,
        "amount_remaining": total, "amount_shipping": 0, "application": None, "attempt_count": 0,
        "attempted": False, "auto_advance": not preview,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None,
                          "status": None},
        "automatically_finalizes_at": None if preview else now + 3600,
        "billing_reason": "upcoming" if preview else "subscription_cycle",
        "collection_method": sub["collection_method"], "created": now, "currency": sub["currency"],
        "custom_fields": None, "customer": sub["customer"], "customer_address": None,
        "customer_email": customer.get("email"), "customer_name": customer.get("name"), "customer_phone": None,
        "customer_shipping": None, "customer_tax_exempt": "none", "customer_tax_ids": [],
        "default_payment_method": None, "default_source": None, "default_tax_rates": [], "description": None,
        "discounts": [], "due_date": None, "effective_at": None, "ending_balance": None, "footer": None,
        "from_invoice": None, "hosted_invoice_url": None, "invoice_pdf": None, "issuer": {"type": "self"},
        "last_finalization_error": None, "latest_revision": None,
        "lines": {"object": "list", "data": lines, "has_more": False, "total_count": len(lines),
                  "url": f"/v1/invoices/{inv_id}/lines"},
        "livemode": False, "metadata": {}, "next_payment_attempt": None, "number": None, "on_behalf_of": None,
        "parent": {"type": "subscription_details", "quote_details": None,
                   "subscription_details": {"metadata": dict(sub["metadata"]), "subscription": sub["id"]}},
        "payment_settings": {"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
        "period_end": period_end if period_end is not None else first["current_period_end"],
        "period_start": period_start if period_start is not None else first["current_period_start"],
        "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0, "receipt_number": None,
        "rendering": None, "shipping_cost": None, "shipping_details": None, "starting_balance": 0,
        "statement_descriptor": None, "status": "draft",
        "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                               "voided_at": None},
        "subtotal": total, "subtotal_excluding_tax": total, "test_clock": None, "total": total,
        "total_discount_amounts": [], "total_excluding_tax": total, "total_pretax_credit_amounts": [],
        "total_taxes": [], "webhooks_delivered_at": None,
    }


# ------------------------------------------------------------------------------------------------- the handlers


class Ctx:
    def __init__(self, request: Request, st: StripeStore, state: dict, params: dict, path_params: dict,
                 idempotency_key: str | None):
        self.request, self.store, self.state, self.params = request, st, state, params
        self.path_params, self.idempotency_key = path_params, idempotency_key
        self.now = _now(state)
        self.base_url = str(request.base_url).rstrip("/")


def _expanded(st: StripeStore, obj: dict, paths: list) -> dict:
    if not paths:
        return obj
    out = copy.deepcopy(obj)
    for path in paths:
        _expand_at(st, out, path.split("."))
    return out


def _expand_at(st: StripeStore, node, parts: list) -> None:
    if isinstance(node, list):
        for item in node:
            _expand_at(st, item, parts)
        return
    if not isinstance(node, dict) or parts[0] not in node:
        return
    if len(parts) == 1:
        value = node[parts[0]]
        if isinstance(value, str):
            found = st.get(value)
            if found is not None:
                node[parts[0]] = copy.deepcopy(found)
    else:
        _expand_at(st, node[parts[0]], parts[1:])


def _paginate(st: StripeStore, items: list, params: dict, url: str, extra_allowed=()) -> dict:
    """`items` newest first."""
    limit = _opt_int(params, "limit")
    if limit is None:
        limit = 10
    if not 1 <= limit <= 100:
        raise _invalid("This value must be greater than or equal to 1 and less than or equal to 100.", "limit")
    after, before = params.get("starting_after"), params.get("ending_before")
    ids = [i["id"] for i in items]
    if after:
        if after not in ids:
            raise _invalid(f"Invalid starting_after id: {after}", "starting_after", "resource_missing")
        rest = items[ids.index(after) + 1:]
        page, has_more = rest[:limit], len(rest) > limit
    elif before:
        if before not in ids:
            raise _invalid(f"Invalid ending_before id: {before}", "ending_before", "resource_missing")
        rest = items[:ids.index(before)]
        page, has_more = rest[-limit:], len(rest) > limit
    else:
        page, has_more = items[:limit], len(items) > limit
    out = {"object": "list", "data": page, "has_more": has_more, "url": url}
    return _expanded(st, out, _expand_list(params))


def _created_filter(items: list, params: dict) -> list:
    created = params.get("created")
    if created is None:
        return items
    if isinstance(created, str):
        value = _int(created, "created")
        return [i for i in items if i["created"] == value]
    ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
    for op, value in created.items():
        if op not in ops:
            raise StripeError(400, f"Received unknown parameter: created[{op}]", code="parameter_unknown",
                              param=f"created[{op}]")
        bound = _int(value, f"created[{op}]")
        items = [i for i in items if ops[op](i["created"], bound)]
    return items


LIST_KEYS = {"limit", "starting_after", "ending_before", "expand", "created"}


# ---- customers

CUSTOMER_KEYS = {"email", "name", "description", "metadata", "phone", "address", "expand", "preferred_locales",
                 "invoice_settings", "shipping", "tax", "tax_exempt", "test_clock", "payment_method", "balance",
                 "invoice_prefix", "next_invoice_sequence", "tax_id_data", "individual_name", "business_name",
                 "source", "coupon", "promotion_code", "cash_balance", "validate"}


async def customers_create(ctx: Ctx):
    _check_keys(ctx.params, CUSTOMER_KEYS)
    for key in ("email", "name", "description", "phone"):
        _str(ctx.params, key, max_len=512 if key == "email" else 5000)
    obj = ctx.store.put(_customer_obj(ctx.store, ctx.now, ctx.params))
    return 200, _expanded(ctx.store, obj, _expand_list(ctx.params))


def _customer(ctx: Ctx, ident: str, param: str | None = None, status: int = 400, allow_deleted: bool = False):
    obj = ctx.store.get(ident, "customer")
    if obj is None or (obj.get("deleted") and not allow_deleted):
        raise _no_such("customer", ident, param, status)
    return obj


async def customers_retrieve(ctx: Ctx):
    _check_keys(ctx.params, {"expand"})
    obj = _customer(ctx, ctx.path_params["id"], "id", 404, allow_deleted=True)
    if obj.get("deleted"):
        return 200, {"id": obj["id"], "object": "customer", "deleted": True}
    return 200, _expanded(ctx.store, obj, _expand_list(ctx.params))


async def customers_update(ctx: Ctx):
    _check_keys(ctx.params, CUSTOMER_KEYS - {"payment_method", "test_clock", "tax_id_data"} | {"default_source"})
    obj = _customer(ctx, ctx.path_params["id"], "id", 404)
    with ctx.store.lock:
        for key in ("email", "name", "description", "phone"):
            if key in ctx.params:
                obj[key] = _str(ctx.params, key)
        if "address" in ctx.params:
            obj["address"] = ctx.params["address"] or None
        obj["metadata"] = _metadata(ctx.params, obj["metadata"])
    return 200, _expanded(ctx.store, obj, _expand_list(ctx.params))


async def customers_delete(ctx: Ctx):
    obj = _customer(ctx, ctx.path_params["id"], "id", 404)
    with ctx.store.lock:
        obj["deleted"] = True
    return 200, {"id": obj["id"], "object": "customer", "deleted": True}


async def customers_list(ctx: Ctx):
    _check_keys(ctx.params, LIST_KEYS | {"email", "test_clock"})
    items = [c for c in ctx.store.all("customer") if not c.get("deleted")]
    email = _str(ctx.params, "email", max_len=512)
    if email is not None:
        items = [c for c in items if c["email"] == email]
    items = _created_filter(items, ctx.params)
    return 200, _paginate(ctx.store, items[::-1], ctx.params, "/v1/customers")


# ---- products

PRODUCT_KEYS = {"name", "id", "active", "description", "metadata", "expand", "images", "marketing_features",
                "shippable", "statement_descriptor", "tax_code", "unit_label", "url", "default_price_data",
                "package_dimensions", "type", "tax_details"}


async def products_create(ctx: Ctx):
    p = ctx.params
    _check_keys(p, PRODUCT_KEYS)
    name = _str(p, "name", required=True)
    ident = _str(p, "id")
    if ident and ctx.store.get(ident, "product"):
        raise StripeError(400, "Product already exists.", code="resource_already_exists", param="id")
    active = _opt_bool(p, "active")
    obj = {
        "id": ident or _new_id("prod"), "object": "product", "active": True if active is None else active,
        "created": ctx.now, "default_price": None, "description": _str(p, "description"), "images": [],
        "livemode": False, "marketing_features": [], "metadata": _metadata(p), "name": name,
        "package_dimensions": None, "shippable": None, "statement_descriptor": _str(p, "statement_descriptor"),
        "tax_code": _str(p, "tax_code"), "type": "service", "unit_label": _str(p, "unit_label"),
        "updated": ctx.now, "url": _str(p, "url"),
    }
    ctx.store.put(obj)
    return 200, _expanded(ctx.store, obj, _expand_list(p))


def _product(ctx: Ctx, ident: str, param: str | None = "id", status: int = 404) -> dict:
    obj = ctx.store.get(ident, "product")
    if obj is None:
        raise _no_such("product", ident, param, status)
    return obj


async def products_retrieve(ctx: Ctx):
    _check_keys(ctx.params, {"expand"})
    return 200, _expanded(ctx.store, _product(ctx, ctx.path_params["id"]), _expand_list(ctx.params))


async def products_update(ctx: Ctx):
    p = ctx.params
    _check_keys(p, PRODUCT_KEYS - {"id", "default_price_data", "type"} | {"default_price"})
    obj = _product(ctx, ctx.path_params["id"])
    with ctx.store.lock:
        for key in ("name", "description", "unit_label", "statement_descriptor", "url"):
            if key in p:
                obj[key] = _str(p, key)
        active = _opt_bool(p, "active")
        if active is not None:
            obj["active"] = active
        obj["metadata"] = _metadata(p, obj["metadata"])
        obj["updated"] = ctx.now
    return 200, _expanded(ctx.store, obj, _expand_list(p))


async def products_list(ctx: Ctx):
    p = ctx.params
    _check_keys(p, LIST_KEYS | {"active", "ids", "shippable", "url"})
    items = ctx.store.all("product")
    active = _opt_bool(p, "active")
    if active is not None:
        items = [i for i in items if i["active"] == active]
    ids = p.get("ids")
    if ids is not None:
        ids = [ids] if isinstance(ids, str) else ids
        items = [i for i in items if i["id"] in ids]
    items = _created_filter(items, p)
    return 200, _paginate(ctx.store, items[::-1], p, "/v1/products")


# ---- prices

PRICE_KEYS = {"currency", "product", "product_data", "unit_amount", "unit_amount_decimal", "recurring", "lookup_key",
              "transfer_lookup_key", "nickname", "metadata", "active", "billing_scheme", "tax_behavior", "expand",
              "tiers", "tiers_mode", "transform_quantity", "custom_unit_amount", "currency_options"}
RECURRING_KEYS = {"interval", "interval_count", "meter", "usage_type", "trial_period_days"}


def _claim_lookup_key(ctx: Ctx, price: dict, lookup_key: str | None, transfer: bool) -> None:
    if lookup_key is None:
        return
    for other in ctx.store.all("price"):
        if other["id"] != price["id"] and other["lookup_key"] == lookup_key:
            if not transfer:
                raise StripeError(400, f"A price (`{other['id']}`) already uses that lookup key.",
                                  param="lookup_key")
            other["lookup_key"] = None
    price["lookup_key"] = lookup_key


async def prices_create(ctx: Ctx):
    p = ctx.params
    _check_keys(p, PRICE_KEYS)
    currency = _str(p, "currency", required=True).lower()
    if not re.fullmatch(r"[a-z]{3}", currency):
        raise _invalid(f"Invalid currency: {currency}", "currency")
    product_id = _str(p, "product")
    product_data = _dict(p, "product_data")
    if product_id and product_data:
        raise _invalid("You may only specify one of these parameters: product, product_data.", "product")
    if product_id:
        _product(ctx, product_id, "product", 400)
    elif product_data:
        _check_keys(product_data, {"name", "active", "metadata", "statement_descriptor", "tax_code", "unit_label",
                                   "id", "tax_details"}, "product_data")
        name = _str(product_data, "name", required=True, param="product_data[name]")
        product = {"id": product_data.get("id") or _new_id("prod"), "object": "product", "active": True,
                   "created": ctx.now, "default_price": None, "description": None, "images": [], "livemode": False,
                   "marketing_features": [], "metadata": _metadata(product_data), "name": name,
                   "package_dimensions": None, "shippable": None, "statement_descriptor": None, "tax_code": None,
                   "type": "service", "unit_label": product_data.get("unit_label"), "updated": ctx.now, "url": None}
        ctx.store.put(product)
        product_id = product["id"]
    else:
        raise _missing("product")
    billing_scheme = _enum(p, "billing_scheme", ("per_unit", "tiered")) or "per_unit"
    if "unit_amount" in p and "unit_amount_decimal" in p:
        raise _invalid("You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
                       "unit_amount")
    unit_amount = _opt_int(p, "unit_amount")
    if unit_amount is not None and unit_amount < 0:
        raise _invalid("This value must be greater than or equal to 0.", "unit_amount")
    unit_amount_decimal = None
    if unit_amount is not None:
        unit_amount_decimal = str(unit_amount)
    elif p.get("unit_amount_decimal") not in (None, ""):
        unit_amount_decimal = _decimal_str(p["unit_amount_decimal"], "unit_amount_decimal")
    elif billing_scheme == "per_unit" and "custom_unit_amount" not in p:
        raise _missing("unit_amount")
    recurring = _dict(p, "recurring")
    rec_obj = None
    if recurring:
        _check_keys(recurring, RECURRING_KEYS, "recurring")
        interval = _enum(recurring, "interval", ("day", "week", "month", "year"), required=True,
                         param="recurring[interval]")
        interval_count = _opt_int(recurring, "interval_count", "recurring[interval_count]") or 1
        usage_type = _enum(recurring, "usage_type", ("licensed", "metered"), param="recurring[usage_type]") \
            or "licensed"
        meter_id = _str(recurring, "meter", param="recurring[meter]")
        if usage_type == "metered":
            if not meter_id:
                raise StripeError(400, "Metered prices must be backed by a meter: pass `recurring[meter]` (usage "
                                       "records were removed in API version 2025-03-31.basil).",
                                  code="parameter_missing", param="recurring[meter]")
            meter = ctx.store.get(meter_id, "billing.meter")
            if meter is None:
                raise _no_such("billing meter", meter_id, "recurring[meter]")
            if meter["status"] != "active":
                raise _invalid(f"The meter `{meter_id}` is inactive.", "recurring[meter]")
        elif meter_id:
            raise _invalid("`recurring[meter]` can only be set when `recurring[usage_type]` is `metered`.",
                           "recurring[meter]")
        rec_obj = {"interval": interval, "interval_count": interval_count, "meter": meter_id,
                   "trial_period_days": _opt_int(recurring, "trial_period_days", "recurring[trial_period_days]"),
                   "usage_type": usage_type}
    active = _opt_bool(p, "active")
    price = {
        "id": _new_id("price"), "object": "price", "active": True if active is None else active,
        "billing_scheme": billing_scheme, "created": ctx.now, "currency": currency, "custom_unit_amount": None,
        "livemode": False, "lookup_key": None, "metadata": _metadata(p), "nickname": _str(p, "nickname"),
        "product": product_id, "recurring": rec_obj,
        "tax_behavior": _enum(p, "tax_behavior", ("exclusive", "inclusive", "unspecified")) or "unspecified",
        "tiers_mode": _str(p, "tiers_mode"), "transform_quantity": None,
        "type": "recurring" if rec_obj else "one_time", "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount_decimal,
    }
    with ctx.store.lock:
        _claim_lookup_key(ctx, price, _str(p, "lookup_key", max_len=200),
                          bool(_opt_bool(p, "transfer_lookup_key")))
        ctx.store.put(price)
    return 200, _expanded(ctx.store, price, _expand_list(p))


def _price(ctx: Ctx, ident: str, param: str | None = "id", status: int = 404) -> dict:
    obj = ctx.store.get(ident, "price")
    if obj is None:
        raise _no_such("price", ident, param, status)
    return obj


async def prices_retrieve(ctx: Ctx):
    _check_keys(ctx.params, {"expand"})
    return 200, _expanded(ctx.store, _price(ctx, ctx.path_params["id"]), _expand_list(ctx.params))


async def prices_update(ctx: Ctx):
    p = ctx.params
    _check_keys(p, {"active", "lookup_key", "transfer_lookup_key", "metadata", "nickname", "tax_behavior", "expand",
                    "currency_options"})
    price = _price(ctx, ctx.path_params["id"])
    with ctx.store.lock:
        active = _opt_bool(p, "active")
        if active is not None:
            price["active"] = active
        if "nickname" in p:
            price["nickname"] = _str(p, "nickname")
        if "lookup_key" in p:
            if p["lookup_key"] == "":
                price["lookup_key"] = None
            else:
                _claim_lookup_key(ctx, price, _str(p, "lookup_key", max_len=200),
                                  bool(_opt_bool(p, "transfer_lookup_key")))
        price["metadata"] = _metadata(p, price["metadata"])
    return 200, _expanded(ctx.store, price, _expand_list(p))


async def prices_list(ctx: Ctx):
    p = ctx.params
    _check_keys(p, LIST_KEYS | {"active", "currency", "lookup_keys", "product", "recurring", "type"})
    items = ctx.store.all("price")
    active = _opt_bool(p, "active")
    if active is not None:
        items = [i for i in items if i["active"] == active]
    for key in ("currency", "product", "type"):
        value = _str(p, key)
        if value is not None:
            items = [i for i in items if i[key] == value]
    lookup_keys = p.get("lookup_keys")
    if lookup_keys is not None:
        lookup_keys = [lookup_keys] if isinstance(lookup_keys, str) else lookup_keys
        if len(lookup_keys) > 10:
            raise _invalid("You can pass at most 10 lookup_keys.", "lookup_keys")
        items = [i for i in items if i["lookup_key"] in lookup_keys]
    recurring = _dict(p, "recurring")
    if recurring:
        _check_keys(recurring, {"interval", "meter", "usage_type"}, "recurring")
        for key, value in recurring.items():
            items = [i for i in items if i["recurring"] and i["recurring"].get(key) == value]
    items = _created_filter(items, p)
    return 200, _paginate(ctx.store, items[::-1], p, "/v1/prices")


# ---- billing meters

METER_KEYS = {"display_name", "event_name", "default_aggregation", "customer_mapping", "value_settings",
              "event_time_window", "expand"}


async def meters_create(ctx: Ctx):
    p = ctx.params
    _check_keys(p, METER_KEYS)
    display_name = _str(p, "display_name", required=True, max_len=250)
    event_name = _str(p, "event_name", required=True, max_len=100)
    agg = p.get("default_aggregation")
    if not isinstance(agg, dict) or not agg.get("formula"):
        raise _missing("default_aggregation[formula]" if isinstance(agg, dict) else "default_aggregation")
    _check_keys(agg, {"formula"}, "default_aggregation")
    formula = _enum(agg, "formula", ("count", "last", "sum"), param="default_aggregation[formula]")
    mapping = _dict(p, "customer_mapping")
    if mapping:
        _check_keys(mapping, {"type", "event_payload_key"}, "customer_mapping")
        _enum(mapping, "type", ("by_id",), required=True, param="customer_mapping[type]")
        customer_key = _str(mapping, "event_payload_key", required=True, param="customer_mapping[event_payload_key]",
                            max_len=100)
    else:
        customer_key = "stripe_customer_id"
    value_settings = _dict(p, "value_settings")
    if value_settings:
        _check_keys(value_settings, {"event_payload_key"}, "value_settings")
        value_key = _str(value_settings, "event_payload_key", required=True,
                         param="value_settings[event_payload_key]", max_len=100)
    else:
        value_key = "value"
    window = _enum(p, "event_time_window", ("day", "hour"))
    with ctx.store.lock:
        if ctx.store.active_meter(event_name):
            raise StripeError(400, f"An active meter with event_name `{event_name}` already exists. Event names must "
                                   "be unique among active meters.", param="event_name")
        meter = {
            "id": _new_id("mtr_test"), "object": "billing.meter", "created": ctx.now,
            "customer_mapping": {"event_payload_key": customer_key, "type": "by_id"},
            "default_aggregation": {"formula": formula}, "display_name": display_name, "event_name": event_name,
            "event_time_window": window, "livemode": False, "status": "active",
            "status_transitions": {"deactivated_at": None}, "updated": ctx.now,
            "value_settings": {"event_payload_key": value_key},
        }
        ctx.store.put(meter)
    return 200, meter


def _meter(ctx: Ctx, ident: str, param: str | None = "id", status: int = 404) -> dict:
    obj = ctx.store.get(ident, "billing.meter")
    if obj is None:
        raise _no_such("billing meter", ident, param, status)
    return obj


async def meters_retrieve(ctx: Ctx):
    _check_keys(ctx.params, {"expand"})
    return 200, _meter(ctx, ctx.path_params["id"])


async def meters_update(ctx: Ctx):
    _check_keys(ctx.params, {"display_name", "expand"})
    meter = _meter(ctx, ctx.path_params["id"])
    with ctx.store.lock:
        if "display_name" in ctx.params:
            meter["display_name"] = _str(ctx.params, "display_name", required=True, max_len=250)
            meter["updated"] = ctx.now
    return 200, meter


async def meters_deactivate(ctx: Ctx):
    _check_keys(ctx.params, {"expand"})
    meter = _meter(ctx, ctx.path_params["id"])
    with ctx.store.lock:
        meter["status"] = "inactive"
        meter["status_transitions"]["deactivated_at"] = ctx.now
        meter["updated"] = ctx.now
    return 200, meter


async def meters_reactivate(ctx: Ctx):
    _check_keys(ctx.params, {"expand"})
    meter = _meter(ctx, ctx.path_params["id"])
    with ctx.store.lock:
        other = ctx.store.active_meter(meter["event_name"])
        if other and other["id"] != meter["id"]:
            raise StripeError(400, f"An active meter with event_name `{meter['event_name']}` already exists. Event "
                                   "names must be unique among active meters.")
        meter["status"] = "active"
        meter["status_transitions"]["deactivated_at"] = None
        meter["updated"] = ctx.now
    return 200, meter


async def meters_list(ctx: Ctx):
    _check_keys(ctx.params, LIST_KEYS | {"status"})
    items = ctx.store.all("billing.meter")
    status = _enum(ctx.params, "status", ("active", "inactive"))
    if status:
        items = [m for m in items if m["status"] == status]
    return 200, _paginate(ctx.store, items[::-1], ctx.params, "/v1/billing/meters")


# ---- meter events


async def meter_events_create(ctx: Ctx):
    p, st = ctx.params, ctx.store
    try:
        _check_keys(p, {"event_name", "payload", "identifier", "timestamp", "expand"})
        event_name = _str(p, "event_name", required=True, max_len=100)
        payload = p.get("payload")
        if not isinstance(payload, dict) or not payload:
            raise _missing("payload")
        identifier = p.get("identifier")
        if identifier in (None, ""):
            identifier = f"{_rand(8)}-{_rand(4)}-{_rand(4)}-{_rand(4)}-{_rand(12)}".lower()
        elif not isinstance(identifier, str):
            raise _invalid("Invalid string", "identifier")
        if len(identifier) > MAX_IDENTIFIER:
            raise _invalid(f"Invalid string: {identifier[:40]}...; must be at most {MAX_IDENTIFIER} characters",
                           "identifier", code=None)
        timestamp = _opt_int(p, "timestamp")
        if timestamp is None:
            timestamp = ctx.now
        if timestamp < ctx.now - MAX_PAST:
            st.rejections["timestamp"] += 1
            raise StripeError(400, f"The timestamp {timestamp} is too far in the past: meter events must have a "
                                   "timestamp within the past 35 days.", code="timestamp_too_far_in_past",
                              param="timestamp")
        if timestamp > ctx.now + MAX_FUTURE:
            st.rejections["timestamp"] += 1
            raise StripeError(400, f"The timestamp {timestamp} is too far in the future: meter events must have a "
                                   "timestamp no more than 5 minutes in the future.", code="timestamp_in_future",
                              param="timestamp")
        meter = st.active_meter(event_name)
        if meter is None:
            raise StripeError(400, f"No active meter was found with event_name `{event_name}`.", code="no_meter",
                              param="event_name")
        customer_key = meter["customer_mapping"]["event_payload_key"]
        customer_id = payload.get(customer_key)
        if not isinstance(customer_id, str) or not customer_id:
            raise StripeError(400, f"The payload is missing the customer mapping key `{customer_key}` required by "
                                   f"the meter `{meter['id']}`.", code="meter_event_no_customer_defined",
                              param=f"payload[{customer_key}]")
        customer = st.get(customer_id, "customer")
        if customer is None or customer.get("deleted"):
            raise _no_such("customer", customer_id, f"payload[{customer_key}]")
        value_key = meter["value_settings"]["event_payload_key"]
        raw_value = payload.get(value_key)
        value = None
        if raw_value in (None, ""):
            if meter["default_aggregation"]["formula"] != "count":
                raise StripeError(400, f"The payload is missing the value key `{value_key}` required by the meter "
                                       f"`{meter['id']}`.", code="meter_event_value_not_found",
                                  param=f"payload[{value_key}]")
        elif isinstance(raw_value, str) and re.fullmatch(r"-?\d+", raw_value.strip()):
            value = int(raw_value.strip())
        else:
            raise StripeError(400, f"The value `{raw_value}` for `{value_key}` is not a whole number. Meter event "
                                   "values must be integers.", code="meter_event_invalid_value",
                              param=f"payload[{value_key}]")
    except StripeError as exc:
        if exc.status == 400 and exc.code not in ("timestamp_too_far_in_past", "timestamp_in_future"):
            st.rejections["invalid"] += 1
        raise

    pair = (customer_id, meter["id"])
    with st.lock:
        running = st.in_flight[pair]
        st.max_concurrent[pair] = max(st.max_concurrent.get(pair, 0), running + 1)
        if running:
            st.rejections["concurrency"] += 1
            raise StripeError(429, f"Too many concurrent requests for customer `{customer_id}` on meter "
                                   f"`{meter['id']}`: meter events allow one concurrent call per customer per meter. "
                                   "Retry after the earlier request completes.", code="rate_limit")
        st.in_flight[pair] += 1
    try:
        hold = float(ctx.state.get("meter_event_delay") or 0)
        if hold:
            await asyncio.sleep(hold)
        with st.lock:
            if identifier in st.identifiers:
                st.rejections["duplicate"] += 1
                raise StripeError(400, f"An event already exists with identifier {identifier}.",
                                  headers={"Stripe-Should-Retry": "false"}, param="identifier")
            record = {"identifier": identifier, "event_name": event_name, "meter": meter["id"],
                      "customer": customer_id, "value": value, "timestamp": timestamp, "created": ctx.now,
                      "cancelled": False, "idempotency_key": ctx.idempotency_key, "seq": len(st.meter_events),
                      "payload": {k: str(v) for k, v in payload.items()}}
            st.meter_events.append(record)
            st.identifiers[identifier] = record
    finally:
        with st.lock:
            st.in_flight[pair] -= 1
            if st.in_flight[pair] <= 0:
                del st.in_flight[pair]
    return 200, {"object": "billing.meter_event", "created": ctx.now, "event_name": event_name,
                 "identifier": identifier, "livemode": False, "payload": dict(record["payload"]),
                 "timestamp": timestamp}


async def meter_event_adjustments_create(ctx: Ctx):
    p, st = ctx.params, ctx.store
    _check_keys(p, {"event_name", "type", "cancel", "expand"})
    event_name = _str(p, "event_name", required=True, max_len=100)
    adj_type = _enum(p, "type", ("cancel",), required=True)
    cancel = _dict(p, "cancel")
    _check_keys(cancel, {"identifier"}, "cancel")
    identifier = _str(cancel, "identifier", required=True, param="cancel[identifier]", max_len=MAX_IDENTIFIER)
    if st.active_meter(event_name) is None:
        raise StripeError(400, f"No active meter was found with event_name `{event_name}`.", code="no_meter",
                          param="event_name")
    with st.lock:
        record = st.identifiers.get(identifier)
        if record is None or record["event_name"] != event_name:
            raise StripeError(400, f"No meter event with identifier `{identifier}` was found for event_name "
                                   f"`{event_name}`.", code="resource_missing", param="cancel[identifier]")
        if ctx.now - record["created"] > CANCEL_WINDOW:
            raise StripeError(400, f"The meter event with identifier `{identifier}` can no longer be cancelled: "
                                   "events can only be cancelled within 24 hours of being received.",
                              param="cancel[identifier]")
        if record["cancelled"]:
            raise StripeError(400, f"The meter event with identifier `{identifier}` has already been cancelled.",
                              param="cancel[identifier]")
        record["cancelled"] = True
    return 200, {"object": "billing.meter_event_adjustment", "cancel": {"identifier": identifier},
                 "event_name": event_name, "livemode": False, "status": "pending", "type": adj_type}


async def event_summaries_list(ctx: Ctx):
    p, st = ctx.params, ctx.store
    meter = _meter(ctx, ctx.path_params["id"])
    _check_keys(p, {"customer", "start_time", "end_time", "value_grouping_window", "limit", "starting_after",
                    "ending_before", "expand"})
    customer = _str(p, "customer", required=True)
    _customer(ctx, customer, "customer")
    if p.get("start_time") in (None, ""):
        raise _missing("start_time")
    if p.get("end_time") in (None, ""):
        raise _missing("end_time")
    start, end = _int(p["start_time"], "start_time"), _int(p["end_time"], "end_time")
    for name, value in (("start_time", start), ("end_time", end)):
        if value % 60:
            raise _invalid(f"The {name} {value} must be aligned with minute boundaries (a multiple of 60 seconds).",
                           name)
    if end <= start:
        raise _invalid("The end_time must be after the start_time.", "end_time")
    window = _enum(p, "value_grouping_window", ("day", "hour"))
    size = {"hour": 3600, "day": 86400}.get(window or "")
    if size:
        for name, value in (("start_time", start), ("end_time", end)):
            if value % size:
                raise _invalid(f"The {name} {value} must be aligned with {window} boundaries when "
                               f"value_grouping_window is `{window}`.", name)
    with st.lock:
        events = [e for e in st.meter_events if e["meter"] == meter["id"] and e["customer"] == customer
                  and not e["cancelled"] and start <= e["timestamp"] < end]
    buckets = []
    if size is None:
        buckets.append((start, end, events))
    else:
        grouped: dict = {}
        for e in events:
            grouped.setdefault((e["timestamp"] - start) // size, []).append(e)
        for index in sorted(grouped):
            b_start = start + index * size
            buckets.append((b_start, b_start + size, grouped[index]))
    summaries = []
    for b_start, b_end, b_events in sorted(buckets, key=lambda b: -b[0]):
        digest = hashlib.sha256(f"{meter['id']}|{customer}|{b_start}|{b_end}".encode()).hexdigest()
        summaries.append({"id": f"mtrusg_test_{digest[:48]}", "object": "billing.meter_event_summary",
                          "aggregated_value": _aggregate(meter, b_events), "end_time": b_end, "livemode": False,
                          "meter": meter["id"], "start_time": b_start})
    return 200, _paginate(st, summaries, p, f"/v1/billing/meters/{meter['id']}/event_summaries")


# ---- checkout / portal

CHECKOUT_KEYS = {"mode", "line_items", "customer", "customer_email", "client_reference_id", "success_url",
                 "cancel_url", "return_url", "ui_mode", "metadata", "subscription_data", "allow_promotion_codes",
                 "billing_address_collection", "automatic_tax", "customer_update", "tax_id_collection",
                 "payment_method_types", "payment_method_collection", "locale", "expires_at", "consent_collection",
                 "custom_text", "custom_fields", "discounts", "expand", "currency", "saved_payment_method_options",
                 "phone_number_collection", "invoice_creation", "customer_creation", "payment_intent_data",
                 "setup_intent_data", "redirect_on_completion", "origin_context", "name_collection",
                 "optional_items", "adaptive_pricing", "branding_settings", "permissions", "wallet_options",
                 "excluded_payment_method_types", "integration_identifier", "submit_type",
                 "payment_method_configuration", "payment_method_options", "shipping_address_collection",
                 "shipping_options", "after_expiration"}
LINE_ITEM_KEYS = {"price", "price_data", "quantity", "adjustable_quantity", "dynamic_tax_rates", "tax_rates",
                  "metadata"}


async def checkout_sessions_create(ctx: Ctx):
    p, st = ctx.params, ctx.store
    _check_keys(p, CHECKOUT_KEYS)
    mode = _enum(p, "mode", ("payment", "setup", "subscription"), required=True)
    customer = _str(p, "customer")
    customer_email = _str(p, "customer_email", max_len=800)
    if customer and customer_email:
        raise _invalid("You may only specify one of these parameters: customer, customer_email.", "customer")
    if customer:
        _customer(ctx, customer, "customer")
    if mode == "subscription" and "customer_creation" in p:
        raise _invalid("`customer_creation` can only be used in `payment` mode.", "customer_creation")
    raw_items = p.get("line_items") or []
    if not isinstance(raw_items, list):
        raise _invalid("Invalid array", "line_items")
    items, amount, currency, recurring_seen = [], 0, None, False
    for i, li in enumerate(raw_items):
        if not isinstance(li, dict):
            raise _invalid("Invalid object", f"line_items[{i}]")
        _check_keys(li, LINE_ITEM_KEYS, f"line_items[{i}]")
        price_id = _str(li, "price", param=f"line_items[{i}][price]")
        if not price_id:
            raise _missing(f"line_items[{i}][price]")
        price = _price(ctx, price_id, f"line_items[{i}][price]", 400)
        if not price["active"]:
            raise _invalid("The price specified is inactive. This field only accepts active prices.",
                           f"line_items[{i}][price]")
        rec = price["recurring"]
        metered = bool(rec and rec.get("usage_type") == "metered")
        if rec:  # (one-time prices may ride along a subscription's first invoice: nothing to check for them)
            recurring_seen = True
        if mode == "payment" and rec:
            raise _invalid("You specified `payment` mode but passed a recurring price. Either switch to "
                           "`subscription` mode or use only one-time prices.", f"line_items[{i}][price]")
        quantity = _opt_int(li, "quantity", f"line_items[{i}][quantity]")
        if metered and quantity is not None:
            raise _invalid(f"Quantity should not be specified where usage_type is `metered`. Remove quantity from "
                           f"`line_items[{i}]`.", f"line_items[{i}][quantity]")
        if not metered and quantity is None:
            raise _invalid(f"Quantity is required. Add `quantity` to `line_items[{i}]`.",
                           f"line_items[{i}][quantity]", "parameter_missing")
        if quantity is not None and quantity < 1:
            raise _invalid("This value must be greater than or equal to 1.", f"line_items[{i}][quantity]")
        if not metered:
            amount += int(price["unit_amount"] or 0) * quantity
        currency = currency or price["currency"]
        items.append({"price": price_id, "quantity": quantity})
    if mode in ("payment", "subscription") and not items:
        raise _missing("line_items")
    if mode == "subscription" and not recurring_seen:
        raise _invalid("You must provide at least one recurring price in `subscription` mode when using prices.",
                       "line_items")
    subscription_data = _dict(p, "subscription_data")
    _check_keys(subscription_data, {"metadata", "description", "trial_period_days", "trial_end", "billing_cycle_anchor",
                                    "default_tax_rates", "invoice_settings", "on_behalf_of", "proration_behavior",
                                    "transfer_data", "trial_settings", "application_fee_percent", "billing_mode"},
                "subscription_data")
    ui_mode = _enum(p, "ui_mode", ("hosted", "embedded", "custom")) or "hosted"
    cs_id = _new_id("cs_test")
    session = {
        "id": cs_id, "object": "checkout.session", "adaptive_pricing": None, "after_expiration": None,
        "allow_promotion_codes": _opt_bool(p, "allow_promotion_codes"), "amount_subtotal": amount,
        "amount_total": amount, "automatic_tax": {"enabled": False, "liability": None, "provider": None,
                                                  "status": None},
        "billing_address_collection": _str(p, "billing_address_collection"), "cancel_url": _str(p, "cancel_url"),
        "client_reference_id": _str(p, "client_reference_id", max_len=200), "client_secret": None,
        "collected_information": None, "consent": None, "consent_collection": None, "created": ctx.now,
        "currency": currency, "custom_fields": [], "custom_text": {"after_submit": None, "shipping_address": None,
                                                                   "submit": None, "terms_of_service_acceptance": None},
        "customer": customer, "customer_creation": "always" if mode == "payment" and not customer else None,
        "customer_details": {"email": customer_email} if customer_email else None, "customer_email": customer_email,
        "discounts": [], "expires_at": ctx.now + 86400, "invoice": None, "invoice_creation": None,
        "livemode": False, "locale": _str(p, "locale"), "metadata": _metadata(p), "mode": mode,
        "payment_intent": None, "payment_link": None, "payment_method_collection": "always",
        "payment_method_types": ["card"], "payment_status": "unpaid",
        "phone_number_collection": {"enabled": False}, "recovered_from": None,
        "return_url": _str(p, "return_url"), "setup_intent": None, "shipping_address_collection": None,
        "shipping_cost": None, "shipping_options": [], "status": "open", "submit_type": None, "subscription": None,
        "success_url": _str(p, "success_url"), "total_details": {"amount_discount": 0, "amount_shipping": 0,
                                                                 "amount_tax": 0},
        "ui_mode": ui_mode, "url": f"{ctx.base_url}/c/pay/{cs_id}" if ui_mode == "hosted" else None,
    }
    with st.lock:
        st.put(session)
        st.checkout_items[cs_id] = items
        st.checkout_items[cs_id + ":subscription_data"] = subscription_data
    return 200, _session_view(st, session, _expand_list(p))


def _checkout_line_items(st: StripeStore, cs_id: str) -> dict:
    data = []
    for item in st.checkout_items.get(cs_id, []):
        price = st.get(item["price"], "price")
        product = st.get(price["product"], "product") or {}
        amount = int(price["unit_amount"] or 0) * (item["quantity"] or 0)
        data.append({"id": _new_id("li"), "object": "item", "amount_discount": 0, "amount_subtotal": amount,
                     "amount_tax": 0, "amount_total": amount, "currency": price["currency"],
                     "description": product.get("name"), "price": copy.deepcopy(price), "quantity": item["quantity"]})
    return {"object": "list", "data": data, "has_more": False, "url": f"/v1/checkout/sessions/{cs_id}/line_items"}


def _session_view(st: StripeStore, session: dict, expand: list) -> dict:
    out = _expanded(st, session, [e for e in expand if e != "line_items"])
    if "line_items" in expand:
        out = dict(out)
        out["line_items"] = _checkout_line_items(st, session["id"])
    return out


def _session(ctx: Ctx) -> dict:
    obj = ctx.store.get(ctx.path_params["id"], "checkout.session")
    if obj is None:
        raise _no_such("checkout.session", ctx.path_params["id"], "session", 404)
    return obj


async def checkout_sessions_retrieve(ctx: Ctx):
    _check_keys(ctx.params, {"expand"})
    return 200, _session_view(ctx.store, _session(ctx), _expand_list(ctx.params))


async def checkout_sessions_line_items(ctx: Ctx):
    _check_keys(ctx.params, LIST_KEYS - {"created"})
    items = _checkout_line_items(ctx.store, _session(ctx)["id"])
    return 200, _paginate(ctx.store, items["data"], ctx.params, items["url"])


async def checkout_sessions_list(ctx: Ctx):
    p = ctx.params
    _check_keys(p, LIST_KEYS | {"customer", "status", "subscription", "payment_intent", "payment_link",
                                "customer_details"})
    items = ctx.store.all("checkout.session")
    for key in ("customer", "status", "subscription"):
        value = _str(p, key)
        if value is not None:
            items = [i for i in items if i[key] == value]
    items = _created_filter(items, p)
    return 200, _paginate(ctx.store, items[::-1], p, "/v1/checkout/sessions")


async def portal_sessions_create(ctx: Ctx):
    p = ctx.params
    _check_keys(p, {"customer", "return_url", "configuration", "flow_data", "locale", "on_behalf_of", "expand",
                    "customer_account"})
    customer = _str(p, "customer", required=True)
    _customer(ctx, customer, "customer")
    bps_id = _new_id("bps")
    session = {"id": bps_id, "object": "billing_portal.session",
               "configuration": _str(p, "configuration") or "bpc_" + _rand(24), "created": ctx.now,
               "customer": customer, "customer_account": None, "flow": None, "livemode": False,
               "locale": _str(p, "locale"), "on_behalf_of": _str(p, "on_behalf_of"),
               "return_url": _str(p, "return_url"), "url": f"{ctx.base_url}/p/session/{bps_id}"}
    ctx.store.put(session)
    return 200, session


# ---- subscriptions / invoices / events


def _subscription(ctx: Ctx, ident: str | None = None) -> dict:
    ident = ident or ctx.path_params["id"]
    obj = ctx.store.get(ident, "subscription")
    if obj is None:
        raise _no_such("subscription", ident, "id", 404)
    return obj


async def subscriptions_create(ctx: Ctx):
    p = ctx.params
    _check_keys(p, {"customer", "items", "metadata", "description", "expand", "collection_method", "days_until_due",
                    "default_payment_method", "payment_behavior", "trial_period_days", "trial_end",
                    "cancel_at_period_end", "billing_cycle_anchor", "proration_behavior", "currency",
                    "automatic_tax", "off_session", "payment_settings", "billing_mode"})
    customer = _str(p, "customer", required=True)
    _customer(ctx, customer, "customer")
    raw = p.get("items")
    if not isinstance(raw, list) or not raw:
        raise _missing("items")
    items = []
    for i, it in enumerate(raw):
        _check_keys(it, {"price", "quantity", "metadata", "tax_rates", "discounts", "price_data",
                         "billing_thresholds"}, f"items[{i}]")
        price = _price(ctx, _str(it, "price", required=True, param=f"items[{i}][price]"), f"items[{i}][price]", 400)
        if not price["recurring"]:
            raise _invalid("The price specified is set to `type=one_time` but this field only accepts prices with "
                           "`type=recurring`.", f"items[{i}][price]")
        quantity = _opt_int(it, "quantity", f"items[{i}][quantity]")
        if price["recurring"]["usage_type"] == "metered" and quantity is not None:
            raise _invalid(f"Quantity should not be specified where usage_type is `metered`. Remove quantity from "
                           f"`items[{i}]`.", f"items[{i}][quantity]")
        items.append({"price": price["id"], "quantity": quantity})
    sub = _new_subscription(ctx.store, ctx.now, customer, items, metadata=_metadata(p),
                            description=_str(p, "description"))
    return 200, _expanded(ctx.store, sub, _expand_list(p))


async def subscriptions_retrieve(ctx: Ctx):
    _check_keys(ctx.params, {"expand"})
    return 200, _expanded(ctx.store, _subscription(ctx), _expand_list(ctx.params))


async def subscriptions_update(ctx: Ctx):
    p = ctx.params
    _check_keys(p, {"metadata", "cancel_at_period_end", "description", "expand", "cancel_at", "proration_behavior",
                    "default_payment_method", "cancellation_details"})
    sub = _subscription(ctx)
    with ctx.store.lock:
        if "cancel_at_period_end" in p:
            sub["cancel_at_period_end"] = _bool(p["cancel_at_period_end"], "cancel_at_period_end")
            first = sub["items"]["data"][0] if sub["items"]["data"] else None
            sub["cancel_at"] = first["current_period_end"] if sub["cancel_at_period_end"] and first else None
            sub["canceled_at"] = ctx.now if sub["cancel_at_period_end"] else None
        if "description" in p:
            sub["description"] = _str(p, "description")
        sub["metadata"] = _metadata(p, sub["metadata"])
    return 200, _expanded(ctx.store, sub, _expand_list(p))


async def subscriptions_cancel(ctx: Ctx):
    _check_keys(ctx.params, {"expand", "invoice_now", "prorate", "cancellation_details"})
    sub = _subscription(ctx)
    with ctx.store.lock:
        if sub["status"] == "canceled":
            raise _invalid("A canceled subscription can only update its cancellation_details and metadata.",
                           code=None)
        sub.update(status="canceled", canceled_at=ctx.now, ended_at=ctx.now)
    return 200, _expanded(ctx.store, sub, _expand_list(ctx.params))


async def subscriptions_list(ctx: Ctx):
    p = ctx.params
    _check_keys(p, LIST_KEYS | {"customer", "price", "status", "current_period_end", "current_period_start",
                                "test_clock", "collection_method", "automatic_tax"})
    items = ctx.store.all("subscription")
    status = _str(p, "status")
    if status is None:
        items = [s for s in items if s["status"] != "canceled"]
    elif status != "all":
        items = [s for s in items if s["status"] == status]
    customer = _str(p, "customer")
    if customer:
        items = [s for s in items if s["customer"] == customer]
    price = _str(p, "price")
    if price:
        items = [s for s in items if any(i["price"]["id"] == price for i in s["items"]["data"])]
    items = _created_filter(items, p)
    return 200, _paginate(ctx.store, items[::-1], p, "/v1/subscriptions")


def _invoice(ctx: Ctx) -> dict:
    obj = ctx.store.get(ctx.path_params["id"], "invoice")
    if obj is None:
        raise _no_such("invoice", ctx.path_params["id"], "invoice", 404)
    return obj


async def invoices_retrieve(ctx: Ctx):
    _check_keys(ctx.params, {"expand"})
    return 200, _expanded(ctx.store, _invoice(ctx), _expand_list(ctx.params))


async def invoices_lines(ctx: Ctx):
    _check_keys(ctx.params, LIST_KEYS - {"created"})
    inv = _invoice(ctx)
    return 200, _paginate(ctx.store, inv["lines"]["data"], ctx.params, inv["lines"]["url"])


async def invoices_list(ctx: Ctx):
    p = ctx.params
    _check_keys(p, LIST_KEYS | {"customer", "subscription", "status", "collection_method", "due_date",
                                "customer_account"})
    items = ctx.store.all("invoice")
    for key in ("customer", "status"):
        value = _str(p, key)
        if value is not None:
            items = [i for i in items if i[key] == value]
    sub = _str(p, "subscription")
    if sub:
        items = [i for i in items if (i["parent"] or {}).get("subscription_details", {}).get("subscription") == sub]
    items = _created_filter(items, p)
    return 200, _paginate(ctx.store, items[::-1], p, "/v1/invoices")


async def invoices_create_preview(ctx: Ctx):
    p = ctx.params
    _check_keys(p, {"customer", "subscription", "expand", "automatic_tax", "currency", "customer_details",
                    "discounts", "invoice_items", "issuer", "on_behalf_of", "preview_mode", "schedule",
                    "schedule_details", "subscription_details"})
    sub_id = _str(p, "subscription")
    customer = _str(p, "customer")
    if sub_id:
        sub = _subscription(ctx, sub_id)
    elif customer:
        _customer(ctx, customer, "customer")
        subs = [s for s in ctx.store.all("subscription") if s["customer"] == customer and s["status"] != "canceled"]
        if not subs:
            raise _invalid(f"No upcoming invoices for customer: {customer}", code="invoice_upcoming_none")
        sub = subs[-1]
    else:
        raise _missing("customer")
    inv = _build_invoice(ctx.store, ctx.base_url, ctx.now, sub, preview=True)
    return 200, _expanded(ctx.store, inv, _expand_list(p))


async def events_retrieve(ctx: Ctx):
    _check_keys(ctx.params, {"expand"})
    obj = ctx.store.get(ctx.path_params["id"], "event")
    if obj is None:
        raise _no_such("event", ctx.path_params["id"], "id", 404)
    return 200, obj


async def events_list(ctx: Ctx):
    p = ctx.params
    _check_keys(p, LIST_KEYS | {"type", "types", "delivery_success"})
    items = ctx.store.all("event")
    event_type = _str(p, "type")
    if event_type:
        pattern = re.compile("^" + re.escape(event_type).replace(r"\*", ".*") + "$")
        items = [e for e in items if pattern.match(e["type"])]
    items = _created_filter(items, p)
    return 200, _paginate(ctx.store, items[::-1], p, "/v1/events")


# ------------------------------------------------------------------------------------------------------ routing

ROUTES = [
    ("POST", r"/v1/customers", "customers", customers_create),
    ("GET", r"/v1/customers", "customers", customers_list),
    ("GET", r"/v1/customers/(?P<id>[^/]+)", "customers", customers_retrieve),
    ("POST", r"/v1/customers/(?P<id>[^/]+)", "customers", customers_update),
    ("DELETE", r"/v1/customers/(?P<id>[^/]+)", "customers", customers_delete),
    ("POST", r"/v1/products", "products", products_create),
    ("GET", r"/v1/products", "products", products_list),
    ("GET", r"/v1/products/(?P<id>[^/]+)", "products", products_retrieve),
    ("POST", r"/v1/products/(?P<id>[^/]+)", "products", products_update),
    ("POST", r"/v1/prices", "prices", prices_create),
    ("GET", r"/v1/prices", "prices", prices_list),
    ("GET", r"/v1/prices/(?P<id>[^/]+)", "prices", prices_retrieve),
    ("POST", r"/v1/prices/(?P<id>[^/]+)", "prices", prices_update),
    ("POST", r"/v1/billing/meters", "meters", meters_create),
    ("GET", r"/v1/billing/meters", "meters", meters_list),
    ("GET", r"/v1/billing/meters/(?P<id>[^/]+)/event_summaries", "event_summaries", event_summaries_list),
    ("POST", r"/v1/billing/meters/(?P<id>[^/]+)/deactivate", "meters", meters_deactivate),
    ("POST", r"/v1/billing/meters/(?P<id>[^/]+)/reactivate", "meters", meters_reactivate),
    ("GET", r"/v1/billing/meters/(?P<id>[^/]+)", "meters", meters_retrieve),
    ("POST", r"/v1/billing/meters/(?P<id>[^/]+)", "meters", meters_update),
    ("POST", r"/v1/billing/meter_events", "meter_events", meter_events_create),
    ("POST", r"/v1/billing/meter_event_adjustments", "meter_event_adjustments", meter_event_adjustments_create),
    ("POST", r"/v1/checkout/sessions", "checkout_sessions", checkout_sessions_create),
    ("GET", r"/v1/checkout/sessions", "checkout_sessions", checkout_sessions_list),
    ("GET", r"/v1/checkout/sessions/(?P<id>[^/]+)/line_items", "checkout_sessions", checkout_sessions_line_items),
    ("GET", r"/v1/checkout/sessions/(?P<id>[^/]+)", "checkout_sessions", checkout_sessions_retrieve),
    ("POST", r"/v1/billing_portal/sessions", "billing_portal_sessions", portal_sessions_create),
    ("POST", r"/v1/subscriptions", "subscriptions", subscriptions_create),
    ("GET", r"/v1/subscriptions", "subscriptions", subscriptions_list),
    ("GET", r"/v1/subscriptions/(?P<id>[^/]+)", "subscriptions", subscriptions_retrieve),
    ("POST", r"/v1/subscriptions/(?P<id>[^/]+)", "subscriptions", subscriptions_update),
    ("DELETE", r"/v1/subscriptions/(?P<id>[^/]+)", "subscriptions", subscriptions_cancel),
    ("POST", r"/v1/invoices/create_preview", "invoices", invoices_create_preview),
    ("GET", r"/v1/invoices", "invoices", invoices_list),
    ("GET", r"/v1/invoices/(?P<id>[^/]+)/lines", "invoices", invoices_lines),
    ("GET", r"/v1/invoices/(?P<id>[^/]+)", "invoices", invoices_retrieve),
    ("GET", r"/v1/events", "events", events_list),
    ("GET", r"/v1/events/(?P<id>[^/]+)", "events", events_retrieve),
]
_COMPILED = [(m, re.compile(pattern + r"/?$"), name, handler) for m, pattern, name, handler in ROUTES]


def _match(method: str, path: str):
    for m, regex, name, handler in _COMPILED:
        if m == method:
            found = regex.match(path)
            if found:
                return name, handler, found.groupdict()
    return None


def _mask(key: str) -> str:
    if len(key) <= 12:
        return "*" * len(key)
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


def _auth_error(header: str) -> StripeError | None:
    key = None
    if header.lower().startswith("bearer "):
        key = header[7:].strip()
    elif header.lower().startswith("basic "):
        try:
            key = base64.b64decode(header[6:].strip()).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            key = ""
    if not key:
        return StripeError(401, "You did not provide an API key. You need to provide your API key in the "
                                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or "
                                "we can help at https://support.stripe.com/.",
                           headers={"WWW-Authenticate": 'Basic realm="Stripe"'})
    if key != API_KEY:
        return StripeError(401, f"Invalid API Key provided: {_mask(key)}",
                           headers={"WWW-Authenticate": 'Basic realm="Stripe"'})
    return None


def _fault_response(fault: Fault) -> tuple[int, object, dict]:
    status = fault.status
    headers = {}
    if status == 429:
        body = _error_body(RATE_LIMIT_MESSAGE, code="rate_limit")
    elif status >= 500:
        body = _error_body(API_ERROR_MESSAGE, type="api_error")
        headers["Stripe-Should-Retry"] = "true"
    elif status == 401:
        body = _error_body(f"Invalid API Key provided: {_mask(API_KEY)}")
    elif status == 402:
        body = _error_body("Your card was declined.", type="card_error", code="card_declined")
    elif status == 404:
        body = _error_body("No such object.", code="resource_missing")
    elif status == 409:
        body = _error_body("This object cannot be accessed right now because another API request or Stripe process "
                           "is currently accessing it. If you see this error intermittently, retry the request.",
                           code="lock_timeout")
    else:
        body = _error_body("Injected error.")
    if fault.body is not None:
        body = fault.body
    headers.update(fault.headers or {})
    return status, body, headers


class _Closing:
    def __init__(self):
        self.event = threading.Event()


async def _wait(seconds: float, request: Request, closing: _Closing) -> bool:
    """Sleep up to `seconds`; True when the client went away (or the emulator is stopping) meanwhile."""
    deadline = time.monotonic() + seconds
    while True:
        if closing.event.is_set():
            return True
        if await request.is_disconnected():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(0.05, left))


def build_app(faults: Faults, requests: list, state: dict) -> Starlette:
    closing = _Closing()

    def respond(request: Request, status: int, body, headers: dict | None = None) -> Response:
        content = json.dumps(body, indent=2).encode() if isinstance(body, (dict, list)) else (
            body.encode() if isinstance(body, str) else body)
        out = {"Request-Id": _new_id("req"), "Stripe-Version": request.headers.get("stripe-version", API_VERSION),
               "Cache-Control": "no-cache, no-store"}
        if request.method == "POST" and request.headers.get("idempotency-key"):
            out["Idempotency-Key"] = request.headers["idempotency-key"]
        out.update(headers or {})
        return Response(content, status_code=status, headers=out, media_type="application/json")

    async def execute(request: Request, st: StripeStore, handler, path_params: dict, params: dict, raw: bytes):
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        fingerprint = _fingerprint(request.method, request.url.path, raw) if key else None
        if key:
            with st.lock:
                saved = st.idempotency.get(key)
                if saved is not None:
                    if saved["fingerprint"] != fingerprint:
                        return respond(request, 400, _error_body(IDEMPOTENCY_MISMATCH.format(key=key),
                                                                 type="idempotency_error"))
                    return respond(request, saved["status"], saved["body"],
                                   {"Idempotent-Replayed": "true", "Original-Request": saved["request_id"],
                                    **saved["headers"]})
                if key in st.idempotency_in_flight:
                    return respond(request, 409, _error_body(IDEMPOTENCY_IN_USE.format(key=key),
                                                             type="idempotency_error",
                                                             code="idempotency_key_in_use"))
                st.idempotency_in_flight.add(key)
        try:
            ctx = Ctx(request, st, state, params, path_params, key)
            try:
                status, body = await handler(ctx)
                headers: dict = {}
            except StripeError as exc:
                status, body, headers = exc.status, exc.body(), exc.headers
            response = respond(request, status, body, headers)
            if key and 200 <= status < 300:
                with st.lock:
                    st.idempotency[key] = {"fingerprint": fingerprint, "status": status, "body": body,
                                           "headers": headers, "request_id": response.headers["request-id"]}
            return response
        finally:
            if key:
                with st.lock:
                    st.idempotency_in_flight.discard(key)

    async def inspect(request: Request, st: StripeStore) -> Response:
        path = request.url.path
        q = dict(request.query_params)
        if path == "/_emulator/usage":
            return JSONResponse({"total": st.total(q.get("customer"), q.get("meter")),
                                 "by_customer": st.totals_by_customer(q.get("meter")),
                                 "by_meter": st.totals_by_meter(q.get("customer"))})
        if path == "/_emulator/meter_events":
            return JSONResponse({"data": st.events(q.get("customer"), q.get("meter"),
                                                   include_cancelled=q.get("include_cancelled") == "true")})
        if path == "/_emulator/stats":
            with st.lock:
                return JSONResponse({"calls": dict(st.calls), "rejections": dict(st.rejections),
                                     "max_concurrency": {f"{c}|{m}": n for (c, m), n in st.max_concurrent.items()}})
        return JSONResponse({"error": "unknown inspection path"}, status_code=404)

    def page(title: str, text: str) -> HTMLResponse:
        return HTMLResponse(f"<!doctype html><title>{title}</title><h1>{title}</h1><p>{text}</p>")

    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        requests.append(Recorded(request.method, request.url.path, dict(request.headers), raw))
        st = _store(state)
        path = request.url.path
        if path.startswith("/_emulator/"):
            return await inspect(request, st)
        if request.method == "GET":
            for prefix, kind, title in (("/c/pay/", "checkout.session", "Stripe Checkout (emulator)"),
                                        ("/p/session/", "billing_portal.session", "Customer portal (emulator)"),
                                        ("/i/", "invoice", "Invoice (emulator)")):
                if path.startswith(prefix):
                    obj = st.get(path[len(prefix):], kind)
                    return page(title, f"{obj['id']}") if obj else page("Not found", path)

        found = _match(request.method, path)
        if found is None:
            return respond(request, 404, _error_body(
                f"Unrecognized request URL ({request.method}: {path}). Please see https://stripe.com/docs or we can "
                "help at https://support.stripe.com/."))
        name, handler, path_params = found
        with st.lock:
            st.calls[name] += 1
        auth = _auth_error(request.headers.get("authorization", ""))
        if auth is not None:
            return respond(request, auth.status, auth.body(), auth.headers)

        fault = faults.take(name) or faults.take("*")
        delay = float(state.get("delay") or 0) + (fault.delay if fault is not None else 0.0)
        if delay and await _wait(delay, request, closing):
            return Response(status_code=499)  # the client is gone: nothing executed, nobody reads this
        if fault is not None and fault.status is not None:
            status, body, headers = _fault_response(fault)
            return respond(request, status, body, headers)
        kind = fault.kind if fault is not None else ""
        if kind == "drop":
            await _wait(DROP_HANG, request, closing)
            return Response(status_code=499)

        limit = state.get("rate_limit", DEFAULT_RATE_LIMIT)
        if limit:
            tick = time.monotonic()
            with st.lock:
                window = st.rate_window
                while window and tick - window[0] >= 1.0:
                    window.popleft()
                limited = len(window) >= int(limit)
                if limited:
                    st.rejections["rate_limit"] += 1
                else:
                    window.append(tick)
            if limited:
                return respond(request, 429, _error_body(RATE_LIMIT_MESSAGE, code="rate_limit"))

        try:
            if request.method == "POST":
                ctype = request.headers.get("content-type", "")
                if raw and "json" in ctype:
                    params = json.loads(raw)
                else:
                    params = parse_params(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
            else:
                params = parse_params(parse_qsl(request.url.query, keep_blank_values=True))
        except (ValueError, UnicodeDecodeError):
            return respond(request, 400, _error_body("Invalid request body."))

        response = await execute(request, st, handler, path_params, params, raw)
        if kind == "process_then_drop":
            await _wait(DROP_HANG, request, closing)
            return Response(status_code=499)
        if kind == "process_then_500":
            return respond(request, 500, _error_body(API_ERROR_MESSAGE, type="api_error"),
                           {"Stripe-Should-Retry": "true"})
        return response

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "DELETE"])])
    app.state.closing = closing
    return app


@contextlib.contextmanager
def emulator():
    """Serve the Stripe emulator on loopback; yields base.Emulator (url, faults, requests, state)."""
    faults, requests, state = Faults(), [], {}
    app = build_app(faults, requests, state)
    with serve(app, faults=faults, requests=requests, state=state) as emu:
        try:
            yield emu
        finally:
            app.state.closing.event.set()  # release hanging (dropped) calls so the server can stop


# ------------------------------------------------------------------------------------------------------ webhooks


def sign(payload, secret: str = WEBHOOK_SECRET, t: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe would send for `payload` (str or bytes, signed as sent)."""
    if isinstance(payload, (bytes, bytearray)):
        payload = bytes(payload).decode("utf-8")
    t = int(time.time()) if t is None else int(t)
    mac = hmac.new(secret.encode("utf-8"), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def deliver(url: str, event, secret: str = WEBHOOK_SECRET, t: int | None = None, *, headers: dict | None = None,
            timeout: float = 10.0) -> httpx.Response:
    """POST `event` (dict, or an already serialised str/bytes) to `url` as Stripe does, signed with `secret` at `t`."""
    payload = event if isinstance(event, (str, bytes)) else json.dumps(event, indent=2)
    body = payload.encode("utf-8") if isinstance(payload, str) else payload
    sent = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": sign(body, secret, t),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)", "Cache-Control": "no-cache",
            "Accept": "*/*; q=0.5, application/xml"}
    sent.update(headers or {})
    return httpx.post(url, content=body, headers=sent, timeout=timeout)


def _emu_now(emu) -> int:
    return _now(emu.state)


def make_event(emu, event_type: str, obj: dict, previous_attributes: dict | None = None) -> dict:
    """A Stripe event (snapshot payload) wrapping a copy of `obj`; stored so GET /v1/events/{id} finds it."""
    data = {"object": copy.deepcopy(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = copy.deepcopy(previous_attributes)
    event = {"id": _new_id("evt"), "object": "event", "api_version": API_VERSION, "created": _emu_now(emu),
             "data": data, "livemode": False, "pending_webhooks": 1,
             "request": {"id": None, "idempotency_key": None}, "type": event_type}
    return store(emu).put(event)


def create_subscription(emu, customer: str, price, *, status: str = "active", metadata: dict | None = None,
                        quantity: int | None = None) -> dict:
    """Create a subscription object in the emulator (`price`: a price id or a list of them)."""
    st = store(emu)
    if st.get(customer, "customer") is None:
        raise KeyError(f"no such customer {customer}")
    prices = [price] if isinstance(price, str) else list(price)
    items = [{"price": p, "quantity": quantity} for p in prices]
    return copy.deepcopy(_new_subscription(st, _emu_now(emu), customer, items, status=status, metadata=metadata))


def complete_checkout(emu, session_id: str, *, email: str | None = None) -> list:
    """Complete an open Checkout Session as a buyer would: creates the customer when the session had none, the
    subscription from its line items (metadata from subscription_data), and marks the session complete. Returns
    [customer.subscription.created, checkout.session.completed] events."""
    st = store(emu)
    now = _emu_now(emu)
    with st.lock:
        session = st.get(session_id, "checkout.session")
        if session is None:
            raise KeyError(f"no such checkout session {session_id}")
        if session["status"] != "open":
            raise ValueError(f"checkout session {session_id} is {session['status']}")
        customer_id = session["customer"]
        buyer_email = email or session["customer_email"] or "buyer@example.com"
        if customer_id is None:
            customer = st.put(_customer_obj(st, now, {"email": buyer_email}))
            customer_id = customer["id"]
        customer = st.get(customer_id, "customer")
        events = []
        if session["mode"] == "subscription":
            sub_data = st.checkout_items.get(session_id + ":subscription_data") or {}
            recurring = [i for i in st.checkout_items.get(session_id, [])
                         if (st.get(i["price"], "price") or {}).get("recurring")]
            sub = _new_subscription(st, now, customer_id, recurring, metadata=_metadata(sub_data),
                                    description=sub_data.get("description"))
            session["subscription"] = sub["id"]
            events.append(make_event(emu, "customer.subscription.created", sub))
        session.update(
            status="complete", customer=customer_id, url=None,
            payment_status="paid" if session["amount_total"] else "no_payment_required",
            customer_details={"address": None, "business_name": None, "email": customer.get("email") or buyer_email,
                              "individual_name": None, "name": customer.get("name"), "phone": None,
                              "tax_exempt": "none", "tax_ids": []})
        events.append(make_event(emu, "checkout.session.completed", session))
    return events


def subscription_created(emu, customer: str, price, **kwargs) -> dict:
    return make_event(emu, "customer.subscription.created", create_subscription(emu, customer, price, **kwargs))


def subscription_updated(emu, subscription_id: str, **changes) -> dict:
    """Apply top-level `changes` (e.g. status="past_due", cancel_at_period_end=True, metadata={...}) and return the
    customer.subscription.updated event with previous_attributes."""
    st = store(emu)
    with st.lock:
        sub = st.get(subscription_id, "subscription")
        if sub is None:
            raise KeyError(f"no such subscription {subscription_id}")
        previous = {k: copy.deepcopy(sub.get(k)) for k in changes}
        sub.update(copy.deepcopy(changes))
        return make_event(emu, "customer.subscription.updated", sub, previous)


def subscription_deleted(emu, subscription_id: str) -> dict:
    st = store(emu)
    now = _emu_now(emu)
    with st.lock:
        sub = st.get(subscription_id, "subscription")
        if sub is None:
            raise KeyError(f"no such subscription {subscription_id}")
        sub.update(status="canceled", canceled_at=sub["canceled_at"] or now, ended_at=now)
        sub["cancellation_details"]["reason"] = sub["cancellation_details"]["reason"] or "cancellation_requested"
        return make_event(emu, "customer.subscription.deleted", sub)


def create_invoice(emu, subscription_id: str, *, period_start: int | None = None, period_end: int | None = None,
                   amount_due: int | None = None, advance_period: bool = False) -> dict:
    """A draft invoice for the subscription's current period (or the one given): metered lines priced from the accepted
    usage in [period_start, period_end) × the price's unit_amount_decimal (cents), rounded half-up; licensed lines
    unit_amount × quantity. `amount_due` overrides the total. advance_period=True moves the subscription's items to the
    next period (as a billing cycle does)."""
    st = store(emu)
    now = _emu_now(emu)
    with st.lock:
        sub = st.get(subscription_id, "subscription")
        if sub is None:
            raise KeyError(f"no such subscription {subscription_id}")
        inv = _build_invoice(st, emu.url, now, sub, period_start=period_start, period_end=period_end,
                             amount_due=amount_due)
        st.put(inv)
        sub["latest_invoice"] = inv["id"]
        if advance_period:
            for item in sub["items"]["data"]:
                rec = item["price"]["recurring"] or {"interval": "month", "interval_count": 1}
                item["current_period_start"] = item["current_period_end"]
                item["current_period_end"] = _period_end(item["current_period_start"], rec["interval"],
                                                         int(rec["interval_count"]))
        return copy.deepcopy(inv)


def _get_invoice(st: StripeStore, invoice_id: str) -> dict:
    inv = st.get(invoice_id, "invoice")
    if inv is None:
        raise KeyError(f"no such invoice {invoice_id}")
    return inv


def invoice_finalized(emu, invoice_id: str) -> dict:
    st = store(emu)
    now = _emu_now(emu)
    with st.lock:
        inv = _get_invoice(st, invoice_id)
        if inv["status"] == "draft":
            customer = st.get(inv["customer"], "customer") or {}
            seq = customer.get("next_invoice_sequence", 1)
            if customer:
                customer["next_invoice_sequence"] = seq + 1
            inv.update(status="open", number=f"{customer.get('invoice_prefix', 'EMU')}-{seq:04d}",
                       hosted_invoice_url=f"{emu.url}/i/{inv['id']}", invoice_pdf=f"{emu.url}/i/{inv['id']}/pdf",
                       effective_at=now, ending_balance=0, auto_advance=True)
            inv["status_transitions"]["finalized_at"] = now
        return make_event(emu, "invoice.finalized", inv)


def invoice_paid(emu, invoice_id: str) -> dict:
    st = store(emu)
    now = _emu_now(emu)
    with st.lock:
        inv = _get_invoice(st, invoice_id)
        if inv["status"] == "draft":
            invoice_finalized(emu, invoice_id)
        inv.update(status="paid", amount_paid=inv["amount_due"], amount_remaining=0, attempted=True,
                   attempt_count=inv["attempt_count"] + 1, next_payment_attempt=None)
        inv["status_transitions"]["paid_at"] = now
        sub_id = ((inv.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        sub = st.get(sub_id, "subscription") if sub_id else None
        if sub is not None and sub["status"] in ("past_due", "unpaid", "incomplete"):
            sub["status"] = "active"
        return make_event(emu, "invoice.paid", inv)


def invoice_payment_failed(emu, invoice_id: str) -> dict:
    st = store(emu)
    now = _emu_now(emu)
    with st.lock:
        inv = _get_invoice(st, invoice_id)
        if inv["status"] == "draft":
            invoice_finalized(emu, invoice_id)
        inv.update(attempted=True, attempt_count=inv["attempt_count"] + 1, next_payment_attempt=now + 3 * 86400)
        sub_id = ((inv.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        sub = st.get(sub_id, "subscription") if sub_id else None
        if sub is not None and sub["status"] == "active":
            sub["status"] = "past_due"
        return make_event(emu, "invoice.payment_failed", inv)
