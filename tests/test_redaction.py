"""Redaction: registered secrets and secret-shaped strings never leave the process."""

from __future__ import annotations

import threading
import uuid

import pytest

from arcanos_flows.core.redaction import REDACTED, mask, redact, redact_data, register_secret


def unique(prefix: str = "pw-") -> str:
    """A secret no other test registered."""
    return f"{prefix}{uuid.uuid4().hex}"


def test_registered_secret_is_redacted_everywhere() -> None:
    """Once registered, a secret is replaced at every occurrence, even inside other text."""
    secret = unique()
    assert redact(f"a {secret} b") == f"a {secret} b"  # an unregistered, unshaped string stays
    register_secret(secret)
    assert redact(f"a {secret} b {secret}") == f"a {REDACTED} b {REDACTED}"
    assert redact(f"x{secret}y") == f"x{REDACTED}y"
    assert REDACTED == "[REDACTED]"


@pytest.mark.parametrize("short", ["a", "abc", "12345"])
def test_short_secrets_are_ignored(short: str) -> None:
    """Secrets under 6 characters are not registered: redacting them would mangle ordinary text."""
    register_secret(short)
    assert redact(f"value {short} here") == f"value {short} here"


def test_six_characters_is_enough_to_register() -> None:
    """A 6-character secret is registered."""
    secret = "~6ch!~"  # registration is process-wide: a shape no other test's text can contain
    assert len(secret) == 6
    register_secret(secret)
    assert redact(f"[{secret}]") == f"[{REDACTED}]"


def test_none_and_empty_are_ignored() -> None:
    """register_secret(None) and register_secret("") do nothing."""
    register_secret(None)
    register_secret("")
    assert redact("nothing to hide") == "nothing to hide"


def test_longest_secret_is_removed_first() -> None:
    """A secret containing another is removed whole, not leaving its tail behind."""
    short = unique("inner-")
    long = f"{short}-and-its-longer-tail"
    register_secret(short)
    register_secret(long)
    assert redact(f"key={long};") == f"key={REDACTED};"
    assert redact(f"key={short};") == f"key={REDACTED};"


def test_registration_is_thread_safe() -> None:
    """Secrets registered from many threads are all remembered."""
    secrets = [unique("thread-") for _ in range(40)]
    threads = [threading.Thread(target=register_secret, args=(secret,)) for secret in secrets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert REDACTED in redact(" ".join(secrets))
    assert not any(secret in redact(" ".join(secrets)) for secret in secrets)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Incorrect API key provided: sk-abcdefghijkl", f"Incorrect API key provided: {REDACTED}"),
        ("key sk-proj-Ab_Cd-Ef0123456789 rest", f"key {REDACTED} rest"),
        ("key sk-svcacct-AAAABBBBCCCC.", f"key {REDACTED}."),
        ("'sk-abcdefgh12345678'", f"'{REDACTED}'"),
        ("secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw==", f"secret={REDACTED}"),
        ("Authorization: Bearer abc.def", f"Authorization: Bearer {REDACTED}"),
        ('{"authorization": "Bearer eyJ.x.y", "n": 1}', f'{{"authorization": "Bearer {REDACTED}", "n": 1}}'),
        ("authorization: bearer lower-case-token", f"authorization: bearer {REDACTED}"),
        ("Bearer  two-spaces", f"Bearer  {REDACTED}"),
        ("Bearer\ttabbed-token", f"Bearer\t{REDACTED}"),
        ("Bearer a1, next", f"Bearer {REDACTED}, next"),
    ],
)
def test_secret_shapes_are_redacted_without_registration(text: str, expected: str) -> None:
    """sk- keys, whsec_ secrets and Bearer values are removed even if this process never loaded them."""
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "task-abcdefghijkl finished",  # "sk-" inside a word
        "ask-me-anything-today",
        "sk-short",  # too short to be a key
        "the whsec_ prefix alone",
        "plain text with no secrets",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    """Text that only looks a little like a secret is unchanged."""
    assert redact(text) == text


def test_redact_data_walks_nested_structures() -> None:
    """Strings at every depth, and keys, are redacted; other values are kept; the input is not changed."""
    data = {
        "note": "key sk-abcdefghijkl",
        "n": 1,
        "flag": True,
        "none": None,
        "nested": {"headers": ["Authorization: Bearer tok.en", ("sk-tupletupletuple", 2)]},
        "sk-keykeykeykey": "value",
    }
    original = repr(data)
    cleaned = redact_data(data)
    assert cleaned == {
        "note": f"key {REDACTED}",
        "n": 1,
        "flag": True,
        "none": None,
        "nested": {"headers": [f"Authorization: Bearer {REDACTED}", [REDACTED, 2]]},
        REDACTED: "value",
    }
    assert repr(data) == original


def test_redact_data_on_scalars() -> None:
    """A bare string is redacted; numbers, None and bytes pass through."""
    assert redact_data("sk-abcdefghijkl") == REDACTED
    assert redact_data(3) == 3
    assert redact_data(None) is None
    assert redact_data(b"raw") == b"raw"


def test_redact_data_survives_self_reference_and_deep_nesting() -> None:
    """A structure containing itself, or nested absurdly deep, is cut off instead of crashing."""
    loop: list[object] = ["sk-abcdefghijkl"]
    loop.append(loop)
    cleaned = redact_data(loop)
    assert cleaned[0] == REDACTED
    deep: object = "sk-deepdeepdeepdeep"
    for _ in range(500):
        deep = [deep]
    assert "sk-deepdeepdeepdeep" not in repr(redact_data(deep))


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        (None, "(not set)"),
        ("", "(not set)"),
        ("sk-proj-abcdefghijkl", "sk-…(20 chars)"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whs…(38 chars)"),
        ("hunter2", "…(7 chars)"),
        ("abc", "…(3 chars)"),
    ],
)
def test_mask_shows_that_a_secret_is_set_without_showing_it(secret: str | None, shown: str) -> None:
    """mask() shows at most a 3-character prefix of long secrets, and the length."""
    assert mask(secret) == shown
    if secret:
        assert secret not in mask(secret)
