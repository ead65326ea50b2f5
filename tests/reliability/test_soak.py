"""The soak: a research flow with hundreds of investigations and ~5 % injected faults loses nothing.

A seeded plan decides, per investigation, whether its first tries get a fault: a transient one (rate limit,
5xx, hang-up, timeout) for 1, 2 or all 3 tries, or a permanent one (authentication, quota, refusal, malformed
answer, another model...) for the first. Afterwards every step is accounted for: it completed (after the
planned retries) or it failed with exactly one delivered incident carrying its task run; no step is lost, no
incident is duplicated, and the Prefect API agrees with the report.

CI runs a short variant (120 steps). The long run, whose numbers README quotes::

    ARCANOS_SOAK_STEPS=500 pytest tests/reliability/test_soak.py -s -p no:cacheprovider

(``ARCANOS_SOAK_SEED`` picks another fault plan; ``ARCANOS_SOAK_JSON`` also writes the figures to that file.)
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.client.schemas.objects import TaskRun
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from arcanos_flows.flows.research import ResearchReport, ResearchStepsFailed, research_flow
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver
from reliability.faults import INVESTIGATE, flow_task_runs, prompt_starts_with, question_of

pytestmark = pytest.mark.usefixtures("prefect_harness")

# Read at import: the autouse fixture clears ARCANOS_* variables before each test.
STEPS = int(os.environ.get("ARCANOS_SOAK_STEPS", "120"))
SEED = int(os.environ.get("ARCANOS_SOAK_SEED", "20251125"))
SOAK_JSON = os.environ.get("ARCANOS_SOAK_JSON")

FAULT_RATE = 0.05
MAX_PARALLEL = 16
TASK_RETRIES = 2
TRIES = TASK_RETRIES + 1
TIMEOUT = 2.0  # generous: sixteen steps at once on a busy CI machine must not time out by accident
SLOW = 3.0

TRANSIENT: dict[str, tuple[Reply, str]] = {
    "429": (Reply.error(429, retry_after=0.01), "rate_limit"),
    "500": (Reply.error(500), "upstream_error"),
    "503": (Reply.error(503), "upstream_error"),
    "hang-up": (Reply.drop(), "connection"),
    "timeout": (Reply.slow(SLOW), "timeout"),
}
PERMANENT: dict[str, tuple[Reply, str]] = {
    "401": (Reply.error(401), "authentication"),
    "403": (Reply.error(403), "permission"),
    "400": (Reply.error(400), "bad_request"),
    "insufficient_quota": (Reply.error(429, code="insufficient_quota"), "quota_exhausted"),
    "malformed": (Reply.malformed(), "invalid_response"),
    "empty choices": (Reply.no_choices(), "empty_completion"),
    "length": (Reply.length(), "incomplete_completion"),
    "refusal": (Reply.refused(), "refusal"),
    "another model": (Reply.other_model("gpt-4o"), "model_enforcement"),
}


@dataclass(frozen=True)
class Fault:
    """What one investigation's first ``failing_tries`` tries get; later tries are answered normally."""

    kind: str
    reply: Reply
    incident_class: str
    transient: bool
    failing_tries: int

    @property
    def outcome(self) -> tuple[str, int]:
        """(status, tries) the step must end with: a permanent fault is never retried."""
        if not self.transient:
            return "failed", 1
        if self.failing_tries >= TRIES:
            return "failed", TRIES
        return "completed", self.failing_tries + 1


def fault_plan(steps: int, seed: int) -> dict[int, Fault]:
    """Which investigations (numbered from 1) get which fault: ``FAULT_RATE`` of them at random, half transient."""
    rng = random.Random(seed)
    plan: dict[int, Fault] = {}
    for number in sorted(rng.sample(range(1, steps + 1), k=max(1, round(steps * FAULT_RATE)))):
        transient = rng.random() < 0.5
        kinds = TRANSIENT if transient else PERMANENT
        kind = rng.choice(sorted(kinds))
        # A permanent fault hits the first try only: were it retried, the step would wrongly complete.
        failing = rng.choice([1, 2, TRIES]) if transient else 1
        reply, incident_class = kinds[kind]
        plan[number] = Fault(kind, reply, incident_class, transient, failing)
    return plan


