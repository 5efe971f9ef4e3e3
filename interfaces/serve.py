"""Serving the HL7 v2 listener: beside the FHIR API in each ``ehr serve`` process, or alone (``ehr mllp``).

With several workers every process listens on the MLLP port (SO_REUSEPORT): the kernel spreads
connections over them as it does for HTTPS. Idempotency and ordering hold across processes because
the receipt of each message commits with its data in the shared database.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from zoneinfo import ZoneInfo

from starlette.types import ASGIApp

from ehr.api.app import Listener, create_app
from ehr.api.services import Services
from ehr.audit.events import Interaction
from ehr.context import server_context
from ehr.settings import Settings
from ehr.store.senders import SenderRegistry
from interfaces.hl7v2.inbound import Arrival, Inbound
from interfaces.mllp.connection import Limits, Peer
from interfaces.mllp.server import MllpServer, ssl_context

log = logging.getLogger("ehr.mllp")


def app_with_mllp(settings: Settings) -> ASGIApp:
    """The FHIR app whose lifespan also runs the MLLP listener (unless EHR_MLLP_PORT is 0)."""
    listeners: list[Listener] = [lambda services: mllp_listener(settings, services)] if settings.mllp_port else []
    return create_app(settings, listeners=listeners)


def app_from_environment() -> ASGIApp:
    """uvicorn factory for worker processes."""
    return app_with_mllp(Settings())


@asynccontextmanager
async def mllp_listener(settings: Settings, services: Services) -> AsyncIterator[MllpServer]:
    inbound = Inbound(services.store, services.audit, SenderRegistry(services.db, services.audit),
                      ZoneInfo(settings.hl7_timezone))

    async def handle(payload: bytes, peer: Peer) -> list[bytes]:
        return await inbound.handle(Arrival(payload, peer.cert_thumbprint, peer.address))

    # at most (max_pipelined + 1) x max_message_bytes buffered per connection: 9 MiB by default
    limits = Limits(max_message_bytes=settings.mllp_max_message_bytes, idle_timeout=settings.mllp_idle_seconds,
                    max_connections=settings.mllp_max_connections, max_pipelined=8)
    server = MllpServer(handle, ssl_context(settings.server_cert, settings.server_key, settings.ca_cert), limits)
    await server.start(settings.host, settings.mllp_port, reuse_port=settings.workers > 1)
    log.warning("MLLP/TLS listening on %s:%d", settings.host, server.port)
    try:
        yield server
    finally:
        await server.close()


def run_mllp(settings: Settings) -> None:
    """``ehr mllp``: the listener alone, until SIGINT or SIGTERM."""

    async def main() -> None:
        services = await Services.open(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        sealer = loop.create_task(services.audit.run_sealer(settings.audit_seal_seconds))
        me = server_context(f"mllp://{settings.host}:{settings.mllp_port}")
        await services.audit.record(me, Interaction("server-start", detail={"listen": f"mllp {settings.mllp_port}"}))
        try:
            async with mllp_listener(settings, services):
                await stop.wait()
        finally:
            sealer.cancel()
            with suppress(asyncio.CancelledError):
                await sealer
            await services.audit.record(me, Interaction("server-stop"))
            await services.audit.seal()
            await services.close()

    asyncio.run(main())
