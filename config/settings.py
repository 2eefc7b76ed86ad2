"""Imagegate settings: one module, driven by the environment (django-environ).

With no environment variables at all this is the embedded default of docs/DESIGN: SQLite, files under media/,
local-memory cache, Celery tasks in-process, Stripe off, only the built-in `local` provider, DEBUG on.
Production turns things on by environment: DATABASE_URL, REDIS_URL, AWS_STORAGE_BUCKET_NAME, DJANGO_DEBUG=off, ...
"""
from pathlib import Path

import environ

from config.observability.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=True)

# A fixed development key keeps sessions stable across `make run`s; production must set its own.
_DEV_SECRET_KEY = "django-insecure-imagegate-development-only-key-0123456789abcdef"
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=_DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS",
                         default=["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# The public base URL used in image URLs handed to API clients; empty = derive from the request.
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="")

DJANGO_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
]
THIRD_PARTY_APPS = [
    "rest_framework",
    "drf_spectacular",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "csp",
]
LOCAL_APPS = [
    "accounts",
    "billing",
    "generation",
]
INSTALLED_APPS = DJANGO_APPS + THIRD_PARTY_APPS + LOCAL_APPS

MIDDLEWARE = [
    "config.http.middleware.RequestIdMiddleware",
    "generation.pipeline.ratelimit.RateLimitHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "config.http.middleware.RefuseNulMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

# The API (/v1, image URLs) is served through this lean list instead (config/asgi.py): no sessions, CSRF or auth
# middleware, which the API does not use and which cost a thread hop each under ASGI.
API_MIDDLEWARE = [
    "config.http.middleware.RequestIdMiddleware",
    "config.observability.middleware.ObservabilityMiddleware",
    "generation.pipeline.ratelimit.RateLimitHeadersMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
                "accounts.context_processors.current_organization",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A psycopg connection pool bounds PostgreSQL connections however many requests are in flight: request code
    # borrows a connection for each short burst of queries and gives it back (config/db.py), never holding one
    # across an upstream wait. (Django requires CONN_MAX_AGE = 0 with a pool.)
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DB_POOL_MAX_SIZE", default=20),
        "timeout": env.float("DB_POOL_TIMEOUT", default=30.0),
    }
else:
    # SQLite serves the embedded default; WAL and a busy timeout let the web server and tasks share it.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
         "transaction_mode": "IMMEDIATE"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and Celery (Redis when REDIS_URL is set) ----------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="ig"),
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "imagegate"}}
    CELERY_BROKER_URL = "memory://"
    CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A task a worker took but never acknowledged (the worker died) is handed out again after this many seconds (Redis
# broker). Async image jobs are also guarded by their own lease (IMAGE_JOB_LEASE_SECONDS, generation/pipeline/jobs.py).
# kombu sweeps for such tasks every unacked_restore_interval (10 s) × unacked_restore_throttle (default 10) seconds;
# throttle 1 makes it every 10 s (one ZRANGE per worker), so a lost task returns soon after its timeout.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT_SECONDS", default=3600),
                                   "unacked_restore_throttle": 1}
IMAGE_JOB_LEASE_SECONDS = env.int("IMAGE_JOB_LEASE_SECONDS", default=60)
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "expire-images": {"task": "generation.tasks.expire_images", "schedule": 300.0},
    "purge-prompts": {"task": "generation.tasks.purge_prompts", "schedule": 600.0},
    "report-usage": {"task": "billing.tasks.report_usage", "schedule": 60.0},
    "reconcile-billing": {"task": "billing.tasks.reconcile_billing", "schedule": 3600.0},
    "refresh-rollups": {"task": "billing.tasks.refresh_rollups", "schedule": 60.0},
    "seal-ledger": {"task": "billing.tasks.seal_ledger", "schedule": env.float("LEDGER_SEAL_INTERVAL_SECONDS",
                                                                               default=5.0)},
    "retry-webhooks": {"task": "generation.tasks.retry_webhooks", "schedule": 30.0},
    "expire-image-jobs": {"task": "generation.tasks.expire_image_jobs", "schedule": 300.0},
    "expire-idempotent-responses": {"task": "generation.tasks.expire_idempotent_responses", "schedule": 3600.0},
    "seal-ledger-full": {"task": "billing.tasks.seal_ledger", "schedule": 3600.0, "kwargs": {"full": True}},
}