def question(number: int) -> str:
    return f"Q{number:04d}: which confirmation does component {number} require?"


@pytest.fixture
def plan() -> dict[int, Fault]:
    """The seeded fault plan of this run."""
    return fault_plan(STEPS, SEED)


@pytest.fixture
def openai_server(plan: dict[int, Fault]) -> Iterator[FakeOpenAIServer]:
    """The fake OpenAI server: each faulty investigation's first tries get its fault, later ones an answer."""
    with FakeOpenAIServer() as server:
        for number, fault in plan.items():
            server.reply_when(
                prompt_starts_with(INVESTIGATE + question(number)), fault.reply, times=fault.failing_tries
            )
        yield server


@pytest.fixture
def soak_env(arcanos_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Two immediate task retries, a request timeout the slow faults exceed, no heartbeat thread."""
    monkeypatch.setenv("ARCANOS_TASK_RETRIES", str(TASK_RETRIES))
    monkeypatch.setenv("ARCANOS_TASK_RETRY_DELAY", "0")
    monkeypatch.setenv("ARCANOS_REQUEST_TIMEOUT", str(TIMEOUT))
    overrides = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}
    with temporary_settings(overrides):
        yield arcanos_env


@pytest.mark.slow
@pytest.mark.timeout(300 + STEPS)
def test_soak_every_step_succeeds_or_is_reported_exactly_once(
    plan: dict[int, Fault],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    soak_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Hundreds of parallel steps under random faults: each completes or is reported once; none is lost."""
    assert plan, "the seeded plan injects no fault: pick another ARCANOS_SOAK_SEED"
    questions = [question(number) for number in range(1, STEPS + 1)]
    started = time.monotonic()

    state = research_flow("Soak", questions=questions, max_parallel=MAX_PARALLEL, return_state=True)

    wall = time.monotonic() - started
    asked = Counter(question_of(request) for request in openai_server.completion_requests)
    injected: Counter[str] = Counter()  # a faulty question's first `failing_tries` requests got its fault
    for number, fault in plan.items():
        injected[fault.kind] += min(asked[question(number)], fault.failing_tries)
    outcome = state.result(raise_on_failure=False)
    report: ResearchReport = outcome.report if isinstance(outcome, ResearchStepsFailed) else outcome
    assert isinstance(report, ResearchReport), outcome
    steps = [step for step in report.steps if step.step.startswith("investigate-")]
    deliveries = receiver.deliveries
    ids = Counter(delivery.headers["webhook-id"] for delivery in deliveries)
    incidents = {delivery.headers["webhook-id"]: delivery.json for delivery in deliveries}
    by_task_run = {incident["context"].get("task_run_id"): incident for incident in incidents.values()}

    # Every step against its plan, and against what was delivered.
    mismatches: list[str] = []
    lost: list[str] = []
    for number, (text, step) in enumerate(zip(questions, steps, strict=False), 1):
        fault = plan.get(number)
        status, tries = fault.outcome if fault else ("completed", 1)
        if (step.step, step.question, step.status, step.attempts) != (f"investigate-{number}", text, status, tries):
            mismatches.append(f"{step.step}: {step.status}/{step.attempts} tries, planned {status}/{tries} ({fault})")
        if asked[text] != tries:
            mismatches.append(f"{step.step}: asked {asked[text]} times, planned {tries}")
        incident = by_task_run.get(step.task_run_id)
        if step.status == "completed":
            if incident is not None:
                mismatches.append(f"{step.step} completed yet reported: {incident['incident_class']}")
            continue
        if incident is None or step.incident_id not in ids:
            lost.append(step.step)
            continue
        if fault is not None and step.error_class != fault.incident_class:
            mismatches.append(f"{step.step}: failed as {step.error_class}, planned {fault.incident_class}")
        if (
            incident["incident_id"] != step.incident_id
            or incident["incident_class"] != step.error_class
            or incident["attempts"] != tries
            or incident["context"]["task_run_name"] != f"reasoning[{step.step}]"
            or incident["context"]["attempts"] != tries
            or incident["context"]["flow_run_id"] != report.flow_run_id
        ):
            mismatches.append(f"{step.step}: incident does not match the step: {incident}")
    lost += [f"investigate-{number}" for number in range(len(steps) + 1, STEPS + 1)]
    failed = [step for step in steps if step.status == "failed"]
    recovered = [step for step in steps if step.status == "completed" and (step.attempts or 1) > 1]
    duplicates = sorted(webhook_id for webhook_id, count in ids.items() if count > 1)
    unexplained = [
        incident
        for incident in incidents.values()
        if incident["context"].get("task_run_id") not in {step.task_run_id for step in failed}
    ]

    # Prefect's own records agree: one task run per step, each in the state and with the tries of the report.
    runs: list[TaskRun] = flow_task_runs(
        report.flow_run_id or "",
        lambda found: len(found) == STEPS + 2 and all(run.state is not None and run.state.is_final() for run in found),
        timeout=60,
    )
    states = Counter(run.state_name for run in runs)
    prefect_disagrees = [
        run.name
        for run in runs
        if run.name.startswith("reasoning[investigate-")
        and (run.state_name, run.run_count)
        != next(
            ("Completed" if step.ok else "Failed", step.attempts) for step in steps if step.task_run_id == str(run.id)
        )
    ]

    figures = {
        "steps": STEPS,
        "seed": SEED,
        "max_parallel": MAX_PARALLEL,
        "task_retries": TASK_RETRIES,
        "faulty_steps": len(plan),
        "transient_faulty_steps": sum(fault.transient for fault in plan.values()),
        "permanent_faulty_steps": sum(not fault.transient for fault in plan.values()),
        "faults_injected": sum(injected.values()),
        "faults_by_kind": dict(sorted(injected.items())),
        "http_requests": len(openai_server.completion_requests),
        "recovered_by_retry": len(recovered),
        "failed_steps": len(failed),
        "incidents": len(incidents),
        "duplicate_incidents": len(duplicates),
        "unexplained_incidents": len(unexplained),
        "lost_steps": len(lost),
        "mismatches": len(mismatches),
        "flow_state": state.name,
        "wall_seconds": round(wall, 1),
        "steps_per_second": round(STEPS / wall, 1),
    }
    (tmp_path_factory.getbasetemp() / "soak.json").write_text(json.dumps(figures, indent=2))
    if SOAK_JSON:
        Path(SOAK_JSON).write_text(json.dumps(figures, indent=2))
    with capsys.disabled():
        print(
            f"\nsoak: {STEPS} steps (seed {SEED}, max_parallel {MAX_PARALLEL}), {len(plan)} faulty steps "
            f"({figures['transient_faulty_steps']} transient, {figures['permanent_faulty_steps']} permanent), "
            f"{figures['faults_injected']} faults injected in {figures['http_requests']} requests, "
            f"{len(recovered)} recovered by retries, {len(failed)} failed, {len(incidents)} incidents "
            f"({len(duplicates)} duplicate, {len(unexplained)} unexplained), {len(lost)} lost, "
            f"{wall:.1f} s ({figures['steps_per_second']} steps/s)"
        )

    assert len(steps) == STEPS
    assert not lost, lost
    assert not duplicates, duplicates
    assert not unexplained, unexplained
    assert not mismatches, mismatches[:20]
    assert all(delivery.ok and delivery.signature_valid for delivery in deliveries)
    assert len(incidents) == len(failed)
    assert state.is_failed() if failed else state.is_completed()
    assert (report.synthesis is None) == (len(failed) == STEPS)
    assert states == Counter({"Completed": STEPS - len(failed) + 2, "Failed": len(failed)})
    assert not prefect_disagrees, prefect_disagrees
