"""Run a parsed search against the index: one page of matches, the total, and the includes.

Paging is keyset paging on the sort keys plus (type, id), with opaque cursors holding the keys of the
page's edge row, so writes between pages neither repeat nor skip a resource whose sort keys did not
change (the default order is by id, which never changes). The patient compartment filter, when
given, applies in SQL to the matches and to every included resource, before any limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from ehr.cursor import decode, encode
from ehr.db.database import Executor, Row
from ehr.errors import Category, EhrError
from ehr.fhir.search.model import Include, Search, SortKey
from ehr.fhir.search.query import parse
from ehr.fhir.validator import RESOURCE_TYPES
from ehr.store.index import supported_params as supported_params  # re-exported
from ehr.store.search_sql import Compiler

# A resource without the sort value sorts after the others.
_NULL_LAST: dict[tuple[type, bool], int | float] = {
    (int, False): 2**62, (int, True): -(2**62), (float, False): 1e300, (float, True): -1e300,
}
_INCLUDE_LIMIT = 1000
_ITERATE_DEPTH = 3
HEAD_VERSION = (
    "SELECT v.* FROM resource_head h JOIN resource_version v "
    "ON v.res_type = h.res_type AND v.res_id = h.res_id AND v.version = h.version"
)


_RESULT_PARAMETERS = ("_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_cursor")
SEARCHABLE = frozenset(RESOURCE_TYPES) - {"AuditEvent"}  # the audit log has its own search (ehr/audit/review.py)


def criteria_of(res_type: str, query: str, base: str, what: str) -> Search:
    """The criteria of a conditional interaction or reference (``Type?query`` or just the query),
    parsed strictly: an unknown parameter must not silently widen what matches."""
    if res_type not in SEARCHABLE:
        raise EhrError(Category.NOT_FOUND, "unknown resource type")
    pairs = parse_qsl(query.split("?", 1)[-1], keep_blank_values=False)
    if any(name.split(":")[0] in _RESULT_PARAMETERS for name, _ in pairs):
        raise EhrError(Category.INVALID, f"{what} takes search criteria only, not result parameters")
    parsed = parse(res_type, pairs, supported_params, base=base, strict=True, max_count=2, resource_types=SEARCHABLE)
    if not parsed.criteria:
        raise EhrError(Category.PRECONDITION_FAILED, f"{what} needs at least one search criterion")
    return parsed


@dataclass(slots=True)
class Page:
    matches: list[Row]
    included: list[Row] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    previous_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Scope:
    """What the caller may see: the types searched, the types it may include, the one patient (or all)."""

    types: tuple[str, ...]
    readable: frozenset[str] | None
    patient: str | None = None
    filters: tuple[Search, ...] | None = None  # granular scopes: a match must meet one of them


_SORTABLE: dict[str, tuple[str, str, str, type]] = {
    "date": ("search_date", "min(x.lo)", "max(x.hi)", int),
    "number": ("search_number", "min(x.value)", "max(x.value)", float),
    "quantity": ("search_number", "min(x.value)", "max(x.value)", float),
}


def _sort_expression(key: SortKey, compiler: Compiler) -> tuple[str, type]:
    """The SQL of one sort key, and the Python type of its values (to check cursors)."""
    param, desc = key.param, key.descending
    if param.code == "_id":
        return "h.res_id", str
    if param.code == "_lastUpdated":
        return "h.ts_us", int
    if param.type not in _SORTABLE:
        raise EhrError(Category.INVALID, f"cannot sort by '{param.code}' (only dates, numbers, _id, _lastUpdated)")
    table, lo, hi, kind = _SORTABLE[param.type]
    sub = (
        f"SELECT {hi if desc else lo} FROM {table} x WHERE x.res_type = h.res_type AND x.res_id = h.res_id "
        f"AND x.param = {compiler.arg(param.code)}"
    )
    return f"COALESCE(({sub}), {compiler.arg(_NULL_LAST[kind, desc])})", kind


class Runner:
    def __init__(self, db: Executor, compiler_factory: Any, page_size: int) -> None:
        self._db = db
        self._compiler = compiler_factory
        self._page_size = page_size

    async def page(self, search: Search, scope: Scope) -> Page:
        compiler: Compiler = self._compiler()
        where = self._where(search, scope, compiler)
        count = self._page_size if search.count is None else search.count
        total = None
        if search.total != "none" or count == 0:
            row = await self._db.fetch_one(f"SELECT count(*) AS n FROM resource_head h WHERE {where}", *compiler.args)
            total = int(row["n"]) if row else 0
        if count == 0 or search.summary == "count":
            return Page([], total=total)
        sorted_by = [_sort_expression(k, compiler) for k in search.sort]
        keys = [(expr, k.descending) for (expr, _), k in zip(sorted_by, search.sort, strict=True)]
        keys += [("h.res_type", False), ("h.res_id", False)]
        backwards, edge = _cursor(search.cursor, [kind for _, kind in sorted_by] + [str, str])
        columns = ", ".join(f"{expr} AS s{n}" for n, (expr, _) in enumerate(keys))
        inner = f"SELECT h.version AS s_version, {columns} FROM resource_head h WHERE {where}"
        keyset = _keyset([(f"q.s{n}", desc) for n, (_, desc) in enumerate(keys)], edge, backwards, compiler)
        order = ", ".join(f"q.s{n} {'DESC' if desc != backwards else 'ASC'}" for n, (_, desc) in enumerate(keys))
        sql = (
            f"SELECT v.*, {', '.join(f'q.s{n}' for n in range(len(keys)))} FROM ({inner}) q "
            f"JOIN resource_version v ON v.res_type = q.s{len(keys) - 2} AND v.res_id = q.s{len(keys) - 1} "
            f"AND v.version = q.s_version WHERE {keyset} ORDER BY {order} LIMIT {count + 1:d}"
        )
        rows = await self._db.fetch_all(sql, *compiler.args)
        more = len(rows) > count
        rows = rows[:count]
        if backwards:
            rows.reverse()
        page = Page(rows, total=total)
        width = len(keys)
        if rows and (more if not backwards else True):
            page.next_cursor = _edge("n", rows[-1], width)
        if rows and (more if backwards else edge is not None):
            page.previous_cursor = _edge("p", rows[0], width)
        page.included = await self._includes(search, scope, rows)
        return page

    async def ids(self, search: Search, scope: Scope) -> list[str]:
        """Ids of the first matches in id order, at most the page size (for conditional interactions)."""
        compiler: Compiler = self._compiler()
        where = self._where(search, scope, compiler)
        sql = f"SELECT h.res_id FROM resource_head h WHERE {where} ORDER BY h.res_id LIMIT {self._page_size:d}"
        return [row["res_id"] for row in await self._db.fetch_all(sql, *compiler.args)]

    async def visible(self, res_type: str, res_id: str, scope: Scope) -> bool:
        """Whether the current version of this resource is within ``scope``'s compartment and filters."""
        compiler: Compiler = self._compiler()
        clauses = [f"h.res_type = {compiler.arg(res_type)}", f"h.res_id = {compiler.arg(res_id)}", "NOT h.deleted"]
        clauses += confinement(scope, compiler, "h")
        sql = f"SELECT 1 AS found FROM resource_head h WHERE {' AND '.join(clauses)}"
        row = await self._db.fetch_one(sql, *compiler.args)
        return row is not None

    def _where(self, search: Search, scope: Scope, compiler: Compiler) -> str:
        clauses = [f"h.res_type IN ({compiler.args_list(scope.types)})", "NOT h.deleted"]
        clauses += [compiler.criterion(c, scope.types, "h") for c in search.criteria]
        clauses += confinement(scope, compiler, "h")
        return " AND ".join(clauses)

    async def _includes(self, search: Search, scope: Scope, matches: list[Row]) -> list[Row]:
        seen = {(r["res_type"], r["res_id"]) for r in matches}
        found: list[Row] = []
        sources = matches
        for depth in range(_ITERATE_DEPTH):
            rules = [(i, False) for i in search.include if depth == 0 or i.iterate]
            rules += [(i, True) for i in search.revinclude if depth == 0 or i.iterate]
            added: list[Row] = []
            for rule, reverse in rules:
                for row in await self._follow(rule, reverse, sources, scope):
                    key = (row["res_type"], row["res_id"])
                    if key not in seen and len(found) + len(added) < _INCLUDE_LIMIT:
                        seen.add(key)
                        added.append(row)
            if not added:
                break
            found += added
            sources = added
        return found

    async def _follow(self, rule: Include, reverse: bool, sources: list[Row], scope: Scope) -> list[Row]:
        """Current versions that ``sources`` point at by ``rule`` (or, reversed, that point at them)."""
        compiler: Compiler = self._compiler()
        if reverse:
            targets = [(r["res_type"], r["res_id"]) for r in sources]
            ids = compiler.args_list([i for _, i in targets])
            ref = (
                f"SELECT res_type, res_id FROM search_ref WHERE res_type = {compiler.arg(rule.source_type)} "
                f"AND param = {compiler.arg(rule.param.code)} AND target_id IN ({ids})"
                f" AND target_type IN ({compiler.args_list(sorted({t for t, _ in targets}))})"
            )
        else:
            ids = compiler.args_list([r["res_id"] for r in sources if r["res_type"] == rule.source_type])
            target = "" if rule.target_type is None else f" AND target_type = {compiler.arg(rule.target_type)}"
            ref = (
                f"SELECT target_type, target_id FROM search_ref WHERE res_type = {compiler.arg(rule.source_type)} "
                f"AND param = {compiler.arg(rule.param.code)} AND res_id IN ({ids}){target}"
            )
        clauses = [f"(h.res_type, h.res_id) IN ({ref})", "NOT h.deleted"]
        if scope.readable is not None:
            clauses.append(f"h.res_type IN ({compiler.args_list(sorted(scope.readable))})")
        if scope.patient is not None:
            clauses.append(_in_compartment("h", scope.patient, compiler))
        sql = f"{HEAD_VERSION} WHERE {' AND '.join(clauses)} ORDER BY h.res_type, h.res_id LIMIT {_INCLUDE_LIMIT:d}"
        return await self._db.fetch_all(sql, *compiler.args)


