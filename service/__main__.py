"""``python -m service``: serve the API with waitress (a production WSGI server)."""

from __future__ import annotations

import logging
import os
import sys

from models.weights import WeightsNotFoundError
from service import create_app
from service.config import ConfigError, Settings
from service.gallery import ModelMismatchError

log = logging.getLogger("service")


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        logging.basicConfig(level=logging.INFO)
        log.error("configuration error: %s", exc)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings)
    except ModelMismatchError as exc:
        log.error("cannot start (model_mismatch): %s", exc)
        return 2
    except (WeightsNotFoundError, ValueError, RuntimeError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    from service.serving import DrainingServer

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
