"""Operational endpoints: /health/ (readiness of the whole system), /health/live/ (the web
process answers) and /metrics (Prometheus). docs/operations.md says how to probe them."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import health, metrics


@never_cache
@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    """Every configured check: 200 when all pass, 503 when one fails; JSON per check.
    ``?check=database,broker`` runs only the named checks."""
    only = [name for name in request.GET.get("check", "").split(",") if name] or None
    unknown = sorted(set(only or ()) - set(health.NAMES.values()))
    if unknown:
        return JsonResponse(
            {
                "check": f"unknown check(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(health.NAMES.values()))}"
            },
            status=400,
        )
    answer = health.report(health.run_checks(only))
    return JsonResponse(answer, status=200 if answer["status"] == "ok" else 503)


@never_cache
@require_GET
def live_view(request: HttpRequest) -> JsonResponse:
    """The web process answers (a liveness probe: it checks nothing else)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of every process's metrics (SCHEDULES_METRICS_TOKEN or
    SCHEDULES_METRICS_ALLOWED_NETWORKS say who may read it)."""
    if not metrics.client_may_read(
        request.META.get("REMOTE_ADDR", ""), request.headers.get("Authorization", "")
    ):
        return HttpResponse(
            "Forbidden: /metrics needs SCHEDULES_METRICS_TOKEN as a bearer token, or a client "
            "in SCHEDULES_METRICS_ALLOWED_NETWORKS.\n",
            status=403,
            content_type="text/plain",
        )
    return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
