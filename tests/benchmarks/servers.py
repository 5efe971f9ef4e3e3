"""Server processes and databases for one benchmark run; every one is stopped or dropped on exit.

The real server is ``python -m ehr.cli serve`` (one worker) on a state directory made by
``ehr init``; the bare baseline is ``python -m tests.benchmarks.bare`` on the same certificates.
Each gets a database of its own: a fresh PostgreSQL database, or a SQLite file in a temp dir.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from tests.benchmarks.load import Target, exchange_once, http_request

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
INIT_TIMEOUT = 120.0


class ServerError(Exception):
    """A server process that would not start; carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def client_tls(pki: Path) -> ssl.SSLContext:
    """The demo client's side of mutual TLS, trusting the dev CA."""
    context = ssl.create_default_context(cafile=pki / "ca.pem")
    context.load_cert_chain(pki / "client.pem", pki / "client-key.pem")
    return context


def _environment(**ehr: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
    env.update({f"EHR_{key.upper()}": value for key, value in ehr.items()})
    return env


@asynccontextmanager
async def postgres_database(admin_url: str, label: str) -> AsyncIterator[str]:
    """A fresh database on the admin URL's server, dropped afterwards; yields its asyncpg URL."""
    name = f"ehr_bench_{label}_{uuid.uuid4().hex[:8]}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(statement, timeout=60)
    finally:
        await connection.close()


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def init_state(home: Path, database_url: str, log: Path) -> None:
    """``ehr init``: dev PKI, keys, schema and the demo client."""
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ehr.cli", "--home", str(home), "init",
            env=_environment(database_url=database_url), cwd=REPO, stdout=out, stderr=out,
        )
        try:
            code = await asyncio.wait_for(process.wait(), INIT_TIMEOUT)
        finally:
            await _stop(process)
    if code != 0:
        raise ServerError(f"ehr init exited with {code}:\n{_tail(log)}")


async def demo_client_id(home: Path, database_url: str) -> str:
    """The id of the demo client ``ehr init`` registered (``ehr clients list``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ehr.cli", "--home", str(home), "clients", "list",
        env=_environment(database_url=database_url), cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), INIT_TIMEOUT)
    for line in output.decode().splitlines():
        if " demo-client " in f" {line} ":
            return line.split()[0]
    raise ServerError(f"no demo client in `ehr clients list`:\n{output.decode()[-2000:]}")


@asynccontextmanager
async def full_server(home: Path, database_url: str, log: Path, mllp_port: int = 0) -> AsyncIterator[Target]:
    """``ehr serve``; with ``mllp_port``, its HL7 v2 listener too (ready when HTTPS is)."""
    port = free_port()
    workers = os.environ.get("EHR_BENCH_WORKERS", "1")  # server processes of the full server (default 1)
    env = _environment(home=str(home), database_url=database_url, port=str(port), workers=workers,
                       mllp_port=str(mllp_port))
    async with _serving([sys.executable, "-m", "ehr.cli", "serve"], env, port, home / "pki", log) as target:
        yield target


@asynccontextmanager
async def bare_server(pki: Path, database_url: str, log: Path) -> AsyncIterator[Target]:
    port = free_port()
    command = [sys.executable, "-m", "tests.benchmarks.bare", "--database", database_url,
               "--pki", str(pki), "--port", str(port)]
    async with _serving(command, _environment(), port, pki, log) as target:
        yield target


@asynccontextmanager
async def bare_mllp_server(pki: Path, database_url: str, log: Path) -> AsyncIterator[Target]:
    port = free_port()
    command = [sys.executable, "-m", "tests.benchmarks.bare_mllp", "--database", database_url,
               "--pki", str(pki), "--port", str(port)]
    async with _serving(command, _environment(), port, pki, log, probe=_handshake) as target:
        yield target


Probe = Callable[[Target], Awaitable[object]]


async def _metadata(target: Target) -> object:
    """Any HTTP response over mutual TLS."""
    return await exchange_once(target, http_request("GET", "/fhir/metadata"))


async def _handshake(target: Target) -> object:
    """A mutual-TLS handshake (the MLLP listener answers nothing until a message comes)."""
    _, writer = await asyncio.open_connection(target.host, target.port, ssl=target.tls, server_hostname="localhost")
    writer.close()
    return None


@asynccontextmanager
async def _serving(
    command: list[str], env: dict[str, str], port: int, pki: Path, log: Path, probe: Probe = _metadata
) -> AsyncIterator[Target]:
    target = Target("127.0.0.1", port, client_tls(pki))
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(*command, env=env, cwd=REPO, stdout=out, stderr=out)
        try:
            await _wait_ready(target, process, log, probe)
            yield target
        finally:
            await _stop(process)


async def _wait_ready(target: Target, process: asyncio.subprocess.Process, log: Path, probe: Probe) -> None:
    """Until ``probe`` succeeds against the server."""
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    while asyncio.get_running_loop().time() < deadline:
        if process.returncode is not None:
            raise ServerError(f"server exited with {process.returncode}:\n{_tail(log)}")
        try:
            await probe(target)
            return
        except (OSError, TimeoutError, EOFError):
            await asyncio.sleep(0.2)
    raise ServerError(f"server not ready within {READY_TIMEOUT:.0f} s:\n{_tail(log)}")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:]


def log_problems(log: Path) -> list[str]:
    """Lines of a server log that report an error (uvicorn logs at warning level and above)."""
    markers = ("Traceback", "ERROR", "Exception", "CRITICAL", "WARNING")
    return [line for line in log.read_text(errors="replace").splitlines() if any(m in line for m in markers)]
