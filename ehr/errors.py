"""Errors as data: a category, mapped once (here) to HTTP status and OperationOutcome issue code.

Deep layers raise :class:`EhrError` with a category; only the edges (HTTP, later HL7 v2) turn it
into a response. Messages never carry patient data or stack traces.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field


class Category(enum.Enum):
    # name = (HTTP status, OperationOutcome.issue.code)
    INVALID = (400, "invalid")
    STRUCTURE = (400, "structure")
    UNAUTHENTICATED = (401, "login")
    FORBIDDEN = (403, "forbidden")
    NOT_FOUND = (404, "not-found")
    NOT_SUPPORTED = (405, "not-supported")
    NOT_ACCEPTABLE = (406, "not-supported")
    CONFLICT = (409, "conflict")
    GONE = (410, "deleted")
    PRECONDITION_FAILED = (412, "conflict")
    TOO_LARGE = (413, "too-long")
    UNSUPPORTED_MEDIA = (415, "not-supported")
    UNPROCESSABLE = (422, "processing")
    INTERNAL = (500, "exception")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def issue_code(self) -> str:
        return self.value[1]


@dataclass(frozen=True, slots=True)
class Detail:
    """One issue of an error: what went wrong where (FHIRPath location), never the offending value."""

    diagnostics: str
    code: str | None = None
    expression: str | None = None


@dataclass(slots=True)
class EhrError(Exception):
    category: Category
    message: str
    details: Sequence[Detail] = field(default_factory=tuple)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.category.name}: {self.message}"


def operation_outcome(error: EhrError) -> dict[str, object]:
    """The OperationOutcome for an error: the summary issue first, then one issue per detail."""
    issues: list[dict[str, object]] = [
        {"severity": "error", "code": error.category.issue_code, "diagnostics": error.message}
    ]
    for detail in error.details:
        issue: dict[str, object] = {
            "severity": "error",
            "code": detail.code or error.category.issue_code,
            "diagnostics": detail.diagnostics,
        }
        if detail.expression:
            issue["expression"] = [detail.expression]
        issues.append(issue)
    return {"resourceType": "OperationOutcome", "issue": issues}


def information_outcome(message: str) -> dict[str, object]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": message}],
    }
