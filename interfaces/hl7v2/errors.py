"""Why a message was not taken: an HL7 error code (table 0357), where, and whether it is a reject.

AE (application error): the message was understood but its content is wrong; nothing was stored.
AR (application reject): the message was refused before its content was looked at (unknown sender,
unsupported type, version or processing id, unreadable header). Texts never carry field values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Code(enum.Enum):
    """HL7 table 0357 (message error condition codes): code, text."""

    ACCEPTED = ("0", "Message accepted")
    SEGMENT_SEQUENCE = ("100", "Segment sequence error")
    REQUIRED_FIELD = ("101", "Required field missing")
    DATA_TYPE = ("102", "Data type error")
    TABLE_VALUE = ("103", "Table value not found")
    UNSUPPORTED_MESSAGE_TYPE = ("200", "Unsupported message type")
    UNSUPPORTED_EVENT = ("201", "Unsupported event code")
    UNSUPPORTED_PROCESSING_ID = ("202", "Unsupported processing id")
    UNSUPPORTED_VERSION = ("203", "Unsupported version id")
    UNKNOWN_KEY = ("204", "Unknown key identifier")
    DUPLICATE_KEY = ("205", "Duplicate key identifier")
    RECORD_LOCKED = ("206", "Application record locked")
    INTERNAL = ("207", "Application internal error")

    @property
    def number(self) -> str:
        return self.value[0]

    @property
    def text(self) -> str:
        return self.value[1]


Location = tuple[str, int, int] | tuple[str, int, int, int] | tuple[str, int, int, int, int]
"""(segment id, segment sequence from 1, field number[, field repetition[, component]])."""


@dataclass(slots=True)
class Rejected(Exception):
    code: Code
    text: str
    reject: bool = False              # AR rather than AE
    location: Location | None = None
    more: list[Rejected] = field(default_factory=list)  # further errors of the same message

    def __str__(self) -> str:
        return f"{'AR' if self.reject else 'AE'} {self.code.number}: {self.text}"
