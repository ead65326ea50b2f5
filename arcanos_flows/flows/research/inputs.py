"""The research flow's inputs: limits, parameter validation before any request, and the plan's questions."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from arcanos_flows.core.errors import InvalidReasoningInput
from arcanos_flows.core.metadata import build_metadata
from arcanos_flows.flows.research.prompts import MAX_PLANNED_QUESTIONS
from arcanos_flows.prefect.runs import request_identity

__all__ = [
    "MAX_PARALLEL",
    "MAX_PLANNED_QUESTIONS",
    "MAX_QUESTIONS",
    "MAX_TOPIC_LENGTH",
    "check_metadata_fits",
    "parse_questions",
    "request_metadata",
    "validate_parameters",
]

MAX_QUESTIONS = 1000
"""At most this many questions may be given explicitly (``max_parallel`` of them run at once)."""

MAX_PARALLEL = 32
"""Upper bound of ``max_parallel``."""

MAX_TOPIC_LENGTH = 2000

_LIST_ITEM = re.compile(r"^\s*(?:\d{1,3}\s*[.)]|[-*\u2022])\s+(?P<text>\S.*?)\s*$")


def parse_questions(plan: str, limit: int = MAX_PLANNED_QUESTIONS) -> list[str]:
    r"""The research questions of a plan: its numbered or bulleted lines, at most ``limit``, duplicates dropped.

    Examples:
        >>> plan = "Plan:", "1. Which layers exist?", "2) Who confirms?", "- Which layers exist?", "Done."
        >>> parse_questions("\n".join(plan))
        ['Which layers exist?', 'Who confirms?']
    """
    questions: list[str] = []
    for line in plan.splitlines():
        match = _LIST_ITEM.match(line)
        if match is None:
            continue
        question = match.group("text").strip().strip("*_").strip()
        if question and question not in questions:
            questions.append(question)
        if len(questions) >= limit:
            break
    return questions


def validate_parameters(
    topic: object, questions: object, audit: object, confirmation_token: object, max_parallel: object
) -> tuple[str, list[str] | None]:
    """Check ``research_flow``'s parameters before any request; the stripped topic and questions.

    Raises:
        InvalidReasoningInput: naming the parameter that is wrong and what it must be.

    Examples:
        >>> validate_parameters(" Arcanos ", None, {"ticket": "T-1"}, None, 4)
        ('Arcanos', None)
    """
    if not isinstance(topic, str) or not topic.strip():
        raise InvalidReasoningInput("research_flow(topic=...): the topic must be a non-empty string")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InvalidReasoningInput(
            f"research_flow(topic=...): the topic is {len(topic)} characters; at most {MAX_TOPIC_LENGTH} are allowed"
        )
    checked: list[str] | None = None
    if questions is not None:
        if isinstance(questions, str) or not isinstance(questions, Sequence):
            raise InvalidReasoningInput("research_flow(questions=...): must be a list of strings, or None")
        if not questions or len(questions) > MAX_QUESTIONS:
            raise InvalidReasoningInput(
                f"research_flow(questions=...): {len(questions)} questions given; give 1 to {MAX_QUESTIONS}, "
                "or None to let the plan step propose them"
            )
        checked = []
        for number, question in enumerate(questions, 1):
            if not isinstance(question, str) or not question.strip():
                raise InvalidReasoningInput(f"research_flow(questions=...): question {number} is empty")
            checked.append(question.strip())
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or not 1 <= max_parallel <= MAX_PARALLEL:
        raise InvalidReasoningInput(f"research_flow(max_parallel=...): must be an integer from 1 to {MAX_PARALLEL}")
    if confirmation_token is not None and not isinstance(confirmation_token, str):
        raise InvalidReasoningInput("research_flow(confirmation_token=...): must be a string")
    if audit is not None and not isinstance(audit, Mapping):
        raise InvalidReasoningInput("research_flow(audit=...): must be a mapping of metadata keys to strings")
    for key in audit or {}:
        if isinstance(key, str) and key.startswith("prefect."):
            raise InvalidReasoningInput(
                f"research_flow(audit=...): the key {key!r} is reserved; arcanos-flows sets the prefect.* keys"
            )
    return topic.strip(), checked


def request_metadata(audit: Mapping[str, Any] | None, confirmation_token: str | None) -> dict[str, Any]:
    """The metadata every request of a run carries: the audit keys and the confirmation token, when given.

    Examples:
        >>> request_metadata({"ticket": "T-1"}, "tok")
        {'ticket': 'T-1', 'confirmation_token': 'tok'}
    """
    metadata = dict(audit or {})
    if confirmation_token:
        metadata["confirmation_token"] = confirmation_token
    return metadata


def check_metadata_fits(metadata: Mapping[str, Any], default_token: str | None) -> dict[str, str]:
    """Check once, before the first request, that a run's metadata fits OpenAI's limits; the audit to show.

    Raises:
        InvalidReasoningInput: naming the key or value that does not fit.
    """
    # The same check every request makes, done once before the first one: the audit keys, the token and the
    # identity keys the tasks add (a placeholder task run id stands for the ones to come) must fit OpenAI's limits.
    identity = {**request_identity(), "prefect.task_run_id": str(uuid.UUID(int=0))}
    try:
        build_metadata(metadata, defaults={"confirmation_token": default_token}, identity=identity)
    except InvalidReasoningInput as exc:
        raise InvalidReasoningInput(f"research_flow(audit=...): {exc.message}") from None
    return {key: value for key, value in build_metadata(metadata).items() if key != "confirmation_token"}
