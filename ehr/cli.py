"""The ``ehr`` command: init, serve, verify, import, clients, senders, mllp, users, audit, keys."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ehr.audit.alerts import RULES
from ehr.context import operator_context
from ehr.errors import Category, EhrError
from ehr.settings import Settings
from smart_auth.roles import ROLES

if TYPE_CHECKING:
    from ehr.audit.log import AuditLog
    from ehr.crypto.keys import KeyStore
    from ehr.db.database import Database

DEMO_CLIENT_SCOPES = "system/*.cruds"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "home", None):
        os.environ["EHR_HOME"] = str(args.home)  # worker processes read settings from the environment
    settings = Settings()
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        return handler(settings, args)
    except EhrError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    from ehr.store.clients import AUTH_METHODS

    parser = argparse.ArgumentParser(prog="ehr", description=__doc__)
    parser.add_argument("--home", type=Path, help="state directory (env EHR_HOME, default ./.ehr)")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    init = sub.add_parser("init", help="create the state directory: dev PKI, keys, database, demo client")
    init.set_defaults(handler=_init)

    serve = sub.add_parser("serve", help="serve FHIR over HTTPS with mutual TLS")
    serve.add_argument("--workers", type=int, help="worker processes (env EHR_WORKERS)")
    serve.set_defaults(handler=_serve)

    verify = sub.add_parser("verify", help="check every stored version: hash chain, signature, decryption")
    verify.set_defaults(handler=_verify)

    clients = sub.add_parser("clients", help="registered clients: apps, backend services, systems").add_subparsers(
        required=True
    )
    add = clients.add_parser("add", help="register a client (SMART app, backend service or certificate system)")
    add.add_argument("--name", required=True)
    add.add_argument("--scopes", required=True, help='the most it may be granted, e.g. "patient/*.rs openid fhirUser"')
    add.add_argument("--auth-method", default=None, choices=AUTH_METHODS,
                     help="token endpoint authentication (default: tls_client_auth with --cert, else none)")
    add.add_argument("--cert", type=Path, help="the client's certificate (PEM): mutual TLS, certificate-bound tokens")
    add.add_argument("--redirect-uri", action="append", default=[], dest="redirect_uris",
                     help="exact redirect URI (repeat for several); enables the authorization_code grant")
    add.add_argument("--launch-uri", help="the app's launch URL, for EHR launch from /oauth/launcher")
    add.add_argument("--jwks", type=Path, help="private_key_jwt: the client's public JWKS (JSON file)")
    add.add_argument("--jwks-uri", help="private_key_jwt: or the URL of its JWKS")
    add.add_argument("--grant-types", help="space-separated; default by method: authorization_code refresh_token "
                     "with redirect URIs, else client_credentials")
    add.set_defaults(handler=_clients_add)
    lst = clients.add_parser("list", help="list clients")
    lst.set_defaults(handler=_clients_list)
    for name, disabled in (("disable", True), ("enable", False)):
        cmd = clients.add_parser(name, help=f"{name} a client")
        cmd.add_argument("client_id")
        cmd.set_defaults(handler=_clients_disable, disabled=disabled)

    from interfaces.cli import add_commands

    add_commands(sub, _run)

    users = sub.add_parser("users", help="people who sign in").add_subparsers(required=True)
    user_add = users.add_parser("add", help="add a user; the password is prompted for twice, or read from stdin")
    user_add.add_argument("--username", required=True)
    user_add.add_argument("--name", required=True, help="display name")
    user_add.add_argument("--role", required=True, choices=sorted(ROLES))
    user_add.add_argument("--fhir-user", help="the user's own resource, e.g. Practitioner/123")
    user_add.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    user_add.set_defaults(handler=_users_add)
    user_list = users.add_parser("list", help="list users")
    user_list.set_defaults(handler=_users_list)
    for name, disabled in (("disable", True), ("enable", False)):
        cmd = users.add_parser(name, help=f"{name} a user")
        cmd.add_argument("user_id")
        cmd.set_defaults(handler=_users_disable, disabled=disabled)
    password = users.add_parser("password", help="set a user's password")
    password.add_argument("user_id")
    password.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    password.set_defaults(handler=_users_password)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(required=True)
    audit_verify = audit.add_parser("verify", help="check the audit log's chain, checkpoints and records")
    audit_verify.set_defaults(handler=_audit_verify)
    export = audit.add_parser("export", help="write the events of [since, until) and their proof to a directory")
    export.add_argument("--since", required=True, help="ISO 8601 date or date-time, inclusive (no offset: UTC)")
    export.add_argument("--until", required=True, help="ISO 8601 date or date-time, exclusive")
    export.add_argument("--format", choices=("jsonl", "bundle"), default="jsonl", dest="fmt")
    export.add_argument("--out", required=True, type=Path, help="a new (or empty) directory; it will hold ePHI")
    export.set_defaults(handler=_audit_export)
    verify_export = audit.add_parser("verify-export", help="check an export with no database and no secret")
    verify_export.add_argument("directory", type=Path)
    verify_export.add_argument("--jwks", type=Path, help="the server's JWKS, obtained out of band")
    verify_export.set_defaults(handler=_audit_verify_export)
    stream = audit.add_parser("stream", help="chained events as SIEM JSON lines on stdout (no ePHI)")
    stream.add_argument("--since-pos", type=int, default=0, help="start after this chain position")
    stream.add_argument("--follow", action="store_true", help="keep writing new events as they are chained")
    stream.set_defaults(handler=_audit_stream)
    audit_alerts = audit.add_parser("alerts", help="alerts raised by the review rules, oldest first")
    audit_alerts.add_argument("--since", help="only alerts raised at or after this ISO 8601 instant")
    audit_alerts.add_argument("--rule", choices=RULES, help="only alerts of this rule")
    audit_alerts.set_defaults(handler=_audit_alerts)

    load = sub.add_parser("import", help="load Bundles, resources or NDJSON through the store (every safeguard)")
    load.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR", help="*.json and *.ndjson; dirs recursed")
    load.add_argument("--chunk", type=int, default=500, help="resources per transaction for NDJSON (default 500)")
    load.set_defaults(handler=_import)

    keys = sub.add_parser("keys", help="key management").add_subparsers(required=True)
    rotate = keys.add_parser("rotate", help="add a new key-encryption key (and with --signing, a signing key)")
    rotate.add_argument("--signing", action="store_true", help="rotate the signing key instead")
    rotate.set_defaults(handler=_keys_rotate)
    rewrap = keys.add_parser("rewrap", help="re-wrap every data key under the active key-encryption key")
    rewrap.set_defaults(handler=_keys_rewrap)
    return parser


def _run(settings: Settings, job: Callable[[Database, KeyStore, AuditLog], Awaitable[int]]) -> int:
    """Run one async job against the configured database, key store and audit log; chain what the
    job recorded before leaving."""
    from ehr.audit.log import AuditLog
    from ehr.crypto.keys import FileKeyStore
    from ehr.db.database import open_database
    from ehr.db.engine import ensure_schema
    from ehr.store.service import SystemClock

    async def go() -> int:
        await ensure_schema(settings.database)
        db = open_database(settings.database, pool_size=2)
        keys = FileKeyStore(settings.keys_dir)
        audit = AuditLog(db, keys, SystemClock(), source=f"ehr-cli@{settings.fhir_base}")
        try:
            result = await job(db, keys, audit)
            await audit.seal()
            return result
        finally:
            await db.close()

    return asyncio.run(go())


def _init(settings: Settings, _args: argparse.Namespace) -> int:
    from ehr.audit.pseudonym import ensure_pseudonym_secret
    from ehr.crypto.keys import FileKeyStore
    from ehr.pki import certificate_thumbprint, ensure_dev_pki
    from ehr.store.clients import ClientRegistry
    from smart_auth.tokens import TokenKeys

    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    pki = ensure_dev_pki(settings.pki_dir)
    FileKeyStore.create(settings.keys_dir)
    TokenKeys.load_or_create(settings.keys_dir)
    ensure_pseudonym_secret(settings.keys_dir)
    thumbprint = certificate_thumbprint(pki.client_cert.read_bytes())

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        from ehr.store.senders import SenderRegistry
        from interfaces.cli import DEMO_SENDER
        from interfaces.hl7v2.scopes import SUPPORTED

        registry = ClientRegistry(db, audit)
        if await registry.by_thumbprint(thumbprint) is None:
            await registry.add(operator_context(), "demo-client", thumbprint, DEMO_CLIENT_SCOPES)
        senders = SenderRegistry(db, audit)
        if await senders.by_thumbprint(thumbprint) is None:
            await senders.add(operator_context(), DEMO_SENDER[0], thumbprint, DEMO_SENDER[1], sorted(SUPPORTED))
        return 0

    _run(settings, job)
    print(f"state directory ready: {settings.home.resolve()}")
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from ehr.api.serve import serve
    from interfaces.serve import app_with_mllp

    if args.workers:
        settings = settings.model_copy(update={"workers": args.workers})
        os.environ["EHR_WORKERS"] = str(args.workers)
    serve(settings, app=app_with_mllp(settings), factory="interfaces.serve:app_from_environment")
    return 0


def _verify(settings: Settings, _args: argparse.Namespace) -> int:
    from ehr.store.verify import verify_store

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        report = await verify_store(db, keys)
        for problem in report.problems:
            print(f"BROKEN {problem.record}: {problem.message}")
        verdict = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
        print(f"{verdict}: {report.versions} versions of {report.resources} resources checked")
        return 0 if report.ok else 1

    return _run(settings, job)


def _audit_verify(settings: Settings, _args: argparse.Namespace) -> int:
    from ehr.audit.verify import verify_audit

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        await audit.seal()  # chain what is ready first
        report = await verify_audit(db, keys)
        for problem in report.problems:
            print(f"BROKEN {problem.where}: {problem.message}")
        verdict = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
        print(f"{verdict}: {report.chained} chained events, {report.checkpoints} checkpoints, {report.pending} pending")
        return 0 if report.ok else 1

    return _run(settings, job)


def _audit_alerts(settings: Settings, args: argparse.Namespace) -> int:
    from ehr.audit.alert_store import format_alert, list_alerts, parse_since

    since_us = parse_since(args.since) if args.since else 0

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        for row in await list_alerts(db, since_us, args.rule):
            print(format_alert(row))
        return 0

    return _run(settings, job)


def _audit_export(settings: Settings, args: argparse.Namespace) -> int:
    from ehr.audit.events import Interaction
    from ehr.audit.export import export_audit, parse_instant
    from ehr.store.service import SystemClock

    since, until = parse_instant(args.since), parse_instant(args.until)
    detail = {"since": args.since, "until": args.until, "format": args.fmt, "directory": str(args.out.resolve())}

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        while await audit.seal():  # chain what is ready first
            pass
        what = Interaction("audit-export", "AuditEvent", detail=detail)
        async with audit.audited(operator_context(), what):
            report = await export_audit(
                db, keys, args.out, since_us=since, until_us=until, fmt=args.fmt, now_us=SystemClock().now_us()
            )
            what.detail["events"] = str(report.events)
        print(f"exported {report.events} events ({report.links} chain links, {report.checkpoints} checkpoints) "
              f"to {args.out}, signed by {report.kid}")
        if report.pending:
            print(f"note: {report.pending} event(s) recorded in the range are not chained yet and were left out")
        return 0

    return _run(settings, job)


def _audit_verify_export(_settings: Settings, args: argparse.Namespace) -> int:
    from ehr.audit.export import load_jwks, verify_export

    report = verify_export(args.directory, load_jwks(args.jwks) if args.jwks else None)
    for problem in report.problems:
        print(f"BROKEN {problem.where}: {problem.message}")
    verdict = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
    print(f"{verdict}: {report.events} events, {report.links} chain links, {report.checkpoints} checkpoints, "
          f"signed by {report.kid}")
    if not args.jwks:
        print("note: checked against the JWKS inside the export, which proves integrity relative to that key only; "
              "pass --jwks with the server's published keys to prove it came from the server")
    if report.pending:
        print(f"note: {report.pending} event(s) of the range were not chained yet when it was exported")
    return 0 if report.ok else 1


def _audit_stream(settings: Settings, args: argparse.Namespace) -> int:
    from ehr.audit.events import Interaction
    from ehr.audit.pseudonym import load_pseudonyms
    from ehr.audit.siem import stream

    pseudonyms = load_pseudonyms(settings.keys_dir)

    def write(line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        await audit.seal()
        await audit.record(operator_context(), Interaction("audit-stream", "AuditEvent",
                                                           detail={"after": str(args.since_pos)}))
        await stream(db, keys, pseudonyms, write, after=args.since_pos, follow=args.follow,
                     poll_s=settings.audit_seal_seconds)
        return 0

    try:
        return _run(settings, job)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `ehr audit stream | head`
        sys.stderr.close()
        return 0


def _import(settings: Settings, args: argparse.Namespace) -> int:
    from ehr.context import system_context
    from ehr.importer import bar, load
    from ehr.store.service import Store

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        store = Store(db, keys, audit, base=settings.fhir_base)
        summary = await load(store, system_context("import"), args.paths, chunk=max(1, args.chunk), progress=bar())
        print(f"{summary.files} file(s): {summary.loaded} resource(s) loaded, {summary.failed} failed, "
              f"{summary.rate:,.0f} resources/s")
        for line in summary.errors:
            print(f"  {line}")
        return 1 if summary.failed else 0

    return _run(settings, job)


def _clients_add(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from ehr.pki import certificate_thumbprint
    from ehr.store.clients import ClientRegistry, Registration

    thumbprint = certificate_thumbprint(args.cert.read_bytes()) if args.cert else None
    method = args.auth_method or ("tls_client_auth" if thumbprint else "none")
    registration = Registration(
        name=args.name, scopes=args.scopes, auth_method=method, cert_thumbprint=thumbprint,
        redirect_uris=args.redirect_uris, launch_uri=args.launch_uri,
        jwks=json.loads(args.jwks.read_text()) if args.jwks else None, jwks_uri=args.jwks_uri,
        grant_types=args.grant_types.split() if args.grant_types else None,
    )

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        added, secret = await ClientRegistry(db, audit).register(operator_context(), registration)
        print(f"{added.id} {added.name} {added.auth_method} grants={' '.join(sorted(added.grant_types))} "
              f"x5t#S256={thumbprint} scopes={added.scopes}")
        if secret is not None:
            print(f"client_secret={secret}  (shown once; store it in the client's secret store)")
        return 0

    return _run(settings, job)


def _clients_list(settings: Settings, _args: argparse.Namespace) -> int:
    from ehr.store.clients import ClientRegistry

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        for found in await ClientRegistry(db, audit).list():
            status = "disabled" if found.disabled else "active"
            print(f"{found.id} {found.name} {status} {found.auth_method} x5t#S256={found.cert_thumbprint} "
                  f"redirects={','.join(found.redirect_uris) or '-'} scopes={found.scopes}")
        return 0

    return _run(settings, job)


def _clients_disable(settings: Settings, args: argparse.Namespace) -> int:
    from ehr.store.clients import ClientRegistry

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        await ClientRegistry(db, audit).set_disabled(operator_context(), args.client_id, args.disabled)
        return 0

    return _run(settings, job)


def _read_password(from_stdin: bool) -> str:
    """One line of stdin (its line break dropped), or typed twice without echo."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    from getpass import getpass

    password = getpass("Password: ")
    if getpass("Password again: ") != password:
        raise EhrError(Category.INVALID, "the passwords do not match")
    return password


