from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from .views import (
    ClassroomViewSet,
    ExecutionViewSet,
    JobViewSet,
    RunViewSet,
    WorkflowViewSet,
)

router = DefaultRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("classrooms", ClassroomViewSet, basename="classroom")
router.register("runs", RunViewSet, basename="run")
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("executions", ExecutionViewSet, basename="execution")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include(router.urls)),
]
