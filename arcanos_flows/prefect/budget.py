"""Budgets per flow run: a cap on total tokens and on cost, checked before each reasoning step starts.

A step in flight is let finish (it is already billed); once the run has spent its budget, no further request is
sent: the next step raises :class:`~arcanos_flows.errors.BudgetExceededError` before its request, and the run fails
with it. The incident is the run's, one for the run, sent by the flow's failure hook (``@arcanos_flow`` or
:func:`~arcanos_flows.prefect.hooks.flow_on_failure`) with what was spent and the limit; the refused steps' task
hooks send none.

``research_flow(max_total_tokens=..., max_cost_usd=...)`` uses one; a flow of your own opens one with
:func:`run_budget`, and every ``run_reasoning`` / ``arun_reasoning`` step inside it (in this process: the thread
pool and async flows; on Dask, check in the flow between submissions with :meth:`RunBudget.check`) is counted.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from arcanos_flows.core.errors import BudgetExceededError, InvalidReasoningInput
from arcanos_flows.core.results import Usage
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.prefect.credentials import resolve_settings

__all__ = ["RunBudget", "current_budget", "run_budget"]

_current: contextvars.ContextVar[RunBudget | None] = contextvars.ContextVar("arcanos_run_budget", default=None)


@dataclass
class RunBudget:
    """What a run may spend, and what it has spent so far (thread-safe: parallel steps record into it).

    Args:
        max_total_tokens: Total tokens (input + output, every attempt) the run may spend; ``None``: no cap.
        max_cost_usd: Cost in USD the run may spend (needs the ``ARCANOS_PRICE_*`` prices); ``None``: no cap.

    Raises:
        InvalidReasoningInput: A limit that is zero, negative or not a number (before any request).

    Examples:
        >>> budget = RunBudget(max_total_tokens=100)
        >>> budget.record(Usage(input_tokens=60, output_tokens=50, total_tokens=110))
        >>> budget.exceeded, budget.spent.total_tokens
        (True, 110)
        >>> RunBudget(max_total_tokens=0)
        Traceback (most recent call last):
        ...
        arcanos_flows.errors.InvalidReasoningInput: max_total_tokens: must be a positive whole number of tokens, not 0
    """

    max_total_tokens: int | None = None
    max_cost_usd: float | None = None
    spent: Usage = field(default_factory=Usage)
    refused: int = 0
    """Steps refused since the budget was spent."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        tokens = self.max_total_tokens
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0):
            raise InvalidReasoningInput(f"max_total_tokens: must be a positive whole number of tokens, not {tokens!r}")
        cost = self.max_cost_usd
        if cost is not None and (
            isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost <= 0
        ):
            raise InvalidReasoningInput(f"max_cost_usd: must be a positive amount of USD, not {cost!r}")

    @classmethod
    def from_settings(
        cls,
        settings: ArcanosSettings,
        *,
        max_total_tokens: int | None = None,
        max_cost_usd: float | None = None,
    ) -> RunBudget:
        """The budget given, else the settings' defaults (``ARCANOS_RUN_MAX_TOKENS``, ``ARCANOS_RUN_MAX_COST_USD``).

        Raises:
            InvalidReasoningInput: A bad limit, or a cost cap without prices to compute costs.

        Examples:
            >>> settings = ArcanosSettings(openai_api_key="sk-x", fine_tuned_model="ft:m", run_max_tokens=5000,
            ...                            _env_file=None)
            >>> RunBudget.from_settings(settings).max_total_tokens
            5000
        """
        budget = cls(
            max_total_tokens if max_total_tokens is not None else settings.run_max_tokens,
            max_cost_usd if max_cost_usd is not None else settings.run_max_cost_usd,
        )
        if budget.max_cost_usd is not None and settings.pricing is None:
            raise InvalidReasoningInput(
                "max_cost_usd: costs are unknown without prices; set ARCANOS_PRICE_INPUT_PER_MTOK and "
                "ARCANOS_PRICE_OUTPUT_PER_MTOK (or cap tokens with max_total_tokens)"
            )
        return budget

    @property
    def limited(self) -> bool:
        """Whether any limit is set."""
        return self.max_total_tokens is not None or self.max_cost_usd is not None

    @property
    def exceeded(self) -> bool:
        """Whether the run has spent (at least) one of its limits."""
        return self._over() is not None

    def _over(self) -> tuple[str, float, float] | None:
        spent = self.spent
        if self.max_total_tokens is not None and spent.total_tokens >= self.max_total_tokens:
            return ("max_total_tokens", self.max_total_tokens, spent.total_tokens)
        if self.max_cost_usd is not None and spent.cost_usd is not None and spent.cost_usd >= self.max_cost_usd:
            return ("max_cost_usd", self.max_cost_usd, spent.cost_usd)
        return None

    def record(self, usage: Usage) -> None:
        """Count what a step spent (every attempt's tokens: each was billed)."""
        with self._lock:
            self.spent = self.spent + usage

    def check(self, step: str = "the next step") -> None:
        """Refuse ``step`` when the budget is spent: call before sending its request.

        Raises:
            BudgetExceededError: The run has spent one of its limits; names it, what was spent and the limit.

        Examples:
            >>> budget = RunBudget(max_total_tokens=10)
            >>> budget.check("plan")
            >>> budget.record(Usage(total_tokens=12))
            >>> try:
            ...     budget.check("synthesis")
            ... except BudgetExceededError as exc:
            ...     print(exc)
            the run spent 12 tokens of its max_total_tokens budget of 10: synthesis was not started
        """
        with self._lock:
            over = self._over()
            if over is None:
                return
            self.refused += 1
        name, limit, spent = over
        unit = "tokens" if name == "max_total_tokens" else "USD"
        shown = f"{spent:g}" if name == "max_total_tokens" else f"{spent:.6f}"
        raise BudgetExceededError(
            f"the run spent {shown} {unit} of its {name} budget of {limit:g}: {step} was not started",
            limit_name=name,
            limit=limit,
            spent=spent,
        )


