"""Back-off after repeated sign-in failures, per account and per network address (NIST SP 800-63B
5.2.2 rate limiting): the ``threshold``-th failure within ``window`` starts a wait of
``base_seconds``, each further one doubles it, up to ``max_seconds``; while it lasts no password is
checked. Counted by the name typed, known
or not, so the answer never tells whether an account exists. Failures older than the window are
forgotten; a success clears the account's count."""

from __future__ import annotations

import time
from collections.abc import Callable

from ehr.db.database import Database

_UPSERT = (
    "INSERT INTO signin_throttle (key, failures, last_us, locked_until_us) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (key) DO UPDATE SET failures = $2, last_us = $3, locked_until_us = $4"
)


class SignInThrottle:
    def __init__(
        self, db: Database, *, threshold: int, base_seconds: float, max_seconds: float, window_seconds: float = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._threshold = threshold
        self._base = base_seconds
        self._max = max_seconds
        self._window = window_seconds
        self._clock = clock

    async def wait(self, keys: list[str]) -> float:
        """Seconds until any of ``keys`` may try again (0: now)."""
        now_us = int(self._clock() * 1e6)
        marks = ", ".join(f"${n + 1}" for n in range(len(keys)))
        row = await self._db.fetch_one(
            f"SELECT max(locked_until_us) AS until FROM signin_throttle WHERE key IN ({marks})", *keys
        )
        until = row["until"] if row and row["until"] is not None else 0
        return max(0.0, (until - now_us) / 1e6)

    async def failed(self, keys: list[str]) -> None:
        now_us = int(self._clock() * 1e6)
        for key in keys:
            row = await self._db.fetch_one("SELECT failures, last_us FROM signin_throttle WHERE key = $1", key)
            recent = row is not None and now_us - row["last_us"] <= self._window * 1e6
            failures = (row["failures"] if recent and row else 0) + 1
            over = failures - self._threshold
            wait = min(self._max, self._base * 2**over) if over >= 0 else 0.0
            await self._db.execute(_UPSERT, key, failures, now_us, now_us + int(wait * 1e6))

    async def succeeded(self, key: str) -> None:
        await self._db.execute("DELETE FROM signin_throttle WHERE key = $1", key)
