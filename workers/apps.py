from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class WorkersConfig(AppConfig):
    name = "workers"
    verbose_name = "Workers"

    def ready(self) -> None:
        import_module("workers.actions")  # registers the built-in actions
        for module in settings.SCHEDULES_ACTION_MODULES:
            import_module(module)  # registers a project's own actions
