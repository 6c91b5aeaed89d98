"""The outcome of one attempt to deliver an alert, as a notifier reports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """``ok``: delivered. Otherwise ``retry`` says whether another attempt may help."""

    ok: bool
    retry: bool = False
    error: str = ""
    response_status: int | None = None

    @classmethod
    def sent(cls, response_status: int | None = None) -> Outcome:
        return cls(ok=True, response_status=response_status)

    @classmethod
    def retry_later(cls, error: str, response_status: int | None = None) -> Outcome:
        return cls(ok=False, retry=True, error=error, response_status=response_status)

    @classmethod
    def failed(cls, error: str, response_status: int | None = None) -> Outcome:
        return cls(ok=False, retry=False, error=error, response_status=response_status)
