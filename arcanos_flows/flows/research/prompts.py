"""The research flow's prompts: plan, investigation and synthesis, each within a character budget.

Pure functions without Prefect, so that the benchmark's raw-SDK side sends requests of the very same shapes.
A run with hundreds of questions must still fit the model's context: long plans and findings are clipped, and the
prompt says so (``…[clipped]``). Budgets are in characters, roughly 4 per token.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

__all__ = [
    "MAX_PLANNED_QUESTIONS",
    "PLAN_EXCERPT_BUDGET",
    "PLAN_LISTING_BUDGET",
    "RESEARCH_SYSTEM",
    "SYNTHESIS_FINDINGS_BUDGET",
    "ResearchPlan",
    "investigation_messages",
    "plan_messages",
    "synthesis_messages",
]

MAX_PLANNED_QUESTIONS = 8
"""At most this many questions are taken from the plan step's answer."""

RESEARCH_SYSTEM = "You are the Arcanos research AI. Answer precisely and concisely."

PLAN_LISTING_BUDGET = 40_000
"""The questions listed in the plan prompt."""
PLAN_EXCERPT_BUDGET = 8_000
"""The plan quoted in every investigation and in the synthesis."""
SYNTHESIS_FINDINGS_BUDGET = 120_000
"""All findings quoted in the synthesis, shared evenly."""
_MIN_FINDING_BUDGET = 100  # x 1000 questions (the research flow's maximum) still fits the findings budget

_CLIPPED = " …[clipped]"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - len(_CLIPPED), 0)].rstrip() + _CLIPPED


class ResearchPlan(BaseModel):
    """The plan step's answer when the questions are the model's to propose: asked for as structured output.

    Examples:
        >>> plan = ResearchPlan(approach="Map the layers, then their owners.", questions=["Which exist?", "Who?"])
        >>> print(plan.as_text())
        Map the layers, then their owners.
        <BLANKLINE>
        1. Which exist?
        2. Who?
    """

    approach: str = Field(description="How the research proceeds, in a few sentences")
    questions: list[str] = Field(
        max_length=MAX_PLANNED_QUESTIONS, description="The research questions to investigate, one idea each"
    )

    def as_text(self) -> str:
        """The plan as the investigations and the synthesis quote it: the approach, then the numbered questions."""
        listed = "\n".join(f"{number}. {question}" for number, question in enumerate(self.questions, 1))
        return f"{self.approach.strip()}\n\n{listed}".strip()


def plan_messages(topic: str, questions: Sequence[str] | None) -> list[dict[str, str]]:
    """The plan step: ask for questions (``None``) or for a plan of the given ones.

    Examples:
        >>> plan_messages("Confirmation layers", ["Which exist?"])[1]["content"].splitlines()[:3]
        ['Plan the research of this topic: Confirmation layers', '', 'These questions will be investigated:']
    """
    if questions is None:
        ask = (
            f"Plan the research of this topic: {topic}\n\n"
            "Describe your approach in a few sentences, and propose at most "
            f"{MAX_PLANNED_QUESTIONS} research questions, each one idea, to investigate separately."
        )
    else:
        listed = _clip(
            "\n".join(f"{number}. {question}" for number, question in enumerate(questions, 1)), PLAN_LISTING_BUDGET
        )
        ask = (
            f"Plan the research of this topic: {topic}\n\n"
            f"These questions will be investigated:\n{listed}\n\n"
            "Say briefly what each should establish and how the answers fit together."
        )
    return [{"role": "system", "content": RESEARCH_SYSTEM}, {"role": "user", "content": ask}]


def investigation_messages(topic: str, plan: str, question: str) -> list[dict[str, str]]:
    """One investigation: the question, the topic and (an excerpt of) the plan.

    Examples:
        >>> investigation_messages("Layers", "1. Which exist?", "Which exist?")[1]["content"].splitlines()[0]
        'Investigate: Which exist?'
    """
    ask = (
        f"Investigate: {question}\n\n"
        f"This question is part of the research of: {topic}\n\n"
        f"The research plan:\n{_clip(plan, PLAN_EXCERPT_BUDGET)}\n\n"
        "Report your findings on this question only."
    )
    return [{"role": "system", "content": RESEARCH_SYSTEM}, {"role": "user", "content": ask}]


def synthesis_messages(topic: str, plan: str, findings: Sequence[tuple[str, str | None]]) -> list[dict[str, str]]:
    """The synthesis of ``(question, finding)`` pairs; a finding of ``None`` is a failed investigation.

    Examples:
        >>> prompt = synthesis_messages("Layers", "a plan", [("Which exist?", "Three."), ("Why?", None)])[1]["content"]
        >>> prompt.splitlines()[5:9]
        ['## Which exist?', 'Three.', '', '## Why?']
    """
    parts = [
        f"Synthesize the research findings on: {topic}",
        "",
        f"The research plan:\n{_clip(plan, PLAN_EXCERPT_BUDGET)}",
    ]
    per_finding = max(SYNTHESIS_FINDINGS_BUDGET // max(len(findings), 1), _MIN_FINDING_BUDGET)
    for question, finding in findings:
        text = _clip(finding, per_finding) if finding is not None else "(not investigated: the step failed)"
        parts += ["", f"## {question}", text]
    parts += ["", "Write a concise synthesis that answers the topic and says what remains open."]
    return [{"role": "system", "content": RESEARCH_SYSTEM}, {"role": "user", "content": "\n".join(parts)}]