def confinement(scope: Scope, compiler: Compiler, alias: str) -> list[str]:
    """The predicates on the resource_head row ``alias`` that keep a search within its scope's
    patient compartment and granular filters."""
    clauses = []
    if scope.patient is not None:
        clauses.append(_in_compartment(alias, scope.patient, compiler))
    if scope.filters is not None:
        ors = [
            "(" + " AND ".join(compiler.criterion(c, scope.types, alias) for c in f.criteria) + ")"
            for f in scope.filters if f.criteria
        ]
        clauses.append("(" + (" OR ".join(ors) or "FALSE") + ")")
    return clauses


def _in_compartment(alias: str, patient: str, compiler: Compiler) -> str:
    return (
        f"({alias}.res_type, {alias}.res_id) IN "
        f"(SELECT res_type, res_id FROM search_compartment WHERE patient = {compiler.arg(patient)})"
    )


def _keyset(keys: list[tuple[str, bool]], edge: list[Any] | None, backwards: bool, compiler: Compiler) -> str:
    """Rows strictly after ``edge`` in the order of ``keys`` (before it, when going backwards)."""
    if edge is None:
        return "TRUE"
    ors = []
    for n, (expr, desc) in enumerate(keys):
        equal = [f"{keys[i][0]} = {compiler.arg(edge[i])}" for i in range(n)]
        op = "<" if desc != backwards else ">"
        ors.append("(" + " AND ".join([*equal, f"{expr} {op} {compiler.arg(edge[n])}"]) + ")")
    return "(" + " OR ".join(ors) + ")"


def _edge(direction: str, row: Row, width: int) -> str:
    return encode([direction, *(row[f"s{n}"] for n in range(width))])


def _cursor(token: str | None, kinds: list[type]) -> tuple[bool, list[Any] | None]:
    """(backwards, the edge row's keys) of a page cursor; checked against the search's key types."""
    if token is None:
        return False, None
    try:
        values = decode(token)
    except ValueError:
        raise EhrError(Category.INVALID, "the page cursor is not valid") from None
    if len(values) != len(kinds) + 1 or values[0] not in ("n", "p"):
        raise EhrError(Category.INVALID, "the page cursor does not belong to this search")
    edge = list(values[1:])
    for n, (value, kind) in enumerate(zip(edge, kinds, strict=True)):
        if kind is float and type(value) is int:
            edge[n] = value = float(value)
        if type(value) is not kind:
            raise EhrError(Category.INVALID, "the page cursor does not belong to this search")
    return values[0] == "p", edge
