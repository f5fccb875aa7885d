"""Every setting, read once from the environment (``FEWFACE_*``) into a frozen ``Settings``.

Each field's metadata names its variable and documents it; docs/settings.md lists the
same variables (a test checks the two agree).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


# Machine Box Facebox's container settings that have a Fewface equivalent (docs/facebox.md,
# compatibility). A non-empty FEWFACE_* variable wins over its alias.
FACEBOX_ALIASES = {"MB_FACEBOX_STATE_URL": "FEWFACE_STATE_URL"}  # plus MB_BASICAUTH_USER + _PASS -> FEWFACE_BASIC_AUTH
FACEBOX_UNSUPPORTED = ("MB_KEY", "MB_WORKERS", "MB_FACEBOX_DISABLE_RECOGNITION", "MB_FACEBOX_REDIS", "MB_FACEBOX_REDIS_DB")


def facebox_aliases(env: Mapping[str, str]) -> dict[str, str]:
    """FEWFACE_* values derived from Facebox's MB_* variables in ``env``."""
    out = {fewface: env[mb].strip() for mb, fewface in FACEBOX_ALIASES.items() if env.get(mb, "").strip()}
    user, password = env.get("MB_BASICAUTH_USER", ""), env.get("MB_BASICAUTH_PASS", "")
    if user or password:
        if not user or not password or ":" in user:
            raise ConfigError("MB_BASICAUTH_USER (without ':') and MB_BASICAUTH_PASS must be set together")
        out["FEWFACE_BASIC_AUTH"] = f"{user}:{password}"
    return out


def unsupported_facebox_settings(env: Mapping[str, str] | None = None) -> list[str]:
    """Facebox settings present in ``env`` that Fewface ignores (logged at start)."""
    env = os.environ if env is None else env
    return [name for name in FACEBOX_UNSUPPORTED if env.get(name, "").strip()]


