"""Run the HTTPS server: uvicorn with our TLS policy and the verified peer certificate in the scope.

One process, or ``workers`` processes sharing one listening socket (uvicorn's Multiprocess
supervisor). Processes share nothing but the database and the key files.
"""

from __future__ import annotations

import uvicorn
from uvicorn.supervisors import Multiprocess

from ehr.api.app import create_app
from ehr.settings import Settings
from ehr.tls import EhrServerConfig


def server_config(settings: Settings) -> EhrServerConfig:
    common = {
        "host": settings.host,
        "port": settings.port,
        "certfile": settings.server_cert,
        "keyfile": settings.server_key,
        "client_ca": settings.ca_cert,
        "log_level": "warning",
        "access_log": False,  # the URL can carry patient identifiers; audit records what was accessed
        "server_header": False,
        "loop": "uvloop",
        "lifespan": "on",
    }
    if settings.workers > 1:
        return EhrServerConfig(
            "ehr.api.app:app_from_environment", factory=True, workers=settings.workers, **common
        )
    return EhrServerConfig(create_app(settings), **common)


def serve(settings: Settings) -> None:
    config = server_config(settings)
    server = uvicorn.Server(config)
    if config.workers > 1:
        sock = config.bind_socket()
        Multiprocess(config, target=server.run, sockets=[sock]).run()
    else:
        server.run()
