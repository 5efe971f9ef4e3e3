"""Many rows in one statement, with the same SQL text whatever their number.

On PostgreSQL rows travel as one array per column through ``unnest``, so each statement text is
prepared once per connection (asyncpg caches it) and a thousand rows cost one round trip; an empty
set of rows is a valid no-op, so a combined statement keeps one text too. On SQLite they become
multi-row VALUES in chunks (sqlite3 prepares statements cheaply and has no round trip).
Column types for the arrays come from the schema (ehr/db/schema.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Integer, LargeBinary, String

from ehr.db.database import Statement
from ehr.db.schema import metadata

_SQLITE_VARIABLES = 30_000  # below SQLite's limit of 32,766 host parameters per statement


@cache
def pg_type(table: str, column: str) -> str:
    kind = metadata.tables[table].columns[column].type
    for sql_type, name in ((BigInteger, "int8"), (Integer, "int4"), (Boolean, "bool"), (Float, "float8"),
                           (LargeBinary, "bytea"), (String, "text")):
        if isinstance(kind, sql_type):
            return name
    raise TypeError(f"no array type for {table}.{column}")


def arrays(table: str, columns: Sequence[str], first: int = 1) -> str:
    """``$1::text[], $2::int8[], ...`` for an unnest over ``columns``."""
    return ", ".join(f"${first + n}::{pg_type(table, c)}[]" for n, c in enumerate(columns))


def columnwise(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


def insert(dialect: str, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Statement]:
    names = ", ".join(columns)
    if dialect == "postgresql":
        return [(_json_insert(table, tuple(columns)), [json_rows(rows)])]
    out: list[Statement] = []
    width = len(columns)
    step = max(1, _SQLITE_VARIABLES // width)
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        out.append((f"INSERT INTO {table} ({names}) VALUES {_values(len(part), width)}", [v for r in part for v in r]))
    return out


@cache
def _json_insert(table: str, columns: tuple[str, ...]) -> str:
    """Rows as one JSON text (an array of arrays; bytes as hex): asyncpg encodes one string
    instead of checking the type of every element of every array parameter in Python (that check
    was a third of a create's Python time), and PostgreSQL unpacks it in C."""
    picks = ", ".join(_pick(pg_type(table, c), n) for n, c in enumerate(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {picks} FROM json_array_elements($1::json) AS r"


def _pick(kind: str, n: int) -> str:
    if kind == "bytea":
        return f"decode(r->>{n}, 'hex')"
    return f"(r->>{n})::{kind}"


def json_rows(rows: Sequence[Sequence[Any]]) -> str:
    return json.dumps([[v.hex() if isinstance(v, bytes) else v for v in row] for row in rows], separators=(",", ":"))


@cache
def _values(count: int, width: int) -> str:
    return ", ".join("(" + ", ".join(f"${i * width + j}" for j in range(1, width + 1)) + ")" for i in range(count))


def delete_resources(dialect: str, table: str, keys: Sequence[tuple[str, str]]) -> list[Statement]:
    """Every row of ``table`` that belongs to one of the (res_type, res_id) ``keys``."""
    if dialect == "postgresql":
        sql = f"DELETE FROM {table} WHERE (res_type, res_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
        return [(sql, columnwise(keys, 2))]
    return [(f"DELETE FROM {table} WHERE res_type = $1 AND res_id = $2", list(key)) for key in keys]
