"""Responses: FHIR JSON bytes out, with the headers R4 asks for. Stored bodies are sent as they are
(canonical JSON), never rebuilt from models."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from email.utils import formatdate

from starlette.responses import Response

from ehr.crypto.canonical import canonical_json
from ehr.cursor import decode, encode
from ehr.errors import EhrError, operation_outcome
from ehr.store.records import Version

FHIR_JSON = "application/fhir+json; charset=utf-8"


def fhir(status: int, body: bytes | None, headers: Mapping[str, str] | None = None) -> Response:
    media = FHIR_JSON if body else None
    return Response(content=body or b"", status_code=status, headers=dict(headers or {}), media_type=media)


def error(err: EhrError) -> Response:
    return fhir(err.category.status, canonical_json(operation_outcome(err)), err.headers)


def version_headers(version: Version, base: str | None = None) -> dict[str, str]:
    """ETag and Last-Modified; with ``base``, also the Location of this version."""
    headers = {"ETag": version.etag, "Last-Modified": formatdate(version.ts_us // 1_000_000, usegmt=True)}
    if base is not None:
        headers["Location"] = f"{base}/{version.res_type}/{version.res_id}/_history/{version.version}"
    return headers


_HISTORY_STATUS = {"create": "201 Created", "update": "200 OK", "delete": "204 No Content"}
_HISTORY_METHOD = {"create": "POST", "update": "PUT", "delete": "DELETE"}


def history_entry(version: Version, base: str) -> bytes:
    url = f"{version.res_type}/{version.res_id}"
    method = _HISTORY_METHOD[version.method]
    request = {"method": method, "url": version.res_type if method == "POST" else url}
    response = {
        "status": _HISTORY_STATUS[version.method],
        "etag": version.etag,
        "lastModified": version.last_updated,
    }
    head = {"fullUrl": f"{base}/{url}", "request": request, "response": response}
    if version.body is None:
        return canonical_json(head)
    # Splice the stored bytes in as they are: no re-parse, no re-serialisation.
    encoded = canonical_json(head)
    return encoded[:-1] + b',"resource":' + version.body + b"}"


def bundle(kind: str, total: int | None, links: Iterable[tuple[str, str]], entries: list[bytes]) -> bytes:
    head: dict[str, object] = {
        "resourceType": "Bundle",
        "type": kind,
        "link": [{"relation": rel, "url": url} for rel, url in links],
    }
    if total is not None:
        head["total"] = total
    encoded = canonical_json(head)
    return encoded[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


def encode_cursor(cursor: tuple[int, str, str, int]) -> str:
    return encode(list(cursor))


def decode_cursor(token: str) -> tuple[int, str, str, int]:
    """Raises ValueError on anything that is not a cursor this server made."""
    values = decode(token)
    if len(values) != 4:
        raise ValueError("bad cursor")
    ts_us, res_type, res_id, version = values
    if not (type(ts_us) is int and isinstance(res_type, str) and isinstance(res_id, str) and type(version) is int):
        raise ValueError("bad cursor")
    return ts_us, res_type, res_id, version
