"""Routes for reviewing the audit log (filled in by the audit-review work)."""

from __future__ import annotations

from ehr.api.router import Handler

audit_routes: list[tuple[str, str, Handler, str]] = []
