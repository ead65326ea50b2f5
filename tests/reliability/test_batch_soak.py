"""The batch soak: a batch of hundreds of steps with ~5 % seeded faulty rows loses nothing and bills nothing twice.

A seeded plan gives some rows a fault: an HTTP error status (400, 401, 429, 500, 503), an ``error`` object, another
model answering, a refusal, an empty or length-cut answer. The batch may also expire part-way (a seeded number of rows
finished). The task is then run twice in the same flow run, as a retry would: afterwards every step is accounted for
(answered, or failed with the class its fault implies), each class of failed rows has exactly one incident whose
count and custom ids are its rows, exactly one batch was created and one input uploaded, and the second run
re-attached and saw the same outcome.

CI runs a short variant (300 steps). The long run::

    ARCANOS_BATCH_SOAK_STEPS=20000 pytest tests/reliability/test_batch_soak.py -s -p no:cacheprovider

(``ARCANOS_BATCH_SOAK_SEED`` picks another fault plan.)
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest
from prefect import flow
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from arcanos_flows.prefect.batch import BatchRun, run_reasoning_batch
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

# Read at import: the autouse fixture clears ARCANOS_* variables before each test.
STEPS = int(os.environ.get("ARCANOS_BATCH_SOAK_STEPS", "300"))
SEED = int(os.environ.get("ARCANOS_BATCH_SOAK_SEED", "20261206"))
FAULT_RATE = 0.05

FAULTS: dict[str, tuple[Reply | None, str | None, str]] = {
    "400": (Reply.error(400), None, "bad_request"),
    "401": (Reply.error(401), None, "authentication"),
    "429": (Reply.error(429), None, "rate_limit"),
    "500": (Reply.error(500), None, "upstream_error"),
    "503": (Reply.error(503), None, "upstream_error"),
    "error-object": (None, "server_error", "upstream_error"),
    "other-model": (Reply.other_model("gpt-4o-mini"), None, "model_enforcement"),
    "refusal": (Reply.refused(), None, "refusal"),
    "empty": (Reply.ok(""), None, "empty_completion"),
    "length": (Reply.length("Cut"), None, "incomplete_completion"),
}


@pytest.fixture(autouse=True)
def quick(prefect_harness: None) -> Iterator[None]:
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def plan(rng: random.Random) -> tuple[dict[str, str], int | None]:
    """The faulty rows (custom id to fault) and, for one seed in three, how many rows finish before it expires."""
    faults = {f"s-{number}": rng.choice(sorted(FAULTS)) for number in range(STEPS) if rng.random() < FAULT_RATE}
    expire_after = rng.randrange(STEPS // 2, STEPS) if rng.random() < 1 / 3 else None
    return faults, expire_after


@pytest.mark.slow
def test_a_batch_with_seeded_faulty_rows_accounts_for_every_step_once(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    rng = random.Random(SEED)
    faults, expire_after = plan(rng)
    openai_server.batches.delay = 0.5
    openai_server.batches.reply_rows(
        {step: reply for step, fault in faults.items() if (reply := FAULTS[fault][0]) is not None}, times=None
    )
    openai_server.batches.error_rows(
        {step: code for step, fault in faults.items() if (code := FAULTS[fault][1]) is not None}, times=None
    )
    if expire_after is not None:
        openai_server.batches.expire_next(finished=expire_after)
    steps = [
        {"step": f"s-{number}", "messages": [{"role": "user", "content": f"Question {number}"}]}
        for number in range(STEPS)
    ]

    @flow(name="arcanos-test-batch-soak")
    def soak() -> tuple[BatchRun, BatchRun]:
        first = run_reasoning_batch(steps, name="soak", poll_interval=0.05, max_poll_interval=0.2)
        again = run_reasoning_batch(steps, name="soak", poll_interval=0.05, max_poll_interval=0.2)
        return first, again

    started = time.monotonic()
    first, again = soak()
    seconds = time.monotonic() - started

    expected: dict[str, str] = {}
    for number in range(STEPS):
        step = f"s-{number}"
        if expire_after is not None and number >= expire_after:
            expected[step] = "batch_expired"
        elif step in faults:
            expected[step] = FAULTS[faults[step]][2]
    assert set(first.results) | set(first.failures) == {step["step"] for step in steps}  # no step lost
    assert not set(first.results) & set(first.failures)  # none counted twice
    assert {step: failure.incident_class for step, failure in first.failures.items()} == expected
    assert openai_server.batches.created == 1  # the second run re-attached: nothing billed twice
    assert not again.created
    assert again.batch_id == first.batch_id
    assert again.failures == first.failures
    assert again.results.keys() == first.results.keys()
    assert len([file_id for file_id in openai_server.files.ids]) <= 3  # one input, its output and error files

    by_class: dict[str, list[str]] = defaultdict(list)
    for step, incident_class in expected.items():
        by_class[incident_class].append(step)
    receiver.wait_for(len(by_class), timeout=30)
    time.sleep(0.5)
    incidents = receiver.incidents
    distinct = {incident["incident_id"]: incident for incident in incidents}
    assert len(incidents) == len(distinct) == len(by_class)  # the re-attached run did not deliver them again
    assert Counter(incident["incident_class"] for incident in distinct.values()) == dict.fromkeys(by_class, 1)
    for incident in distinct.values():
        rows = by_class[incident["incident_class"]]
        assert incident["context"]["row_count"] == len(rows)
        assert incident["context"]["custom_ids"] == rows[:50]
        assert incident["context"]["batch_id"] == first.batch_id
    print(
        f"\nbatch soak: {STEPS} steps, seed {SEED}, {len(faults)} faulty rows, expired after "
        f"{expire_after if expire_after is not None else 'never'}: {len(first.results)} answered, "
        f"{len(first.failures)} failed in {len(by_class)} classes, {len(distinct)} incidents "
        f"({len(incidents)} deliveries), 1 batch, {seconds:.1f} s"
    )
