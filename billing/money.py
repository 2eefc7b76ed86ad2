"""THE money formatter: every page, export, admin column and API amount formats micro-USD here (docs/decisions.md §33).

Money is an integer number of micro-dollars (1 USD = 1,000,000 micro-USD) everywhere in the data; it turns into text
only through the functions below, in one of two forms:

* `usd(micros)` — what people read (pages, messages): dollars with cents, and more decimals only when the amount
  is not a whole number of cents, so a sub-cent price or cost is shown exactly and never rounded away:
  40_000 → "$0.04", 3_000 → "$0.003", 12_340_000 → "$12.34", 1_234_567 → "$1.234567", 0 → "$0.00",
  -5_000 → "−$0.005" (a minus sign). Thousands are grouped: "$1,234.50".
* `exact(micros)` — what machines and auditors read (CSV exports, the ledger admin, the usage API): a plain decimal
  with exactly six places and no symbol, "0.003000", so a column lines up to the micro-dollar and parses as a number.
  `exact_decimal` is the same value as a Decimal (for JSON numbers); `api_number` is it as a float, the /v1
  image responses' `usage.cost`, quotes and model prices (OpenAI's SDKs read a number there).

Stripe amounts are integer cents (`usd_cents`); `round_to_cents` is how a micro-USD total becomes what Stripe bills.
"""
from decimal import ROUND_HALF_UP, Decimal

MICROS_PER_USD = 1_000_000
MICROS_PER_CENT = 10_000
_SIX = Decimal("0.000001")
EMPTY = "—"


def exact_decimal(micros: int) -> Decimal:
    """Integer micro-USD → USD as a Decimal with exactly six decimal places (Decimal("0.003000"))."""
    return (Decimal(int(micros)) / MICROS_PER_USD).quantize(_SIX)


def api_number(micros: int) -> float:
    """Integer micro-USD → USD as a JSON number with at most six decimals (3_000 → 0.003)."""
    return float(exact_decimal(micros))


def from_usd(amount: float) -> int:
    """USD (a client's number) → integer micro-USD, rounded down to the micro-dollar (0.0000019 → 1)."""
    return int(Decimal(repr(float(amount))) * MICROS_PER_USD)


def exact(micros: int | None) -> str:
    """Integer micro-USD → "0.003000" (six decimals, no symbol); "" for None. For CSV, the admin and audits."""
    if micros is None:
        return ""
    return f"{exact_decimal(micros):f}"


def usd(micros: int | None) -> str:
    """Integer micro-USD → "$12.34", or "$0.003" when the amount has sub-cent digits (never rounded); "—" for None.

    At least two decimals, at most six, trailing zeros beyond the cents dropped."""
    if micros is None or micros == "":
        return EMPTY
    micros = int(micros)
    sign = "−" if micros < 0 else ""
    dollars = exact_decimal(abs(micros))
    text = f"{dollars:,f}"  # six decimals, grouped thousands
    whole, frac = text.split(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{frac}"


def usd_cents(cents: int | None) -> str:
    """Integer US cents (Stripe's unit) → "$12.34"; "—" for None."""
    if cents is None or cents == "":
        return EMPTY
    return usd(int(cents) * MICROS_PER_CENT)


def round_to_cents(micros: int) -> int:
    """Micro-USD rounded half-up to a whole cent, still in micro-USD: what a Stripe invoice line for this usage
    amounts to (Stripe bills whole cents; our meter counts micro-dollars, docs/decisions.md §33)."""
    cents = (Decimal(int(micros)) / MICROS_PER_CENT).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(cents) * MICROS_PER_CENT


def dollars_for_input(micros: int | None) -> Decimal | None:
    """Micro-USD → a Decimal of dollars for a form field's initial value (Decimal("5.5")); None stays None."""
    if micros is None:
        return None
    return exact_decimal(micros).normalize()
