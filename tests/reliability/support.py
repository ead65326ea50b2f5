"""Helpers shared by the reliability tests (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from arcanos_flows.core import redaction
from arcanos_flows.testing import Delivery


def spooled(spool: Path) -> list[Path]:
    """The incident files waiting in a spool folder."""
    return sorted(spool.glob("*.json")) if spool.is_dir() else []


def webhook_ids(deliveries: list[Delivery]) -> Counter[str]:
    """How often each webhook-id arrived."""
    return Counter(delivery.headers["webhook-id"] for delivery in deliveries)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block, restoring the previous ones after.

    Hypothesis examples cannot use pytest's function-scoped ``monkeypatch``, so this does it by hand.
    """
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def secrets_registry() -> Iterator[None]:
    """Forget, after the block, the secrets settings registered for redaction inside it.

    Thousands of generated API keys must not leak into the redaction of later examples and tests
    (a generated key like ``"_MODEL"`` would otherwise redact variable names from messages).
    """
    saved = redaction._known
    try:
        yield
    finally:
        redaction._known = saved
