"""The ``@arcanos_flow`` decorator: flows whose runs carry the ``arcanos`` tag and the incident hooks.

Prefect takes a run's tags from the ``tags()`` context when it creates the run (``@flow`` has no ``tags``); the
automations select arcanos runs by tag, so runs of the bundled flows must carry it whether they start from a
deployment (tags from ``prefect.yaml``), from ``serve`` or from a plain call.
"""

from __future__ import annotations

from typing import Any, ParamSpec, TypeVar

from prefect import Flow, tags

from arcanos_flows import hooks

__all__ = ["ARCANOS_TAGS", "ArcanosFlow", "arcanos_flow"]

P = ParamSpec("P")
R = TypeVar("R")

ARCANOS_TAGS = ("arcanos",)
"""Tags of every run of the bundled flows (automations select arcanos runs by them)."""


class ArcanosFlow(Flow[P, R]):
    """A flow whose runs carry :data:`ARCANOS_TAGS`, also when called directly (not only from a deployment).

    Prefect takes a run's tags from the ``tags()`` context when it creates the run (``@flow`` has no ``tags``);
    deployments set theirs in ``prefect.yaml``, and ``serve``/``to_deployment`` take ``tags=``.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the flow inside ``tags(*ARCANOS_TAGS)``."""
        with tags(*ARCANOS_TAGS):
            return super().__call__(*args, **kwargs)  # type: ignore[arg-type]

    def with_options(self, **options: Any) -> ArcanosFlow[P, R]:  # type: ignore[override]
        """A copy with other options (see :meth:`prefect.Flow.with_options`), still tagging its runs."""
        copy = super().with_options(**options)
        copy.__class__ = type(self)  # Flow.with_options builds a plain Flow; this class adds no state
        return copy  # type: ignore[return-value]


def arcanos_flow(**options: Any) -> Any:
    """``@flow`` for the bundled flows: an :class:`ArcanosFlow` with the incident hooks attached.

    Args:
        **options: Any :class:`prefect.Flow` option (``name``, ``description``...).

    Example:
        >>> @arcanos_flow(name="nightly-audit")
        ... def nightly_audit() -> None: ...
        >>> nightly_audit.on_crashed_hooks == [hooks.flow_on_crashed]
        True
    """
    options.setdefault("on_failure", [hooks.flow_on_failure])
    options.setdefault("on_crashed", [hooks.flow_on_crashed])

    def decorate(fn: Any) -> ArcanosFlow[Any, Any]:
        return ArcanosFlow(fn, **options)

    return decorate
