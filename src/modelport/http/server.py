"""Running the app under granian (RSGI); the factory rebuilds settings in each worker process.

`app_from_environment` is also an ASGI app factory for other servers, e.g.
`uvicorn --factory modelport.http.server:app_from_environment`.
"""

from __future__ import annotations

from modelport.http.app import App
from modelport.settings import Settings, load_settings


def app_from_environment() -> App:
    """Granian's factory target: workers are separate processes, so they read settings anew."""
    return App(load_settings())


def run_server(settings: Settings) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops
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
    ).serve()