def _users_add(settings: Settings, args: argparse.Namespace) -> int:
    from smart_auth.users import UserRegistry

    password = _read_password(args.password_stdin)

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        registry = UserRegistry(db, audit)
        added = await registry.add(operator_context(), args.username, args.name, args.role, password, args.fhir_user)
        print(f"{added.id} {added.username} {added.role}")
        return 0

    return _run(settings, job)


def _users_list(settings: Settings, _args: argparse.Namespace) -> int:
    from smart_auth.users import UserRegistry

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        for found in await UserRegistry(db, audit).list():
            status = "disabled" if found.disabled else "active"
            print(f"{found.id} {found.username} {found.role} {status} {found.fhir_user or '-'}")
        return 0

    return _run(settings, job)


def _users_disable(settings: Settings, args: argparse.Namespace) -> int:
    from smart_auth.users import UserRegistry

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        await UserRegistry(db, audit).set_disabled(operator_context(), args.user_id, args.disabled)
        return 0

    return _run(settings, job)


def _users_password(settings: Settings, args: argparse.Namespace) -> int:
    from smart_auth.users import UserRegistry

    password = _read_password(args.password_stdin)

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        await UserRegistry(db, audit).set_password(operator_context(), args.user_id, password)
        return 0

    return _run(settings, job)


def _keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    from ehr.audit.events import Interaction
    from ehr.crypto.keys import FileKeyStore

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        kind = "signing key" if args.signing else "key-encryption key"
        async with audit.audited(operator_context(), Interaction("key-rotate")) as event:
            store = FileKeyStore(settings.keys_dir)
            kid = store.rotate_signing_key() if args.signing else store.rotate_kek()
            event.detail = {"kind": kind, "new_key_id": kid}
        print(f"new active {kind}: {kid}")
        return 0

    return _run(settings, job)


def _keys_rewrap(settings: Settings, _args: argparse.Namespace) -> int:
    from ehr.audit.events import Interaction
    from ehr.store.rewrap import rewrap_all

    async def job(db: Database, keys: KeyStore, audit: AuditLog) -> int:
        async with audit.audited(operator_context(), Interaction("key-rewrap")) as event:
            count = await rewrap_all(db, keys)
            event.detail = {"rewrapped": str(count), "kek": keys.active_kek()[0]}
        print(f"re-wrapped {count} data keys")
        return 0

    return _run(settings, job)


if __name__ == "__main__":
    sys.exit(main())
