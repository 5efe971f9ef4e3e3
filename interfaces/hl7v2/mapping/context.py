"""What every mapper shares: the message's segments, the sender's zone, the content errors found so
far, and the transaction Bundle being built (http.html#transaction).

Entries get deterministic ``urn:uuid:`` fullUrls (a UUIDv5 of the control id and the entry's
position), so the same message always maps to the same Bundle. Two conditional updates of the same
resource in one message are one entry when they are equal (the same SPM under two OBRs) and a
DUPLICATE_KEY error when they differ: R4 forbids touching one resource twice in a transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any
from urllib.parse import quote

from interfaces.hl7v2.errors import Code, Location, Rejected
from interfaces.hl7v2.mapping.segments import Delimiters, Segment, split
from interfaces.hl7v2.message import Header, Parsed

JSON = dict[str, Any]


def token(system: str, value: str) -> str:
    """``system|value`` as a FHIR token, its ``\\ | , $`` escaped (search.html#escaping)."""
    def esc(text: str) -> str:
        return "".join("\\" + c if c in "\\|,$" else c for c in text)
    return f"{esc(system)}|{esc(value)}"


def criteria(res_type: str, search_token: str) -> str:
    """``Type?identifier=...``, percent-encoded as a query string is parsed."""
    return f"{res_type}?identifier={quote(search_token, safe=':/|')}"


class Conflict(Exception):
    """Two different resources for one conditional update in one message."""


@dataclass(slots=True)
class Transaction:
    seed: str
    entries: list[JSON] = field(default_factory=list)
    _by_url: dict[str, int] = field(default_factory=dict)

    def _add(self, resource: JSON, request: JSON) -> str:
        full_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'hl7v2:{self.seed}#{len(self.entries)}')}"
        self.entries.append({"fullUrl": full_url, "resource": resource, "request": request})
        return full_url

    def put(self, resource: JSON, search_token: str) -> str:
        """A conditional update (create when nothing matches, update when one does)."""
        url = criteria(resource["resourceType"], search_token)
        if url in self._by_url:
            earlier = self.entries[self._by_url[url]]
            if earlier["resource"] != resource:
                raise Conflict(url)
            return str(earlier["fullUrl"])
        self._by_url[url] = len(self.entries)
        return self._add(resource, {"method": "PUT", "url": url})

    def create(self, resource: JSON, search_token: str | None = None) -> str:
        """A create, conditional (``ifNoneExist``) when a token is given."""
        request: JSON = {"method": "POST", "url": resource["resourceType"]}
        if search_token is not None:
            request["ifNoneExist"] = criteria(resource["resourceType"], search_token).partition("?")[2]
        return self._add(resource, request)

    def patch(self, res_type: str, search_token: str, parameters: JSON) -> str:
        return self._add(parameters, {"method": "PATCH", "url": criteria(res_type, search_token)})

    def bundle(self) -> JSON:
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}


@dataclass(slots=True)
class Context:
    header: Header
    segments: list[Segment]
    zone: tzinfo
    tx: Transaction
    problems: list[Rejected] = field(default_factory=list)

    @classmethod
    def of(cls, parsed: Parsed, zone: tzinfo) -> Context:
        d = Delimiters.of(parsed.header)
        return cls(parsed.header, split(parsed.text, d), zone, Transaction(parsed.header.control_id))

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def problem(self, code: Code, text: str, location: Location) -> None:
        self.problems.append(Rejected(code, text, location=location))

    def check(self) -> None:
        """Raise the content errors found, the first with the others in ``more`` (an AE)."""
        if self.problems:
            first, *more = self.problems
            raise Rejected(first.code, first.text, location=first.location, more=more)

    @property
    def sender_system(self) -> str:
        """The system of identifiers without an assigning authority: unique only within their sender."""
        if self.header.sending_facility:
            return f"urn:ehr:hl7v2:facility:{quote(self.header.sending_facility, safe='')}"
        if self.header.sending_application:
            return f"urn:ehr:hl7v2:application:{quote(self.header.sending_application, safe='')}"
        raise Rejected(Code.REQUIRED_FIELD, "MSH-4 (sending facility) is empty and an identifier has no "
                       "assigning authority", location=("MSH", 1, 4))
