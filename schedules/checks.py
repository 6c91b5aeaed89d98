"""System checks: a bad engine or backend name fails at start-up, not at the first job.

``manage.py check`` runs them; so do the dispatcher and the Celery worker when they
start (``startup_checks``), which refuse to start on an error. ``check --deploy`` adds
warnings about parts that do not belong in production (schedules.W001-W004); engine
choices that break their class's promise warn always (schedules.W005-W006).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)


@checks.register()
def check_engines(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from .engines import (
        AUTO,
        AWS_ENGINES,
        engine_class,
        engine_name_for_precision,
        get_engine,
        meets,
    )
    from .models import Precision

    errors: list[checks.CheckMessage] = []
    engines: dict[str, str] = settings.SCHEDULES_ENGINES
    for precision in sorted(set(Precision.values) - set(engines)):
        errors.append(
            checks.Error(
                f"SCHEDULES_ENGINES has no engine for precision {precision!r}.",
                hint=f"Set SCHEDULES_ENGINE_{precision.upper()} (an engine name or auto).",
                id="schedules.E001",
            )
        )
    for precision, name in engines.items():
        hint = f"Fix SCHEDULES_ENGINES[{precision!r}]."
        if precision not in Precision.values:
            errors.append(
                checks.Error(
                    f"SCHEDULES_ENGINES names an unknown precision class {precision!r}; the "
                    f"classes are {', '.join(Precision.values)}.",
                    hint=hint,
                    id="schedules.E001",
                )
            )
            continue
        try:
            engine = get_engine(engine_name_for_precision(precision))
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), hint=hint, id="schedules.E001"))
            continue
        if (
            name == AUTO
            and engine.name == "local"
            and any(engine_class(aws).is_configured() for aws in AWS_ENGINES)
        ):
            errors.append(
                checks.Warning(
                    f"SCHEDULES_ENGINES[{precision!r}] is auto, and no configured AWS engine "
                    f"meets {precision!r}: its steps use the local engine, whose dispatcher "
                    "(manage.py run_scheduler) must run.",
                    hint=f"{hint} Configure an engine that meets it (docs/aws.md, "
                    '"Choosing an engine"), or name local to say so.',
                    id="schedules.W006",
                )
            )
        if name != AUTO and not meets(type(engine), precision):
            errors.append(
                checks.Warning(
                    f"SCHEDULES_ENGINES[{precision!r}] is {name!r}, which releases steps "
                    f"within its {engine.precision!r} class only: {precision!r} steps on it "
                    "will be later than their class promises.",
                    hint=f"{hint} Use auto, or an engine that meets {precision!r}.",
                    id="schedules.W005",
                )
            )
    return errors


@checks.register()
def check_recording_backend(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from workers.backends.recording import get_recording_backend

    try:
        get_recording_backend()
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                hint="Fix SCHEDULES_RECORDING_BACKEND, or SCHEDULES_RECORDING_URL and "
                "SCHEDULES_RECORDING_ALLOWED_HOSTS (the http backend calls only a listed host).",
                id="schedules.E002",
            )
        ]
    return []


#: The longest SCHEDULES_CLAIM_AHEAD: the locks a claim made ahead holds stay short.
CLAIM_AHEAD_MAX = 1.0


@checks.register()
def check_timing(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Settings whose values must agree with each other."""
    errors: list[checks.CheckMessage] = []
    lookahead = settings.SCHEDULES_DISPATCH_LOOKAHEAD
    hold = settings.SCHEDULES_EARLY_HOLD_MAX
    if not 0 <= lookahead < hold:
        errors.append(
            checks.Error(
                f"SCHEDULES_DISPATCH_LOOKAHEAD is {lookahead} s; it must be at least 0 and "
                f"less than SCHEDULES_EARLY_HOLD_MAX ({hold} s), or the worker would re-arm "
                "every step the dispatcher releases early.",
                id="schedules.E003",
            )
        )
    ahead = settings.SCHEDULES_CLAIM_AHEAD
    if not 0 <= ahead <= CLAIM_AHEAD_MAX:
        errors.append(
            checks.Error(
                f"SCHEDULES_CLAIM_AHEAD is {ahead} s; it must be from 0 to {CLAIM_AHEAD_MAX} s "
                "(the worker holds the job's and the step's locks that long before the due "
                "time).",
                id="schedules.E008",
            )
        )
    for name in ("SCHEDULES_DISPATCH_CHUNK", "SCHEDULES_DISPATCH_SPREAD"):
        if getattr(settings, name) < 1:
            errors.append(checks.Error(f"{name} must be at least 1.", id="schedules.E004"))
    visibility = settings.SCHEDULES_SQS_VISIBILITY_TIMEOUT
    if settings.CELERY_BROKER_URL.startswith("sqs://") and visibility <= (
        settings.CELERY_TASK_TIME_LIMIT
    ):
        errors.append(
            checks.Error(
                f"SCHEDULES_SQS_VISIBILITY_TIMEOUT ({visibility} s) must be longer than the "
                f"task time limit (CELERY_TASK_TIME_LIMIT, "
                f"{settings.CELERY_TASK_TIME_LIMIT:.0f} s), or SQS redelivers messages still "
                "being worked on.",
                id="schedules.E005",
            )
        )
    for name in ("SCHEDULES_LEASE_SECONDS", "SCHEDULES_DISPATCH_LEASE_SECONDS"):
        if getattr(settings, name) < 1:
            errors.append(
                checks.Error(
                    f"{name} must be at least 1 second (a lease is renewed every quarter of it).",
                    id="schedules.E006",
                )
            )
    if settings.SCHEDULES_RECOVER_INTERVAL <= 0:
        errors.append(
            checks.Error("SCHEDULES_RECOVER_INTERVAL must be positive.", id="schedules.E007")
        )
    return errors


