from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboard", permanent=False), name="home"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("dashboard/", include("billing.dashboard_urls")),
    path("dashboard/", include("accounts.urls")),
    path("dashboard/", include("generation.pages.urls")),
    path("billing/", include("billing.urls")),
    path("v1/", include("generation.api.urls")),
    path("images/", include("generation.api.file_urls")),
    path("docs/api/", include("generation.api.reference")),
]

handler404 = "generation.api.errors.handler404"
handler500 = "generation.api.errors.handler500"
