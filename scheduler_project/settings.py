"""Settings, read from the environment with django-environ.

Every variable read here is documented, with its default, in docs/settings.md.
`.env` is read if present; `.env.example` lists every variable.
"""

from __future__ import annotations

import os
import tempfile
from email.utils import parseaddr
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "production"}:
    raise ImproperlyConfigured(
        f"DJANGO_ENV must be 'development' or 'production', not {DJANGO_ENV!r}."
    )
PRODUCTION = DJANGO_ENV == "production"

# Where the embedded default keeps its SQLite database, broker queue and mail.
DATA_DIR = Path(env.str("SCHEDULES_DATA_DIR", default=str(BASE_DIR / "var")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

if PRODUCTION:
    # No default: a production deployment must bring its own key.
    SECRET_KEY = env.str("SECRET_KEY")
    DEBUG = False
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
else:
    SECRET_KEY = env.str(
        "SECRET_KEY", default="django-insecure-development-key-do-not-use-in-production"
    )
    DEBUG = env.bool("DEBUG", default=True)
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "scheduler_project.apps.AdminConfig",  # django.contrib.admin, with the overview
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "schedules",
    "workers",
    "health_check",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if PRODUCTION:
    # Serves the admin's static files from STATIC_ROOT (run collectstatic);
    # in development runserver serves them.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "scheduler_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "scheduler_project.wsgi.application"

# --- Database -----------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web, the dispatcher and the workers read while one writes;
    # IMMEDIATE transactions take the write lock up front, so two writers queue
    # on the busy timeout instead of failing with "database is locked".
    _db.setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=30),
        }
    )
    # A file, not memory: end-to-end tests run the dispatcher and the worker in
    # other processes that must see the test database.
    # One file per test run, so two runs at once never share it.
    _db["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"schedules-test-{os.getpid()}.db")}
# Keep connections between requests and between Celery tasks; they are
# health-checked before reuse (the tasks call close_old_connections).
_db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
_db["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# Seconds and the zone on every time the admin shows (scheduler_project/formats/en).
FORMAT_MODULE_PATH = ["scheduler_project.formats"]

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Security (production) ----------------------------------------------------
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    if len(SECRET_KEY) < 50 or SECRET_KEY.startswith("django-insecure"):
        raise ImproperlyConfigured(
            "SECRET_KEY must be at least 50 random characters in production "
            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(64))')."
        )

# --- REST API -----------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: an anonymous request gets 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "schedules.api.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_THROTTLE_ANON", default="60/minute"),
        "user": env.str("API_THROTTLE_USER", default="1200/minute"),
    },
    "EXCEPTION_HANDLER": "schedules.api.errors.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Schedules API",
    "DESCRIPTION": (
        "Schedule jobs and classrooms, cancel, reschedule and run them, and read their runs. "
        "Every write goes through the same rules as the admin."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "PlanStatusEnum": "schedules.models.PlanStatus",
        "ExecutionStatusEnum": "schedules.models.ExecutionStatus",
        "RunStatusEnum": "schedules.models.RunStatus",
        "StepStateEnum": "schedules.models.StepState",
        "PrecisionEnum": "schedules.models.Precision",
        "ScheduleTypeEnum": "schedules.models.ScheduleType",
        "RecurringScheduleTypeEnum": "schedules.models.RECURRING_SCHEDULE_TYPES",
        "RateUnitEnum": "schedules.models.RateUnit",
        "MissedPolicyEnum": "schedules.models.MissedPolicy",
        "OverlapPolicyEnum": "schedules.models.OverlapPolicy",
    },
}
# How long an Idempotency-Key is remembered (seconds).
SCHEDULES_IDEMPOTENCY_TTL = env.int("SCHEDULES_IDEMPOTENCY_TTL", default=24 * 3600)


