"""The admin for jobs, classrooms, their steps and runs.

Writes go through ``schedules.services`` only: the add and change forms
(``schedules.forms``) call them and show their errors on the form, and the
actions call them per object. Steps and runs are results, so they are
read-only. Every changelist is built for tables of millions of rows (see
STYLE.md, "Admin for big tables"): no full count, no N+1, big columns deferred,
sorting and time-window filters only on indexed columns (no date_hierarchy:
its year list is a DISTINCT over the whole table), filters that need no
query, and inlines that load a bounded number of rows.

One module per thing a person looks for: ``jobs``, ``classrooms``, ``results``
(steps and runs), ``workflows`` and ``notifications``, on the shared pieces in
``base`` (display helpers, big-table changelists, the plan and result admins),
``filters`` and ``inlines``.
"""

from . import base, classrooms, jobs, notifications, results, workflows
from .base import ACTION_MAX_OBJECTS, CappedCountPaginator, format_lateness, timer_link
from .filters import TimeWindowFilter

__all__ = [
    "ACTION_MAX_OBJECTS",
    "CappedCountPaginator",
    "TimeWindowFilter",
    "base",
    "classrooms",
    "format_lateness",
    "jobs",
    "notifications",
    "results",
    "timer_link",
    "workflows",
]
