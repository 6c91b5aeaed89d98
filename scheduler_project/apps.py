"""The admin, with this project's site (the overview page) as its default site."""

from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    default_site = "schedules.admin_site.SchedulesAdminSite"
