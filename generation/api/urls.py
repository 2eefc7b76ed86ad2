from django.urls import path, re_path
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiJsonRenderer2
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework.permissions import AllowAny

from generation.api import organization as audit_views, openapi, views  # noqa: F401  (importing openapi attaches the schema to the views)

urlpatterns = [
    path("images/generations", views.ImageGenerationsView.as_view(), name="images-generations"),
    path("images/edits", views.ImageEditsView.as_view(), name="images-edits"),
    path("images/variations", views.ImageVariationsView.as_view(), name="images-variations"),
    path("models", views.ModelListView.as_view(), name="models-list"),
    path("models/<path:model_id>", views.ModelDetailView.as_view(), name="models-detail"),
    path("organization/usage/images", audit_views.UsageImagesView.as_view(), name="organization-usage-images"),
    path("organization/costs", audit_views.CostsView.as_view(), name="organization-costs"),
    path("organization/usage/records", audit_views.UsageRecordsView.as_view(), name="organization-usage-records"),
    # The OpenAPI description of /v1 (generation/api/openapi.py): public, no key needed; application/json unless the
    # client asks for application/vnd.oai.openapi+json.
    path("openapi.json", SpectacularJSONAPIView.as_view(
        permission_classes=[AllowAny], authentication_classes=[], throttle_classes=[],
        renderer_classes=[OpenApiJsonRenderer2, OpenApiJsonRenderer]), name="openapi-schema"),
]

# Anything else under /v1 is an unknown URL, answered in the error envelope (also with DEBUG on).
urlpatterns.append(re_path(r"^.*$", views.unknown_url, name="unknown-url"))
