"""Running the app under granian (RSGI); the factory rebuilds settings in each worker process.

`app_from_environment` is also an ASGI app factory for other servers, e.g.
`uvicorn --factory modelport.http.server:app_from_environment`.

`run_server` runs in the process that becomes granian's supervisor, which lives as long as
the server and from which the workers are forked: the app (and with it SQLAlchemy, the
services and the protocols) is imported only by the factory, in the workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.settings import Settings, load_settings

if TYPE_CHECKING:
    from modelport.http.app import App


def app_from_environment() -> App:
    """Granian's factory target: workers are separate processes, so they read settings anew."""
    from modelport.http.app import App
    from modelport.http.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return App(settings)


def run_server(settings: Settings) -> None:
    # Several workers share their metrics through files in one empty directory (made here,
    # before they start, and removed when the server stops); the operator's own, if set.
    metrics_dir: str | None = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="modelport-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    tls = settings.tls_cert is not None and settings.tls_key is not None
    try:
        _granian(settings, tls).serve()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _granian(settings: Settings, tls: bool) -> Any:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops, SSLProtocols
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    from modelport.http.logs import granian_log_config

    return Granian(
        "modelport.http.server:app_from_environment",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.RSGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        factory=True,
        log_level=LogLevels(settings.log_level),
        log_dictconfig=granian_log_config(settings.log_format),
        log_access=False,  # modelport writes its own access lines (http/logs.py)
        # HTTP/1.1 only: in granian's "auto" mode a connection that sends nothing is held
        # until the client hangs up (no timer runs while it guesses the protocol).
        http=HTTPModes.http1,
        # hyper starts this timer when a connection opens and again when a response ends, so
        # it bounds slow headers and idle keep-alive connections alike.
        http1_settings=HTTP1Settings(header_read_timeout=round(settings.header_timeout * 1000)),
        # granian's "backpressure" is the connections a worker serves at once; more wait in
        # the listen queue (they are not refused).
        backpressure=max(1, settings.max_connections // max(1, settings.workers)),
        # HTTPS served by granian itself (docs/deploy.md shows the reverse-proxy alternative).
        ssl_cert=Path(settings.tls_cert) if tls and settings.tls_cert else None,
        ssl_key=Path(settings.tls_key) if tls and settings.tls_key else None,
        ssl_protocol_min=SSLProtocols.tls12,
    )
