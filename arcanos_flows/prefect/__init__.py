"""The Prefect layer: reasoning tasks, state hooks, the flow decorator, and the bundled flows.

Everything a flow author uses, from one place. The reasoning tasks come sync (``run_reasoning``) and async
(``arun_reasoning``, for async flows); they report a failed step once, after its last retry; the
hooks turn a failed, crashed or cancelled flow run into one incident per root cause; ``@arcanos_flow`` wires the
hooks and tags the run. Modules: :mod:`~arcanos_flows.prefect.tasks`, :mod:`~arcanos_flows.prefect.hooks`,
:mod:`~arcanos_flows.prefect.decorator`, :mod:`~arcanos_flows.prefect.credentials` (the Block),
:mod:`~arcanos_flows.prefect.caching`, :mod:`~arcanos_flows.prefect.batch` (the Batch API),
:mod:`~arcanos_flows.prefect.events`, :mod:`~arcanos_flows.prefect.artifacts`,
:mod:`~arcanos_flows.prefect.automations` and :mod:`~arcanos_flows.prefect.runs`. The bundled flows
(:mod:`arcanos_flows.flows`) are re-exported here too. Names are imported on first use, so a flow module can
import this package without a circle.

Examples:
    >>> from arcanos_flows.prefect import arcanos_flow, run_reasoning
    >>> run_reasoning.name
    'arcanos-reasoning'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arcanos_flows._lazy import lazy_exports

if TYPE_CHECKING:
    from arcanos_flows.flows.batch import reasoning_batch_flow
    from arcanos_flows.flows.maintenance import maintenance_check_flow
    from arcanos_flows.flows.relay import incident_relay_flow
    from arcanos_flows.flows.research import ResearchReport, ResearchStepsFailed, StepRecord, research_flow
    from arcanos_flows.prefect.artifacts import publish_check_artifact
    from arcanos_flows.prefect.automations import install_automations, uninstall_automations
    from arcanos_flows.prefect.batch import BatchRowFailure, BatchRun, arun_reasoning_batch, run_reasoning_batch
    from arcanos_flows.prefect.budget import RunBudget, current_budget, run_budget
    from arcanos_flows.prefect.caching import REASONING_CACHE, ReasoningCachePolicy, reasoning_cache_key
    from arcanos_flows.prefect.credentials import (
        ArcanosCredentials,
        load_notifier_settings,
        register_environment_secrets,
        resolve_settings,
    )
    from arcanos_flows.prefect.decorator import ARCANOS_TAGS, ArcanosFlow, arcanos_flow
    from arcanos_flows.prefect.events import emit_incident_event
    from arcanos_flows.prefect.hooks import (
        bind_notifier,
        flow_on_cancellation,
        flow_on_crashed,
        flow_on_failure,
        report,
        task_on_failure,
    )
    from arcanos_flows.prefect.runs import incident_id_for, request_identity
    from arcanos_flows.prefect.tasks import (
        DEFAULT_STEP_CACHE_EXPIRATION,
        DEFAULT_TASK_RETRIES,
        arun_reasoning,
        arun_simple_prompt,
        notify_maintenance,
        requested_wait,
        retry_transient_failures,
        run_reasoning,
        run_simple_prompt,
        shared_async_client,
        shared_client,
        with_cache,
        with_retries,
    )

_EXPORTS = {
    "DEFAULT_STEP_CACHE_EXPIRATION": "arcanos_flows.prefect.tasks",
    "DEFAULT_TASK_RETRIES": "arcanos_flows.prefect.tasks",
    "arun_reasoning": "arcanos_flows.prefect.tasks",
    "arun_simple_prompt": "arcanos_flows.prefect.tasks",
    "notify_maintenance": "arcanos_flows.prefect.tasks",
    "requested_wait": "arcanos_flows.prefect.tasks",
    "retry_transient_failures": "arcanos_flows.prefect.tasks",
    "run_reasoning": "arcanos_flows.prefect.tasks",
    "run_simple_prompt": "arcanos_flows.prefect.tasks",
    "shared_async_client": "arcanos_flows.prefect.tasks",
    "shared_client": "arcanos_flows.prefect.tasks",
    "with_cache": "arcanos_flows.prefect.tasks",
    "with_retries": "arcanos_flows.prefect.tasks",
    "bind_notifier": "arcanos_flows.prefect.hooks",
    "flow_on_cancellation": "arcanos_flows.prefect.hooks",
    "flow_on_crashed": "arcanos_flows.prefect.hooks",
    "flow_on_failure": "arcanos_flows.prefect.hooks",
    "report": "arcanos_flows.prefect.hooks",
    "task_on_failure": "arcanos_flows.prefect.hooks",
    "ARCANOS_TAGS": "arcanos_flows.prefect.decorator",
    "ArcanosFlow": "arcanos_flows.prefect.decorator",
    "arcanos_flow": "arcanos_flows.prefect.decorator",
    "ArcanosCredentials": "arcanos_flows.prefect.credentials",
    "load_notifier_settings": "arcanos_flows.prefect.credentials",
    "register_environment_secrets": "arcanos_flows.prefect.credentials",
    "resolve_settings": "arcanos_flows.prefect.credentials",
    "REASONING_CACHE": "arcanos_flows.prefect.caching",
    "ReasoningCachePolicy": "arcanos_flows.prefect.caching",
    "reasoning_cache_key": "arcanos_flows.prefect.caching",
    "install_automations": "arcanos_flows.prefect.automations",
    "RunBudget": "arcanos_flows.prefect.budget",
    "BatchRowFailure": "arcanos_flows.prefect.batch",
    "BatchRun": "arcanos_flows.prefect.batch",
    "run_reasoning_batch": "arcanos_flows.prefect.batch",
    "arun_reasoning_batch": "arcanos_flows.prefect.batch",
    "current_budget": "arcanos_flows.prefect.budget",
    "run_budget": "arcanos_flows.prefect.budget",
    "uninstall_automations": "arcanos_flows.prefect.automations",
    "emit_incident_event": "arcanos_flows.prefect.events",
    "publish_check_artifact": "arcanos_flows.prefect.artifacts",
    "incident_id_for": "arcanos_flows.prefect.runs",
    "request_identity": "arcanos_flows.prefect.runs",
    "ResearchReport": "arcanos_flows.flows.research",
    "ResearchStepsFailed": "arcanos_flows.flows.research",
    "StepRecord": "arcanos_flows.flows.research",
    "research_flow": "arcanos_flows.flows.research",
    "maintenance_check_flow": "arcanos_flows.flows.maintenance",
    "reasoning_batch_flow": "arcanos_flows.flows.batch",
    "incident_relay_flow": "arcanos_flows.flows.relay",
}

__all__ = [
    "ARCANOS_TAGS",
    "DEFAULT_STEP_CACHE_EXPIRATION",
    "DEFAULT_TASK_RETRIES",
    "REASONING_CACHE",
    "ArcanosCredentials",
    "ArcanosFlow",
    "BatchRowFailure",
    "BatchRun",
    "ReasoningCachePolicy",
    "ResearchReport",
    "ResearchStepsFailed",
    "RunBudget",
    "StepRecord",
    "arcanos_flow",
    "arun_reasoning",
    "arun_reasoning_batch",
    "arun_simple_prompt",
    "bind_notifier",
    "current_budget",
    "emit_incident_event",
    "flow_on_cancellation",
    "flow_on_crashed",
    "flow_on_failure",
    "incident_id_for",
    "incident_relay_flow",
    "install_automations",
    "load_notifier_settings",
    "maintenance_check_flow",
    "notify_maintenance",
    "publish_check_artifact",
    "reasoning_batch_flow",
    "reasoning_cache_key",
    "register_environment_secrets",
    "report",
    "request_identity",
    "requested_wait",
    "research_flow",
    "resolve_settings",
    "retry_transient_failures",
    "run_budget",
    "run_reasoning",
    "run_reasoning_batch",
    "run_simple_prompt",
    "shared_async_client",
    "shared_client",
    "task_on_failure",
    "uninstall_automations",
    "with_cache",
    "with_retries",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
