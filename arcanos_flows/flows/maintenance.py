"""The maintenance check: a scheduled heartbeat that asks the enforced model the original module's sample prompt.

When the model cannot be reached, or another model answers, the reasoning step fails after its retries and its
task hook reports one incident (``connection``, ``model_enforcement``...); the flow then fails without a second one.
"""

from __future__ import annotations

from prefect.logging import get_run_logger

from arcanos_flows.core.redaction import redact
from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.prefect.artifacts import publish_check_artifact
from arcanos_flows.prefect.credentials import resolve_settings
from arcanos_flows.prefect.decorator import arcanos_flow
from arcanos_flows.prefect.tasks import run_reasoning, with_retries

__all__ = ["CHECK_MESSAGES", "maintenance_check_flow"]

CHECK_MESSAGES = (
    {"role": "system", "content": "You are the Arcanos maintenance AI."},
    {"role": "user", "content": "List the current confirmation layers."},
)
"""The original module's sample prompt."""


@arcanos_flow(name="arcanos-maintenance-check")
def maintenance_check_flow() -> ReasoningResult:
    """Ask the enforced model the sample prompt; fail (with one incident) when it is unreachable or another answers.

    Returns:
        The model's answer; also published as the artifact ``arcanos-maintenance-check``.

    Examples:
        Run it once, or deploy it with an hourly interval (``prefect.yaml``)::

            from arcanos_flows.flows.maintenance import maintenance_check_flow

            print(maintenance_check_flow().content)
    """
    settings = resolve_settings()
    check = with_retries(run_reasoning, settings)
    state = check([dict(message) for message in CHECK_MESSAGES], None, "maintenance-check", return_state=True)
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        if not isinstance(error, BaseException):
            error = RuntimeError(state.message or f"the check ended in state {state.name}")
        _publish(None, error)
        raise error
    result: ReasoningResult = state.result()
    _publish(result, None)
    return result


def _publish(result: ReasoningResult | None, error: BaseException | None) -> None:
    try:
        publish_check_artifact(result, error=error)
    except Exception as exc:  # the check's outcome is its state; a lost artifact must not change it
        get_run_logger().warning("Could not publish the maintenance check artifact: %s", redact(str(exc)))
