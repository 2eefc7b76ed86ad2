"""E-mail identity: the one rule by which two spellings are the same person's address.

`normalize_email` is used by every lookup and every write of a user's address: sign-up and login (allauth, through
accounts/adapter.py and accounts/forms.py), invitations and their acceptance, and the management commands
(accounts/services.py). The rule:
  * surrounding whitespace is removed;
  * Unicode is composed (NFC): "é" typed as e + a combining accent is the same address as "é";
  * the whole address is lower-cased with str.lower(), as allauth and nearly every mail system treat it.
It deliberately goes no further, so it never folds two different addresses into one: no compatibility mapping (NFKC
would make a full-width "ｂｏｂ" the ASCII "bob"), no case folding (casefold() turns "ß" into "ss", another
mailbox), no provider rules (dots and +tags are part of an address). The users table stores the normalized form,
unique in the database (and case-insensitively so, as a guard for rows written around this module).
"""
import unicodedata


def normalize_email(raw: str | None) -> str:
    """The stored form of an e-mail address ("" for nothing); see the module docstring."""
    return unicodedata.normalize("NFC", (raw or "").strip()).lower()
