"""Model lifecycle: whether a catalog model is active, deprecated or retired, and what that does to a request.

The data is `generation.models.ModelLifecycle` (one row per catalog model id; staff edit it in the admin; seeded by
migration 0007; rows missing for a catalog model are created as active after every migrate). The request path reads
the whole table from a per-process cache (config/process_cache.py, namespace "model_lifecycle"): a hit costs no
I/O, and any save or delete of a row drops it in every process within a second. What a model is (sizes, providers)
stays in generation/catalog.py: this module only says whether and how it is served.

- active: served as always.
- deprecated: served, with `Deprecation: @<unix seconds>` (RFC 9745), `Sunset: <HTTP-date>` (RFC 8594) and, when
  the row has an info URL, `Link: <url>; rel="deprecation"` (RFC 9745 section 3); /v1/models says so. A deprecated
  model whose sunset has passed counts as retired.
- retired: 404 `model_not_found` naming the replacement; for an organization with `remap_retired_models` on, the
  replacement serves the request at its own price, with `x-model-remapped: <requested> -> <served>`, and the ledger
  row records both (requested_model, model).

Sources of the header formats: RFC 9745 "The Deprecation HTTP Response Header Field" (2025; structured-field date
`@<seconds>`), RFC 8594 "The Sunset HTTP Header Field" (2019; an HTTP-date). See docs/models.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import cached_property

from django.utils import timezone

from config import process_cache
from generation.errors import APIError

ACTIVE, DEPRECATED, RETIRED = "active", "deprecated", "retired"
REMAPPED_HEADER = "x-model-remapped"
MAX_HOPS = 5  # a replacement may itself be retired; follow at most this many

_cache = process_cache.ProcessCache("model_lifecycle")


@dataclass(frozen=True)
class Lifecycle:
    """One model's lifecycle (times are aware datetimes or None; `replacement` is a model id or "")."""

    model: str
    status: str = ACTIVE
    deprecated_at: datetime | None = None
    sunset_at: datetime | None = None
    replacement: str = ""
    info_url: str = ""

    def effective_status(self, now: datetime | None = None) -> str:
        """`status`, except that a deprecated model whose sunset has passed is retired."""
        if self.status == DEPRECATED and self.sunset_at is not None and self.sunset_at <= (now or timezone.now()):
            return RETIRED
        return self.status

    def headers(self) -> dict[str, str]:
        """The response headers of a request this model served: {} unless deprecated. Deprecation is RFC 9745's
        structured date `@<unix seconds>`; Sunset RFC 8594's HTTP-date (IMF-fixdate, GMT); Link only with a URL.
        Formatted once per cached row (a fresh dict each call)."""
        return dict(self._headers)

    @cached_property
    def _headers(self) -> dict[str, str]:
        if self.status == ACTIVE:
            return {}
        headers = {}
        if self.deprecated_at is not None:
            headers["Deprecation"] = f"@{int(self.deprecated_at.timestamp())}"
        if self.sunset_at is not None:
            headers["Sunset"] = format_datetime(self.sunset_at.astimezone(UTC), usegmt=True)
        if self.info_url:
            headers["Link"] = f'<{self.info_url}>; rel="deprecation"'
        return headers

    def model_fields(self) -> dict:
        """The extra keys of /v1/models' model object: status, deprecation_date and sunset_date (unix seconds or
        null, as `created`), replacement (a model id or null)."""
        return {
            "status": self.effective_status(),
            "deprecation_date": int(self.deprecated_at.timestamp()) if self.deprecated_at else None,
            "sunset_date": int(self.sunset_at.timestamp()) if self.sunset_at else None,
            "replacement": self.replacement or None,
        }


class ModelRetired(APIError):
    """404 `model_not_found` for a retired model (or one no upstream serves any longer), naming the replacement."""

    status = 404
    code = "model_not_found"

    def __init__(self, model: str, replacement: str = "", *, reason: str = "has been retired"):
        use = (f" Use '{replacement}' instead, or turn on “Serve retired models with their replacement” in your "
               "organization's settings to have it serve these requests." if replacement else "")
        super().__init__(f"The model '{model}' {reason} and is no longer served.{use} GET /v1/models lists the "
                         "models you can use.", param="model")
        self.replacement = replacement


def _load(_key) -> dict[str, Lifecycle]:
    from generation.models import ModelLifecycle

    return {row.model: Lifecycle(model=row.model, status=row.status, deprecated_at=row.deprecated_at,
                                 sunset_at=row.sunset_at, replacement=row.replacement, info_url=row.info_url)
            for row in ModelLifecycle.objects.all()}


