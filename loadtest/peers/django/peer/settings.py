"""Minimal Django settings for the loadtest Channels peer (no database)."""
import os

SECRET_KEY = "loadtest-peer-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
MIDDLEWARE = []
ROOT_URLCONF = "peer.urls"
DATABASES = {}
USE_TZ = True
ASGI_APPLICATION = "peer.asgi.application"
LOGGING = {"version": 1, "disable_existing_loggers": True}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [("127.0.0.1", int(os.environ.get("PEER_REDIS_PORT", "6379")))],
            "capacity": 10000,
            "expiry": 60,
        },
    }
}
