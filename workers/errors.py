"""Errors an action or a backend raises on purpose; the worker decides retry or fail by kind."""


class ActionError(Exception):
    """Base of the errors an action raises on purpose."""


class TransientError(ActionError):
    """The attempt failed for a reason that may pass (timeout, 5xx, 429): retry later."""


class PermanentError(ActionError):
    """The attempt failed and retrying cannot help (4xx, bad data): record and stop."""
