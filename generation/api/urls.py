"""The /v1 API, one route per endpoint (each endpoint family is a module of generation/api/)."""
from django.urls import path, re_path
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiJsonRenderer2
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework.permissions import AllowAny

from generation.api import base, images, jobs, model_list, openapi, organization, quote, webhooks  # noqa: F401  (importing openapi attaches the schema to the views)

urlpatterns = [
    path("images/generations", images.ImageGenerationsView.as_view(), name="images-generations"),
    path("images/edits", images.ImageEditsView.as_view(), name="images-edits"),
    path("images/variations", images.ImageVariationsView.as_view(), name="images-variations"),
    path("images/quote", quote.QuoteView.as_view(), name="images-quote"),
    path("images/jobs", jobs.ImageJobListView.as_view(), name="images-jobs"),
    path("images/jobs/<str:job_id>", jobs.ImageJobDetailView.as_view(), name="images-job"),
    path("images/jobs/<str:job_id>/cancel", jobs.ImageJobCancelView.as_view(), name="images-job-cancel"),
    path("webhook_endpoints", webhooks.WebhookEndpointListView.as_view(), name="webhook-endpoints"),
    path("webhook_endpoints/<str:endpoint_id>", webhooks.WebhookEndpointDetailView.as_view(),
         name="webhook-endpoint"),
    path("webhook_endpoints/<str:endpoint_id>/rotate_secret", webhooks.WebhookEndpointRotateView.as_view(),
         name="webhook-endpoint-rotate"),
    path("models", model_list.ModelListView.as_view(), name="models-list"),
    path("models/<path:model_id>", model_list.ModelDetailView.as_view(), name="models-detail"),
    path("organization/usage/images", organization.UsageImagesView.as_view(), name="organization-usage-images"),
    path("organization/costs", organization.CostsView.as_view(), name="organization-costs"),
    path("organization/usage/records", organization.UsageRecordsView.as_view(), name="organization-usage-records"),
    # The OpenAPI description of /v1 (generation/api/openapi.py): public, no key needed; application/json unless the
    # client asks for application/vnd.oai.openapi+json.
    path("openapi.json", SpectacularJSONAPIView.as_view(
        permission_classes=[AllowAny], authentication_classes=[], throttle_classes=[],
        renderer_classes=[OpenApiJsonRenderer2, OpenApiJsonRenderer]), name="openapi-schema"),
]

# Anything else under /v1 is an unknown URL, answered in the error envelope (also with DEBUG on).
urlpatterns.append(re_path(r"^.*$", base.unknown_url, name="unknown-url"))
