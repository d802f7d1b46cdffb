"""Identifier rules: client and screen ids become path segments and SQL values."""

from __future__ import annotations

import re

# msgspec and Litestar match patterns with Python's re.search, whose `$` also matches before a final
# newline ("acme\n" passed); `(?!\n)` rules that out, and keeps the pattern valid JSON Schema (ECMA).
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$(?!\n)"
_ID_RE = re.compile(ID_PATTERN)


class InvalidId(ValueError):
    def __init__(self, field: str, value: object):
        super().__init__(f"{field}: must be 1-64 characters of [A-Za-z0-9_-], got {value!r}")
        self.field = field


def validate_id(value: object, field: str = "id") -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidId(field, value)
    return value


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None
