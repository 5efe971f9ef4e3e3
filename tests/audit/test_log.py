"""The log's encoding shortcut is exact: an AuditEvent written by the stdlib encoder is byte for byte
its RFC 8785 canonical form, whatever the ids, names, addresses and queries in it."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ehr.audit.events import Interaction, build
from ehr.context import AccessContext
from ehr.crypto.canonical import canonical_json
from smart_auth.scopes import Permissions

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
subtypes = st.sampled_from(["read", "create", "search-type", "authenticate", "client-add", "x-unknown"])


@given(
    actor=text, display=text, address=st.none() | text, thumb=st.none() | text, purpose=st.none() | text,
    subtype=subtypes, rtype=st.none() | text, rid=st.none() | text, version=st.none() | st.integers(1, 10**6),
    patient=st.none() | text, query=st.none() | text, desc=st.none() | text,
    detail=st.dictionaries(text, text, max_size=3),
)
def test_stdlib_encoding_of_events_is_canonical(
    actor: str, display: str, address: str | None, thumb: str | None, purpose: str | None, subtype: str,
    rtype: str | None, rid: str | None, version: int | None, patient: str | None, query: str | None,
    desc: str | None, detail: dict[str, str],
) -> None:
    ctx = AccessContext(actor, display, Permissions(()), cert_thumbprint=thumb, address=address, purpose=purpose)
    what = Interaction(subtype, rtype, rid, version, patient, query, "4" if desc else "0", desc, detail=detail)
    event = build(ctx, what, event_id="e1", recorded="2026-01-01T00:00:00.000000Z", source="https://x/fhir")
    fast = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert fast == canonical_json(event)
