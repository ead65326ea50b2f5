"""The audit-metadata contract: OpenAI's limits, checked and coerced before any request is sent.

OpenAI accepts at most 16 keys, keys of at most 64 characters and string values of at most 512
characters. Nothing is truncated: a value that does not fit raises
:class:`~arcanos_flows.errors.InvalidReasoningInput` naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from arcanos_flows.core.errors import InvalidReasoningInput

__all__ = ["MAX_KEYS", "MAX_KEY_LENGTH", "MAX_VALUE_LENGTH", "MetadataValue", "build_metadata"]

MAX_KEYS = 16
MAX_KEY_LENGTH = 64
MAX_VALUE_LENGTH = 512

MetadataValue = str | int | float | bool | None
"""What a caller may put in metadata: strings, numbers and booleans become strings, ``None`` is dropped."""


def _coerce(key: str, value: Any) -> str | None:
    if value is None:
        return None
    # Subclasses (enums, numpy-like scalars) are converted through the base type, so that the value
    # sent is "1", never "Color.RED" or "np.float64(1.0)".
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        if value.bit_length() > MAX_VALUE_LENGTH * 4:  # more digits than allowed; str() would be slow or fail
            raise InvalidReasoningInput(
                f"metadata[{key!r}]: the number has more than {MAX_VALUE_LENGTH} digits; "
                f"OpenAI allows at most {MAX_VALUE_LENGTH} characters"
            )
        text = int.__repr__(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidReasoningInput(f"metadata[{key!r}]: {float(value)!r} is not a finite number")
        text = float.__repr__(value)
    elif isinstance(value, str):
        text = str.__str__(value)
        if not is_utf8_encodable(text):
            raise InvalidReasoningInput(
                f"metadata[{key!r}]: value contains a lone surrogate, which is not valid Unicode text"
            )
    else:
        raise InvalidReasoningInput(
            f"metadata[{key!r}]: values must be str, int, float, bool or None, not {type(value).__name__}"
        )
    if len(text) > MAX_VALUE_LENGTH:
        raise InvalidReasoningInput(
            f"metadata[{key!r}]: value is {len(text)} characters; OpenAI allows at most {MAX_VALUE_LENGTH} "
            "(nothing is truncated: shorten it or send a reference)"
        )
    return text


def is_utf8_encodable(text: str) -> bool:
    r"""Whether ``text`` can be sent as UTF-8.

    Lone surrogates are valid ``str`` but not UTF-8: the SDK would fail while serialising the request, after the
    call looked valid.

    Examples:
        >>> is_utf8_encodable("ok"), is_utf8_encodable("\udc80")
        (True, False)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidReasoningInput(f"metadata key {key!r}: keys must be non-empty strings")
    if not is_utf8_encodable(key):
        raise InvalidReasoningInput(f"metadata key {key[:MAX_KEY_LENGTH]!r}: contains a lone surrogate")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidReasoningInput(
            f"metadata key {key[:MAX_KEY_LENGTH]!r}...: key is {len(key)} characters; "
            f"OpenAI allows at most {MAX_KEY_LENGTH}"
        )
    return key


def build_metadata(
    caller: Mapping[str, MetadataValue] | None,
    *,
    defaults: Mapping[str, str | None] | None = None,
    identity: Mapping[str, str | None] | None = None,
) -> dict[str, str]:
    """Merge and check the metadata one request carries.

    Args:
        caller: The caller's audit metadata.
        defaults: Keys added unless the caller set them (e.g. ``confirmation_token`` from settings).
        identity: Keys that describe where the call runs (e.g. Prefect run ids); they override the
            caller's keys of the same name and count against the 16-key limit.

    Returns:
        The metadata as OpenAI will receive it: ``str`` keys and values, insertion-ordered.

    Raises:
        InvalidReasoningInput: A key or value breaks OpenAI's limits, naming the key.

    Examples:
        >>> build_metadata({"run": 7, "dry": True, "skip": None}, defaults={"confirmation_token": "ct-1"})
        {'run': '7', 'dry': 'true', 'confirmation_token': 'ct-1'}
    """
    if caller is not None and not isinstance(caller, Mapping):
        raise InvalidReasoningInput(f"metadata: must be a mapping of str to str, not {type(caller).__name__}")
    merged: dict[str, str] = {}
    for key, value in (caller or {}).items():
        text = _coerce(_check_key(key), value)
        if text is not None:
            merged[key] = text
    added: list[str] = []
    for key, value in (defaults or {}).items():
        text = _coerce(_check_key(key), value)
        # An empty default (ARCANOS_CONFIRMATION_TOKEN="") means "not configured", not an empty value.
        if text and key not in merged:
            merged[key] = text
            added.append(key)
    for key, value in (identity or {}).items():
        text = _coerce(_check_key(key), value)
        if text is not None:
            if key not in merged:
                added.append(key)
            merged[key] = text
    if len(merged) > MAX_KEYS:
        overflow = list(merged)[MAX_KEYS]
        caller_keys = len(merged) - len(added)
        room = MAX_KEYS - caller_keys
        detail = ""
        if added and caller_keys <= MAX_KEYS:
            detail = (
                f"; {caller_keys} caller keys leave "
                + ("no room" if room <= 0 else f"room for only {room}")
                + f" for the {len(added)} key(s) arcanos-flows adds ({', '.join(added)})"
            )
        raise InvalidReasoningInput(
            f"metadata[{overflow!r}]: {len(merged)} keys exceed OpenAI's limit of {MAX_KEYS}{detail}"
        )
    return merged