@checks.register()
def check_retention(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The purge's settings (docs/operations.md, "Retention and purge")."""
    from .services.retention import Retention

    errors: list[checks.CheckMessage] = []
    try:
        Retention.from_settings()
    except ImproperlyConfigured as exc:
        errors.append(checks.Error(str(exc), id="schedules.E201"))
    batch = settings.SCHEDULES_PURGE_BATCH
    if not isinstance(batch, int) or not 1 <= batch <= 100_000:
        errors.append(
            checks.Error(
                f"SCHEDULES_PURGE_BATCH must be from 1 to 100000, not {batch!r}.",
                id="schedules.E202",
            )
        )
    if settings.SCHEDULES_PURGE_PAUSE < 0:
        errors.append(
            checks.Error("SCHEDULES_PURGE_PAUSE must be 0 or more seconds.", id="schedules.E202")
        )
    return errors


# --- Deploy checks (manage.py check --deploy) -------------------------------------------

#: Cache backends that live in one process: each web process would count its own throttles.
PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)
#: Brokers that need no server: a folder of files on this machine, or one process's memory.
EMBEDDED_BROKERS = ("filesystem://", "memory://")
#: Cloud instance metadata services (credentials are one GET away from them).
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, Google Cloud, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "fd00:ec2::254",  # AWS IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (older instances)
    )
)
ALLOW_LISTS = ("SCHEDULES_RECORDING_ALLOWED_HOSTS", "SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS")


@checks.register(deploy=True)
def check_deploy_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.DEBUG:
        return []
    return [
        checks.Warning(
            f"DATABASES[{alias!r}] is SQLite with DEBUG off: one machine's file, with one "
            "writer at a time, and no FOR UPDATE SKIP LOCKED or LISTEN/NOTIFY for the "
            "dispatcher.",
            hint="Set DATABASE_URL to a PostgreSQL database "
            "(postgres://user:password@host:5432/name).",
            id="schedules.W001",
        )
        for alias, db in settings.DATABASES.items()
        if db["ENGINE"] == "django.db.backends.sqlite3"
    ]


@checks.register(deploy=True)
def check_deploy_broker(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    url: str = settings.CELERY_BROKER_URL
    if settings.DEBUG or not url.startswith(EMBEDDED_BROKERS):
        return []
    return [
        checks.Warning(
            f"CELERY_BROKER_URL is {url.split('//')[0]}// with DEBUG off: the embedded broker "
            "serves the processes of one machine only and has no remote control.",
            hint="Set CELERY_BROKER_URL to Redis (redis://host:6379/0), RabbitMQ "
            "(amqp://user:password@host:5672//) or SQS (sqs://).",
            id="schedules.W002",
        )
    ]


@checks.register(checks.Tags.caches, deploy=True)
def check_deploy_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.DEBUG:
        return []
    return [
        checks.Warning(
            f"CACHES[{alias!r}] is {cache['BACKEND'].rsplit('.', 1)[-1]} with DEBUG off: "
            "each process keeps its own (or none), so the API's throttles count per process.",
            hint="Set CACHE_URL to a cache the processes share, e.g. rediscache://host:6379/1.",
            id="schedules.W003",
        )
        for alias, cache in settings.CACHES.items()
        if cache.get("BACKEND") in PER_PROCESS_CACHES
    ]


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` stands for, in any form a resolver takes (``[::1]``,
    ``fe80::1%eth0``, ``2852039166``, ``0xa9fea9fe``), or None for a host name."""
    host = host.strip().strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not host or not all(c in "0123456789abcdefx." for c in host):
            return None
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def unsafe_host(host: str) -> str:
    """Why an allow-listed host opens the way to an instance's secrets, or ``""``."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTS:
        return "a cloud metadata service name"
    address = _address(name)
    if address is None:
        return ""
    if address in METADATA_ADDRESSES:
        return f"a cloud metadata address ({address})"
    if address.is_link_local:
        return f"a link-local address ({address})"
    return ""


@checks.register(checks.Tags.security, deploy=True)
def check_deploy_allow_lists(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Whatever DEBUG says: a metadata address on an allow-list is never meant."""
    warnings: list[checks.CheckMessage] = []
    for name in ALLOW_LISTS:
        for host in getattr(settings, name):
            why = unsafe_host(host)
            if why:
                warnings.append(
                    checks.Warning(
                        f"{name} holds {host!r}, {why}: a job or the recording service "
                        "could reach the instance's metadata and its credentials.",
                        hint=f"Remove {host!r} from {name}; list only the services' own "
                        "host names.",
                        id="schedules.W004",
                    )
                )
    return warnings


# --- At the start of the worker and the dispatcher -----------------------------------------


def startup_checks(process: str) -> None:
    """Run the system checks ``manage.py`` commands run, at the start of ``process``.

    Each warning is logged; errors are logged as one message naming every error, and
    the process exits with status 1 (no traceback: the message says what to fix).
    """
    messages = [m for m in checks.run_checks() if not m.is_silenced()]
    for message in messages:
        if not message.is_serious():
            logger.warning("system check: %s", message)
    errors = [m for m in messages if m.is_serious()]
    if errors:
        count = f"{len(errors)} error{'s' if len(errors) > 1 else ''}"
        logger.critical(
            "the %s cannot start: the system checks found %s:\n%s",
            process,
            count,
            "\n".join(str(error) for error in errors),
        )
        raise SystemExit(1)