# --- Retention (docs/operations.md, "Retention and purge") ----------------------------------
def _keep_days(name: str, value: str) -> float | None:
    """A retention age in days (``30``, ``0.5``); ``0`` or empty keeps forever (None)."""
    text = value.strip()
    try:
        days = float(text) if text else 0.0
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} must be a number of days (e.g. 30 or 0.5), or 0 or empty to keep "
            f"forever, not {value!r}."
        ) from None
    if days < 0 or days != days or days == float("inf"):
        raise ImproperlyConfigured(
            f"{name} must be a number of days from 0 up (0 or empty keeps forever), not {value!r}."
        )
    return days or None


# How long `manage.py purge` keeps finished rows, in days, by how they ended: succeeded
# (and skipped, not done), failed (and retried, abandoned), uncertain runs, cancelled.
SCHEDULES_KEEP_SUCCEEDED_DAYS = _keep_days(
    "SCHEDULES_KEEP_SUCCEEDED_DAYS", env.str("SCHEDULES_KEEP_SUCCEEDED_DAYS", default="30")
)
SCHEDULES_KEEP_FAILED_DAYS = _keep_days(
    "SCHEDULES_KEEP_FAILED_DAYS", env.str("SCHEDULES_KEEP_FAILED_DAYS", default="90")
)
SCHEDULES_KEEP_UNCERTAIN_DAYS = _keep_days(
    "SCHEDULES_KEEP_UNCERTAIN_DAYS", env.str("SCHEDULES_KEEP_UNCERTAIN_DAYS", default="180")
)
SCHEDULES_KEEP_CANCELLED_DAYS = _keep_days(
    "SCHEDULES_KEEP_CANCELLED_DAYS", env.str("SCHEDULES_KEEP_CANCELLED_DAYS", default="30")
)
# Rows the purge examines (and at most deletes) per transaction, and its pause between two:
# on SQLite a batch holds the database's one write lock, which a step due meanwhile waits
# for, so the purge leaves it free most of the time there (docs/benchmarks.md).
SCHEDULES_PURGE_BATCH = env.int("SCHEDULES_PURGE_BATCH", default=1000)
SCHEDULES_PURGE_PAUSE = env.float(
    "SCHEDULES_PURGE_PAUSE",
    default=0.05 if _db["ENGINE"] == "django.db.backends.sqlite3" else 0.0,
)
# Throttle counters live in the cache: share one (e.g. Redis) between web processes.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

# --- Email ----------------------------------------------------------------------
# The embedded default writes each message to a file under var/mail.
_email_url = env.str("EMAIL_URL", default="")
if _email_url:
    # e.g. smtp+tls://user:password@smtp.example.com:587 or consolemail://
    vars().update(environ.Env.email_url_config(_email_url))
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(DATA_DIR / "mail")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="scheduler@localhost")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)

# --- Celery -----------------------------------------------------------------------
# The embedded default broker is a folder of files (needs no server; messages
# survive a restart). Redis works too: CELERY_BROKER_URL=redis://127.0.0.1:6379/0
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_DIR = Path(env.str("CELERY_BROKER_DIR", default=str(DATA_DIR / "broker")))
CELERY_BROKER_POLLING_INTERVAL = env.float("CELERY_BROKER_POLLING_INTERVAL", default=0.005)
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="schedules")
# Celery's Django fixup closes every database connection around every task unless
# this is set: the worker then reconnects once per this many tasks instead.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)

