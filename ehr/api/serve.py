"""Run the HTTPS server: uvicorn with our TLS policy and the verified peer certificate in the scope.

One process, or ``workers`` processes sharing one listening socket (uvicorn's Multiprocess
supervisor; each worker builds its app from the EHR_* environment). Processes share nothing but the
database and the key files.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from ehr.api.app import create_app
from ehr.settings import Settings
from ehr.tls import EhrServerConfig

# The URL can carry patient identifiers: no access log (the audit log records what was accessed).
_UVICORN: dict[str, Any] = {"log_level": "warning", "access_log": False, "server_header": False, "loop": "uvloop"}


def server_config(
    settings: Settings, app: Any = None, factory: str = "ehr.api.app:app_from_environment"
) -> EhrServerConfig:
    """``app`` for one process (default: the FHIR app alone); ``factory`` builds it in each worker."""
    app = app or create_app(settings)
    extra: dict[str, Any] = {}
    if settings.workers > 1:
        app, extra = factory, {"factory": True, "workers": settings.workers}
    return EhrServerConfig(
        app,
        host=settings.host,
        port=settings.port,
        certfile=settings.server_cert,
        keyfile=settings.server_key,
        client_ca=settings.ca_cert,
        **_UVICORN,
        **extra,
    )


def serve(settings: Settings, app: Any = None, factory: str = "ehr.api.app:app_from_environment") -> None:
    config = server_config(settings, app, factory)
    if config.workers > 1:
        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run()
