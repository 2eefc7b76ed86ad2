"""Request-scoped logging: the request id on every record, one access line per API request, LOG_FORMAT=json.

LOG_FORMAT (settings.py): `text` (the default: one human-readable line per record) or `json` (one JSON object per
line, python-json-logger's JsonFormatter: `time`, `level`, `logger`, `message`, then every field below and any
`extra=`; an exception's traceback in `exc_info`). Either way every record logged while a request is served carries
its `request_id` (a context variable the request-id middleware sets; config/http/middleware.py), so an error line
names the request the client saw in its `x-request-id` header.

The access line (logger `imagegate.access`, INFO): one per API request (/v1 and image URLs), with the fields
request_id, method, path, endpoint, status, latency_ms, organization_id, key_prefix, model, provider,
cost_micros (micro-USD charged by this request: 0 for failures and replays).
"""
from __future__ import annotations

import contextvars
import logging

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

access_log = logging.getLogger("imagegate.access")

FORMATS = ("text", "json")
ACCESS_FIELDS = ("request_id", "method", "path", "endpoint", "status", "latency_ms", "organization_id", "key_prefix",
                 "model", "provider", "cost_micros")


class RequestIdFilter(logging.Filter):
    """Puts the id of the request being served (if any) on the record as `request_id`, unless it has one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            # Django's own request log (django.request, e.g. "Service Unavailable: ...") is written after the
            # middleware returned, with the request on the record.
            request_id = current_request_id.get() or getattr(getattr(record, "request", None), "request_id", None)
            if request_id is not None:
                record.request_id = request_id
        return True


class TextFormatter(logging.Formatter):
    """The human-readable default: `time level logger message`, then `[request_id]` when the record has one."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id and request_id not in record.getMessage():
            first, sep, rest = line.partition("\n")
            line = f"{first} [{request_id}]{sep}{rest}"
        return line


def json_formatter():
    """python-json-logger's formatter with our field names (LOGGING's `()` factory)."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                         timestamp=False)


def logging_config(*, log_format: str, level: str) -> dict:
    """settings.LOGGING for LOG_FORMAT `text` or `json`. uvicorn's own loggers go through the same handler, so a
    JSON deployment writes JSON only (access lines are ours: uvicorn runs with --no-access-log)."""
    if log_format not in (*FORMATS, "plain"):  # plain: another word for text
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")
    formatter = {"()": json_formatter} if log_format == "json" else {"()": TextFormatter}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"request_id": {"()": RequestIdFilter}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "default",
                                 "filters": ["request_id"]}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.request": {"level": "ERROR"},
            # uvicorn's start-up lines and ASGI errors. Not its parent "uvicorn": configuring it would reset its child
            # uvicorn.access (logging.config does so to a configured logger's children) and undo --no-access-log.
            "uvicorn.error": {"handlers": ["console"], "level": level, "propagate": False},
        },
    }


def log_request(fields: dict) -> None:
    """The access line of one API request (`fields`: ACCESS_FIELDS)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "%s %s %s %dms org=%s key=%s model=%s provider=%s cost_micros=%s",
        fields["method"], fields["path"], fields["status"], fields["latency_ms"], fields["organization_id"],
        fields["key_prefix"], fields["model"], fields["provider"], fields["cost_micros"], extra=fields)
