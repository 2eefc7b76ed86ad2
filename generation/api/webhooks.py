"""/v1/webhook_endpoints: an organization's webhook endpoints for async job events (generation/pipeline/webhooks.py).

    POST   /v1/webhook_endpoints                       {"url", "description"?, "enabled_events"?} → the endpoint
                                                       with its `secret` (shown this once)
    GET    /v1/webhook_endpoints                       {"object": "list", "data": [...], "has_more": false}
    GET    /v1/webhook_endpoints/{id}                  the endpoint (no secret)
    DELETE /v1/webhook_endpoints/{id}                  {"id", "object": "webhook_endpoint", "deleted": true}
    POST   /v1/webhook_endpoints/{id}/rotate_secret    the endpoint with its new `secret`; the old one signs too for
                                                       24 hours

All need the `images.generate` scope (the scope that creates the jobs the events are about). Another organization's
endpoint is a 404, as an unknown one is.
"""
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from generation.api.base import V1APIView
from generation.api.jobs import GeneratesImages
from generation.errors import InvalidRequest, NotFound
from generation.pipeline import webhooks


def _not_found(endpoint_id: str) -> NotFound:
    """404 for an unknown or another organization's endpoint (the id is not echoed)."""
    return NotFound("No webhook endpoint of your organization has this id.", param="id", code="not_found")


class WebhookEndpointListView(V1APIView):
    """GET (list) and POST (create) /v1/webhook_endpoints."""

    permission_classes = [IsAuthenticated, GeneratesImages]

    def get(self, request):
        found = webhooks.endpoints(request.user.organization)
        return Response({"object": "list", "data": [webhooks.as_object(e) for e in found], "has_more": False})

    def post(self, request):
        data = request.data if isinstance(request.data, dict) else {}
        unknown = sorted(set(data) - {"url", "description", "enabled_events"})
        if unknown:
            raise InvalidRequest(f"Unknown parameter: '{unknown[0][:60]}'. This endpoint takes: url, description, "
                                 "enabled_events.", param=unknown[0][:60], code="unknown_parameter")
        if "url" not in data:
            raise InvalidRequest("Missing required parameter: 'url'.", param="url", code="missing_required_parameter")
        try:
            endpoint = webhooks.create_endpoint(request.user.organization, url=data.get("url"),
                                                description=data.get("description") or "",
                                                enabled_events=data.get("enabled_events"))
        except webhooks.EndpointError as exc:
            raise InvalidRequest(exc.message, param=exc.param) from exc
        return Response(webhooks.as_object(endpoint, with_secret=True))


class WebhookEndpointDetailView(V1APIView):
    """GET and DELETE /v1/webhook_endpoints/{id}."""

    permission_classes = [IsAuthenticated, GeneratesImages]

    def get(self, request, endpoint_id: str):
        try:
            return Response(webhooks.as_object(webhooks.get_endpoint(request.user.organization, endpoint_id)))
        except webhooks.EndpointNotFound as exc:
            raise _not_found(endpoint_id) from exc

    def delete(self, request, endpoint_id: str):
        try:
            webhooks.delete_endpoint(request.user.organization, endpoint_id)
        except webhooks.EndpointNotFound as exc:
            raise _not_found(endpoint_id) from exc
        return Response({"id": endpoint_id, "object": "webhook_endpoint", "deleted": True})


class WebhookEndpointRotateView(V1APIView):
    """POST /v1/webhook_endpoints/{id}/rotate_secret."""

    permission_classes = [IsAuthenticated, GeneratesImages]

    def post(self, request, endpoint_id: str):
        try:
            endpoint = webhooks.rotate_secret(request.user.organization, endpoint_id)
        except webhooks.EndpointNotFound as exc:
            raise _not_found(endpoint_id) from exc
        return Response(webhooks.as_object(endpoint, with_secret=True))
