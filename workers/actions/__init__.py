"""Actions a step can run, registered by name with a validated payload schema."""

from __future__ import annotations

from . import (  # noqa: F401  (registers the actions)
    email,
    http_check,
    http_request,
    noop,
    recording,
)
from .base import (
    REGISTRY,
    Action,
    ActionContext,
    ActionError,
    NotDone,
    PermanentError,
    Scope,
    TransientError,
    UnknownAction,
    get_action,
    job_action_names,
    register,
)

__all__ = [
    "REGISTRY",
    "Action",
    "ActionContext",
    "ActionError",
    "NotDone",
    "PermanentError",
    "Scope",
    "TransientError",
    "UnknownAction",
    "get_action",
    "job_action_names",
    "register",
]
