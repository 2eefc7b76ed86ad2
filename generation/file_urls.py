from django.urls import path

from . import views

urlpatterns = [
    path("<str:token>.<str:ext>", views.image_file, name="image-file"),
]
