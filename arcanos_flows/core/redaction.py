"""Keeping secrets out of every line arcanos-flows writes.

Settings register the API key and the webhook secret here when they are loaded; incidents, log
lines and exception texts pass through :func:`redact` before they leave the process. Patterns catch
secrets this process never loaded too (an upstream error that echoes someone else's key).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "REDACTED",
    "RedactingFilter",
    "mask",
    "redact",
    "redact_data",
    "redact_logs",
    "register_secret",
    "register_token",
]

REDACTED = "[REDACTED]"

_PATTERNS = re.compile(
    r"""
      \bsk-[A-Za-z0-9_\-]{8,}          # OpenAI keys: sk-..., sk-proj-..., sk-svcacct-...
    | \bwhsec_[A-Za-z0-9+/=]{8,}       # Standard Webhooks secrets
    | (?P<bearer>\bBearer\s+)[^\s"',;]+  # Authorization header values ("Bearer  x", "bearer\tx" too)
    """,
    re.VERBOSE | re.IGNORECASE,
)
_MIN_SECRET_LENGTH = 6
_MAX_DEPTH = 32
_SHOWN_PREFIX_MIN_LENGTH = 12

_lock = threading.Lock()
_known: frozenset[str] = frozenset()


def register_token(token: str | None) -> None:
    """Remember a confirmation token as a secret, when it looks like one: 8 characters or more, not just letters.

    Redaction is process-wide and textual: a token that is an ordinary word (``"caller"``) would be masked in every
    message that uses the word. Real tokens are long and carry digits or punctuation.

    Examples:
        >>> register_token("ct-2026-12-ops-token")
        >>> redact("sent ct-2026-12-ops-token"), redact("the caller keys")
        ('sent [REDACTED]', 'the caller keys')
    """
    if token is not None and len(token) >= 8 and not token.isalpha():
        register_secret(token)


def register_secret(secret: str | None) -> None:
    """Remember a secret so that :func:`redact` removes it wherever it appears.

    Args:
        secret: The secret value; ``None`` and very short values are ignored (redacting ``"abc"``
            everywhere would mangle ordinary text).

    Examples:
        >>> register_secret("hunter2-but-longer")
        >>> redact("password is hunter2-but-longer")
        'password is [REDACTED]'
    """
    global _known
    if secret is None or len(secret) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        _known = frozenset((*_known, secret))


def redact(text: str) -> str:
    """Replace registered secrets, ``sk-...`` keys, ``whsec_...`` secrets and ``Bearer`` values.

    Args:
        text: Any text about to be logged, serialised or raised.

    Returns:
        The text with every secret replaced by ``[REDACTED]``.

    Examples:
        >>> redact("Incorrect API key provided: sk-proj-abcdefghijkl")
        'Incorrect API key provided: [REDACTED]'
        >>> redact("Authorization: Bearer abc.def")
        'Authorization: Bearer [REDACTED]'
    """
    # Longest first, so that a secret containing another is removed whole.
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _PATTERNS.sub(_replace, text)


def _replace(match: re.Match[str]) -> str:
    return (match.group("bearer") or "") + REDACTED


def redact_data(value: Any) -> Any:
    """Apply :func:`redact` to every string inside nested mappings and sequences (keys included).

    Mappings become dicts and sequences lists; structures nested deeper than 32 levels (or
    containing themselves) are replaced by a placeholder rather than passed through unredacted.

    Examples:
        >>> redact_data({"note": "key sk-abcdefghijkl", "n": 1})
        {'note': 'key [REDACTED]', 'n': 1}
    """
    return _redact_data(value, 0)


def _redact_data(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (Mapping, Sequence)) and not isinstance(value, (bytes, bytearray)) and depth >= _MAX_DEPTH:
        return "[too deeply nested]"
    if isinstance(value, Mapping):
        return {redact(str(key)): _redact_data(item, depth + 1) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [_redact_data(item, depth + 1) for item in value]
    return value


def mask(secret: str | None) -> str:
    """Show that a secret is set without showing it: ``sk-…(51 chars)``.

    Secrets shorter than 12 characters show no prefix at all: three characters of a short secret
    give too much away.

    Examples:
        >>> mask("sk-proj-abcdefghijkl")
        'sk-…(20 chars)'
        >>> mask("hunter2")
        '…(7 chars)'
        >>> mask(None)
        '(not set)'
    """
    if not secret:
        return "(not set)"
    prefix = secret[:3] if len(secret) >= _SHOWN_PREFIX_MIN_LENGTH else ""
    return f"{prefix}…({len(secret)} chars)"


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message before any handler formats it.

    Attached to third-party loggers that show upstream data (the SDK logs the ``x-request-id`` an
    upstream chose, httpcore logs whole response headers at DEBUG), so an upstream echoing the key
    cannot put it into a log file.

    Examples:
        >>> record = logging.LogRecord("openai", logging.DEBUG, "x.py", 1, "id: %s", ("sk-abcdefghijkl",), None)
        >>> RedactingFilter().filter(record), record.getMessage()
        (True, 'id: [REDACTED]')
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message without secrets; never drops a record."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the emitter's problem, not a reason to lose the line
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = RedactingFilter()


def redact_logs(*names: str) -> None:
    """Attach :class:`RedactingFilter` to the named loggers (once each).

    A logger's filters only see records logged on that very logger, so the names are the emitting
    modules' loggers, not their packages'.

    Examples:
        >>> redact_logs("example.module")
        >>> RedactingFilter in {type(f) for f in logging.getLogger("example.module").filters}
        True
    """
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
