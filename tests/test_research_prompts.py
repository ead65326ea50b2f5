"""Research prompts stay within a model's context however many questions a run has."""

from __future__ import annotations

from arcanos_flows.flows.research.prompts import (
    PLAN_EXCERPT_BUDGET,
    PLAN_LISTING_BUDGET,
    SYNTHESIS_FINDINGS_BUDGET,
    investigation_messages,
    plan_messages,
    synthesis_messages,
)

LONG_PLAN = "plan line\n" * 5_000


def _finding(number: int, text: str) -> tuple[str, str]:
    return f"Question {number}?", text


def test_a_thousand_long_findings_are_clipped_to_the_synthesis_budget() -> None:
    """1000 findings of 5000 characters each: the synthesis prompt stays near its budget and says it clipped."""
    findings = [_finding(number, "x" * 5_000) for number in range(1, 1001)]
    prompt = synthesis_messages("topic", LONG_PLAN, findings)[1]["content"]

    headings = sum(len(f"## Question {number}?") + 4 for number in range(1, 1001))
    assert len(prompt) <= SYNTHESIS_FINDINGS_BUDGET + headings + PLAN_EXCERPT_BUDGET + 1_000
    assert "…[clipped]" in prompt
    assert all(f"## Question {number}?" in prompt for number in (1, 500, 1000))


def test_short_findings_are_quoted_whole() -> None:
    """A normal run's findings reach the synthesis unclipped."""
    findings = [_finding(number, f"finding {number}") for number in range(1, 6)]
    prompt = synthesis_messages("topic", "a short plan", findings)[1]["content"]
    assert "…[clipped]" not in prompt
    assert all(f"finding {number}" in prompt for number in range(1, 6))


def test_plan_listing_and_plan_excerpts_are_bounded() -> None:
    """The plan step lists at most its budget of questions; each investigation quotes a bounded plan excerpt."""
    questions = [f"What about item {number} of the confirmation layers?" for number in range(1, 1001)]
    plan_prompt = plan_messages("topic", questions)[1]["content"]
    investigation_prompt = investigation_messages("topic", LONG_PLAN, questions[0])[1]["content"]

    assert len(plan_prompt) <= PLAN_LISTING_BUDGET + 500
    assert len(investigation_prompt) <= PLAN_EXCERPT_BUDGET + 500
    assert questions[0] in investigation_prompt
