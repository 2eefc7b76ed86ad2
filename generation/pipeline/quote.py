"""What an image request would cost, known before it runs: the price behind `max_cost`, POST /v1/images/quote and
the price list on /v1/models/{id}.

A request names one size and one quality, or "auto" for either (GPT image models: the upstream picks). A quote is
the list price (billing's Price rows, micro-USD per image) for what was named; for "auto" it is the range over every
size and quality the model can produce, and the dearest outcome is what `max_cost` is held to, so a ceiling is never
passed whatever the upstream picks. Nothing here calls an upstream, writes a row or holds spend.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

from billing import money
from billing import selectors as billing_selectors
from generation import catalog
from generation.errors import APIError, InvalidRequest, ServerError

usd = money.api_number  # integer micro-USD → USD as a JSON number (billing/money.py)


@dataclass(frozen=True)
class Quote:
    """The price of n images of `model` at `size` and `quality` (either may be "auto"), in micro-USD per image:
    `low_micros` (cheapest outcome) to `high_micros` (dearest); equal unless something is "auto"."""

    model: str
    size: str
    quality: str
    n: int
    low_micros: int
    high_micros: int
    price_version: str  # the newest effective_from among the prices used (ISO 8601, UTC)

    @property
    def cost_micros(self) -> int:
        """The most the request can cost: the dearest outcome × n."""
        return self.high_micros * self.n

    def as_json(self) -> dict:
        """POST /v1/images/quote's answer (USD as numbers; `range` only when an outcome is left to the upstream)."""
        body = {
            "object": "image.quote",
            "model": self.model,
            "size": self.size,
            "quality": self.quality,
            "n": self.n,
            "currency": "usd",
            "unit_price": usd(self.high_micros),
            "cost": usd(self.cost_micros),
            "price_version": self.price_version,
        }
        if self.low_micros != self.high_micros:
            body["range"] = {"min": usd(self.low_micros * self.n), "max": usd(self.cost_micros),
                             "unit_min": usd(self.low_micros), "unit_max": usd(self.high_micros)}
        return body


def outcomes(spec: catalog.ModelSpec, size: str, quality: str) -> list[tuple[str, str]]:
    """Every (size, quality) a request for `size` and `quality` can end as."""
    sizes = [s for s in spec.sizes if s != "auto"] if size == "auto" else [size]
    qualities = [q for q in spec.qualities if q != "auto"] if quality == "auto" else [quality]
    return [(s, q) for s in sizes for q in qualities]


async def quote(spec: catalog.ModelSpec, *, size: str, quality: str, n: int) -> Quote:
    """The quote for a validated request. ServerError 503 `model_unavailable` when an outcome has no price (we
    never serve what we could not charge for)."""
    prices = []
    for s, q in outcomes(spec, size, quality):
        price = await billing_selectors.current_price_async(model=spec.id, size=s, quality=q)
        if price is None:
            raise ServerError(f"Model '{spec.id}' is not available at size {s} and quality {q} right now "
                              "(no price is configured).", status=503, code="model_unavailable")
        prices.append(price)
    newest = max(p.effective_from for p in prices).astimezone(UTC)
    return Quote(model=spec.id, size=size, quality=quality, n=n,
                 low_micros=min(p.unit_price_micros for p in prices),
                 high_micros=max(p.unit_price_micros for p in prices),
                 price_version=newest.strftime("%Y-%m-%dT%H:%M:%SZ"))


# --- max_cost ---------------------------------------------------------------------------------------------------------

MAX_COST_LIMIT_USD = 1_000_000  # a ceiling above this is a typo, not a budget


def parse_max_cost(value) -> int | None:
    """`max_cost` (USD: a JSON number, or a decimal string from a multipart form) → micro-USD, rounded down;
    None when absent. InvalidRequest for anything that is not a positive amount up to MAX_COST_LIMIT_USD."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        value = None
    try:
        amount = float(value) if isinstance(value, (int, float, str)) and len(str(value)) <= 32 else None
    except ValueError:
        amount = None
    if amount is None or not (0 < amount <= MAX_COST_LIMIT_USD):
        raise InvalidRequest(f"Invalid 'max_cost': {str(value)[:40]!r}. It must be a positive number of US dollars "
                             f"up to {MAX_COST_LIMIT_USD:,}.", param="max_cost", code="invalid_parameter")
    return money.from_usd(amount)


class CostLimitExceeded(APIError):
    """400 `cost_limit_exceeded`: the request's price passes its ceiling (the request's `max_cost`, else the key's
    default); nothing was generated or charged."""

    def __init__(self, q: Quote, ceiling_micros: int, *, source: str):
        outcome = (f"up to ${money.exact(q.cost_micros)} (the dearest outcome of size {q.size} and quality "
                   f"{q.quality})" if q.low_micros != q.high_micros else f"${money.exact(q.cost_micros)}")
        what = "max_cost" if source == "request" else "this API key's default max_cost"
        super().__init__(
            f"This request would cost {outcome} for {q.n} image(s) of '{q.model}' at ${money.exact(q.high_micros)} "
            f"each, more than {what} of ${money.exact(ceiling_micros)}. Nothing was generated or charged.",
            param="max_cost" if source == "request" else None, code="cost_limit_exceeded")


def check_ceiling(q: Quote, *, max_cost_micros: int | None, key_default_micros: int | None) -> None:
    """CostLimitExceeded when the dearest outcome passes the request's `max_cost`, else the key's default."""
    if max_cost_micros is not None:
        if q.cost_micros > max_cost_micros:
            raise CostLimitExceeded(q, max_cost_micros, source="request")
    elif key_default_micros and q.cost_micros > key_default_micros:
        raise CostLimitExceeded(q, key_default_micros, source="key")