def current_budget() -> RunBudget | None:
    """The budget the reasoning steps of this context count against, if one is open.

    Examples:
        >>> current_budget() is None
        True
    """
    return _current.get()


@contextlib.contextmanager
def run_budget(
    max_total_tokens: int | None = None,
    max_cost_usd: float | None = None,
    *,
    settings: ArcanosSettings | None = None,
) -> Iterator[RunBudget]:
    """Cap what the reasoning steps inside the ``with`` block spend, in a flow of your own.

    Limits left out come from ``ARCANOS_RUN_MAX_TOKENS`` / ``ARCANOS_RUN_MAX_COST_USD`` (the settings given, else the
    environment's, as the tasks resolve them).
    Steps called, submitted or mapped inside the block (thread pool or async) check it before their request and
    record their usage after. A refused step raises :class:`~arcanos_flows.errors.BudgetExceededError`; let it fail
    the flow, and the flow's failure hook sends the run's one ``budget_exceeded`` incident.

    Raises:
        InvalidReasoningInput: A bad limit, before any request.

    Examples:
        >>> from prefect import flow
        >>> from arcanos_flows.prefect import arcanos_flow, run_reasoning
        >>> @arcanos_flow(name="capped-audit")
        ... def capped_audit(areas: list[str], max_total_tokens: int = 20_000) -> list[str]:
        ...     with run_budget(max_total_tokens=max_total_tokens):
        ...         steps = [run_reasoning([{"role": "user", "content": f"Audit {area}."}], step=area)
        ...                  for area in areas]
        ...     return [step.content for step in steps]
    """
    budget = RunBudget.from_settings(
        settings if settings is not None else resolve_settings(),
        max_total_tokens=max_total_tokens,
        max_cost_usd=max_cost_usd,
    )
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)
