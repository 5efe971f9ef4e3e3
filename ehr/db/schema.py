"""One schema for SQLite and PostgreSQL.

``resource_version`` is append-only: the database itself refuses UPDATE, DELETE (and on PostgreSQL
TRUNCATE) through triggers, so a bug or a stolen application credential cannot rewrite history
without also having DDL rights. ``resource_head`` is the one mutable table: a signed pointer to each
resource's newest version, used for concurrency control and to detect a deleted newest version.

Every table that grows with patients carries ``compartment`` (the patient id), so the schema can be
distributed by patient compartment (Citus) later; see docs/adr/0004-storage.md.
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    event,
)

metadata = MetaData()

resource_version = Table(
    "resource_version",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("compartment", String(64), nullable=True),
    Column("ts_us", BigInteger, nullable=False),        # lastUpdated, microseconds since the epoch (UTC)
    Column("method", String(8), nullable=False),        # create | update | delete
    Column("deleted", Boolean, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("content_hash", LargeBinary(32), nullable=True),  # SHA-256 of the canonical resource bytes
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),        # chain hash over header + prev_hash
    Column("sig_kid", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("kek_id", String(64), nullable=True),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("nonce", LargeBinary(12), nullable=True),
    Column("ciphertext", LargeBinary, nullable=True),
)
Index("ix_version_ts", resource_version.c.ts_us)
Index("ix_version_type_ts", resource_version.c.res_type, resource_version.c.ts_us)

resource_head = Table(
    "resource_head",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("compartment", String(64), nullable=True),
    Column("version", Integer, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("sig_kid", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),
)
Index("ix_head_type_ts", resource_head.c.res_type, resource_head.c.ts_us)

client = Table(
    "client",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("cert_thumbprint", String(64), nullable=True, unique=True),
    Column("scopes", String(4000), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    # OAuth 2.0 registration (smart_auth): how the client authenticates at the token endpoint, where
    # codes may be sent, its keys. ``scopes`` is the most it may be granted.
    Column("auth_method", String(40), nullable=False, server_default="tls_client_auth"),
    Column("secret_hash", String(200), nullable=True),      # client_secret_basic/post: scrypt hash
    Column("redirect_uris", String(4000), nullable=True),   # JSON array; exact match
    Column("launch_uri", String(2000), nullable=True),      # where the EHR launcher sends iss + launch
    Column("jwks", String(20000), nullable=True),           # private_key_jwt: inline JWKS (JSON)
    Column("jwks_uri", String(2000), nullable=True),        # private_key_jwt: or a JWKS URL
    Column("grant_types", String(200), nullable=False, server_default=""),  # space-separated
)

# People who sign in (smart_auth/users.py): a unique id, a role, a memory-hard password hash.
app_user = Table(
    "app_user",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(200), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("role", String(40), nullable=False),
    Column("password_hash", String(300), nullable=False),
    Column("fhir_user", String(200), nullable=True),        # e.g. Practitioner/123
    Column("created_us", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)

# -- OAuth state (smart_auth, docs/adr/0009-smart-authorization.md) ----------------------------------
# Secrets (codes, refresh tokens, session ids) are stored only as SHA-256 hashes.
oauth_grant = Table(   # one authorization: the refresh-token family and what every token from it may do
    "oauth_grant",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("client_id", String(36), nullable=False),
    Column("user_id", String(36), nullable=True),
    Column("scopes", String(4000), nullable=False),
    Column("patient", String(64), nullable=True),
    Column("encounter", String(64), nullable=True),
    Column("cnf", String(64), nullable=True),               # x5t#S256 the tokens are bound to
    Column("refresh_hash", String(64), nullable=True, unique=True),
    Column("previous_refresh_hash", String(64), nullable=True),  # the one it replaced: a reuse revokes
    Column("session_hash", String(64), nullable=True),      # online_access: lives only with this sign-in
    Column("refresh_expires_us", BigInteger, nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("revoked_us", BigInteger, nullable=True),
)
Index("ix_grant_user", oauth_grant.c.user_id)
Index("ix_grant_previous_refresh", oauth_grant.c.previous_refresh_hash)

oauth_code = Table(    # authorization codes: one use, short-lived
    "oauth_code",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("grant_id", String(36), nullable=False),
    Column("redirect_uri", String(2000), nullable=False),
    Column("challenge", String(128), nullable=False),       # PKCE S256 code_challenge
    Column("nonce", String(500), nullable=True),
    Column("expires_us", BigInteger, nullable=False),
    Column("used_us", BigInteger, nullable=True),
)

oauth_launch = Table(  # EHR launch handles: opaque, bound to a context, short-lived
    "oauth_launch",
    metadata,
    Column("handle_hash", String(64), primary_key=True),
    Column("client_id", String(36), nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("patient", String(64), nullable=True),
    Column("encounter", String(64), nullable=True),
    Column("expires_us", BigInteger, nullable=False),
)

oauth_jti = Table(     # client assertion ids seen, to refuse a replay within the assertion's lifetime
    "oauth_jti",
    metadata,
    Column("issuer", String(200), primary_key=True),
    Column("jti", String(200), primary_key=True),
    Column("expires_us", BigInteger, nullable=False),
)

signin_throttle = Table(  # sign-in failures per account name and per address (smart_auth/throttle.py)
    "signin_throttle",
    metadata,
    Column("key", String(300), primary_key=True),           # "user:<name>" or "addr:<ip>"
    Column("failures", Integer, nullable=False),
    Column("last_us", BigInteger, nullable=False),
    Column("locked_until_us", BigInteger, nullable=False),
)

# -- HL7 v2 (interfaces/, docs/adr/0010-hl7v2-mllp.md) ------------------------------------------------
hl7_sender = Table(    # sending systems: a certificate, the MSH-3/MSH-4 they must name, what they may send
    "hl7_sender",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("cert_thumbprint", String(64), nullable=False, unique=True),
    Column("application", String(200), nullable=True),      # MSH-3.1; empty: any
    Column("facility", String(200), nullable=False),        # MSH-4.1
    Column("types", String(2000), nullable=False),          # space-separated MSH-9 type^trigger
    Column("created_us", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)

# Idempotency: one row per (actor, key) written in the same transaction as the data it acknowledges,
# holding the reply that was sent (an HL7 ACK). Not ePHI: keys are message control ids.
receipt = Table(
    "receipt",
    metadata,
    Column("actor", String(128), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("ts_us", BigInteger, nullable=False),
    Column("reply", LargeBinary, nullable=False),
)

web_session = Table(   # signed-in browser sessions (login pages)
    "web_session",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("seen_us", BigInteger, nullable=False),
    Column("ended_us", BigInteger, nullable=True),
)

# -- search index (docs/adr/0008-search-index.md) ---------------------------------------------------
# Derived from each resource's current version, replaced in the same statement as every write; not
# part of the signed record (a damaged index can be rebuilt from the versions). Names, identifiers,
# codes and other strings are stored only as keyed hashes (ehr/crypto/blind.py).
search_key = Table(   # string, token and uri values: one blind key per (form, prefix) of each value
    "search_key",
    metadata,
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("k", LargeBinary(16), nullable=False),
)
Index("ix_search_key", search_key.c.k, search_key.c.res_id)
Index("ix_search_key_res", search_key.c.res_type, search_key.c.res_id, search_key.c.param)

search_ref = Table(   # references: to a local resource (target type and id) or to an absolute URL
    "search_ref",
    metadata,
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", String(2048), nullable=True),
)
Index("ix_search_ref_target", search_ref.c.target_id, search_ref.c.target_type, search_ref.c.param)
Index("ix_search_ref_res", search_ref.c.res_type, search_ref.c.res_id, search_ref.c.param)

search_date = Table(  # dates as half-open ranges [lo, hi) in microseconds since the epoch, UTC
    "search_date",
    metadata,
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("lo", BigInteger, nullable=False),
    Column("hi", BigInteger, nullable=False),
)
Index("ix_search_date", search_date.c.res_type, search_date.c.param, search_date.c.lo, search_date.c.hi)
Index("ix_search_date_res", search_date.c.res_type, search_date.c.res_id, search_date.c.param)

search_number = Table(  # numbers, and quantities with their unit
    "search_number",
    metadata,
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("value", Float, nullable=False),
    Column("system", String(256), nullable=True),
    Column("code", String(64), nullable=True),
)
Index("ix_search_number", search_number.c.res_type, search_number.c.param, search_number.c.value)
Index("ix_search_number_res", search_number.c.res_type, search_number.c.res_id, search_number.c.param)

search_composite = Table(  # two-part composites whose first part is a token (Observation code-value-*)
    "search_composite",
    metadata,
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("param", String(100), nullable=False),
    Column("k1", LargeBinary(16), nullable=False),   # blind key of the token part (each of its forms)
    Column("k2", LargeBinary(16), nullable=True),    # blind key of a token or string second part
    Column("lo", BigInteger, nullable=True),         # a date second part
    Column("hi", BigInteger, nullable=True),
    Column("value", Float, nullable=True),           # a quantity second part, with its unit
    Column("system", String(256), nullable=True),
    Column("code", String(64), nullable=True),
)
Index("ix_search_composite", search_composite.c.k1, search_composite.c.res_id)
Index("ix_search_composite_res", search_composite.c.res_type, search_composite.c.res_id, search_composite.c.param)

search_compartment = Table(  # the patients whose compartment a resource is in (CompartmentDefinition)
    "search_compartment",
    metadata,
    Column("patient", String(64), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
)
Index("ix_search_compartment", search_compartment.c.patient, search_compartment.c.res_type, search_compartment.c.res_id)
Index("ix_search_compartment_res", search_compartment.c.res_type, search_compartment.c.res_id)

# -- audit log (docs/adr/0006-audit-log.md) ---------------------------------------------------------
# Every interaction's AuditEvent, sealed like a resource body; the columns are what review searches on.
audit_event = Table(
    "audit_event",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),   # AuditEvent.id
    Column("recorded_us", BigInteger, nullable=False),
    Column("action", String(1), nullable=False),              # C R U D E
    Column("subtype", String(40), nullable=False),            # read, create, search-type, login, ...
    Column("outcome", String(2), nullable=False),             # 0 4 8 12
    Column("agent", String(128), nullable=False),             # who: client or user id
    Column("patient", String(64), nullable=True),             # compartment, when known
    Column("entity_type", String(64), nullable=True),
    Column("entity_id", String(64), nullable=True),
    Column("purpose", String(32), nullable=True),             # e.g. BTG
    Column("address", String(64), nullable=True),             # network address of the peer
    Column("content_hash", LargeBinary(32), nullable=False),  # SHA-256 of the canonical AuditEvent
    Column("kek_id", String(64), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("nonce", LargeBinary(12), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
)
Index("ix_audit_recorded", audit_event.c.recorded_us)
Index("ix_audit_patient", audit_event.c.patient, audit_event.c.recorded_us)
Index("ix_audit_agent", audit_event.c.agent, audit_event.c.recorded_us)
Index("ix_audit_entity", audit_event.c.entity_type, audit_event.c.entity_id)

# Events committed but not yet in the chain; xid orders them against transactions still running.
audit_pending = Table(
    "audit_pending",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("xid", BigInteger, nullable=False),
)

# The hash chain over events, in the order the sealer took them (pos 1, 2, ...).
audit_chain = Table(
    "audit_chain",
    metadata,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("hash", LargeBinary(32), nullable=False),
)

# Signed (pos, hash) of the chain's head after each sealing batch.
audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("sig_kid", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

# Where each audit forwarder (ehr/audit/siem.py) has got to in the chain, and which process holds the
# lease to send (one of many forwards). The one mutable audit table; no ePHI.
audit_forward = Table(
    "audit_forward",
    metadata,
    Column("name", String(64), primary_key=True),        # e.g. "syslog"
    Column("pos", BigInteger, nullable=False),            # last chain position delivered
    Column("holder", String(64), nullable=True),          # the forwarder instance holding the lease
    Column("lease_until_us", BigInteger, nullable=True),
)

# Alerts raised by the review rules (ehr/audit/alerts.py).
audit_alert = Table(
    "audit_alert",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("raised_us", BigInteger, nullable=False),
    Column("rule", String(64), nullable=False),
    Column("subject", String(200), nullable=False),   # the actor or address the rule fired for
    Column("detail", String(2000), nullable=False),   # no ePHI: counts, ids, times
    Column("event_id", String(36), nullable=True),    # the event that tipped it
)
Index("ix_alert_raised", audit_alert.c.raised_us)


_SQLITE_GUARD = """
CREATE TRIGGER IF NOT EXISTS {table}_no_{op} BEFORE {OP} ON {table}
BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END
"""

# Row trigger: refuse DELETE, and any UPDATE that changes more than the mutable columns.
_PG_GUARD = """
CREATE OR REPLACE FUNCTION {table}_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND (to_jsonb(NEW) {minus}) = (to_jsonb(OLD) {minus}) THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION '{table} is append-only' USING ERRCODE = 'insufficient_privilege';
END $$
"""

_PG_TRIGGERS = """
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
  FOR EACH ROW EXECUTE FUNCTION {table}_guard();
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
  FOR EACH STATEMENT EXECUTE FUNCTION {table}_guard()
