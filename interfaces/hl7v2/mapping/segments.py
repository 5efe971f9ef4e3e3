"""A v2 message as segments, fields, repetitions and components (v2.5.1 chapter 2, sections 2.5-2.7).

The mappers read ``Parsed.text`` with the sender's own delimiters (message.py says why not hl7apy;
its tolerant mode also splits real messages into odd groups: an OBX before its OBR starts a new
PATIENT_RESULT). Values are unescaped (section
2.7: ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, ``\\.br\\``, ``\\Xhh..\\``) only when a leaf is read, so a
delimiter sent escaped never splits anything. ``""`` (the v2 explicit null) reads as empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from interfaces.hl7v2.message import Header

_HEX = re.compile(r"X(?:[0-9A-Fa-f]{2})+")
_DROPPED = ("H", "N", ".in", ".ti", ".sk", ".ce", ".fi", ".nf")  # highlighting and formatting commands


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @classmethod
    def of(cls, header: Header) -> Delimiters:
        enc = header.encoding  # message.py checked it: four or five distinct characters
        return cls(header.field_sep, enc[0], enc[1], enc[2], enc[3])


def unescape(text: str, d: Delimiters) -> str:
    """Text with its escape sequences replaced; an unknown or unterminated one is kept as written."""
    if d.escape not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        end = text.find(d.escape, i + 1) if text[i] == d.escape else -1
        meaning = _sequence(text[i + 1 : end], d) if end > i else None
        if meaning is None:
            out.append(text[i])
            i += 1
        else:
            out.append(meaning)
            i = end + 1
    return "".join(out)


def _sequence(seq: str, d: Delimiters) -> str | None:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": d.escape,
              ".br": "\n", ".sp": "\n"}
    if seq in simple:
        return simple[seq]
    if _HEX.fullmatch(seq):
        raw = bytes.fromhex(seq[1:])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")
    if seq in _DROPPED or (seq[:1] in ("C", "M") and _HEX.fullmatch("X" + seq[1:])):
        return ""
    return None


def escape(text: str, d: Delimiters) -> str:
    """``text`` as a v2 value (the escape character first, so it is not escaped twice)."""
    pairs = ((d.escape, "E"), (d.field, "F"), (d.component, "S"), (d.subcomponent, "T"), (d.repetition, "R"))
    for char, code in pairs:
        text = text.replace(char, f"{d.escape}{code}{d.escape}")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{d.escape}.br{d.escape}")


@dataclass(frozen=True, slots=True)
class Rep:
    """One repetition of a field, still escaped."""

    raw: str
    d: Delimiters

    def component(self, n: int) -> str:
        parts = self.raw.split(self.d.component)
        return parts[n - 1] if n <= len(parts) else ""

    def get(self, comp: int = 1, sub: int = 1) -> str:
        """Component ``comp``, subcomponent ``sub``, unescaped and stripped ("" when absent)."""
        parts = self.component(comp).split(self.d.subcomponent)
        value = parts[sub - 1].strip() if sub <= len(parts) else ""
        return "" if value == '""' else unescape(value, self.d)

    def subs(self, comp: int) -> list[str]:
        return [unescape(s, self.d).strip() for s in self.component(comp).split(self.d.subcomponent)]

    def part(self, comp: int) -> Rep:
        """Component ``comp`` read as a repetition whose components are its subcomponents."""
        return Rep(self.component(comp).replace(self.d.subcomponent, self.d.component), self.d)

    def text(self) -> str:
        """The whole repetition as text (for ST, TX, FT: a stray component separator is kept)."""
        value = self.raw.strip()
        return "" if value == '""' else unescape(value, self.d).strip()

    @property
    def empty(self) -> bool:
        return not self.raw.replace(self.d.component, "").replace(self.d.subcomponent, "").replace('""', "").strip()


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    seq: int                  # 1-based among the message's segments of this name
    fields: tuple[str, ...]   # fields[n] is field n, still escaped
    d: Delimiters

    def reps(self, n: int) -> list[Rep]:
        """The non-empty repetitions of field ``n``."""
        raw = self.fields[n] if n < len(self.fields) else ""
        found = (Rep(r, self.d) for r in raw.split(self.d.repetition))
        return [r for r in found if not r.empty]

    def rep(self, n: int) -> Rep:
        found = self.reps(n)
        return found[0] if found else Rep("", self.d)

    def get(self, n: int, comp: int = 1, sub: int = 1) -> str:
        return self.rep(n).get(comp, sub)


def split(text: str, d: Delimiters) -> list[Segment]:
    """The segments of a decoded message (CR between segments); MSH-1 is put back as field 1."""
    counts: dict[str, int] = {}
    segments = []
    for line in text.split("\r"):
        if not line.strip():
            continue
        fields = line.split(d.field)
        name = fields[0].strip()
        if name == "MSH":
            fields.insert(1, d.field)
        counts[name] = counts.get(name, 0) + 1
        segments.append(Segment(name, counts[name], tuple(fields), d))
    return segments