# --- Schedules ----------------------------------------------------------------------
# The engine of each precision class: an alias (local, stepfunctions, eventbridge,
# dynamodb_ttl), a dotted path to an Engine subclass, or "auto": the cheapest configured
# engine that meets the class (local when no AWS engine is configured). docs/aws.md.
# SCHEDULES_ENGINE_PRECISE is the seconds class's earlier name, still read.
SCHEDULES_ENGINES = {
    "seconds": env.str(
        "SCHEDULES_ENGINE_SECONDS", default=env.str("SCHEDULES_ENGINE_PRECISE", default="auto")
    ),
    "minute": env.str("SCHEDULES_ENGINE_MINUTE", default="auto"),
    "relaxed": env.str("SCHEDULES_ENGINE_RELAXED", default="auto"),
}
# List prices in USD per timer (arm and release one step), by engine name, replacing the
# documented ones (docs/aws.md), e.g. {"stepfunctions": 0.0000504}.
SCHEDULES_ENGINE_PRICES = env.json("SCHEDULES_ENGINE_PRICES", default={})
SCHEDULES_ARM_HORIZON = env.int("SCHEDULES_ARM_HORIZON", default=7 * 24 * 3600)
SCHEDULES_PAST_GRACE = env.int("SCHEDULES_PAST_GRACE", default=60)
SCHEDULES_MAX_AHEAD = env.int("SCHEDULES_MAX_AHEAD", default=5 * 366 * 24 * 3600)
SCHEDULES_MAX_PAYLOAD_BYTES = env.int("SCHEDULES_MAX_PAYLOAD_BYTES", default=64 * 1024)
SCHEDULES_DEFAULT_MAX_ATTEMPTS = env.int("SCHEDULES_DEFAULT_MAX_ATTEMPTS", default=3)
SCHEDULES_MAX_ATTEMPTS_LIMIT = env.int("SCHEDULES_MAX_ATTEMPTS_LIMIT", default=25)
SCHEDULES_RETRY_BASE = env.float("SCHEDULES_RETRY_BASE", default=2.0)
SCHEDULES_RETRY_MAX = env.float("SCHEDULES_RETRY_MAX", default=300.0)
# A step in flight is held by one live process under a lease it renews every quarter
# lease (a worker while it runs the step, a dispatcher until its publish is done); the
# recovery pass, every SCHEDULES_RECOVER_INTERVAL, releases the steps of a process whose
# lease lapsed. docs/reliability.md.
SCHEDULES_LEASE_SECONDS = env.float("SCHEDULES_LEASE_SECONDS", default=15.0)
SCHEDULES_DISPATCH_LEASE_SECONDS = env.float("SCHEDULES_DISPATCH_LEASE_SECONDS", default=5.0)
SCHEDULES_RECOVER_INTERVAL = env.float("SCHEDULES_RECOVER_INTERVAL", default=2.0)
SCHEDULES_LOST_MESSAGE_GRACE = env.float("SCHEDULES_LOST_MESSAGE_GRACE", default=10.0)
SCHEDULES_REDELIVER_AFTER = env.int("SCHEDULES_REDELIVER_AFTER", default=300)
# How long the worker retries a database operation that failed (a restart, a broken
# connection, a conflict) before it leaves the step to the recovery pass.
SCHEDULES_DB_RETRY_SECONDS = env.float("SCHEDULES_DB_RETRY_SECONDS", default=120.0)
# How often a service runs its transaction again when the database reports a conflict.
SCHEDULES_CONFLICT_RETRIES = env.int("SCHEDULES_CONFLICT_RETRIES", default=5)
SCHEDULES_EARLY_HOLD_MAX = env.float("SCHEDULES_EARLY_HOLD_MAX", default=5.0)
# PostgreSQL: seconds before their due time the worker claims plain steps, committing
# the claim at the due time (docs/architecture.md, "The worker's claim, ahead").
SCHEDULES_CLAIM_AHEAD = env.float("SCHEDULES_CLAIM_AHEAD", default=0.05)
SCHEDULES_DISPATCH_BATCH = env.int("SCHEDULES_DISPATCH_BATCH", default=500)
SCHEDULES_DISPATCH_LOOKAHEAD = env.float("SCHEDULES_DISPATCH_LOOKAHEAD", default=0.2)
SCHEDULES_DISPATCH_CHUNK = env.int("SCHEDULES_DISPATCH_CHUNK", default=50)
SCHEDULES_DISPATCH_SPREAD = env.int("SCHEDULES_DISPATCH_SPREAD", default=2)
SCHEDULES_DISPATCH_MAX_SLEEP = env.float("SCHEDULES_DISPATCH_MAX_SLEEP", default=30.0)
SCHEDULES_DISPATCH_WAKE_POLL = env.float("SCHEDULES_DISPATCH_WAKE_POLL", default=0.01)
SCHEDULES_SWEEP_INTERVAL = env.float("SCHEDULES_SWEEP_INTERVAL", default=30.0)
SCHEDULES_MIN_PING_INTERVAL = env.int("SCHEDULES_MIN_PING_INTERVAL", default=5)
SCHEDULES_MIN_RATE_SECONDS = env.float("SCHEDULES_MIN_RATE_SECONDS", default=1.0)
SCHEDULES_MIN_POLL_INTERVAL = env.int("SCHEDULES_MIN_POLL_INTERVAL", default=1)
SCHEDULES_MAX_STEPS_PER_CLASSROOM = env.int("SCHEDULES_MAX_STEPS_PER_CLASSROOM", default=10_000)

