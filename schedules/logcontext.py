"""Which step a log line is about: step_id, version, job_id and engine on every record.

The worker enters ``step_log_context`` while it handles a step; every line logged
meanwhile, by this project, an action, a backend or a library, carries the step's
ids. ``StepContextFilter`` (on the console handler, settings ``LOGGING``) copies them
onto each record, ``None`` when the line is not about a step, so both formatters see
the same four attributes: the JSON formatter (``LOG_FORMAT=json``) writes them as keys,
``PlainFormatter`` as ``[step 12 v3 job 5 local]`` before the message.

The context lives in a ``contextvars.ContextVar``: entering and leaving it is one
``set`` and one ``reset``, cheap enough for the worker's hot path, and a thread (the
lease keeper, say) never sees another thread's step. An explicit
``logger.info(..., extra={"step_id": ...})`` wins over the context.
"""

from __future__ import annotations

import logging
import logging.config
from contextvars import ContextVar, Token
from typing import Any

#: The record attributes the filter sets, in the order the formatters show them.
FIELDS = ("step_id", "version", "job_id", "engine")


class StepLogFields:
    """The ids of the step a context is about (``job_id`` is None for a classroom's step)."""

    __slots__ = ("engine", "job_id", "step_id", "version")

    def __init__(
        self, step_id: int, version: int, job_id: int | None = None, engine: str | None = None
    ) -> None:
        self.step_id = step_id
        self.version = version
        self.job_id = job_id
        self.engine = engine or None


_current: ContextVar[StepLogFields | None] = ContextVar("schedules_step_log", default=None)


class StepLogContext:
    """``with step_log_context(...)``: the lines logged inside are about that step."""

    __slots__ = ("_token", "fields")

    def __init__(self, fields: StepLogFields) -> None:
        self.fields = fields
        self._token: Token[StepLogFields | None] | None = None

    def __enter__(self) -> StepLogFields:
        self._token = _current.set(self.fields)
        return self.fields

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _current.reset(self._token)


def step_log_context(
    *, step_id: int, version: int, job_id: int | None = None, engine: str | None = None
) -> StepLogContext:
    """A context manager: every line logged inside it carries these ids."""
    return StepLogContext(StepLogFields(step_id, version, job_id, engine))


def step_log_learned(*, job_id: int | None, engine: str) -> None:
    """Add what the current step context did not know when it was entered (the worker
    learns the step's job and engine once it has read the row)."""
    fields = _current.get()
    if fields is not None:
        fields.job_id = job_id
        fields.engine = engine or None


def current_step() -> StepLogFields | None:
    """The ids of the step being handled in this context, if any."""
    return _current.get()


class StepContextFilter(logging.Filter):
    """Sets ``step_id``, ``version``, ``job_id`` and ``engine`` on every record (None
    outside a step context). Put it on a handler: a logger's filter would miss the
    records its children propagate to it."""

    def filter(self, record: logging.LogRecord) -> bool:
        attrs = record.__dict__
        fields = _current.get()
        if fields is None:
            for name in FIELDS:
                attrs.setdefault(name, None)
        else:
            attrs.setdefault("step_id", fields.step_id)
            attrs.setdefault("version", fields.version)
            attrs.setdefault("job_id", fields.job_id)
            attrs.setdefault("engine", fields.engine)
        return True


def compact(record: logging.LogRecord) -> str:
    """`` [step 12 v3 job 5 local]`` for a record about a step, else ``""``."""
    step_id = getattr(record, "step_id", None)
    if step_id is None:
        return ""
    parts = [f"step {step_id}", f"v{getattr(record, 'version', None)}"]
    job_id = getattr(record, "job_id", None)
    if job_id is not None:
        parts.append(f"job {job_id}")
    engine = getattr(record, "engine", None)
    if engine:
        parts.append(str(engine))
    return f" [{' '.join(parts)}]"


class PlainFormatter(logging.Formatter):
    """One line of text; ``%(step_context)s`` is the compact step context (or nothing).

    ``%``-style only: ``2026-01-01 09:00:00,120 INFO schedules.services.execution
    [step 12 v3 job 5 local] step 12 v3 on local: succeeded ...``.
    """

    DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(step_context)s %(message)s"

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, **kwargs: Any) -> None:
        self._line = fmt or self.DEFAULT_FORMAT
        super().__init__(self._line, datefmt, style="%", **kwargs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return self._line % {**record.__dict__, "step_context": compact(record)}


def configure_logging(config: dict[str, Any]) -> None:
    """settings ``LOGGING_CONFIG``: ``dictConfig(LOGGING)``, and Python warnings go to the
    ``py.warnings`` logger, so they come out in ``LOG_FORMAT`` like every other line."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
