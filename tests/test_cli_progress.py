"""The CLI's progress while a run runs (step lines, JSON step objects, the live view) and its tables at 80 columns.

These tests feed the tracker log records like those a research run writes and render the tables on an 80-column
console; tests/test_cli.py runs the real command against the fake server.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from arcanos_flows.cli._demo import _deliveries_table
from arcanos_flows.cli._flowrun import FlowOutcome, RunTracker, StepView, progress_line, steps_table
from arcanos_flows.cli._progress import StepReporter, record_line, step_event, step_line, unreported
from arcanos_flows.cli._render import incidents_table, outcome_json, print_report, usage_table
from arcanos_flows.core.errors import IncidentClass
from arcanos_flows.core.results import Usage
from arcanos_flows.flows.research.report import ResearchReport, StepRecord
from arcanos_flows.incidents.model import Incident, attach_incident

MODEL = "ft:gpt-5.1-2025-11-13:arcanos::t1"
LONG_ERROR = (
    "AuthenticationError: Error code: 401 - Incorrect API key provided. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
CLASSES = ("authentication", "incomplete_completion", "model_enforcement", "rate_limit")


def _record(
    task_run: str | None, message: str, created: float, *, exc: BaseException | None = None
) -> logging.LogRecord:
    name = "prefect.task_runs" if task_run else "prefect.flow_runs"
    record = logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)
    record.created = created
    if exc is not None:
        record.exc_info = (type(exc), exc, None)
    if task_run is not None:
        record.task_run_id = f"id-{task_run}"
        record.task_run_name = task_run
    return record


def _usage_line(step: str, input_tokens: int, output_tokens: int, request: str) -> str:
    return (
        f"reasoning[{step}] answered by {MODEL}: {input_tokens} input / {output_tokens} output (0 reasoning, 0 cached) "
        f"tokens in 312 ms, request {request}, 1 attempt(s)"
    )


def _rendered(renderable: Any, width: int = 80) -> str:
    console = Console(width=width, color_system=None, highlight=False)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get()


def _assert_fits(text: str, width: int = 80) -> None:
    too_wide = [line for line in text.splitlines() if len(line.rstrip()) > width]
    assert not too_wide, too_wide


def _report() -> ResearchReport:
    steps = [
        StepRecord(step="plan", status="completed", model=MODEL, usage=Usage(input_tokens=71, output_tokens=13),
                   latency_ms=365, request_id="req_0123456789abcdef0123456789abcdef", attempts=1),
        StepRecord(step="investigate-1", question="Which layers?", status="completed", model=MODEL,
                   usage=Usage(input_tokens=60, output_tokens=12), latency_ms=310, request_id="req_2", attempts=2),
        StepRecord(step="investigate-2", question="Who confirms?", status="failed", error_class="authentication",
                   error=LONG_ERROR, request_id="req_3", attempts=1),
        StepRecord(step="investigate-10", question="What is missing?", status="cached", model=MODEL, attempts=0),
        StepRecord(step="investigate-11", question="Who decides?", status="skipped"),
        StepRecord(step="synthesis", status="completed", model=MODEL, usage=Usage(input_tokens=120, output_tokens=12),
                   latency_ms=304, request_id="req_5", attempts=1),
    ]  # fmt: skip
    return ResearchReport(
        topic="Confirmation layers",
        questions=["Which layers?", "Who confirms?", "What is missing?", "Who decides?"],
        steps=steps,
        synthesis="Three layers.",
        usage=sum((step.usage for step in steps), Usage()),
        budget={"max_total_tokens": 500, "max_cost_usd": None, "exceeded": True},
    )


# --- the tracker: one report per finished step, complete when it finishes ------------------------------------------


def test_tracker_reports_each_step_once_as_it_finishes_with_its_tokens_seconds_and_error_class() -> None:
    reported: list[StepView] = []
    tracker = RunTracker("arcanos-research", expected_steps=3, on_step=reported.append)
    error = RuntimeError("Error code: 401")
    attach_incident(error, Incident(incident_class=IncidentClass.AUTHENTICATION, reason="401", error_type="openai.E"))

    tracker.on_record(_record("reasoning[plan]", _usage_line("plan", 71, 13, "req_1"), 100.0))
    line = tracker.on_record(_record("reasoning[plan]", "Finished in state Completed()", 101.5))
    assert [step_event(step) for step in reported] == [
        {
            "event": "step",
            "step": "plan",
            "status": "completed",
            "tokens": 84,
            "input_tokens": 71,
            "output_tokens": 13,
            "seconds": 1.5,
            "attempts": 1,
            "model": MODEL,
            "request_id": "req_1",
            "task_run": "reasoning[plan]",
            "task_run_id": "id-reasoning[plan]",
        }
    ]
    assert line == "  reasoning[plan]: Completed, 84 tokens (71 in / 13 out), 1.50 s, request req_1"

    retry = "Task run failed with exception: RateLimitError('429') - Retry 1/2 will start immediately"
    assert tracker.on_record(_record("reasoning[investigate-1]", retry, 102.0)) == (
        "  reasoning[investigate-1]: Retrying 1/2 (RateLimitError('429'))"
    )
    tracker.on_record(
        _record(
            "reasoning[investigate-1]", "Task run failed with exception: E - Retries are exhausted", 103.0, exc=error
        )
    )
    failed = "Finished in state Failed('Task run encountered an exception RuntimeError: Error code: 401')"
    line = tracker.on_record(_record("reasoning[investigate-1]", failed, 104.25))
    assert line == (
        "  reasoning[investigate-1]: Failed (authentication), 0 tokens, 2.25 s, 2 tries: RuntimeError: Error code: 401"
    )
    event = step_event(reported[-1])
    assert (event["step"], event["status"], event["error_class"], event["seconds"]) == (
        "investigate-1", "failed", "authentication", 2.25
    )  # fmt: skip

    # A final record seen twice (or late) reports nothing more.
    assert tracker.on_record(_record("reasoning[investigate-1]", failed, 105.0)) is None
    tracker.on_record(_record("reasoning[synthesis]", "Finished in state Cached(type=COMPLETED)", 106.0))
    assert [(step_event(step)["step"], step_event(step)["status"]) for step in reported] == [
        ("plan", "completed"), ("investigate-1", "failed"), ("synthesis", "cached")
    ]  # fmt: skip
    assert step_event(reported[-1])["tokens"] == 0


def test_tracker_classifies_a_crash_without_an_exception_by_its_state() -> None:
    reported: list[StepView] = []
    tracker = RunTracker("arcanos-research", on_step=reported.append)
    tracker.on_record(_record("reasoning[plan]", "Crash detected! Execution was interrupted.", 10.0))
    tracker.on_record(_record("reasoning[plan]", "Finished in state Crashed('interrupted')", 12.0))
    (step,) = reported
    assert (step_event(step)["status"], step_event(step)["error_class"], step.seconds) == ("failed", "crashed", 2.0)


def test_progress_line_counts_finished_steps_of_the_expected_total() -> None:
    steps = [
        StepView("reasoning[plan]", state="Completed", final=True, input_tokens=70, output_tokens=14),
        StepView("reasoning[investigate-1]", state="Failed", final=True, error_class="rate_limit"),
        StepView("reasoning[investigate-2]"),
    ]
    assert "2/5 steps, 1 failed · 84 tokens" in _rendered(progress_line(steps, expected=5))
    assert "2 steps finished, 1 failed · 84 tokens" in _rendered(progress_line(steps))


# --- after the run: the steps the tracker did not see finish come from the report -----------------------------------


def test_reporter_adds_the_report_steps_not_seen_finishing_once_each_in_report_order() -> None:
    report = _report()
    seen = [
        StepView("reasoning[plan]", state="Completed", final=True, reported=True, task_run_id="tr-plan"),
        StepView("reasoning[synthesis]", state="Completed", final=True, reported=True),
        StepView("reasoning[investigate-1]", state="Running"),  # never seen finishing
    ]
    report.steps[0].task_run_id = "tr-plan"
    assert [record.step for record in unreported(report, seen)] == [
        "investigate-1", "investigate-2", "investigate-10", "investigate-11"
    ]  # fmt: skip

    lines: list[str] = []
    StepReporter(lines.append, as_json=True).finish(report, seen)
    events = [json.loads(line) for line in lines]
    assert [(event["step"], event["status"]) for event in events] == [
        ("investigate-1", "completed"), ("investigate-2", "failed"), ("investigate-10", "cached"),
        ("investigate-11", "skipped"),
    ]  # fmt: skip
    assert events[0]["tokens"] == 72
    assert events[1]["error_class"] == "authentication"
    assert (events[3]["tokens"], events[3]["seconds"]) == (0, 0.0)
    assert record_line(report.steps[4]) == "  reasoning[investigate-11]: Skipped (budget spent), 0 tokens"


def test_reporter_ignores_a_reader_that_went_away() -> None:
    def closed(line: str) -> None:
        raise BrokenPipeError

    reporter = StepReporter(closed, as_json=True)
    reporter.on_step(StepView("reasoning[plan]", state="Completed", reported=True))  # does not raise


def test_summary_is_one_json_line_with_the_existing_keys() -> None:
    outcome = FlowOutcome(flow_name="arcanos-research", state_name="Completed", flow_run_id="f-1", result=_report())
    text = outcome_json(outcome)
    assert "\n" not in text
    summary = json.loads(text)
    assert summary["event"] == "summary"
    assert {"flow_run_id", "flow_run_name", "state", "ui_url", "error", "report"} <= set(summary)
    assert summary["report"]["steps"][0]["step"] == "plan"


def test_plain_step_lines_name_the_step_status_tokens_and_seconds() -> None:
    step = StepView("reasoning[investigate-2]", state="Cached", seconds=0.0123, attempts=1, reported=True)
    assert step_line(step) == "  reasoning[investigate-2]: Cached, 0 tokens, 0.01 s"


# --- tables at 80 columns ---------------------------------------------------------------------------------------


def test_usage_table_at_80_columns_shows_every_step_and_status_whole() -> None:
    text = _rendered(usage_table(_report()))
    _assert_fits(text)
    assert "…" not in text
    for name in ("plan", "investigate-1", "investigate-2", "investigate-10", "investigate-11", "synthesis"):
        assert re.search(rf"^\s*{re.escape(name)}\s", text, re.MULTILINE), name
    for status in ("completed", "failed (authentication)", "cached", "skipped (budget)"):
        assert status in text
    assert f"model {MODEL}" in text  # moved into the caption


def test_usage_table_on_a_wide_terminal_keeps_every_column() -> None:
    text = _rendered(usage_table(_report()), width=220)
    for header in ("model", "cached", "reasoning", "request", "tries"):
        assert header in text
    assert "req_0123456789abcdef0123456789abcdef" in text


def test_report_at_80_columns_puts_the_usage_table_in_place_of_the_steps_markdown_table() -> None:
    console = Console(width=80, color_system=None)
    with console.capture() as captured:
        print_report(console, _report())
    text = captured.get()
    _assert_fits(text)
    assert "Research: Confirmation layers" in text
    assert "failed (authentication)" in text
    assert "Stat…" not in text
    assert text.index("Questions") < text.index("skipped (budget)") < text.index("Findings")


def test_incidents_table_at_80_columns_keeps_ids_and_classes_whole_and_lists_reasons_below() -> None:
    incidents = [
        Incident(
            incident_class=IncidentClass(incident_class),
            reason=f"{LONG_ERROR} ({number})",
            error_type="openai.AuthenticationError",
            http_status=401,
            context={"flow_run_id": "8b6f15db-4989-4278-a8c0-7f043cf3e11f"},
        )
        for number, incident_class in enumerate(CLASSES, 1)
    ]
    text = _rendered(incidents_table(incidents, title="Incidents waiting in /tmp/spool"))
    _assert_fits(text)
    assert "…" not in text
    assert re.search(r"\d{4}-\d\d-\d\d", text)  # the time is never cut either
    for incident in incidents:
        assert str(incident.incident_id) in text
        assert incident.incident_class.value in text
    for number in range(1, len(incidents) + 1):
        # Each reason below the table, whole words, a couple of lines each (never a word per line).
        assert f"{number}. AuthenticationError: Error code: 401 - Incorrect API key provided." in text
    assert len(text.splitlines()) < 30


def test_deliveries_table_at_80_columns_keeps_class_and_task_run_whole() -> None:
    delivery = SimpleNamespace(
        headers={"webhook-id": "737ee902-ff96-5a14-b349-4f5ff8022b64"},
        signature_valid=True,
        json={
            "incident_class": "authentication",
            "http_status": 401,
            "reason": LONG_ERROR,
            "context": {"task_run_name": "reasoning[maintenance-check]"},
        },
    )
    text = _rendered(_deliveries_table([delivery]))
    _assert_fits(text)
    assert "…" not in text
    for whole in ("737ee902-ff96-5a14-b349-4f5ff8022b64", "authentication", "reasoning[maintenance-check]", "valid"):
        assert whole in text
    assert "authenticat…" not in text
    assert "1. reasoning[maintenance-check]: AuthenticationError: Error code: 401" in text


def test_live_steps_table_at_80_columns_keeps_names_whole_and_errors_below() -> None:
    started = datetime.now(timezone.utc).timestamp() - 3
    steps = [
        StepView("reasoning[plan]", state="Completed", final=True, input_tokens=71, output_tokens=13, seconds=0.4,
                 latency_ms=365, request_id="req_0123456789abcdef0123456789abcdef"),
        StepView("reasoning[investigate-10]", state="Retrying 1/3", attempts=2, error=LONG_ERROR, started_at=started),
        StepView("reasoning[investigate-11]", state="Failed", final=True, error=LONG_ERROR, seconds=1.2,
                 error_class="authentication"),
    ]  # fmt: skip
    text = _rendered(steps_table(steps))
    _assert_fits(text)
    for whole in ("reasoning[plan]", "reasoning[investigate-10]", "reasoning[investigate-11]", "Retrying 1/3",
                  "Failed (authentication)"):  # fmt: skip
        assert whole in text
    assert "1. reasoning[investigate-10]: AuthenticationError" in text
    assert "2. reasoning[investigate-11]: AuthenticationError" in text
    assert re.search(r"reasoning\[investigate-10\]\s+Retrying 1/3\s+2\s+3\.\d s", text)


@pytest.mark.parametrize("width", [80, 100, 120, 140, 200])
def test_tables_never_cut_a_name_at_any_common_width(width: int) -> None:
    text = _rendered(usage_table(_report()), width=width)
    assert "…" not in text
    assert "failed (authentication)" in text
