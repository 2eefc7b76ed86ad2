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
