"""send_email: Django's email framework (console/file locally, SMTP or SES in production)."""

from __future__ import annotations

import re
import smtplib
from typing import Annotated, Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email
from django.template import TemplateDoesNotExist
from django.template.loader import get_template, render_to_string
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .base import ActionContext, PermanentError, TransientError, register

MAX_RECIPIENTS = 100
TEMPLATE_NAME_RE = re.compile(r"\A[a-z0-9_][a-z0-9_\-/]*\Z")


def _check_address(value: str) -> str:
    try:
        validate_email(value)
    except DjangoValidationError:
        raise ValueError(f"{value!r} is not a valid email address") from None
    return value


Address = Annotated[str, AfterValidator(_check_address)]


class EmailPayload(BaseModel):
    """Recipients, subject, and either a body or a template under templates/emails/."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    to: list[Address] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    reply_to: list[Address] = Field(default_factory=list, max_length=10)
    from_email: Address | None = None
    subject: str = Field(min_length=1, max_length=998)
    body: str = ""
    html_body: str = ""
    template: str = Field(
        default="",
        description="Name of a template pair templates/emails/<name>.txt (and optional .html).",
    )
    context: dict[str, Any] = Field(default_factory=dict)

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise ValueError("the subject must be a single line")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        if not value:
            return value
        if not TEMPLATE_NAME_RE.match(value) or ".." in value:
            raise ValueError("use lowercase letters, digits, '_', '-' and '/' only")
        try:
            get_template(f"emails/{value}.txt")
        except TemplateDoesNotExist:
            raise ValueError(f"no template emails/{value}.txt") from None
        return value

    @model_validator(mode="after")
    def _has_content(self) -> EmailPayload:
        if not (self.body or self.html_body or self.template):
            raise ValueError("give a body, an html_body or a template")
        if self.template and (self.body or self.html_body):
            raise ValueError("give either a template or a body, not both")
        return self


def build_message(payload: EmailPayload) -> EmailMultiAlternatives:
    text, html = payload.body, payload.html_body
    if payload.template:
        text = render_to_string(f"emails/{payload.template}.txt", payload.context)
        try:
            html = render_to_string(f"emails/{payload.template}.html", payload.context)
        except TemplateDoesNotExist:
            html = ""
    message = EmailMultiAlternatives(
        subject=payload.subject,
        body=text,
        from_email=payload.from_email or settings.DEFAULT_FROM_EMAIL,
        to=payload.to,
        cc=payload.cc,
        bcc=payload.bcc,
        reply_to=payload.reply_to,
    )
    if html:
        message.attach_alternative(html, "text/html")
    return message


@register(
    "send_email",
    payload=EmailPayload,
    description="Send an email through Django's email backend.",
)
def send_email(ctx: ActionContext, payload: EmailPayload) -> dict[str, Any]:
    message = build_message(payload)
    # A header that lets the receiving side or a log spot a repeated send.
    message.extra_headers["X-Schedules-Step"] = ctx.idempotency_key
    try:
        sent = message.send(fail_silently=False)
    except (
        smtplib.SMTPServerDisconnected,
        smtplib.SMTPConnectError,
        ConnectionError,
        TimeoutError,
    ) as exc:
        raise TransientError(f"mail server unreachable: {exc}") from exc
    except smtplib.SMTPResponseException as exc:
        if 400 <= exc.smtp_code < 500:
            raise TransientError(f"mail server said {exc.smtp_code}: {exc.smtp_error!r}") from exc
        raise PermanentError(f"mail server said {exc.smtp_code}: {exc.smtp_error!r}") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentError(f"recipients refused: {sorted(exc.recipients)}") from exc
    return {"sent": sent, "recipients": len(payload.to) + len(payload.cc) + len(payload.bcc)}