# Modules imported by the worker and the web process to register extra actions.
SCHEDULES_ACTION_MODULES = env.list("SCHEDULES_ACTION_MODULES", default=[])

SCHEDULES_RECORDING_BACKEND = env.str("SCHEDULES_RECORDING_BACKEND", default="logging")
SCHEDULES_RECORDING_URL = env.str("SCHEDULES_RECORDING_URL", default="")
SCHEDULES_RECORDING_ALLOWED_HOSTS = env.list("SCHEDULES_RECORDING_ALLOWED_HOSTS", default=[])
SCHEDULES_RECORDING_TOKEN = env.str("SCHEDULES_RECORDING_TOKEN", default="")
SCHEDULES_RECORDING_CONNECT_TIMEOUT = env.float("SCHEDULES_RECORDING_CONNECT_TIMEOUT", default=3.05)
SCHEDULES_RECORDING_READ_TIMEOUT = env.float("SCHEDULES_RECORDING_READ_TIMEOUT", default=10.0)

# The http_check action: the only hosts it may GET, its timeouts and largest answer.
SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = env.list("SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS", default=[])
SCHEDULES_HTTP_CHECK_CONNECT_TIMEOUT = env.float(
    "SCHEDULES_HTTP_CHECK_CONNECT_TIMEOUT", default=3.05
)
SCHEDULES_HTTP_CHECK_READ_TIMEOUT = env.float("SCHEDULES_HTTP_CHECK_READ_TIMEOUT", default=10.0)
SCHEDULES_HTTP_CHECK_MAX_BYTES = env.int("SCHEDULES_HTTP_CHECK_MAX_BYTES", default=1024 * 1024)

# --- AWS ------------------------------------------------------------------------------
# Credentials come from the standard chain (environment, profile, instance role);
# endpoints from AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> (read by boto3 itself).
SCHEDULES_AWS_REGION = env.str(
    "SCHEDULES_AWS_REGION", default=env.str("AWS_DEFAULT_REGION", default="us-east-1")
)
SCHEDULES_AWS_MAX_ATTEMPTS = env.int("SCHEDULES_AWS_MAX_ATTEMPTS", default=5)
SCHEDULES_AWS_CONNECT_TIMEOUT = env.float("SCHEDULES_AWS_CONNECT_TIMEOUT", default=5.0)
SCHEDULES_AWS_READ_TIMEOUT = env.float("SCHEDULES_AWS_READ_TIMEOUT", default=30.0)
SCHEDULES_AWS_NAME_PREFIX = env.str("SCHEDULES_AWS_NAME_PREFIX", default="schedules")
SCHEDULES_SFN_STATE_MACHINE_ARN = env.str("SCHEDULES_SFN_STATE_MACHINE_ARN", default="")
SCHEDULES_SQS_QUEUE_URL = env.str("SCHEDULES_SQS_QUEUE_URL", default="")
SCHEDULES_SQS_MAX_RECEIVE_COUNT = env.int("SCHEDULES_SQS_MAX_RECEIVE_COUNT", default=5)
SCHEDULES_SQS_WAIT_TIME_SECONDS = env.int("SCHEDULES_SQS_WAIT_TIME_SECONDS", default=10)
SCHEDULES_TTL_TABLE_NAME = env.str(
    "SCHEDULES_TTL_TABLE_NAME", default=f"{SCHEDULES_AWS_NAME_PREFIX}-step-timers"
)
SCHEDULES_TTL_MAX_LATENESS = env.int("SCHEDULES_TTL_MAX_LATENESS", default=15 * 60)
SCHEDULES_TTL_FORWARDER_FUNCTION_ARN = env.str("SCHEDULES_TTL_FORWARDER_FUNCTION_ARN", default="")
SCHEDULES_TTL_STREAM_POLL_INTERVAL = env.float("SCHEDULES_TTL_STREAM_POLL_INTERVAL", default=1.0)
# forward_ttl_stream: passes whose send of one record failed before it moves past that record
# (logged as an error; the overdue sweep releases its step).
SCHEDULES_TTL_STREAM_MAX_TRIES = env.int("SCHEDULES_TTL_STREAM_MAX_TRIES", default=5)

