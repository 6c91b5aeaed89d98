"""The project's admin site: Django's, with the overview page and its JSON endpoints.

It is the default site (scheduler_project/apps.py ``AdminConfig.default_site``), so
``admin.site`` and ``@admin.register`` in ``schedules.admin`` register on it. It lives
outside that package, and imports only Django at module level: building the default
site must not import the modules that register on it (they would ask for the site
while it is being built, and register on an instance that is then thrown away).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.urls import URLPattern, URLResolver, path


class SchedulesAdminSite(admin.AdminSite):
    index_template = "admin/schedules/index.html"

    def get_urls(self) -> list[URLResolver | URLPattern]:
        from .admin import overview

        def view(func: Any) -> Any:
            return self.admin_view(lambda request: func(request, self))

        urls: list[URLResolver | URLPattern] = [
            path("overview/", view(overview.overview_page), name="schedules_overview"),
            *(
                path(
                    f"overview/{name}.json",
                    view(endpoint),
                    name=f"schedules_overview_{name}",
                )
                for name, endpoint in overview.ENDPOINTS.items()
            ),
        ]
        return urls + super().get_urls()
