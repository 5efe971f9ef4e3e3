"""What one server process holds: settings, database, keys, the store and the client registry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ehr.api.capability import capability_statement
from ehr.audit.log import AuditLog
from ehr.audit.review import AuditReview
from ehr.audit.search_params import Paging
from ehr.crypto.keys import FileKeyStore, KeyStore
from ehr.db.database import Database, open_database
from ehr.db.engine import ensure_schema
from ehr.settings import Settings
from ehr.store.clients import ClientRegistry
from ehr.store.service import Clock, Store, SystemClock
from smart_auth.client_assertion import JtiStore
from smart_auth.grants import GrantStore
from smart_auth.server import AuthServer
from smart_auth.throttle import SignInThrottle
from smart_auth.tokens import TokenKeys
from smart_auth.users import UserRegistry


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    db: Database
    keys: KeyStore
    store: Store
    audit: AuditLog
    audit_review: AuditReview
    clients: ClientRegistry
    auth: AuthServer
    capability_statement: bytes
    base: str  # the public FHIR base URL, e.g. https://ehr.example.org/fhir

    @property
    def token_keys(self) -> TokenKeys:
        return self.auth.keys

    @classmethod
    def build(
        cls, settings: Settings, db: Database, keys: KeyStore, clock: Clock | None = None,
        token_keys: TokenKeys | None = None,
    ) -> Services:
        """``token_keys`` default to a per-process key (tests); servers load them from the key directory."""
        published = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        audit = AuditLog(db, keys, clock or SystemClock(), source=settings.fhir_base)
        store = Store(db, keys, audit, clock, base=settings.fhir_base, page_size=settings.page_size_default)
        clients = ClientRegistry(db, audit)
        auth = AuthServer(
            settings=settings, audit=audit, clients=clients, users=UserRegistry(db, audit), grants=GrantStore(db),
            keys=token_keys or TokenKeys.ephemeral(), jti=JtiStore(db), store=store, throttle=SignInThrottle(
                db, threshold=settings.signin_failures, base_seconds=settings.signin_backoff_seconds,
                max_seconds=settings.signin_backoff_max_minutes * 60,
            ),
        )
        return cls(
            settings=settings,
            db=db,
            keys=keys,
            store=store,
            audit=audit,
            audit_review=AuditReview(
                db, keys, audit, paging=Paging(settings.page_size_default, settings.page_size_max)
            ),
            clients=clients,
            auth=auth,
            capability_statement=capability_statement(settings.fhir_base, published, auth_base=settings.auth_base),
            base=settings.fhir_base,
        )

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        await ensure_schema(settings.database)
        db = open_database(settings.database, pool_size=settings.db_pool_size)
        token_keys = TokenKeys.load_or_create(settings.keys_dir)
        return cls.build(settings, db, FileKeyStore(settings.keys_dir), token_keys=token_keys)

    async def close(self) -> None:
        await self.auth.fetcher.aclose()
        await self.db.close()
