from django.urls import path

from generation.api import views

urlpatterns = [
    path("<str:token>.<str:ext>", views.image_file, name="image-file"),
]
