"""Every URL of the product, by prefix: the customer pages under /dashboard/, Stripe's under /billing/, the API under
/v1/, generated images under /images/, the API reference under /docs/api/. Each app owns its routes' modules."""
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from accounts import urls as account_pages
from billing import urls as billing_urls
from generation.api import files, reference
from generation.pages import urls as generation_pages

dashboard = [*billing_urls.dashboard_urlpatterns, *account_pages.urlpatterns, *generation_pages.urlpatterns]

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboard", permanent=False), name="home"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("dashboard/", include(dashboard)),
    path("billing/", include(billing_urls.urlpatterns)),
    path("v1/", include("generation.api.urls")),
    path("images/<str:token>.<str:ext>", files.image_file, name="image-file"),
    path("docs/api/", reference.api_reference, name="api-reference"),
]

handler404 = "generation.errors.handler404"
handler500 = "generation.errors.handler500"
