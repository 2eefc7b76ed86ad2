"""API key format and hashing, kept apart so nothing else needs to know how a key is built.

A key looks like `ig_Ab3dE6gH_<43 url-safe characters>`: the first 11 characters are the public prefix that
finds the row; the rest is 256 bits from `secrets`. Because the secret is high-entropy, one SHA-256 is enough
(a slow password hasher would only add latency to every API call; there is nothing to brute-force).
"""
import hashlib
import hmac
import secrets
import string

KEY_PREFIX = "ig_"
PREFIX_LENGTH = len(KEY_PREFIX) + 8
_ALPHABET = string.ascii_letters + string.digits


def new_prefix() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LENGTH - len(KEY_PREFIX)))


def build_key(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def split_prefix(raw_key: str) -> str | None:
    """The prefix of a well-formed key, or None."""
    if len(raw_key) < PREFIX_LENGTH + 2 or not raw_key.startswith(KEY_PREFIX) or raw_key[PREFIX_LENGTH] != "_":
        return None
    return raw_key[:PREFIX_LENGTH]


def matches(raw_key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(raw_key), stored_hash)


# What a key may do (OpenAI's "restricted keys", in our two resources). New keys get every scope, as OpenAI's "All".
SCOPE_GENERATE = "images.generate"
SCOPE_USAGE = "usage.read"
SCOPES = {
    SCOPE_GENERATE: "Generate, edit and vary images (/v1/images/*)",
    SCOPE_USAGE: "Read the organization's usage and costs (/v1/organization/*)",
}


def all_scopes() -> list[str]:
    return list(SCOPES)


def normalize_scopes(scopes) -> list[str]:
    """Scopes as stored: known ones, de-duplicated, in SCOPES order; ValueError for an unknown or an empty set."""
    wanted = {str(s).strip() for s in (scopes or []) if str(s).strip()}
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(f"Unknown scope '{unknown[0][:40]}'. Scopes: {', '.join(SCOPES)}.")
    if not wanted:
        raise ValueError(f"A key needs at least one scope: {', '.join(SCOPES)}.")
    return [s for s in SCOPES if s in wanted]
