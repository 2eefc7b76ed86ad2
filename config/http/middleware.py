"""Every response carries an `x-request-id`; the same id names the ledger row and the log lines."""
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from config.observability.logs import current_request_id


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


class RequestIdMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        request.request_id = new_request_id()
        token = current_request_id.set(request.request_id)  # every log record of the request names it (logs.py)
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        response["x-request-id"] = request.request_id
        return response

    async def _acall(self, request):
        request.request_id = new_request_id()
        token = current_request_id.set(request.request_id)
        try:
            response = await self.get_response(request)
        finally:
            current_request_id.reset(token)
        response["x-request-id"] = request.request_id
        return response


class RefuseNulMiddleware:
    """400 for a page request whose query string or form fields contain NUL: no text column can store it
    (PostgreSQL refuses it outright), and no form or filter means it. Django's form fields refuse it themselves;
    this covers what reaches queries without a form (the admin's list filters, search, query parameters). Also the
    admin's date drill-down parameters, which Django turns into a date without catching an overflow."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.http import HttpResponseBadRequest

        for values in (request.GET, request.POST if request.method == "POST" else {}):
            for key in values:
                if "\x00" in key or any("\x00" in v for v in values.getlist(key)):
                    return HttpResponseBadRequest("Text may not contain NUL (\\x00) characters.",
                                                  content_type="text/plain; charset=utf-8")
        if request.path.startswith("/admin/") and not _dates_in_range(request.GET):
            # The admin's date drill-down (?created_at__year=...) builds a date from these and does not catch an
            # overflow; answer as it does for any other wrong lookup: the list without filters, flagged (?e=1).
            from django.http import HttpResponseRedirect

            return HttpResponseRedirect(request.path + "?e=1")
        return self.get_response(request)


_DATE_PARTS = {"__year": (1, 9999), "__month": (1, 12), "__day": (1, 31)}


def _dates_in_range(params) -> bool:
    for key in params:
        for suffix, (low, high) in _DATE_PARTS.items():
            if key.endswith(suffix):
                value = params.get(key, "")
                if not (value.isdigit() and len(value) <= 4 and low <= int(value) <= high):
                    return False
    return True
