"""Every Python example of the docs and the README runs, against the shipped fake servers and Prefect.

Each example runs as ``__main__`` (its ``if __name__ == "__main__":`` block included) with the environment a user
would have: ``OPENAI_BASE_URL`` at a fake OpenAI server, a signed webhook receiver, and a Prefect test server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_examples import CodeExample, EvalExample, find_examples

from arcanos_flows.core import redaction

ROOT = Path(__file__).resolve().parents[1]
ALL_EXAMPLES = [
    example
    for example in find_examples(str(ROOT / "README.md"), str(ROOT / "docs"))
    if example.path.suffix == ".md" and "_hooks" not in example.path.parts
]
DASK_EXAMPLES = [example for example in ALL_EXAMPLES if "prefect_dask" in example.source]
"""Run by tests/test_dask.py instead, inside the fixtures that keep ``import distributed``'s pickle reducers to the
Dask tests (it registers them process-wide)."""
EXAMPLES = [example for example in ALL_EXAMPLES if example not in DASK_EXAMPLES]


def _id(example: CodeExample) -> str:
    return f"{example.path.relative_to(ROOT)}:{example.start_line}"


@pytest.fixture
def forget_secrets() -> Iterator[None]:
    """Forget, after the example, the secrets its settings registered for redaction (registration is process-wide).

    The docs' sample webhook secret would otherwise stay registered for the rest of the process, and a later test
    (tests/test_redaction.py: whsec_ secrets are redacted by their shape alone) would see it redacted as a
    registered secret instead.
    """
    saved = redaction._known
    try:
        yield
    finally:
        redaction._known = saved


def test_the_docs_have_examples() -> None:
    """The collection below is not silently empty."""
    assert len(EXAMPLES) >= 12
    assert {example.path.name for example in EXAMPLES} >= {"README.md", "getting-started.md", "test-your-flows.md"}


@pytest.mark.usefixtures("prefect_harness", "arcanos_env", "forget_secrets")
@pytest.mark.parametrize("example", EXAMPLES, ids=_id)
def test_example_runs(example: CodeExample, eval_example: EvalExample) -> None:
    """The example runs to its end without an exception."""
    eval_example.run(example)
