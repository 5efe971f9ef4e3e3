"""Applying the policy (ehr/store/policy.py) to one interaction: the scope a search or a
conditional match runs in, whether a resource is visible, whether a written resource stays in the
launch patient's compartment. Used by every store method and by each entry of a bundle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ehr.context import AccessContext
from ehr.db.database import Executor
from ehr.errors import Category, EhrError
from ehr.fhir.search.extract import patient_compartment
from ehr.fhir.search.model import Search
from ehr.store import ingest, policy, sql
from ehr.store.search import Runner, Scope, criteria_of
from ehr.store.search_sql import Compiler

_MAX_FILTERS = 1000


@dataclass(slots=True)
class Guard:
    compiler: Callable[[], Compiler]
    base: str
    _filters: dict[tuple[str, str], Search] = field(default_factory=dict)

    def access(self, ctx: AccessContext, res_type: str, letter: Any) -> policy.Access:
        ingest.check_type(res_type)
        return policy.access(ctx, res_type, letter)

    def scope(self, res_type: str, access: policy.Access) -> Scope:
        """The scope of one type under ``access``: its compartment and granular filters."""
        filters = None
        if access.filters is not None:
            filters = tuple(self._filter(res_type, query) for query in access.filters)
        return Scope((res_type,), None, access.patient, filters)

    async def visible(self, executor: Executor, access: policy.Access, res_type: str, res_id: str) -> bool:
        if access.unconfined:
            return True
        runner = Runner(executor, self.compiler, 1)
        return await runner.visible(res_type, res_id, self.scope(res_type, access))

    async def visible_or_absent(self, tx: Executor, access: policy.Access, res_type: str, res_id: str) -> None:
        """A confined write may touch a resource in its compartment, or one that does not exist yet;
        anything else is answered as if it did not exist."""
        if await self.visible(tx, access, res_type, res_id):
            return
        head = await tx.fetch_one(sql.HEAD, res_type, res_id)
        if head is not None and not head["deleted"]:
            raise EhrError(Category.NOT_FOUND, f"{res_type} not found")

    @staticmethod
    def content(access: policy.Access, resource: Any) -> None:
        """A write confined to a patient must leave the resource in that patient's compartment."""
        if access.patient is not None and access.patient not in patient_compartment(resource):
            raise EhrError(Category.FORBIDDEN, "the resource would not be in the launch patient's compartment")

    def _filter(self, res_type: str, query: str) -> Search:
        """A granular scope's query as search criteria; one the index cannot evaluate allows nothing."""
        found = self._filters.get((res_type, query))
        if found is None:
            try:
                found = criteria_of(res_type, query, self.base, "a granular scope")
            except EhrError:
                raise EhrError(Category.FORBIDDEN, f"the granular scope on {res_type} cannot be enforced") from None
            if len(self._filters) > _MAX_FILTERS:  # queries come from granted scopes: few, but bound the memory
                self._filters.clear()
            self._filters[(res_type, query)] = found
        return found
