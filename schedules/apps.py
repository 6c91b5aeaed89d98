from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class SchedulesConfig(AppConfig):
    name = "schedules"
    verbose_name = "Schedules"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (  # noqa: F401  (checks, actions)
            checks,
            notifications,
            purge_action,
            workflow_actions,
        )
        from .models import Step
        from .signals import step_deleted, step_saved

        post_save.connect(step_saved, sender=Step, dispatch_uid="schedules.step_saved")
        post_delete.connect(step_deleted, sender=Step, dispatch_uid="schedules.step_deleted")
        notifications.connect()  # alert receivers (docs/alerts.md)
