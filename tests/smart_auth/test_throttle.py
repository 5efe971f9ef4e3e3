"""Sign-in back-off (smart_auth/throttle.py): per account name and per address, doubling, capped,
forgotten after the window, cleared by a success; both engines."""

from __future__ import annotations

from ehr.db.database import Database
from smart_auth.throttle import SignInThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_back_off_doubles_up_to_the_cap_and_is_forgotten(db: Database) -> None:
    clock = Clock()
    throttle = SignInThrottle(db, threshold=3, base_seconds=10, max_seconds=40, window_seconds=3600, clock=clock)
    keys = ["user:alice", "addr:10.0.0.1"]
    waits = []
    for _ in range(7):
        await throttle.failed(keys)
        waits.append(await throttle.wait(keys))
    assert waits == [0, 0, 10, 20, 40, 40, 40]
    clock.now += 39
    assert await throttle.wait(["user:alice"]) == 1
    clock.now += 2
    assert await throttle.wait(keys) == 0
    clock.now += 3601  # the window passed: counting starts again
    await throttle.failed(keys)
    assert await throttle.wait(keys) == 0


async def test_a_success_clears_the_account_not_the_address(db: Database) -> None:
    clock = Clock()
    throttle = SignInThrottle(db, threshold=1, base_seconds=5, max_seconds=60, clock=clock)
    await throttle.failed(["user:bob", "addr:10.0.0.2"])
    assert await throttle.wait(["user:bob"]) == 5
    await throttle.succeeded("user:bob")
    assert await throttle.wait(["user:bob"]) == 0
    assert await throttle.wait(["addr:10.0.0.2"]) == 5
