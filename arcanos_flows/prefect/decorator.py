"""The ``@arcanos_flow`` decorator: flows whose runs carry the ``arcanos`` tag and the incident hooks.

Prefect takes a run's tags from the ``tags()`` context when it creates the run (``@flow`` has no ``tags``); the
automations select arcanos runs by tag, so runs of the bundled flows must carry it whether they start from a
deployment (tags from ``prefect.yaml``), from ``serve`` or from a plain call.

Only the flow run is tagged, not the task runs inside it: Prefect gives every tagged task run a tag-concurrency
lease (acquired, renewed and released through the API), which made a 200-step research run three times slower
(18.9 s against 6.2 s; ``python -m bench --only fanout --diagnose`` measures both). Deployed runs behave the same
way (their tags are the flow run's only). To limit concurrent steps by tag, give the tasks a tag of their own
(``tags=`` of ``.with_options``) and create that limit.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import types
import typing
from collections.abc import Callable, Coroutine, Iterator
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from prefect import Flow, tags
from prefect.context import FlowRunContext, TagsContext
from prefect.utilities.hashing import file_hash
from pydantic import SecretStr

from arcanos_flows.prefect import hooks
from arcanos_flows.prefect.runs import append_note

__all__ = ["ARCANOS_TAGS", "ArcanosFlow", "arcanos_flow"]

P = ParamSpec("P")
R = TypeVar("R")

ARCANOS_TAGS = ("arcanos",)
"""Tags of every run of the bundled flows (automations select arcanos runs by them)."""


_ADDED_TAGS: ContextVar[frozenset[str]] = ContextVar("arcanos_flows_added_tags", default=frozenset())
"""The tags :meth:`ArcanosFlow.__call__` added for the flow run it is creating (the body takes them off again)."""


@contextlib.contextmanager
def _without_added_tags() -> Iterator[None]:
    added = _ADDED_TAGS.get()
    if not added:
        yield
        return
    with TagsContext(current_tags=set(TagsContext.get().current_tags) - added):
        yield


@contextlib.contextmanager
def _with_incidents_raised() -> Iterator[None]:
    """A failing flow's exception lists the incidents its run raised (how many, ids, classes and deliveries).

    The flow run's state message is the exception's text, so the UI's run page names every incident of the run, not
    only the failing step's.
    """
    try:
        yield
    except Exception as error:
        flow_context = FlowRunContext.get()
        flow_run = flow_context.flow_run if flow_context is not None else None
        raised = hooks.raised_in_flow_run(flow_run.id if flow_run is not None else None)
        if raised:
            count = f"{len(raised)} incident{'s' if len(raised) > 1 else ''} raised"
            listed = ", ".join(f"{incident_id} ({kind}, {outcome})" for incident_id, kind, outcome in raised)
            append_note(error, f"[{count}: {listed}]")
        raise


def _untagged_body(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, run without the tags its flow run was given by :meth:`ArcanosFlow.__call__`.

    The wrapper is built on ``fn``'s globals (it uses none of its own: ``fn`` and the context manager are closure
    cells), so that Prefect resolves the parameters' string annotations in ``fn``'s module as before.
    """
    untagged, summarised = _without_added_tags, _with_incidents_raised
    body: Callable[..., Any]  # a coroutine function or a plain one, like fn
    if inspect.iscoroutinefunction(fn):

        async def body(*args: Any, **kwargs: Any) -> Any:
            with untagged(), summarised():
                return await fn(*args, **kwargs)

    else:

        def body(*args: Any, **kwargs: Any) -> Any:
            with untagged(), summarised():
                return fn(*args, **kwargs)

    rebuilt = types.FunctionType(body.__code__, fn.__globals__, body.__name__, None, body.__closure__)
    return functools.update_wrapper(rebuilt, fn)


def _file_version(fn: Callable[..., Any]) -> str | None:
    # Prefect's default version, a hash of the flow's file, taken from fn's file rather than the wrapper's.
    try:
        source = inspect.getsourcefile(fn)
        return file_hash(source) if source else None
    except (OSError, TypeError):
        return None


@contextlib.contextmanager
def _arcanos_tags() -> Iterator[None]:
    """``tags(*ARCANOS_TAGS)``, remembering which of them it added (the flow's body takes those off again)."""
    added = frozenset(ARCANOS_TAGS) - set(TagsContext.get().current_tags)
    token = _ADDED_TAGS.set(added)
    try:
        with tags(*ARCANOS_TAGS):
            yield
    finally:
        _ADDED_TAGS.reset(token)