def _setting(env: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    data_dir: str = _setting("FEWFACE_DATA_DIR", "./data", "Folder holding the SQLite gallery (`gallery.sqlite3`).")
    model: str = _setting("FEWFACE_MODEL", "dlib-resnet-v1", "Embedding model id: `dlib-resnet-v1`, `facenet-vggface2` or `facenet-casia`.")
    weights_path: str = _setting(
        "FEWFACE_WEIGHTS_PATH", "", "Explicit weights file for the model; empty = package data / `$TORCH_HOME/checkpoints`."
    )
    device: str = _setting("FEWFACE_DEVICE", "auto", "`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`.")
    half: bool = _setting("FEWFACE_HALF", False, "Run the embedder in fp16 on CUDA (ignored on CPU).")
    alignment: str = _setting(
        "FEWFACE_ALIGNMENT",
        "",
        "Face crop for the model: `dlib5` or `template` for dlib-resnet-v1, `box` for facenet; empty = the model's default (see Accuracy).",
    )
    flip: bool = _setting(
        "FEWFACE_FLIP",
        True,
        "Test-time flip: embed each face and its mirror image and average them (twice the network time; see Accuracy).",
    )
    host: str = _setting("FEWFACE_HOST", "127.0.0.1", "Address `python -m service` listens on (the Docker image uses 0.0.0.0).")
    port: int = _setting("FEWFACE_PORT", 8080, "TCP port.")
    threads: int = _setting("FEWFACE_THREADS", 8, "Worker threads of the WSGI server (waitress).")
    shutdown_timeout: float = _setting(
        "FEWFACE_SHUTDOWN_TIMEOUT", 25.0, "Seconds requests in flight get to finish after SIGTERM / SIGINT before the server exits anyway."
    )
    memory_trim_interval: float = _setting(
        "FEWFACE_MEMORY_TRIM_INTERVAL",
        5.0,
        "Seconds between handing memory freed by worker threads back to the OS (glibc `malloc_trim`); 0 = never.",
    )
    feed_poll_interval: float = _setting(
        "FEWFACE_FEED_POLL_INTERVAL",
        1.0,
        "With PostgreSQL: seconds between a replica's polls of the change log when no notification woke it (the fallback "
        "that makes a missed notification or a reconnect lose nothing).",
    )
    match_threshold: float | None = _setting(
        "FEWFACE_MATCH_THRESHOLD",
        None,
        "One fixed cosine similarity for every match (identify and verify); empty = the calibrated rule (see Accuracy).",
    )
    match_false_accept: float = _setting(
        "FEWFACE_MATCH_FALSE_ACCEPT",
        0.01,
        "Chance that identify names a stranger, held whatever the gallery size: the threshold rises as the gallery grows.",
    )
    verify_false_accept: float = _setting(
        "FEWFACE_VERIFY_FALSE_ACCEPT",
        0.005,
        "Chance that verify calls two different people the same (sets verify's default threshold from the calibration).",
    )
    quality_min_eye_distance: float = _setting(
        "FEWFACE_QUALITY_MIN_EYE_DISTANCE", 28.0, "Teach refuses faces whose eyes are closer than this (pixels, working image)."
    )
    quality_min_sharpness: float = _setting(
        "FEWFACE_QUALITY_MIN_SHARPNESS", 0.06, "Teach refuses faces less sharp than this (Laplacian / grey variance of the face)."
    )
    quality_min_visible: float = _setting(
        "FEWFACE_QUALITY_MIN_VISIBLE", 0.9, "Teach refuses faces with less than this share of their box inside the image."
    )
    quality_max_yaw: float = _setting(
        "FEWFACE_QUALITY_MAX_YAW", 0.7, "Teach refuses faces turned further than this (nose offset / half eye distance; 1 = profile)."
    )
    top_k: int = _setting("FEWFACE_TOP_K", 3, "Candidates returned per face by identify.")
    max_upload_bytes: int = _setting("FEWFACE_MAX_UPLOAD_BYTES", 20 * 1024 * 1024, "Largest request body accepted (413 above).")
    max_image_pixels: int = _setting(
        "FEWFACE_MAX_IMAGE_PIXELS", 40_000_000, "Largest decoded image (width x height) accepted; guards against decompression bombs."
    )
    max_decode_bytes: int = _setting(
        "FEWFACE_MAX_DECODE_BYTES",
        256 * 1024 * 1024,
        "Memory one image may take to decode, estimated from its header (tiles, strips, wide modes); 422 `image_too_complex` above.",
    )
    max_jpeg_scans: int = _setting(
        "FEWFACE_MAX_JPEG_SCANS",
        100,
        "Most scans a (progressive) JPEG may have; each is a pass over the whole image (cameras write about 10).",
    )
    decode_timeout: float = _setting(
        "FEWFACE_DECODE_TIMEOUT", 5.0, "Seconds an image may take to decode (checked every 16 KiB of input); 422 `image_too_complex` after."
    )
    max_image_side: int = _setting(
        "FEWFACE_MAX_IMAGE_SIDE", 1600, "Images are downscaled so their longer side is at most this before detection."
    )
    min_face_size: int = _setting("FEWFACE_MIN_FACE_SIZE", 20, "Smallest face (pixels, after downscaling) the detector looks for.")
    detect_side: int = _setting(
        "FEWFACE_DETECT_SIDE",
        640,
        "The detector scans images as if their longer side were at most this (faces then refined at full resolution); "
        "in bigger images the smallest face found grows in proportion. 0 = scan the full resolution (slower).",
    )
    min_detection_prob: float = _setting("FEWFACE_MIN_DETECTION_PROB", 0.9, "Faces the detector is less sure of are ignored.")
    max_faces: int = _setting("FEWFACE_MAX_FACES", 100, "At most this many faces (largest first) are identified per image.")
    max_teach_images: int = _setting("FEWFACE_MAX_TEACH_IMAGES", 10, "Most images one teach request may carry.")
    face_token_ttl: float = _setting(
        "FEWFACE_FACE_TOKEN_TTL",
        900.0,
        "Seconds an identify answer's `face_token` can be taught from (kept in memory only); 0 = identify issues no tokens.",
    )
    face_token_max: int = _setting("FEWFACE_FACE_TOKEN_MAX", 2000, "Most face tokens kept at once (the oldest are forgotten first).")
    thumbnails: bool = _setting(
        "FEWFACE_THUMBNAILS",
        True,
        "Keep a small JPEG (96 px) of each taught face, served to the console and exported in state files; false = none stored.",
    )
    max_connections: int = _setting(
        "FEWFACE_MAX_CONNECTIONS", 1000, "Most open client connections; near it the idle and slowest-sending ones are closed to make room."
    )
    idle_timeout: float = _setting("FEWFACE_IDLE_TIMEOUT", 30.0, "Seconds a connection may stay open without sending a request.")
    header_timeout: float = _setting(
        "FEWFACE_HEADER_TIMEOUT", 10.0, "Seconds from a request's first byte to the end of its headers, however slowly they trickle in."
    )
    body_timeout: float = _setting(
        "FEWFACE_BODY_TIMEOUT", 60.0, "Seconds from the end of a request's headers to the end of its body (408 `request_timeout` after)."
    )
    log_level: str = _setting("FEWFACE_LOG_LEVEL", "INFO", "Python logging level.")
    api_key: str = _setting(
        "FEWFACE_API_KEY", "", "When set, requests need `X-API-Key: <key>` or `Authorization: Bearer <key>` (see Authentication)."
    )
    basic_auth: str = _setting(
        "FEWFACE_BASIC_AUTH", "", "`user:password`; when set, requests may use HTTP basic auth (as Facebox's `MB_BASICAUTH_*`)."
    )
    metrics: bool = _setting(
        "FEWFACE_METRICS", True, "Serve Prometheus metrics at `GET /metrics` (see Metrics); false = no route, no recording."
    )
    metrics_public: bool = _setting(
        "FEWFACE_METRICS_PUBLIC",
        False,
        "Serve `/metrics` without credentials even when authentication is on, for scrapers that cannot send a key (see Metrics).",
    )
    state_url: str = _setting(
        "FEWFACE_STATE_URL",
        "",
        "State file (path, `file://` or `http(s)://` URL) loaded at start into an empty gallery (Facebox's `MB_FACEBOX_STATE_URL`).",
    )
    allow_private_urls: bool = _setting(
        "FEWFACE_ALLOW_PRIVATE_URLS", False, "Let `url` inputs reach private, loopback, link-local and reserved addresses."
    )
    url_timeout: float = _setting("FEWFACE_URL_TIMEOUT", 10.0, "Seconds a `url` input may take to download, redirects included.")
    batch_max_size: int = _setting(
        "FEWFACE_BATCH_MAX_SIZE", 32, "Most faces embedded (or same-size images detected) in one batch across concurrent requests."
    )
    batch_max_wait_ms: float = _setting(
        "FEWFACE_BATCH_MAX_WAIT_MS",
        5.0,
        "Longest a request's work waits for batch-mates once a worker is free to take it (never when alone); 0 = take what is queued.",
    )
    detect_workers: int = _setting(
        "FEWFACE_DETECT_WORKERS", 2, "Threads running face detection; each batches concurrent requests' same-size images."
    )
    torch_threads: int = _setting(
        "FEWFACE_TORCH_THREADS",
        0,
        "Intra-op threads each detection / embedding worker runs its batches on; 0 = every core for a batch that runs alone, "
        "1 while other work runs or waits.",
    )
    index_exact_max: int = _setting(
        "FEWFACE_INDEX_EXACT_MAX", 200_000, "Gallery size up to which search is exact; above it an IVF index is used (see Performance)."
    )
    index_nprobe: int = _setting("FEWFACE_INDEX_NPROBE", 0, "IVF cells scanned per query above the exact size; 0 = max(32, cells / 8).")
    db_busy_timeout: float = _setting(
        "FEWFACE_DB_BUSY_TIMEOUT",
        5.0,
        "Seconds a request waits for the SQLite lock another program holds before answering 503 `database_busy`.",
    )
    database_url: str = _setting(
        "FEWFACE_DATABASE_URL",
        "",
        "Gallery store: empty = SQLite in `FEWFACE_DATA_DIR`; `postgresql://user:password@host:port/database` = PostgreSQL (see Stores).",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``env`` (default ``os.environ``); ``overrides`` win over both."""
        env = os.environ if env is None else env
        aliases = facebox_aliases(env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw and not raw.strip() and f.name in _CREDENTIALS:
                raise ConfigError(f"{f.metadata['env']} is only whitespace: set a real credential, or leave it empty for no authentication")
            if raw is None or raw.strip() == "":
                raw = aliases.get(f.metadata["env"])
            if raw is not None and raw.strip() != "":
                values[f.name] = _parse(f.name, f.default, raw.strip())
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        positive = (
            "port",
            "threads",
            "top_k",
            "max_upload_bytes",
            "max_image_pixels",
            "max_image_side",
            "min_face_size",
            "max_faces",
            "max_teach_images",
            "max_decode_bytes",
            "max_jpeg_scans",
            "max_connections",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_env(name)} must be positive")
        if self.match_threshold is not None and not -1.0 <= self.match_threshold <= 1.0:
            raise ConfigError("FEWFACE_MATCH_THRESHOLD must be between -1 and 1")
        for name in ("match_false_accept", "verify_false_accept"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"{_env(name)} must be between 0 and 1 (exclusive)")
        for name in ("quality_min_eye_distance", "quality_min_sharpness", "quality_min_visible", "quality_max_yaw"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{_env(name)} must not be negative")
        if not 0.0 <= self.min_detection_prob <= 1.0:
            raise ConfigError("FEWFACE_MIN_DETECTION_PROB must be between 0 and 1")
        if self.api_key and not self.api_key.strip():
            raise ConfigError("FEWFACE_API_KEY is only whitespace: set a real key, or leave it empty for no authentication")
        user, colon, password = self.basic_auth.partition(":")
        if self.basic_auth and (not colon or not user.strip() or not password.strip()):
            raise ConfigError("FEWFACE_BASIC_AUTH must look like user:password, with a non-empty user and password")
        if not self.shutdown_timeout >= 0:
            raise ConfigError("FEWFACE_SHUTDOWN_TIMEOUT must not be negative")
        if not 0.01 <= self.feed_poll_interval <= 3600:
            raise ConfigError("FEWFACE_FEED_POLL_INTERVAL must be between 0.01 and 3600 seconds")
        if not self.memory_trim_interval >= 0:
            raise ConfigError("FEWFACE_MEMORY_TRIM_INTERVAL must not be negative")
        for name in ("decode_timeout", "idle_timeout", "header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{_env(name)} must be positive")
        if not self.url_timeout > 0:
            raise ConfigError("FEWFACE_URL_TIMEOUT must be positive")
        for name in ("batch_max_size", "detect_workers", "index_exact_max"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_env(name)} must be positive")
        for name in ("batch_max_wait_ms", "index_nprobe", "detect_side", "torch_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_env(name)} must not be negative")
        if self.metrics_public and not self.metrics:
            raise ConfigError("FEWFACE_METRICS_PUBLIC=true makes no sense with FEWFACE_METRICS=false (no /metrics route to expose)")
        if not 0 <= self.db_busy_timeout <= 600:
            raise ConfigError("FEWFACE_DB_BUSY_TIMEOUT must be between 0 and 600 seconds")
        if not 0 <= self.face_token_ttl <= 7 * 24 * 3600:
            raise ConfigError("FEWFACE_FACE_TOKEN_TTL must be between 0 and 604800 seconds (a week)")
        if not 0 <= self.face_token_max <= 1_000_000:
            raise ConfigError("FEWFACE_FACE_TOKEN_MAX must be between 0 and 1000000")
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("FEWFACE_DATABASE_URL must be empty (SQLite) or a postgresql:// URL")


_CREDENTIALS = ("api_key", "basic_auth")  # set to only whitespace: refuse, never silently "no auth"


def env_table() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, in declaration order."""
    rows = []
    for f in fields(Settings):
        default = "" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
        rows.append((f.metadata["env"], default, f.metadata["doc"]))
    return rows


def _env(name: str) -> str:
    return next(f.metadata["env"] for f in fields(Settings) if f.name == name)


def _parse(name: str, default: Any, raw: str) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float) or name == "match_threshold":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{_env(name)}={raw!r} is not a valid value") from None
    return raw
