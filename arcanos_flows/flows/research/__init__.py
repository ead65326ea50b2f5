"""The research flow: a plan, parallel investigations, a synthesis, and a report with every step's usage.

Modules: :mod:`~arcanos_flows.flows.research.flow` (the flow), :mod:`~arcanos_flows.flows.research.report`
(the report models), :mod:`~arcanos_flows.flows.research.inputs` (limits and parameter checks),
:mod:`~arcanos_flows.flows.research.prompts` (the prompts) and
:mod:`~arcanos_flows.flows.research.artifacts` (the report and steps-table artifacts).
Names are imported on first use: the prompts and the report models import no Prefect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arcanos_flows._lazy import lazy_exports

if TYPE_CHECKING:
    from arcanos_flows.flows.research.flow import research_flow
    from arcanos_flows.flows.research.inputs import MAX_PARALLEL, MAX_PLANNED_QUESTIONS, MAX_QUESTIONS, parse_questions
    from arcanos_flows.flows.research.report import ResearchReport, ResearchStepsFailed, StepRecord

_INPUTS = "arcanos_flows.flows.research.inputs"
_REPORT = "arcanos_flows.flows.research.report"
_EXPORTS = {
    "MAX_PARALLEL": _INPUTS,
    "MAX_PLANNED_QUESTIONS": _INPUTS,
    "MAX_QUESTIONS": _INPUTS,
    "parse_questions": _INPUTS,
    "ResearchReport": _REPORT,
    "ResearchStepsFailed": _REPORT,
    "StepRecord": _REPORT,
    "research_flow": "arcanos_flows.flows.research.flow",
}
__all__ = [
    "MAX_PARALLEL",
    "MAX_PLANNED_QUESTIONS",
    "MAX_QUESTIONS",
    "ResearchReport",
    "ResearchStepsFailed",
    "StepRecord",
    "parse_questions",
    "research_flow",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