"""


def append_only(table: Table, mutable: tuple[str, ...] = ()) -> None:
    """Make the database refuse UPDATE and DELETE on ``table``, except updates of ``mutable`` columns."""
    fixed = [c.name for c in table.columns if c.name not in mutable]
    sqlite = [("update", f"UPDATE OF {', '.join(fixed)}"), ("delete", "DELETE")]
    for op, clause in sqlite:
        ddl = _SQLITE_GUARD.format(table=table.name, op=op, OP=clause)
        event.listen(table, "after_create", DDL(ddl).execute_if(dialect="sqlite"))  # type: ignore[no-untyped-call]
    minus = " ".join(f"- '{name}'" for name in mutable)
    statements = [_PG_GUARD.format(table=table.name, minus=minus)]
    statements += _PG_TRIGGERS.format(table=table.name).split(";")
    for statement in statements:
        event.listen(table, "after_create", DDL(statement).execute_if(dialect="postgresql"))  # type: ignore[no-untyped-call]


# Re-wrapping a data key under a new KEK (ehr keys rewrap) changes only the wrapping; the content,
# hashes, signature and ciphertext stay as written.
append_only(resource_version, mutable=("kek_id", "wrapped_key"))
for _table in (audit_event, audit_chain, audit_checkpoint, audit_alert):
    append_only(_table)