# --- Auth and accounts (django-allauth) ----------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = env.str("ACCOUNT_EMAIL_VERIFICATION", default="optional" if DEBUG else "mandatory")
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_SIGNUP_FORM_CLASS = "accounts.forms.OrganizationSignupForm"
# E-mail addresses follow one rule everywhere (accounts/identity.py): sign-up, login, password reset.
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
ACCOUNT_FORMS = {"login": "accounts.adapter.LoginForm"}
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_SESSION_REMEMBER = None
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "http" if DEBUG else "https"

EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default=("django.core.mail.backends.console.EmailBackend" if DEBUG
             else "django.core.mail.backends.smtp.EmailBackend"),
)
if not DEBUG or env.str("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL", default="smtp://localhost:25"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Imagegate <no-reply@imagegate.local>")

# --- Internationalisation ------------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files and media (local files, or S3 via django-storages) ------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / "media")))
WHITENOISE_USE_FINDERS = DEBUG
# Files served at the site's root by WhiteNoise: favicon.ico, which every browser asks for (a 404 there is a console
# error on every first page).
WHITENOISE_ROOT = BASE_DIR / "public"
WHITENOISE_AUTOREFRESH = DEBUG

AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
if AWS_STORAGE_BUCKET_NAME:
    _media_backend = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("AWS_REGION", default=env.str("AWS_DEFAULT_REGION", default="us-east-1")),
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    _media_backend = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _media_backend,
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- REST framework: the /v1 API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["generation.api.parsers.StrictJSONParser"],
    "EXCEPTION_HANDLER": "generation.errors.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["generation.pipeline.ratelimit.RequestRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

# --- Product settings ------------------------------------------------------------------------------------------------
# Request bodies above their route's limit are refused with 413 before Django reads them (config/http/body_limit.py):
# the image upload endpoints take up to API_MAX_BODY_BYTES (edits carry up to 16 images), the rest of /v1 JSON,
# pages forms, webhooks Stripe's events. The longest matching prefix wins.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=64 * 1024 * 1024)
BODY_LIMITS = [
    ("/v1/images/edits", API_MAX_BODY_BYTES),
    ("/v1/images/variations", API_MAX_BODY_BYTES),
    ("/v1/", 1024 * 1024),  # JSON: a 32,000-character prompt is at most 128 KB
    ("/billing/stripe/webhook/", 1024 * 1024),
    ("/admin/", 2 * 1024 * 1024),
    ("/", 256 * 1024),  # every other page: forms
]
# Uploaded files above this are spooled to disk instead of memory while a request is parsed; form fields and JSON
# bodies read into memory are capped at Django's default (the route limits above are smaller anyway).
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Signed image URLs live this long (OpenAI's own image URLs last 60 minutes).
IMAGE_URL_TTL_SECONDS = env.int("IMAGE_URL_TTL_SECONDS", default=3600)
# A ledger row waiting longer than this for the sealer (billing/sealing.py) is a fault in `verify_ledger`.
LEDGER_SEAL_MAX_LAG_SECONDS = env.int("LEDGER_SEAL_MAX_LAG_SECONDS", default=60)
# Seal right after each ledger write (the embedded default has no beat process); with Redis, beat seals.
LEDGER_SEAL_INLINE = env.bool("LEDGER_SEAL_INLINE", default=not env.str("REDIS_URL", default=""))
# An Idempotency-Key's claim by a request in flight lapses this long after its process stopped renewing it.
IDEMPOTENCY_CLAIM_TTL_SECONDS = env.float("IDEMPOTENCY_CLAIM_TTL_SECONDS", default=60.0)
# A spend hold whose request died with its process or host is released after this many seconds (billing/spend.py).
SPEND_HOLD_TTL_SECONDS = env.int("SPEND_HOLD_TTL_SECONDS", default=120)
# Threads that run the request path's database work (config/db.py).
DB_THREADS = env.int("DB_THREADS", default=16)
# `last_used_at` on API keys is written at most this often per key.
API_KEY_LAST_USED_RESOLUTION_SECONDS = env.int("API_KEY_LAST_USED_RESOLUTION_SECONDS", default=60)
# Requests per minute for API keys whose own rate_limit_rpm is 0 (generation/pipeline/ratelimit.py).
RATE_LIMIT_DEFAULT_RPM = env.int("RATE_LIMIT_DEFAULT_RPM", default=300)

# --- Upstream providers: each is on when its key is set (the built-in `local` always is) -----------------------------
PROVIDER_TIMEOUT_SECONDS = env.float("PROVIDER_TIMEOUT_SECONDS", default=120.0)
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="https://api.openai.com/v1")
STABILITY_API_KEY = env.str("STABILITY_API_KEY", default="")
STABILITY_BASE_URL = env.str("STABILITY_BASE_URL", default="https://api.stability.ai")
BFL_API_KEY = env.str("BFL_API_KEY", default="")
BFL_BASE_URL = env.str("BFL_BASE_URL", default="https://api.bfl.ai")
REPLICATE_API_TOKEN = env.str("REPLICATE_API_TOKEN", default="")
REPLICATE_BASE_URL = env.str("REPLICATE_BASE_URL", default="https://api.replicate.com")
GEMINI_API_KEY = env.str("GEMINI_API_KEY", default="")
GEMINI_BASE_URL = env.str("GEMINI_BASE_URL", default="https://generativelanguage.googleapis.com")
RECRAFT_API_KEY = env.str("RECRAFT_API_KEY", default="")
RECRAFT_BASE_URL = env.str("RECRAFT_BASE_URL", default="https://external.api.recraft.ai")
IDEOGRAM_API_KEY = env.str("IDEOGRAM_API_KEY", default="")
IDEOGRAM_BASE_URL = env.str("IDEOGRAM_BASE_URL", default="https://api.ideogram.ai")
# Bedrock is on with AWS credentials and a region (BEDROCK_ENABLED=off keeps it off, e.g. when AWS keys are for S3).
AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="")
AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="")
AWS_SESSION_TOKEN = env.str("AWS_SESSION_TOKEN", default="")
AWS_REGION = env.str("AWS_REGION", default=env.str("AWS_DEFAULT_REGION", default=""))
BEDROCK_ENDPOINT_URL = env.str("BEDROCK_ENDPOINT_URL", default="")
BEDROCK_ENABLED = env.bool("BEDROCK_ENABLED", default=bool(AWS_ACCESS_KEY_ID and AWS_REGION))
# Any OpenAI-compatible server (self-hosted models): its base URL, key, the model ids it serves, our upstream cost.
OPENAI_COMPATIBLE_BASE_URL = env.str("OPENAI_COMPATIBLE_BASE_URL", default="")
OPENAI_COMPATIBLE_API_KEY = env.str("OPENAI_COMPATIBLE_API_KEY", default="")
OPENAI_COMPATIBLE_MODELS = env.list("OPENAI_COMPATIBLE_MODELS", default=[])
OPENAI_COMPATIBLE_UPSTREAM_COST_MICROS = env.int("OPENAI_COMPATIBLE_UPSTREAM_COST_MICROS", default=0)
# Our list price per image for self-hosted models (`manage.py sync_prices` writes it to the price table).
OPENAI_COMPATIBLE_PRICE_MICROS = env.int("OPENAI_COMPATIBLE_PRICE_MICROS", default=2_000)

