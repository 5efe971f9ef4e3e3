"""``ehr senders ...`` and ``ehr mllp``: the HL7 v2 commands, added to the ``ehr`` parser."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ehr.context import operator_context
from ehr.errors import Category, EhrError
from ehr.settings import Settings

if TYPE_CHECKING:
    from ehr.audit.log import AuditLog
    from ehr.crypto.keys import KeyStore
    from ehr.db.database import Database

Job = Callable[["Database", "KeyStore", "AuditLog"], Awaitable[int]]
Runner = Callable[[Settings, Job], int]
DEMO_SENDER = ("demo-lab", "DEMO-LAB")  # name, MSH-4, registered by ``ehr init`` with the dev client certificate


def add_commands(sub: Any, run: Runner) -> None:
    senders = sub.add_parser("senders", help="HL7 v2 sending systems (MLLP/TLS)").add_subparsers(required=True)
    add = senders.add_parser("add", help="register a sending system by its client certificate")
    add.add_argument("--name", required=True)
    add.add_argument("--cert", type=Path, required=True, help="the sender's client certificate (PEM)")
    add.add_argument("--facility", required=True, help="MSH-4 (namespace id) its messages must carry")
    add.add_argument("--application", help="MSH-3 (namespace id) its messages must carry; default: any")
    add.add_argument("--types", required=True, help="message types it may send, e.g. ORU^R01,ADT^A01")
    add.set_defaults(handler=lambda settings, args: run(settings, _add(args)))
    lst = senders.add_parser("list", help="list sending systems")
    lst.set_defaults(handler=lambda settings, args: run(settings, _list))
    for name, disabled in (("disable", True), ("enable", False)):
        cmd = senders.add_parser(name, help=f"{name} a sending system")
        cmd.add_argument("sender_id")
        cmd.set_defaults(handler=lambda settings, args, d=disabled: run(settings, _disable(args.sender_id, d)))
    mllp = sub.add_parser("mllp", help="serve the HL7 v2 MLLP/TLS listener alone (ehr serve runs it too)")
    mllp.set_defaults(handler=_mllp)


def _add(args: argparse.Namespace) -> Job:
    from ehr.pki import certificate_thumbprint
    from interfaces.hl7v2.scopes import SUPPORTED

    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    unsupported = sorted(set(types) - SUPPORTED)
    if unsupported:
        known = ", ".join(sorted(SUPPORTED))
        raise EhrError(Category.INVALID, f"not supported: {', '.join(unsupported)} (supported: {known})")
    thumbprint = certificate_thumbprint(args.cert.read_bytes())

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        from ehr.store.senders import SenderRegistry

        added = await SenderRegistry(db, audit).add(
            operator_context(), args.name, thumbprint, args.facility, types, args.application
        )
        print(f"{added.id} {added.name} facility={added.facility} types={','.join(sorted(added.types))} "
              f"x5t#S256={thumbprint}")
        return 0

    return job


async def _list(db: Database, keys: KeyStore, audit: AuditLog) -> int:
    from ehr.store.senders import SenderRegistry

    for found in await SenderRegistry(db, audit).list():
        status = "disabled" if found.disabled else "active"
        print(f"{found.id} {found.name} {status} facility={found.facility} application={found.application or '*'} "
              f"types={','.join(sorted(found.types))} x5t#S256={found.cert_thumbprint}")
    return 0


def _disable(sender_id: str, disabled: bool) -> Job:
    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        from ehr.store.senders import SenderRegistry

        await SenderRegistry(db, audit).set_disabled(operator_context(), sender_id, disabled)
        return 0

    return job


def _mllp(settings: Settings, _args: argparse.Namespace) -> int:
    from interfaces.serve import run_mllp

    run_mllp(settings)
    return 0