def table() -> dict[str, Lifecycle]:
    """Every model's lifecycle by id, from the per-process cache (sync callers: pages, /v1/models)."""
    return _cache.get("all", _load)


async def atable() -> dict[str, Lifecycle]:
    """The same, for the request path: a cache hit costs no I/O; a miss loads on a database thread."""
    return await _cache.aget("all", _load)


def of(model_id: str, lifecycles: dict[str, Lifecycle]) -> Lifecycle:
    """`model_id`'s lifecycle; a model without a row is active."""
    return lifecycles.get(model_id) or Lifecycle(model=model_id)


# The seed (migration 0007 and every later migrate): OpenAI retired dall-e-2 and dall-e-3 on 2026-05-12 (the installed
# openai SDK's ImageModel docstring: "This model was retired on May 12, 2026. Use a GPT image model instead.";
# ../shared/REFERENCE.md section 8; docs/providers/openai.md O1, O4, O5). We keep serving them, deprecated, through
# OpenAI-compatible hosts until our own sunset a year later (docs/models.md); staff may move it in the admin.
OPENAI_DALL_E_RETIRED = datetime(2026, 5, 12, tzinfo=UTC)
DALL_E_SUNSET = datetime(2027, 5, 12, tzinfo=UTC)
_DALL_E = dict(status=DEPRECATED, deprecated_at=OPENAI_DALL_E_RETIRED, sunset_at=DALL_E_SUNSET,
               replacement="gpt-image-1", info_url="https://developers.openai.com/api/docs/deprecations",
               note="OpenAI retired this model on 2026-05-12 (openai SDK ImageModel; REFERENCE.md section 8). Served "
                    "through OpenAI-compatible hosts (provider openai_compatible) until our sunset.")
SEED: dict[str, dict] = {"dall-e-2": _DALL_E, "dall-e-3": _DALL_E}


def seed_rows(model_class, using: str = "default") -> int:
    """Create the row of every catalog model that has none: the SEED's values, else active. Existing rows (staff's
    edits) are left alone. `model_class` is ModelLifecycle (or its historical version in a migration). Returns how
    many rows were created."""
    from generation import catalog

    have = set(model_class.objects.using(using).values_list("model", flat=True))
    missing = [model_class(model=m, **SEED.get(m, {})) for m, spec in catalog.MODELS.items()
               if m not in have and spec.owned_by != "self-hosted"]
    model_class.objects.using(using).bulk_create(missing, ignore_conflicts=True)
    return len(missing)


def ensure_rows(using: str = "default") -> int:
    """seed_rows for the live model (run after every migrate, flushes included): every catalog model has a status
    staff can see and change."""
    from generation.models import ModelLifecycle

    created = seed_rows(ModelLifecycle, using)
    if created:
        invalidate()
    return created


def invalidate() -> None:
    """Every process re-reads the lifecycle table within a second (saves and deletes through the ORM do this)."""
    process_cache.invalidate("model_lifecycle")


@dataclass(frozen=True)
class Resolution:
    """What serves a request for `requested`: `served` (== requested unless remapped) and its lifecycle."""

    requested: str
    served: str
    lifecycle: Lifecycle

    @property
    def remapped(self) -> bool:
        return self.served != self.requested

    def headers(self) -> dict[str, str]:
        """Deprecation/Sunset/Link of the served model, and x-model-remapped ("<requested> -> <served>")."""
        headers = self.lifecycle.headers()
        if self.remapped:
            headers[REMAPPED_HEADER] = f"{self.requested} -> {self.served}"
        return headers


def resolve(requested: str, lifecycles: dict[str, Lifecycle], *, remap: bool,
            exists=lambda model_id: True) -> Resolution:
    """Resolve a request for `requested`: itself unless retired; a retired model raises ModelRetired, or, when
    `remap` is on and its replacement `exists` (a catalog model served here), resolves to the replacement (and on,
    while that is retired too, at most MAX_HOPS times)."""
    current, seen = requested, {requested}
    for _ in range(MAX_HOPS + 1):
        lc = of(current, lifecycles)
        if lc.effective_status() != RETIRED:
            return Resolution(requested=requested, served=current, lifecycle=lc)
        replacement = lc.replacement
        if not remap or not replacement or replacement in seen or not exists(replacement):
            raise ModelRetired(current if current == requested else requested, replacement)
        seen.add(replacement)
        current = replacement
    raise ModelRetired(requested, "")