async def _tagged(run: Coroutine[Any, Any, Any]) -> Any:
    # The tags are those of where the run is awaited, as for any async flow, plus ARCANOS_TAGS.
    with _arcanos_tags():
        return await run


class ArcanosFlow(Flow[P, R]):
    """A flow whose runs carry :data:`ARCANOS_TAGS`, also when called directly (not only from a deployment).

    Prefect takes a run's tags from the ``tags()`` context when it creates the run (``@flow`` has no ``tags``);
    deployments set theirs in ``prefect.yaml``, and ``serve``/``to_deployment`` take ``tags=``. The task runs
    inside are not tagged (see the module's docstring). Sync and async flows alike: an async flow's run is
    tagged when its coroutine is awaited, which is when Prefect creates it.

    Examples:
        >>> from prefect import task
        >>> @task
        ... def step() -> str: return "answered"
        >>> @arcanos_flow(name="tagged-run")
        ... def tagged() -> str: return step()
        >>> isinstance(tagged, ArcanosFlow), tagged.name
        (True, 'tagged-run')
    """

    def __init__(self, fn: Callable[P, R], **options: Any) -> None:
        if not getattr(fn, "__arcanos_untagged__", False):
            options.setdefault("version", _file_version(fn))
            body = _untagged_body(fn)
            body.__arcanos_untagged__ = True  # type: ignore[attr-defined]
            fn = body
        super().__init__(fn, **options)
        original = inspect.unwrap(fn)
        if original.__module__ == "__main__":  # Prefect named the wrapper's file; the flow lives in the script
            self._entrypoint = f"{inspect.getfile(original)}:{original.__qualname__}"

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """The parameters as the API stores them, a parameter typed ``SecretStr`` masked even when given as a string.

        Prefect masks a ``SecretStr`` value (``**********``); a caller passing a plain string to such a parameter
        (as callers of the original module did) would otherwise show it in the UI and the API.

        Examples:
            >>> from pydantic import SecretStr
            >>> @arcanos_flow(name="secret-parameter")
            ... def guarded(token: SecretStr | None = None) -> None: ...
            >>> guarded.serialize_parameters({"token": "ct-2026-secret"})
            {'token': '**********'}
        """
        secret = self._secret_parameters()
        masked = {
            name: SecretStr(value) if name in secret and isinstance(value, str) else value
            for name, value in parameters.items()
        }
        return super().serialize_parameters(masked)

    def _secret_parameters(self) -> set[str]:
        try:
            hints = typing.get_type_hints(inspect.unwrap(self.fn))
        except Exception:  # unresolvable annotations: nothing is known to be secret
            return set()
        return {name for name, hint in hints.items() if hint is SecretStr or SecretStr in typing.get_args(hint)}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the flow inside ``tags(*ARCANOS_TAGS)``: its flow run carries them, its task runs do not.

        An async flow's run is created when its coroutine is awaited, not when it is called: the coroutine
        returned enters the tags there.
        """
        if not self.isasync:
            with _arcanos_tags():
                return super().__call__(*args, **kwargs)
        # Prefect checks the parameters now and returns the coroutine that creates and runs the flow run.
        run = super().__call__(*args, **kwargs)
        return _tagged(run) if inspect.iscoroutine(run) else run

    def with_options(self, **options: Any) -> ArcanosFlow[P, R]:
        """A copy with other options (see :meth:`prefect.Flow.with_options`), still tagging its runs."""
        copy = super().with_options(**options)
        copy.__class__ = type(self)  # Flow.with_options builds a plain Flow; this class adds no state
        return copy  # type: ignore[return-value]


def arcanos_flow(**options: Any) -> Callable[[Callable[P, R]], ArcanosFlow[P, R]]:
    """``@flow`` for the bundled flows: an :class:`ArcanosFlow` with the incident hooks attached.

    Args:
        **options: Any :class:`prefect.Flow` option (``name``, ``description``...).

    Examples:
        >>> @arcanos_flow(name="nightly-audit")
        ... def nightly_audit() -> None: ...
        >>> nightly_audit.on_crashed_hooks == [hooks.flow_on_crashed]
        True
    """
    options.setdefault("on_failure", [hooks.flow_on_failure])
    options.setdefault("on_crashed", [hooks.flow_on_crashed])

    def decorate(fn: Callable[P, R]) -> ArcanosFlow[P, R]:
        return ArcanosFlow(fn, **options)

    return decorate
