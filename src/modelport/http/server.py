"""Running the app under granian (RSGI); the factory rebuilds settings in each worker process.

`app_from_environment` is also an ASGI app factory for other servers, e.g.
`uvicorn --factory modelport.http.server:app_from_environment`.

`run_server` runs in the process that becomes granian's supervisor, which lives as long as
the server and from which the workers are forked: the app (and with it SQLAlchemy, the
services and the protocols) is imported only by the factory, in the workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelport.settings import Settings, load_settings

if TYPE_CHECKING:
    from modelport.http.app import App


def app_from_environment() -> App:
    """Granian's factory target: workers are separate processes, so they read settings anew."""
    from modelport.http.app import App

    return App(load_settings())


def run_server(settings: Settings) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    Granian(
        "modelport.http.server:app_from_environment",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.RSGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        factory=True,
        log_level=LogLevels(settings.log_level),
        log_access=False,
        # HTTP/1.1 only: in granian's "auto" mode a connection that sends nothing is held
        # until the client hangs up (no timer runs while it guesses the protocol).
        http=HTTPModes.http1,
        # hyper starts this timer when a connection opens and again when a response ends, so
        # it bounds slow headers and idle keep-alive connections alike.
        http1_settings=HTTP1Settings(header_read_timeout=round(settings.header_timeout * 1000)),
        # granian's "backpressure" is the connections a worker serves at once; more wait in
        # the listen queue (they are not refused).
        backpressure=max(1, settings.max_connections // max(1, settings.workers)),
    ).serve()