# The eventbridge engine (EventBridge Scheduler one-time schedules, docs/aws.md): its
# schedule group, the role the schedules assume (sqs:SendMessage on the jobs queue and its
# dead-letter queue), the queues' ARNs (the DLQ's: <queue ARN>-dlq when empty) and each
# schedule's retry policy (AWS bounds: 60-86,400 s, 0-185 attempts).
SCHEDULES_EVENTBRIDGE_GROUP = env.str(
    "SCHEDULES_EVENTBRIDGE_GROUP", default=f"{SCHEDULES_AWS_NAME_PREFIX}-step-schedules"
)
SCHEDULES_EVENTBRIDGE_ROLE_ARN = env.str("SCHEDULES_EVENTBRIDGE_ROLE_ARN", default="")
SCHEDULES_SQS_QUEUE_ARN = env.str("SCHEDULES_SQS_QUEUE_ARN", default="")
SCHEDULES_SQS_DLQ_ARN = env.str("SCHEDULES_SQS_DLQ_ARN", default="")
SCHEDULES_EVENTBRIDGE_MAX_EVENT_AGE = env.int("SCHEDULES_EVENTBRIDGE_MAX_EVENT_AGE", default=3600)
SCHEDULES_EVENTBRIDGE_MAX_RETRY_ATTEMPTS = env.int(
    "SCHEDULES_EVENTBRIDGE_MAX_RETRY_ATTEMPTS", default=20
)

# The longest a task may run (a run_steps message hands its rest to a new message after
# half the soft limit). The lease is renewed while it runs, so this is not tied to it.
CELERY_TASK_TIME_LIMIT = env.float("CELERY_TASK_TIME_LIMIT", default=1800.0)
CELERY_TASK_SOFT_TIME_LIMIT = env.float(
    "CELERY_TASK_SOFT_TIME_LIMIT",
    default=CELERY_TASK_TIME_LIMIT - min(60.0, CELERY_TASK_TIME_LIMIT / 5),
)
# An SQS message stays invisible while a worker holds it: longer than any task.
SCHEDULES_SQS_VISIBILITY_TIMEOUT = env.int(
    "SCHEDULES_SQS_VISIBILITY_TIMEOUT", default=int(CELERY_TASK_TIME_LIMIT) + 60
)

