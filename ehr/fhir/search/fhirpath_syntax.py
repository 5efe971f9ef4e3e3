"""Tokenizer and parser for the subset of FHIRPath (N1, http://hl7.org/fhirpath/N1/) that the
R4 SearchParameter expressions use.

The grammar is the official one cut down to what the 1,400 core definitions need, with the
official precedence (fhirpath.html#operator-precedence: ``.``/``[]`` > ``is``/``as`` > ``|`` >
``=``/``!=`` > ``and``)::

    expr     := equality ('and' equality)*
    equality := union (('=' | '!=') union)?
    union    := typed ('|' typed)*
    typed    := postfix (('is' | 'as') IDENT)?
    postfix  := term ('.' call | '[' INTEGER ']')*
    term     := '(' expr ')' | STRING | INTEGER | 'true' | 'false' | '%' IDENT | call
    call     := IDENT ('(' (expr (',' expr)*)? ')')?

Anything else is a :class:`FhirPathError`, so an expression outside the subset is reported
by the generator instead of being silently mis-indexed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Binary", "Expr", "FhirPathError", "Index", "Invoke", "Literal", "TypeOp", "Variable",
    "alternatives", "parse",
]


class FhirPathError(ValueError):
    """An expression outside the supported subset (or not FHIRPath at all)."""


@dataclass(frozen=True, slots=True)
class Literal:
    value: str | bool | int


@dataclass(frozen=True, slots=True)
class Variable:
    name: str  # without the "%": "resource", "rootResource"


@dataclass(frozen=True, slots=True)
class Invoke:
    target: Expr | None  # None: the start of a path, evaluated on the focus ($this)
    name: str
    args: tuple[Expr, ...] | None  # None for a member (``name``), a tuple for a call (``name()``)


@dataclass(frozen=True, slots=True)
class Index:
    target: Expr
    index: int


@dataclass(frozen=True, slots=True)
class TypeOp:
    target: Expr
    op: str  # "is" | "as"
    type_name: str


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # "|" | "=" | "!=" | "and"
    left: Expr
    right: Expr


Expr = Literal | Variable | Invoke | Index | TypeOp | Binary

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<int>\d+)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<op>!=|[.()\[\]|=,%]))")


def tokenize(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, offset) triples; kind is "str", "int", "ident" or "op"."""
    tokens: list[tuple[str, str, int]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            raise FhirPathError(f"unexpected character at {position}: {text[position:position + 10]!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup), match.start(match.lastgroup)))
        position = match.end()
    return tokens


def alternatives(expression: str) -> list[str]:
    """The operands of the top-level ``|`` union, as source text (parentheses kept)."""
    parts: list[str] = []
    depth, start = 0, 0
    for kind, text, offset in tokenize(expression):
        if kind == "op" and text in "([":
            depth += 1
        elif kind == "op" and text in ")]":
            depth -= 1
        elif kind == "op" and text == "|" and depth == 0:
            parts.append(expression[start:offset].strip())
            start = offset + 1
    parts.append(expression[start:].strip())
    return parts


def parse(expression: str) -> Expr:
    parser = _Parser(tokenize(expression))
    tree = parser.expr()
    if parser.peek() is not None:
        raise FhirPathError(f"unexpected {parser.peek()!r} in {expression!r}")
    return tree


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def take(self, kind: str | None = None) -> str:
        if self.position >= len(self.tokens):
            raise FhirPathError("unexpected end of expression")
        token_kind, text, _ = self.tokens[self.position]
        if kind is not None and token_kind != kind:
            raise FhirPathError(f"expected {kind}, found {text!r}")
        self.position += 1
        return text

    def expect(self, text: str) -> None:
        if self.take() != text:
            raise FhirPathError(f"expected {text!r}")

    def expr(self) -> Expr:
        left = self.equality()
        while self.peek() == "and":
            self.take()
            left = Binary("and", left, self.equality())
        return left

    def equality(self) -> Expr:
        left = self.union()
        if self.peek() in ("=", "!="):
            return Binary(self.take(), left, self.union())
        return left

    def union(self) -> Expr:
        left = self.typed()
        while self.peek() == "|":
            self.take()
            left = Binary("|", left, self.typed())
        return left

    def typed(self) -> Expr:
        target = self.postfix()
        if self.peek() in ("is", "as"):
            return TypeOp(target, self.take(), self.take("ident"))
        return target

    def postfix(self) -> Expr:
        tree = self.term()
        while self.peek() in (".", "["):
            if self.take() == ".":
                tree = self.call(tree)
            else:
                tree = Index(tree, int(self.take("int")))
                self.expect("]")
        return tree

    def term(self) -> Expr:
        kind, text, _ = self.tokens[self.position] if self.position < len(self.tokens) else ("", "", 0)
        if text == "(":
            self.take()
            inner = self.expr()
            self.expect(")")
            return inner
        if kind in ("str", "int") or text in ("true", "false"):
            self.take()
            return Literal(_literal(kind, text))
        if text == "%":
            self.take()
            return Variable(self.take("ident"))
        return self.call(None)

    def call(self, target: Expr | None) -> Expr:
        name = self.take("ident")
        if self.peek() != "(":
            return Invoke(target, name, None)
        self.take()
        args: list[Expr] = []
        while self.peek() != ")":
            if args:
                self.expect(",")
            args.append(self.expr())
        self.take()
        return Invoke(target, name, tuple(args))


def _literal(kind: str, text: str) -> str | bool | int:
    if kind == "int":
        return int(text)
    if kind == "str":
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text == "true"
