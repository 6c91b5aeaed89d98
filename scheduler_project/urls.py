from django.contrib import admin
from django.shortcuts import redirect
from django.urls import include, path

from schedules import views

urlpatterns = [
    path("", lambda request: redirect("admin:index")),
    path("health/", views.health_view, name="health"),
    path("health/live/", views.live_view, name="health-live"),
    path("metrics", views.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", include("schedules.api.urls")),
]
