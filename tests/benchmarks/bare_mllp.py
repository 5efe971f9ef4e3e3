"""The bare MLLP baseline: the least a listener can do to keep a message and acknowledge it.

Same TLS policy and certificates as the real listener (interfaces.mllp.server.ssl_context: TLS 1.2+,
client certificate required), uvloop, one process. Per frame: insert the raw bytes with their
control id into a table of its own (a durable commit: asyncpg pool, or SQLite in WAL with
synchronous=FULL, as the real server), then answer MSA|AA. No parsing, mapping, validation,
encryption, versioning, audit or sender checks: the gap to ``ehr serve`` is what those cost.
Run as ``python -m tests.benchmarks.bare_mllp --help``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Protocol

import aiosqlite
import asyncpg  # type: ignore[import-untyped]
import uvloop

from interfaces.mllp.server import ssl_context

_TABLE = "CREATE TABLE IF NOT EXISTS bare_message (control_id TEXT PRIMARY KEY, body {blob} NOT NULL)"
POOL_SIZE = 20


class Messages(Protocol):
    async def insert(self, control_id: str, body: bytes) -> None: ...


class PostgresMessages:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert(self, control_id: str, body: bytes) -> None:
        await self._pool.execute("INSERT INTO bare_message VALUES ($1, $2)", control_id, body)


class SqliteMessages:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def insert(self, control_id: str, body: bytes) -> None:
        await self._db.execute("INSERT INTO bare_message VALUES (?, ?)", (control_id, body))


async def open_messages(url: str) -> Messages:
    scheme, _, rest = url.partition("://")
    if scheme.startswith("postgresql"):
        pool = await asyncpg.create_pool(f"postgresql://{rest}", min_size=POOL_SIZE, max_size=POOL_SIZE)
        await pool.execute(_TABLE.format(blob="bytea"))
        return PostgresMessages(pool)
    db = await aiosqlite.connect(Path(rest.removeprefix("/")), isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000"):
        await db.execute(f"PRAGMA {pragma}")
    await db.execute(_TABLE.format(blob="BLOB"))
    return SqliteMessages(db)


def connection_handler(messages: Messages):  # type: ignore[no-untyped-def]
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                frame = (await reader.readuntil(b"\x1c\r"))[1:-2]
                msh = frame.split(b"\r", 1)[0].split(b"|")
                control_id = msh[9].decode() if len(msh) > 9 else ""
                await messages.insert(control_id, frame)
                ack = f"MSH|^~\\&|EHR|HOSP|LIS|LAB|20260101||ACK^R01^ACK|A{control_id}|P|2.5.1\rMSA|AA|{control_id}\r"
                writer.write(b"\x0b" + ack.encode() + b"\x1c\r")
                await writer.drain()
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()

    return serve


async def serve(database: str, pki: Path, port: int) -> None:
    messages = await open_messages(database)
    context = ssl_context(pki / "server.pem", pki / "server-key.pem", pki / "ca.pem")
    server = await asyncio.start_server(connection_handler(messages), "127.0.0.1", port, ssl=context)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bare_mllp", description=__doc__)
    parser.add_argument("--database", required=True, help="postgresql+asyncpg://... or sqlite+aiosqlite:///...")
    parser.add_argument("--pki", required=True, type=Path, help="directory of an `ehr init` dev PKI")
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.database, args.pki, args.port))


if __name__ == "__main__":
    main()
