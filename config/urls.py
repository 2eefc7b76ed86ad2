from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboard", permanent=False), name="home"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("dashboard/", include("billing.dashboard_urls")),
    path("dashboard/", include("accounts.urls")),
    path("dashboard/", include("generation.dashboard_urls")),
    path("billing/", include("billing.urls")),
    path("v1/", include("generation.urls")),
    path("images/", include("generation.file_urls")),
    path("docs/api/", include("generation.docs_views")),
]

handler404 = "generation.errors.handler404"
handler500 = "generation.errors.handler500"
