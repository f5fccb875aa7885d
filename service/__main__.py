"""``python -m service``: serve the API with waitress (a production WSGI server).
``python -m service check [--repair]``: check the gallery's rows (service/store/check.py).
``python -m service migrate-store --to postgresql://...``: copy the SQLite gallery into PostgreSQL (service/store/copy.py)."""

from __future__ import annotations

import logging
import os
import sys

from models.weights import WeightsNotFoundError
from service import create_app
from service.config import ConfigError, Settings, unsupported_facebox_settings
from service.http.auth import exposure_warning
from service.store.datalock import DataDirInUseError
from service.store.gallery import GalleryOpenError, ModelMismatchError

log = logging.getLogger("service")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["check"]:
        from service.store.check import check_main

        return check_main(args[1:])
    if args[:1] == ["migrate-store"]:
        from service.store.copy import migrate_store_main

        return migrate_store_main(args[1:])
    if args:
        logging.basicConfig(level=logging.INFO)
        log.error("usage: python -m service [check [--repair] | migrate-store --to postgresql://...]")
        return 2
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        logging.basicConfig(level=logging.INFO)
        log.error("configuration error: %s", exc)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    warning = exposure_warning(settings)
    if warning:
        log.warning("!!! %s !!!", warning)  # first thing said: also before a start that fails
    try:
        app = create_app(settings)  # opens the gallery before the models load: a bad data directory fails fast
    except DataDirInUseError as exc:
        log.error("cannot start (data_dir_in_use): %s", exc)
        return 2
    except GalleryOpenError as exc:
        log.error("cannot start (storage): %s", exc)
        return 2
    except ModelMismatchError as exc:
        log.error("cannot start (model_mismatch): %s", exc)
        return 2
    except (WeightsNotFoundError, ValueError, RuntimeError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    for name in unsupported_facebox_settings():
        log.warning("%s is a Facebox setting Fewface does not support; ignored (docs/facebox.md)", name)
    if settings.state_url:
        from service.startup_state import StartupStateError, load_startup_state, shown

        try:
            load_startup_state(
                app.extensions["fewface"].gallery,
                settings.state_url,
                max_bytes=settings.max_upload_bytes,
                timeout=settings.url_timeout,
                thumbnails=settings.thumbnails,
            )
        except StartupStateError as exc:
            log.error("cannot start: state file %s (FEWFACE_STATE_URL / MB_FACEBOX_STATE_URL): %s", shown(settings.state_url), exc)
            app.extensions["fewface"].engine.close()
            app.extensions["fewface"].gallery.close()
            return 2
    from service.http.serving import DrainingServer

    server = DrainingServer(
        app,
        shutdown_timeout=settings.shutdown_timeout,
        memory_trim_interval=settings.memory_trim_interval,
        max_connections=settings.max_connections,
        idle_timeout=settings.idle_timeout,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        host=settings.host,
        port=settings.port,
        threads=settings.threads,
        max_request_body_size=settings.max_upload_bytes + 64 * 1024,
        ident="fewface",
    )
    server.install_signal_handlers()
    for host, port in server.addresses:
        log.info("listening on http://%s:%s", host, port)
    drained = server.serve()  # returns after SIGTERM / SIGINT and the drain of requests in flight
    recognizer = app.extensions["fewface"]
    if "fewface_feed" in app.extensions:
        app.extensions["fewface_feed"].stop()
    if drained:
        recognizer.engine.close()  # nothing is in flight: stop the batcher's threads
    recognizer.gallery.close()
    log.info("stopped")
    if not drained:
        logging.shutdown()
        os._exit(0)  # worker threads still inside the model would abort the interpreter's own shutdown
    return 0


if __name__ == "__main__":
    sys.exit(main())