# --- Billing: Stripe Billing Meters (off when STRIPE_API_KEY is empty: usage is recorded, reporting waits) ---------
STRIPE_API_KEY = env.str("STRIPE_API_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")  # emulators and proxies; empty = Stripe itself
STRIPE_METER_EVENT_NAME = env.str("STRIPE_METER_EVENT_NAME", default="imagegate_usage_micros")
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)
STRIPE_TIMEOUT_SECONDS = env.float("STRIPE_TIMEOUT_SECONDS", default=20.0)
BILLING_GRACE_DAYS = env.int("BILLING_GRACE_DAYS", default=7)
FREE_TIER_MONTHLY_MICROS = env.int("FREE_TIER_MONTHLY_MICROS", default=1_000_000)

# --- TLS, security headers (config/http/security.py) ----------------------------------------------------------------
# TLS ends at the load balancer, which tells Django a request came over HTTPS with `X-Forwarded-Proto: https`. Trust
# that header only behind a proxy that sets it itself (overwriting the client's): on by default with DEBUG off.
SECURE_PROXY_SSL_HEADER = (("HTTP_X_FORWARDED_PROTO", "https")
                           if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=not DEBUG) else None)
# Pages answer plain HTTP with a redirect to HTTPS; the API (/v1, /images/) refuses it with 403 `https_required`
# instead: a client that follows a redirect has already sent its key in clear text and would go on doing so unnoticed.
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
API_REQUIRE_HTTPS = env.bool("API_REQUIRE_HTTPS", default=SECURE_SSL_REDIRECT)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_REFERRER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy of every page (django-csp; the API's constant headers are in config/http/security.py).
# No inline script or style anywhere: scripts and styles are static files (static/js, static/css), so 'self' is all
# a page needs; images also come as data: URIs (the playground's results, the TOTP QR code). Stripe Checkout and the
# billing portal are left by a redirect after a form POST, which `form-action` would govern, so it is not set.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Operators: logs, metrics (config/observability/; docs/deployment.md) ---------------------------------------------
# LOG_FORMAT: text (human-readable lines, the default) or json (one JSON object per line: each API request's access
# line with its request id, organization, key prefix, model, provider, status, latency and cost; errors with the
# request id). Every record logged while serving a request carries its request id.
LOG_FORMAT = env.str("LOG_FORMAT", default="text").strip().lower()
LOGGING = logging_config(log_format=LOG_FORMAT, level=env.str("LOG_LEVEL", default="INFO"))
# With json, Celery's worker keeps Django's handlers (JSON there too) instead of installing its own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
# GET /metrics (Prometheus) answers only `Authorization: Bearer <METRICS_TOKEN>` when set; empty = no token asked
# (then keep the port off the internet). /healthz and /readyz never ask for one.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# prometheus-client's multiprocess mode (config/observability/metrics.py): `make serve` sets and empties it per host
# and port; a process started otherwise that sets it gets the directory created.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)

# --- OpenAPI description of /v1 (drf-spectacular; generation/api/openapi.py, served at /v1/openapi.json) --------------
SPECTACULAR_SETTINGS = {
    "TITLE": "Imagegate API",
    "DESCRIPTION": (
        "One OpenAI-compatible image-generation API over many upstream models, billed per image. Requests and "
        "responses follow OpenAI's Images and Models APIs (use any OpenAI SDK with base URL `<server>/v1`); "
        "Imagegate adds `usage` to image responses and a few optional request fields. Every error uses OpenAI's "
        "envelope `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`."
    ),
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.0.3",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PUBLIC": True,
    "SCHEMA_PATH_PREFIX": r"/v1",
    "SORT_OPERATIONS": False,  # keep the URLconf's order: generations, edits, variations, models
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
    "PREPROCESSING_HOOKS": ["generation.api.openapi.only_v1"],
    "POSTPROCESSING_HOOKS": ["generation.api.openapi.postprocess"],
    "TAGS": [
        {"name": "Images", "description": "Generate, edit and vary images."},
        {"name": "Models", "description": "The models this server serves and what each accepts."},
    ],
}

# Webhooks (generation/pipeline/webhooks.py): deliveries go only to public addresses on ports 80/443, as input-image
# fetching (generation/pipeline/fetch.py). On, this lets development and tests deliver to loopback (any port, http).
WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = env.bool("WEBHOOKS_ALLOW_PRIVATE_ADDRESSES", default=False)
