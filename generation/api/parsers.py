"""The API's JSON parser: DRF's, made strict about what PostgreSQL and UTF-8 cannot carry.

A body that nests absurdly deep (RecursionError), or whose strings hold a lone surrogate escape ("\\ud800", valid
JSON but not encodable as UTF-8) or a NUL character (PostgreSQL text cannot store it), is refused as a parse error
(400) instead of failing later, when the prompt is rendered or the ledger row written.
"""
import codecs
import json

from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.mediatypes import media_type_matches  # noqa: F401  (kept for DRF parity)

MAX_DEPTH = 32


def _check(value, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ParseError(f"JSON parse error - the body nests deeper than {MAX_DEPTH} levels.")
    if isinstance(value, str):
        _check_string(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_string(key)
            _check(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise ParseError("JSON parse error - strings must not contain NUL (\\u0000) characters.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ParseError("JSON parse error - the body contains an invalid Unicode escape (a lone surrogate such as "
                         "\\ud800); strings must be valid UTF-8.") from None


def parse_json(raw: bytes):
    """The JSON document in `raw` (UTF-8), checked as above; ParseError otherwise."""
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"JSON parse error - {exc}") from None
    except RecursionError:
        raise ParseError(f"JSON parse error - the body nests deeper than {MAX_DEPTH} levels.") from None
    _check(data)
    return data


class StrictJSONParser(BaseParser):
    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", "utf-8")
        try:
            data = json.load(codecs.getreader(encoding)(stream), parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            raise ParseError(f"JSON parse error - the body nests deeper than {MAX_DEPTH} levels.") from None
        _check(data)
        return data


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")