# --- Alerts (docs/alerts.md) -----------------------------------------------------------
# Who gets Django's mail_admins / mail_managers: "Name <address>" or bare addresses.
ADMINS = [parseaddr(entry) for entry in env.list("ADMINS", default=[])]
MANAGERS = [parseaddr(entry) for entry in env.list("MANAGERS", default=[])]
SERVER_EMAIL = env.str("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)
EMAIL_SUBJECT_PREFIX = env.str("EMAIL_SUBJECT_PREFIX", default="[schedules] ")
# Which events notify, and the built-in notifiers (mail, a global webhook; a job may add
# its own webhook_url). Each delivery is a row and a Celery task, never part of a run.
SCHEDULES_NOTIFY_EVENTS = env.list(
    "SCHEDULES_NOTIFY_EVENTS", default=["job_failed", "run_uncertain", "execution_failed"]
)
SCHEDULES_NOTIFY_MAIL = env.list("SCHEDULES_NOTIFY_MAIL", default=[])
SCHEDULES_NOTIFY_WEBHOOK_URL = env.str("SCHEDULES_NOTIFY_WEBHOOK_URL", default="")
SCHEDULES_NOTIFY_WEBHOOK_SECRET = env.str("SCHEDULES_NOTIFY_WEBHOOK_SECRET", default="")
SCHEDULES_NOTIFY_WEBHOOK_TIMEOUT = env.float("SCHEDULES_NOTIFY_WEBHOOK_TIMEOUT", default=5.0)
SCHEDULES_NOTIFY_MAX_ATTEMPTS = env.int("SCHEDULES_NOTIFY_MAX_ATTEMPTS", default=5)
SCHEDULES_NOTIFY_RETRY_BASE = env.float("SCHEDULES_NOTIFY_RETRY_BASE", default=10.0)
SCHEDULES_NOTIFY_RETRY_MAX = env.float("SCHEDULES_NOTIFY_RETRY_MAX", default=600.0)
SCHEDULES_NOTIFY_QUEUE = env.str("SCHEDULES_NOTIFY_QUEUE", default="")
SCHEDULES_NOTIFY_BASE_URL = env.str("SCHEDULES_NOTIFY_BASE_URL", default="")

# --- Health and metrics (docs/operations.md) ---------------------------------------------
# The dispatcher and every worker write a heartbeat this often; a role whose newest beat
# is older than the stale limit fails its health check.
SCHEDULES_HEARTBEAT_INTERVAL = env.float("SCHEDULES_HEARTBEAT_INTERVAL", default=5.0)
SCHEDULES_HEARTBEAT_STALE_AFTER = env.float("SCHEDULES_HEARTBEAT_STALE_AFTER", default=30.0)
# The AWS engines' health checks make one describe call each, kept this long.
SCHEDULES_HEALTH_AWS_CACHE_SECONDS = env.float("SCHEDULES_HEALTH_AWS_CACHE_SECONDS", default=60.0)
# Prometheus multiprocess mode: every process of the deployment (web, dispatcher, worker
# and its pool) writes its metrics to files in this folder, which /metrics adds up. It
# must be the same folder for all of them, and emptied when the deployment starts.
SCHEDULES_METRICS_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default=str(DATA_DIR / "metrics"))
Path(SCHEDULES_METRICS_DIR).mkdir(parents=True, exist_ok=True)
# prometheus_client reads the folder from the environment when it is first imported.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = SCHEDULES_METRICS_DIR
# Who may read /metrics: a request carrying "Authorization: Bearer <token>" when a token
# is set, or one from these networks (CIDR; the address Django sees as REMOTE_ADDR).
SCHEDULES_METRICS_TOKEN = env.str("SCHEDULES_METRICS_TOKEN", default="")
SCHEDULES_METRICS_ALLOWED_NETWORKS = env.list(
    "SCHEDULES_METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"]
)

# --- Logging ------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# "plain" (a line of text) or "json" (one JSON object per line, python-json-logger).
# Every line about a step carries step_id, version, job_id and engine
# (schedules/logcontext.py). LOG_JSON=true/false, the older spelling, is read only
# when LOG_FORMAT is not set.
LOG_FORMAT = env.str(
    "LOG_FORMAT", default="json" if env.bool("LOG_JSON", default=PRODUCTION) else "plain"
).lower()
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json', not {LOG_FORMAT!r}.")
# dictConfig(LOGGING), and Python warnings logged too (so they come out as LOG_FORMAT).
LOGGING_CONFIG = "schedules.logcontext.configure_logging"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        # step_id, version, job_id, engine on every record (None when not about a step).
        "step_context": {"()": "schedules.logcontext.StepContextFilter"},
    },
    "formatters": {
        "plain": {"()": "schedules.logcontext.PlainFormatter"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s "
            "%(step_id)s %(version)s %(job_id)s %(engine)s",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["step_context"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # The worker's pool (billiard: "Process ... exited with 'signal 9'"). It does not
        # propagate, so it needs the handler itself; its INFO lines are per child process.
        "multiprocessing": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        # A failed check is in the answer; its traceback would only repeat it.
        "health_check": {"level": "ERROR"},
    },
}
