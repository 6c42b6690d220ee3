"""Regular expressions from definitions (include/exclude/logged-out patterns), compiled with RE2.

RE2 matches in time linear in the input, whatever the pattern: with Python's backtracking `re`, the
pattern `(a+)+$` and a 27-character link froze a whole executor (and the next one that leased the
page). RE2 has no backreferences or lookaround; a pattern it cannot compile is refused when the
definition is stored.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

MAX_PATTERN_CHARS = 1000
MAX_PATTERNS = 100


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a bad pattern is reported to the user, not printed on stderr
    options.max_mem = 8 << 20  # a compiled program over 8 MiB is refused (RE2's default)
    options.never_capture = True  # only whether it matches is wanted
    return options


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """The compiled pattern; ValueError with a readable reason when RE2 cannot compile it."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(pattern, _options())
    except re2.error as error:
        detail = error.args[0] if error.args else error
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise ValueError(f"not a valid RE2 regular expression ({detail}); RE2 has no backreferences or "
                         "lookaround") from None


def compile_all(patterns: tuple[str, ...] | list[str]) -> list[Any]:
    return [compile_pattern(pattern) for pattern in patterns]


def any_search(compiled: list[Any], text: str) -> bool:
    return any(pattern.search(text) is not None for pattern in compiled)
