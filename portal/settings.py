"""Lattice settings: one flat module, everything from environment variables.

Embedded defaults (SQLite, local Redis, local Docker, a local folder for object
storage) make ``make run`` work with nothing set; see deploy/README.md for the
production values.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from kombu import Queue

from workspaces.lib import env

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.string("LATTICE_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    key = env.string("SECRET_KEY")
    if key:
        return key
    # Embedded default: generated once per checkout so sessions survive restarts.
    path = VAR_DIR / "secret-key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env.boolean("DEBUG", False)
ALLOWED_HOSTS = env.csv("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env.csv("CSRF_TRUSTED_ORIGINS")
SITE_NAME = env.string("SITE_NAME", "Lattice")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "workspaces",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout into our 429 page.
    "axes.middleware.AxesMiddleware",
    # Redis away: pages answer 503 "try again in a moment", not 500 (workspaces/lib/outages.py).
    "workspaces.lib.outages.RedisOutageMiddleware",
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
WSGI_APPLICATION = None

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
                "workspaces.context.site",
            ],
        },
    },
]

# --- database -----------------------------------------------------------------
DATABASE_URL = env.string("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env.string("LATTICE_SQLITE_PATH", str(VAR_DIR / "lattice.sqlite3")),
            # The worker and the web process write at once: WAL plus an
            # immediate write lock avoids "database is locked" under load.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not memory: the real Celery worker and web server that
            # the end-to-end tests start must see the test database.
            "TEST": {"NAME": env.string("LATTICE_TEST_DB", str(VAR_DIR / "test.sqlite3"))},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- accounts -------------------------------------------------------------------
AUTH_USER_MODEL = "workspaces.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
if env.boolean("LATTICE_FAST_PASSWORD_HASHING", False):
    # Test runs only: real hashing costs ~0.3 s a login.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Failed logins are throttled per username and, separately, per address.
# Unknown usernames count the same as known ones, so a lockout reveals nothing.
# A school signs in from behind one NAT address, so the per-address limit is
# higher: a class mistyping at once must not lock itself out, while one
# username still gets only a few guesses from anywhere. Both count failures in
# the last AXES_COOLOFF_MINUTES; workspaces.services.accounts.login_failure_limit picks
# the limit that applies.
LATTICE_LOGIN_FAILURES_PER_USERNAME = env.integer("LATTICE_LOGIN_FAILURES_PER_USERNAME", 5)
LATTICE_LOGIN_FAILURES_PER_ADDRESS = env.integer("LATTICE_LOGIN_FAILURES_PER_ADDRESS", 50)
AXES_FAILURE_LIMIT = "workspaces.services.accounts.login_failure_limit"
AXES_COOLOFF_TIME = timedelta(minutes=env.integer("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_USERNAME_CALLABLE = "workspaces.services.accounts.axes_username"
AXES_LOCKOUT_CALLABLE = "workspaces.services.accounts.lockout_response"
# Never axes' own reset: it deletes every attempt matching the username OR the
# address, so signing in to any account would wipe that address's failures
# against other accounts. The handler forgives only the signed-in username's
# own failures from that address.
AXES_RESET_ON_SUCCESS = False
AXES_HANDLER = "workspaces.services.accounts.LoginThrottleHandler"
# The address is REMOTE_ADDR. Behind a reverse proxy, uvicorn's --proxy-headers
# with FORWARDED_ALLOW_IPS (the proxy's address) puts the browser's address
# there; see deploy/README.md.
AXES_VERBOSE = False

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if env.boolean("HTTPS", False):
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = 31536000

# --- static files ---------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env.string("STATIC_ROOT", str(VAR_DIR / "static")))
# Whitenoise serves from it (after collectstatic) and warns when it is missing.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
NOVNC_DIR = Path(env.string("NOVNC_DIR", "/usr/share/novnc"))
# noVNC is served from Debian's package, never copied into the repository.
STATICFILES_DIRS = [BASE_DIR / "static", ("novnc", NOVNC_DIR)]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- Redis, Channels, Celery ----------------------------------------------------
REDIS_URL = env.string("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # No socket timeout: the layer's receive is a blocking pop that waits
            # for the next event, and redis-py 8's default 5 s read timeout would
            # end it (and close every idle websocket) after 5 quiet seconds.
            "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
            "prefix": env.string("CHANNELS_PREFIX", "lattice"),
        },
    }
}
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.string("CHANNELS_PREFIX", "lattice"),
    }
}
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env.boolean("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.integer("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 30
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis down or frozen: queueing a task fails within seconds, and the request
# answers 503 (workspaces/lib/outages.py). kombu's default is to wait forever.
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 3}
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
# Thumbnail captures read students' displays, which may be hostile or just
# slow: they have a queue of their own, served by a worker of their own
# (Procfile "captures", deploy/systemd/lattice-captures.service), so a stuck
# capture never sits in front of a workspace start. A worker started without
# -Q serves both (the tests' worker does); the Procfile names its queue.
#
# Reconcile has a queue and a worker of its own too ("upkeep", Procfile
# "upkeep", deploy/systemd/lattice-upkeep.service): a broadcast holds every
# thread of the main worker for as long as its starts take, and the pass that
# takes up a dead worker's steps must not wait behind them.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CAPTURES_QUEUE = "captures"
UPKEEP_QUEUE = "upkeep"
CELERY_TASK_QUEUES = (Queue(CELERY_TASK_DEFAULT_QUEUE), Queue(CAPTURES_QUEUE), Queue(UPKEEP_QUEUE))
CELERY_TASK_ROUTES = {
    "workspaces.tasks.workspace.capture_thumbnail": {"queue": CAPTURES_QUEUE},
    "workspaces.tasks.reconcile.reconcile": {"queue": UPKEEP_QUEUE},
}
# A capture ends by itself within its deadline (workspaces/display/rfb.py); the time
# limits are the worker's backstop (enforced by its prefork pool).
LATTICE_CAPTURE_DEADLINE = env.number("LATTICE_CAPTURE_DEADLINE", 10.0, minimum=1)
CELERY_TASK_ANNOTATIONS = {
    "workspaces.tasks.workspace.capture_thumbnail": {
        "soft_time_limit": LATTICE_CAPTURE_DEADLINE + 5,
        "time_limit": LATTICE_CAPTURE_DEADLINE + 10,
        # A capture that waited longer than a picture is kept (thumbnails.KEEP)
        # is worth nothing: the worker drops it unrun.
        "expires": 60,
    }
}
# Recovery (workspaces/leases.py): a step whose worker died is taken up again
# once its lease lapses; reconcile looks this often, so nothing stays stuck
# longer than a lease plus a pass. A pass the worker did not reach in time
# is dropped (expires): the next one does the same work.
LATTICE_LEASE_SECONDS = env.number("LATTICE_LEASE_SECONDS", 20.0, minimum=2)
LATTICE_RECONCILE_INTERVAL = env.number("LATTICE_RECONCILE_INTERVAL", 10.0, minimum=1)
# How many times one step is taken up again after its worker died before it
# fails, with a reason (a start that kills its worker each time must end).
LATTICE_MAX_RECOVERIES = env.integer("LATTICE_MAX_RECOVERIES", 3, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "reconcile": {
        "task": "workspaces.tasks.reconcile.reconcile",
        "schedule": LATTICE_RECONCILE_INTERVAL,
        "options": {"expires": LATTICE_RECONCILE_INTERVAL},
    },
    # Often: a control session lasts 90 s without renewal (teaching.CONTROL_TTL).
    "expire-control": {"task": "workspaces.tasks.workspace.expire_control", "schedule": 15.0},
}

# --- REST API -----------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "workspaces.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Lattice API",
    "DESCRIPTION": "Workspaces, images and classrooms for browser-based desktops.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- workspaces -----------------------------------------------------------------
LATTICE_ENGINE = env.string("LATTICE_ENGINE", "docker")
LATTICE_ENGINE_PREFIX = env.string("LATTICE_ENGINE_PREFIX", "lattice")
# Who keeps app containers off the host, private and link-local networks and
# other workspaces: "lattice" (the worker installs iptables rules for its
# network pool and refuses to start apps without them) or "site" (this
# host's own firewall does it: README, Security).
LATTICE_EGRESS_FIREWALL = env.choice("LATTICE_EGRESS_FIREWALL", "lattice", ("lattice", "site"))
LATTICE_SPAWN_TIMEOUT = env.number("LATTICE_SPAWN_TIMEOUT", 60.0)
LATTICE_MAX_RUNNING_WORKSPACES = env.integer("LATTICE_MAX_RUNNING_WORKSPACES", 2)
LATTICE_DISPLAY_TOKEN_TTL = env.integer("LATTICE_DISPLAY_TOKEN_TTL", 60)
# Display tokens one user may ask for in a minute (each opens a connection).
LATTICE_DISPLAY_TOKENS_PER_MINUTE = env.integer("LATTICE_DISPLAY_TOKENS_PER_MINUTE", 30, minimum=1)
LATTICE_DISPLAY_PROXY_URL = env.string("LATTICE_DISPLAY_PROXY_URL", "")
LATTICE_DISPLAY_PROXY_PORT = env.integer("LATTICE_DISPLAY_PROXY_PORT", 6080)
# Where the displays' VNC sockets live on the Docker host: the engine makes a
# folder per workspace here and bind-mounts it into the display; the worker
# and the display proxy open the sockets. All three must see the same path.
LATTICE_DISPLAY_SOCKET_DIR = env.string("LATTICE_DISPLAY_SOCKET_DIR", str(VAR_DIR / "displays"))
# The largest screen a display may have (browsers resize it up to this): the
# worker's RFB client refuses a display that announces a bigger one.
LATTICE_MAX_SCREEN = env.dimensions("LATTICE_MAX_SCREEN", "3840x2160")
# Where data volumes are backed up: a folder, or s3://bucket/prefix (any
# S3-compatible store; LATTICE_S3_ENDPOINT_URL for one that is not AWS).
LATTICE_OBJECT_STORAGE = env.string("LATTICE_OBJECT_STORAGE", str(VAR_DIR / "object-storage"))
LATTICE_S3_ENDPOINT_URL = env.string("LATTICE_S3_ENDPOINT_URL", "")
LATTICE_S3_REGION = env.string("LATTICE_S3_REGION", "")
LATTICE_S3_ACCESS_KEY = env.string("LATTICE_S3_ACCESS_KEY", "")
LATTICE_S3_SECRET_KEY = env.string("LATTICE_S3_SECRET_KEY", "")
# Running workspaces' files are backed up this often (and every workspace
# when it stops); this many backups are kept per user.
LATTICE_BACKUP_INTERVAL = env.number("LATTICE_BACKUP_INTERVAL", 3600.0, minimum=1)
LATTICE_BACKUPS_KEPT = env.integer("LATTICE_BACKUPS_KEPT", 5, minimum=1)
CELERY_BEAT_SCHEDULE["back-up-data"] = {
    "task": "workspaces.tasks.backup.back_up_due",
    "schedule": LATTICE_BACKUP_INTERVAL,
}
# How often the worker measures what running containers wrote outside /data
# and stops a workspace over its image's disk_limit (workspaces/services/disk_watch.py).
# The engine's measure is slow on fuse-overlayfs (1 to 11 s a container,
# bench/disk_usage.py; overlay2 is far cheaper); a pass still measuring when
# the next is due makes that one skip, so passes never pile up.
LATTICE_DISK_WATCH_INTERVAL = env.number("LATTICE_DISK_WATCH_INTERVAL", 120.0, minimum=10)
CELERY_BEAT_SCHEDULE["watch-disks"] = {
    "task": "workspaces.tasks.disk.watch_disks",
    "schedule": LATTICE_DISK_WATCH_INTERVAL,
}
# Workspace starts at once during a broadcast: about two per core keeps a
# 2-core machine responsive while the others wait their turn.
LATTICE_BROADCAST_CONCURRENCY = env.integer("LATTICE_BROADCAST_CONCURRENCY", 4, minimum=1)
# Classrooms: the most members (and invitations) one class may have, how many
# times one student's start may be tried, and whether a teacher may send a
# saved image of their own that no admin reviewed.
LATTICE_CLASSROOM_MAX_STUDENTS = env.integer("LATTICE_CLASSROOM_MAX_STUDENTS", 200, minimum=1)
LATTICE_SEAT_MAX_ATTEMPTS = env.integer("LATTICE_SEAT_MAX_ATTEMPTS", 3, minimum=1)
LATTICE_CLASSES_ALLOW_UNREVIEWED_IMAGES = env.boolean("LATTICE_CLASSES_ALLOW_UNREVIEWED_IMAGES", False)
LATTICE_SAVED_IMAGES_MAX_COUNT = env.integer("LATTICE_SAVED_IMAGES_MAX_COUNT", 10)
LATTICE_SAVED_IMAGES_MAX_BYTES = env.integer("LATTICE_SAVED_IMAGES_MAX_BYTES", 5 * 1024**3)
# Admin builds and pulls: how long they may take and what a build step may use.
LATTICE_BUILD_TIMEOUT = env.number("LATTICE_BUILD_TIMEOUT", 1800.0)
LATTICE_PULL_TIMEOUT = env.number("LATTICE_PULL_TIMEOUT", 1800.0)
LATTICE_BUILD_MEMORY = env.string("LATTICE_BUILD_MEMORY", "2g")
LATTICE_BUILD_CPUS = env.integer("LATTICE_BUILD_CPUS", 1, minimum=1)
# A job queued or running longer than this has lost its worker: it is failed.
LATTICE_JOB_STALE_SECONDS = env.number(
    "LATTICE_JOB_STALE_SECONDS", max(LATTICE_BUILD_TIMEOUT, LATTICE_PULL_TIMEOUT) + 600
)
# A registry admins pull catalog images from, e.g. "registry.school.org:5000".
LATTICE_REGISTRY = env.string("LATTICE_REGISTRY", "")
LATTICE_DEMO_PASSWORD_FILE = VAR_DIR / "demo-password"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.string("LOG_LEVEL", "INFO")},
    "loggers": {"axes": {"level": "WARNING"}},
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.string("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
