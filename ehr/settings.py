"""Settings from the environment (prefix ``EHR_``); see README "Configuration".

Settings are built explicitly (``Settings()``) by the entry points and passed down; nothing reads
the environment at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EHR_", extra="ignore")

    home: Path = Field(default=Path(".ehr"), description="state directory: PKI, keys, SQLite database")
    host: str = "127.0.0.1"
    port: int = 8443
    workers: int = Field(default=1, ge=1, le=64)
    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy async URL; default: SQLite file in the state directory"
    )
    base_url: str | None = Field(default=None, description="public FHIR base URL; default https://HOST:PORT/fhir")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_bundle_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="largest transaction/batch body")
    page_size_default: int = Field(default=50, ge=1)
    page_size_max: int = Field(default=500, ge=1)
    client_cache_seconds: float = Field(default=5.0, ge=0, description="how long a client registration is cached")
    db_pool_size: int = Field(default=20, ge=1)
    audit_seal_seconds: float = Field(default=1.0, gt=0, description="how often pending audit events are chained")
    syslog_url: str | None = Field(
        default=None, description="SIEM feed of the audit log, tls://host:port (RFC 5425); unset: no feed"
    )
    syslog_ca: Path | None = Field(default=None, description="CA verifying the syslog receiver; default: system CAs")
    syslog_cert: Path | None = Field(default=None, description="client certificate for the syslog receiver, if it asks")
    syslog_key: Path | None = Field(default=None, description="the client certificate's private key")
    # SMART on FHIR authorization (smart_auth/, docs/adr/0009-smart-authorization.md)
    access_token_seconds: int = Field(default=300, ge=30, le=3600, description="access token lifetime")
    refresh_token_days: float = Field(default=90, gt=0, description="offline_access refresh token lifetime")
    online_refresh_hours: float = Field(default=12, gt=0, description="online_access refresh token lifetime")
    session_idle_minutes: float = Field(default=15, gt=0, description="sign-in session ends after this idle time")
    session_max_hours: float = Field(default=12, gt=0, description="sign-in session ends after this long")
    signin_failures: int = Field(default=5, ge=1, description="sign-in failures before back-off starts")
    signin_backoff_seconds: float = Field(default=30, gt=0, description="first back-off; doubles per failure")
    signin_backoff_max_minutes: float = Field(default=15, gt=0, description="longest back-off")
    require_bound_system_tokens: bool = Field(
        default=False, description="refuse system/ tokens not bound to a client certificate (RFC 8705)"
    )
    # HL7 v2 over MLLP/TLS (interfaces/, docs/adr/0010-hl7v2-mllp.md)
    mllp_port: int = Field(default=2575, ge=0, le=65535, description="MLLP/TLS listener port (0: no listener)")
    mllp_max_message_bytes: int = Field(default=1024 * 1024, ge=1024, description="largest HL7 v2 message")
    mllp_idle_seconds: float = Field(default=60, gt=0, description="close an MLLP connection idle this long")
    mllp_max_connections: int = Field(default=64, ge=1, description="concurrent MLLP connections")
    hl7_timezone: str = Field(
        default="UTC", description="IANA time zone of HL7 v2 times sent without an offset (the senders' zone)"
    )
    # Audit review alerts (ehr/audit/alerts.py, docs/adr/0007-audit-alerts.md)
    alert_mass_access_patients: int = Field(
        default=50, ge=1, description="mass access: alert when one actor reads more distinct patients than this"
    )
    alert_mass_access_minutes: float = Field(default=10, gt=0, description="mass access: within this many minutes")
    alert_refusals: int = Field(
        default=5, ge=0, description="refusals: alert on more 401/403 outcomes than this from one actor or address"
    )
    alert_refusals_minutes: float = Field(default=5, gt=0, description="refusals: within this many minutes")
    alert_hours: str = Field(default="07:00-19:00", description="off-hours: access outside these local hours alerts")
    alert_timezone: str = Field(default="UTC", description="off-hours: the IANA time zone of alert_hours")
    alert_quiet_minutes: float = Field(
        default=60, gt=0, description="off-hours and break-glass: at most one alert per actor in this many minutes"
    )
    alert_webhook_url: SecretStr | None = Field(
        default=None, description="POST alerts as JSON here (https; http only to loopback)"
    )
    alert_webhook_ca: Path | None = Field(default=None, description="CA file for the webhook's certificate")

    @property
    def pki_dir(self) -> Path:
        return self.home / "pki"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def server_cert(self) -> Path:
        return self.tls_cert or self.pki_dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.tls_key or self.pki_dir / "server-key.pem"

    @property
    def ca_cert(self) -> Path:
        return self.client_ca or self.pki_dir / "ca.pem"

    @property
    def database(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{(self.home / 'ehr.sqlite3').resolve()}"

    @property
    def auth_base(self) -> str:
        """Where the authorization server's endpoints live: the FHIR base's parent (…/oauth/…)."""
        base = self.fhir_base
        return base[: -len("/fhir")] if base.endswith("/fhir") else base

    @property
    def fhir_base(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"https://{self.host}:{self.port}/fhir"
