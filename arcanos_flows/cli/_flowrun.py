"""Running a flow from the CLI: in this process, with a live view of its steps, without Prefect's log noise.

Progress comes from two sources. A logging handler sees the run's own log records as they are written, in
this process (the flow run starting, each step finishing, retrying or failing, the usage line of each
reasoning step), so finished steps show at once. With a live view (a terminal), a thread also polls the task
runs of the flow run through the Prefect API every half second, so steps that are still running show too (the
API learns of task runs through events, a moment late; a step the log already marked finished is never set
back). Either source failing only makes the view less complete: the run itself is never affected.

A step is reported the moment its own final log record is written (:attr:`RunTracker.on_step`: a line when
there is no live view, a JSON object with ``--json``), complete: the tokens of its usage line, the seconds since
its task run started (its run context, in the thread that writes its records, says when) and, for a failure, the
incident class its failure hook reported.

Start-up is most of an ad-hoc run's time, so this module is careful with it: Prefect and the SDK are imported
once, with the cyclic garbage collector paused (:func:`heavy_imports`); Prefect's temporary server, when runs
go there, starts while the flows are imported (:func:`temporary_server_starting`); nothing polls without a live
view; and runs on the temporary server send no heartbeats (nothing outlives the process to watch them, and
stopping the heartbeat thread costs up to a second at the end of every run). The one wait it adds is at the end
of a run on the temporary server, which stops with this process: until the server has recorded each step's
final state (:func:`wait_until_recorded`, about a tenth of a second here).
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from arcanos_flows.cli._progress import StepView, status_of, step_line
from arcanos_flows.cli._tables import FirstThatFits, key_column, with_notes
from arcanos_flows.core.errors import ConfigurationError, InvalidReasoningInput, classify
from arcanos_flows.core.redaction import redact

__all__ = [
    "FlowOutcome",
    "RunTracker",
    "StepView",
    "heavy_imports",
    "progress_line",
    "quiet_prefect_console",
    "run_flow",
    "run_research",
    "steps_table",
    "temporary_server_starting",
    "wait_until_recorded",
]

logger = logging.getLogger("arcanos_flows.cli")

_FINISHED = re.compile(r"^Finished in state (?P<state>\w+)\((?P<detail>.*)\)$", re.DOTALL)
_RETRY = re.compile(r"Retry (?P<retry>\d+)/(?P<retries>\d+) will start")
_USAGE = re.compile(
    r"answered by (?P<model>\S+): (?P<input>\d+) input / (?P<output>\d+) output .*? in (?P<ms>[\d.]+) ms, "
    r"request (?P<request>\S+), (?P<attempts>\d+) attempt"
)
_FAILURE_RECORDS = ("Task run failed with", "Running hook ", "Hook ")
_TERMINAL = frozenset({"Completed", "Cached", "Failed", "Crashed", "Cancelled", "TimedOut"})
_STYLES = {"Completed": "green", "Cached": "blue", "Failed": "red", "Crashed": "red", "TimedOut": "red"}
_POLL_SECONDS = 0.5
_ERROR_LIMIT = 120
_RECORDED_WAIT_SECONDS = 5.0


@dataclass
class RunTracker:
    """The state of one flow run as seen by the CLI; rendered by rich (``__rich__``) from the Live thread.

    Attributes:
        flow_name: The flow's name.
        waiting_for: What the view says before the flow run exists.
        flow_run_id: The flow run, once its first log record names it.
        flow_run_name: Its generated name.
        state: The flow run's state.
        steps: The steps (task runs) by task run id, in the order they were first seen.
        expected_steps: How many steps the run will have, when known (the progress shows ``3/5 steps``).
        on_step: Called with (a copy of) each step when its own log records show it finished, once per step, in
            the thread that ran it.
    """

    flow_name: str
    waiting_for: str = "starting the flow run"
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    state: str = "Pending"
    steps: dict[str, StepView] = field(default_factory=dict)
    expected_steps: int | None = None
    on_step: Callable[[StepView], None] | None = field(default=None, repr=False)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    spinner: Spinner = field(default_factory=lambda: Spinner("dots"), repr=False)
    _errors: dict[str, BaseException | None] = field(default_factory=dict, repr=False)

    def on_record(self, record: logging.LogRecord) -> str | None:
        """Update from one log record of ``prefect.flow_runs`` or ``prefect.task_runs``.

        A record that shows a step finished also goes to :attr:`on_step` (after the tracker's lock is released).

        Returns:
            A line worth printing when there is no live view (a step finished or retries, the run ended).
        """
        message = record.getMessage()
        with self.lock:
            task_run_id = getattr(record, "task_run_id", None)
            if task_run_id is None:
                return self._on_flow_record(record, message)
            line, finished = self._on_step_record(str(task_run_id), record, message)
        if finished is not None and self.on_step is not None:
            self.on_step(finished)
        return line

    def _on_step_record(
        self, task_run_id: str, record: logging.LogRecord, message: str
    ) -> tuple[str | None, StepView | None]:
        step = self.steps.setdefault(task_run_id, StepView("step", task_run_id=task_run_id))
        # The run's own records carry the rendered name (``reasoning[plan]``); the API may list a task run
        # under its provisional name before the rename reaches it.
        step.name, step.named_by_log = str(getattr(record, "task_run_name", step.name)), True
        if step.started_at is None:
            step.started_at = _started_at(task_run_id) or record.created
        if finished := _FINISHED.match(message):
            step.state, step.final = finished.group("state"), True
            step.seconds = max(0.0, record.created - step.started_at)
            if step.state not in ("Completed", "Cached"):
                step.error = _short(_state_detail(finished.group("detail")))
                error = self._errors.get(task_run_id)
                step.error_class = _error_class(step.state, error)
                if error is not None:
                    step.request_id = step.request_id or classify(error).request_id
            if step.reported:
                return None, None
            step.reported = True
            return step_line(step), StepView(**vars(step))
        if retry := _RETRY.search(message):
            step.state = f"Retrying {retry.group('retry')}/{retry.group('retries')}"
            step.attempts = int(retry.group("retry")) + 1
            cause = message.split(" - Retry")[0].removeprefix("Task run failed with ")
            step.error = _short(cause.removeprefix("exception: "))
            return f"  {step.name}: {step.state} ({step.error})", None
        if message.startswith(_FAILURE_RECORDS):
            # Classified when the step is final, after its failure hook attached the incident it reported.
            error = record.exc_info[1] if record.exc_info else None
            self._errors[task_run_id] = error or _context_failure(task_run_id) or self._errors.get(task_run_id)
        elif usage := _USAGE.search(message):
            step.model = usage.group("model")
            step.input_tokens = int(usage.group("input"))
            step.output_tokens = int(usage.group("output"))
            step.latency_ms = float(usage.group("ms"))
            step.request_id = usage.group("request")
            step.attempts = int(usage.group("attempts"))
        return None, None

    def _on_flow_record(self, record: logging.LogRecord, message: str) -> str | None:
        flow_run_id = getattr(record, "flow_run_id", None)
        if flow_run_id is not None and self.flow_run_id is None:
            self.flow_run_id = str(flow_run_id)
            self.flow_run_name = getattr(record, "flow_run_name", None)
        if message.startswith("Beginning flow run"):
            self.state = "Running"
            return f"{self.flow_name}: flow run '{self.flow_run_name}' ({self.flow_run_id}) started"
        if finished := _FINISHED.match(message):
            self.state = finished.group("state")
            return f"{self.flow_name}: flow run '{self.flow_run_name}' finished {self.state}"
        return None

    def on_task_runs(self, task_runs: list[Any]) -> None:
        """Update from the task runs the Prefect API lists for the flow run (states only, never backwards)."""
        with self.lock:
            for task_run in task_runs:
                task_run_id = str(task_run.id)
                step = self.steps.setdefault(task_run_id, StepView(task_run.name, task_run_id=task_run_id))
                if not step.named_by_log:
                    step.name = task_run.name
                if step.started_at is None and getattr(task_run, "start_time", None) is not None:
                    step.started_at = task_run.start_time.timestamp()
                if step.final or task_run.state is None:
                    continue
                name = task_run.state.name
                if name == "AwaitingRetry" or (name == "Retrying" and step.state.startswith("Retrying")):
                    continue
                step.state = name
                step.final = name in _TERMINAL
                step.attempts = max(step.attempts, task_run.run_count or 1)

    def finished_task_run_ids(self) -> set[str]:
        """The task runs seen in a final state (by their log records or the API)."""
        with self.lock:
            return {task_run_id for task_run_id, step in self.steps.items() if step.final}

    def snapshot(self) -> list[StepView]:
        """The steps in the order they were first seen."""
        with self.lock:
            return [StepView(**vars(step)) for step in self.steps.values()]

    def __rich__(self) -> RenderableType:
        """Header with the flow run and a spinner, the progress (``3/5 steps``), then one row per step."""
        elapsed = time.monotonic() - self.started
        with self.lock:
            if self.flow_run_id is None:
                title = f"{self.flow_name}: {self.waiting_for}… {elapsed:.0f}s"
            else:
                title = f"{self.flow_name} · flow run '{self.flow_run_name}' · {self.state} · {elapsed:.0f}s"
            started = self.flow_run_id is not None
        header: RenderableType = Text(title, style="bold")
        if self.state in ("Pending", "Running"):
            self.spinner.update(text=Text(title))  # one Spinner, so that it turns
            header = self.spinner
        if not started:
            return header
        steps = self.snapshot()
        parts: list[RenderableType] = [header, progress_line(steps, self.expected_steps)]
        if steps:
            parts.append(steps_table(steps))
        return Group(*parts)


def progress_line(steps: list[StepView], expected: int | None = None) -> RenderableType:
    """A bar and ``3/5 steps`` (``3 steps finished`` while the total is unknown), failures and tokens so far.

    Examples:
        >>> steps = [StepView("reasoning[plan]", state="Completed", final=True, input_tokens=70, output_tokens=14),
        ...          StepView("reasoning[investigate-1]")]
        >>> console = Console(width=80)
        >>> with console.capture() as captured:
        ...     console.print(progress_line(steps, expected=4))
        >>> captured.get().split("  ")[-1].strip()
        '1/4 steps · 84 tokens'
    """
    done = sum(1 for step in steps if step.final)
    failed = sum(1 for step in steps if step.final and status_of(step.state) == "failed")
    tokens = sum((step.input_tokens or 0) + (step.output_tokens or 0) for step in steps)
    total = max(expected, len(steps)) if expected else None
    text = f"{done}/{total} steps" if total else f"{done} step{'' if done == 1 else 's'} finished"
    if failed:
        text += f", {failed} failed"
    text += f" · {tokens} tokens"
    line = Table.grid(padding=(0, 2))
    line.add_row(ProgressBar(total=total, completed=done, width=24), Text(text))
    return line


def steps_table(steps: list[StepView]) -> RenderableType:
    """The live view's steps, one row each; why a step failed or retries goes below the table, by step.

    Step names and states are never cut; the latency and request id columns go when the terminal is too narrow.
    """
    now = time.time()

    def layout(full: bool) -> Table:
        table = Table(box=None, pad_edge=False)
        key_column(table, "step")
        key_column(table, "state")
        table.add_column("tries", justify="right")
        table.add_column("tokens in/out", justify="right")
        table.add_column("time", justify="right")
        if full:
            table.add_column("latency", justify="right")
            key_column(table, "request")
        for step in steps:
            tokens = "" if step.input_tokens is None else f"{step.input_tokens}/{step.output_tokens}"
            seconds = step.seconds
            if seconds is None and step.started_at is not None and not step.final:
                seconds = max(0.0, now - step.started_at)
            row: list[RenderableType] = [
                Text(step.name),
                Text(
                    f"{step.state} ({step.error_class})" if step.final and step.error_class else step.state,
                    style=_STYLES.get(step.state, "yellow"),
                ),
                str(step.attempts),
                tokens,
                "" if seconds is None else f"{seconds:.1f} s",
            ]
            if full:
                row += ["" if step.latency_ms is None else f"{step.latency_ms:.0f} ms", Text(step.request_id or "")]
            table.add_row(*row)
        return table

    errors = [
        (step.name, step.error) for step in steps if step.error and not step.state.startswith(("Completed", "Cached"))
    ]
    return with_notes(FirstThatFits(layout(True), layout(False)), errors)


def _started_at(task_run_id: str) -> float | None:
    """When the task run writing a record started, from its run context (records are written in its thread)."""
    try:
        from prefect.context import TaskRunContext

        context = TaskRunContext.get()
        if context is None or str(context.task_run.id) != task_run_id or context.task_run.start_time is None:
            return None
        return float(context.task_run.start_time.timestamp())
    except Exception:  # only the step's seconds are less exact
        return None


def _context_failure(task_run_id: str) -> BaseException | None:
    """The exception of the task run writing a record, when its run context holds it in a failed state.

    Records of the failure hooks (``Running hook 'task_on_failure'...``) are written there, before the final one.
    """
    try:
        from prefect.context import TaskRunContext

        from arcanos_flows.prefect.runs import state_exception

        context = TaskRunContext.get()
        if context is None or str(context.task_run.id) != task_run_id:
            return None
        state = context.task_run.state
        if state is None or not (state.is_failed() or state.is_crashed()):
            return None
        return state_exception(state)
    except Exception:  # only the step's error class is less exact
        return None


def _error_class(state: str, error: BaseException | None) -> str:
    """The incident class of a failed step: its error's (as its hook reported it), else what its state says."""
    if error is not None:
        from arcanos_flows.incidents.model import attached_incident

        incident = attached_incident(error)
        return (incident.incident_class if incident is not None else classify(error).incident_class).value
    return {"Crashed": "crashed", "Cancelled": "cancelled", "TimedOut": "timeout"}.get(state, "unknown")


def _state_detail(detail: str) -> str:
    # The repr of a state's message: Failed('Task run encountered an exception X: ...')
    text = detail.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    for prefix in ("Task run encountered an exception ", "Flow run encountered an exception: "):
        text = text.removeprefix(prefix)
    return text


def _short(message: str) -> str:
    line = redact(message.strip().splitlines()[0]) if message.strip() else ""
    return line if len(line) <= _ERROR_LIMIT else line[: _ERROR_LIMIT - 1] + "…"


class _TrackerHandler(logging.Handler):
    """Feeds run log records to the tracker; shows other warnings above the live view."""

    def __init__(self, tracker: RunTracker, console: Console, *, show_warnings: bool, print_lines: bool) -> None:
        super().__init__(level=logging.NOTSET)
        self.tracker = tracker
        self.console = console
        self.show_warnings = show_warnings
        self.print_lines = print_lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.name in ("prefect.flow_runs", "prefect.task_runs"):
                line = self.tracker.on_record(record)
                if line and self.print_lines:
                    self.console.print(Text(line), soft_wrap=True)
            elif self.show_warnings and record.levelno >= logging.WARNING and not record.name.startswith("prefect"):
                self.console.print(Text(redact(record.getMessage()), style="yellow"), soft_wrap=True)
        except Exception:
            self.handleError(record)


class _QuietPrefectConsole(logging.Filter):
    """On Prefect's console handler: drop Prefect's own lines (the live view and the UI show them)."""

    live = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(("prefect", "uvicorn")):
            return False
        return not self.live  # while the live view runs, _TrackerHandler prints the other warnings


_quiet = _QuietPrefectConsole()


def quiet_prefect_console() -> None:
    """Keep Prefect's own log lines off the console (the live view and the UI show them).

    Left installed for the rest of the process: it also hides the temporary server's stop message at exit.
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and _quiet not in handler.filters:
            handler.addFilter(_quiet)


@contextlib.contextmanager
def heavy_imports() -> Iterator[None]:
    """Import Prefect, the SDK and the flows inside this block: about a tenth less CPU, and cheaper afterwards.

    Importing them creates about a quarter of a million objects that live as long as the process; the cyclic
    garbage collector would scan them again and again while they are created (and at every full collection of
    the run) and find little to free. So it is paused for the imports, and what they created is frozen
    (:func:`gc.freeze`): later collections skip it. (The few cycles left over hold about 2 MB until exit.)

    Examples:
        >>> with heavy_imports():  # doctest: +SKIP
        ...     from arcanos_flows.flows.research import research_flow
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@contextlib.contextmanager
def temporary_server_starting(console: Console, *, show_status: bool = True) -> Iterator[None]:
    """On Prefect's temporary server: start it now, in the background, while the block imports the flows.

    The temporary server's start-up (a new process, migrations, services) is the longest part of a run on it,
    and the engine only begins it at the first API call. Started here, it overlaps importing the SDK and the
    flows; leaving the block waits for it (with a status line on a terminal). Nothing happens when runs go to
    a configured server. If it fails to start, the engine tries again and reports the error as usual.

    Examples:
        >>> with temporary_server_starting(Console()):  # doctest: +SKIP
        ...     from arcanos_flows.flows.research import research_flow
    """
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        yield
        return
    try:
        with heavy_imports():  # the engine imports it too, to start the server: no extra cost
            from prefect.server.api.server import SubprocessASGIServer
    except ImportError:  # pragma: no cover - a Prefect without it: the engine starts its server itself
        yield
        return
    server = SubprocessASGIServer()

    def start() -> None:
        try:
            server.start()
        except Exception as exc:  # the engine's own attempt reports it
            logger.debug("Early start of Prefect's temporary server failed: %s", redact(str(exc)))

    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(start,), name="arcanos-cli-temporary-server", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        waiting = (
            console.status("Starting Prefect's temporary local server…")
            if show_status and console.is_terminal and thread.is_alive()
            else contextlib.nullcontext()
        )
        with waiting:
            thread.join()


@contextlib.contextmanager
def _polling(tracker: RunTracker) -> Iterator[None]:
    stop = threading.Event()

    def poll() -> None:
        # Nothing to ask before the flow run exists, and a run that ends within the first interval is never
        # polled at all. The client is created only then, so the temporary server is already up: creating it
        # earlier from this thread could race the main thread into starting a second one.
        while tracker.flow_run_id is None:
            if stop.wait(_POLL_SECONDS / 5):
                return
        if stop.wait(_POLL_SECONDS):
            return
        try:
            from prefect.client.orchestration import get_client

            run_filter = _this_flow_run(tracker.flow_run_id)
            with get_client(sync_client=True) as client:
                while True:
                    tracker.on_task_runs(client.read_task_runs(flow_run_filter=run_filter))
                    if stop.wait(_POLL_SECONDS):
                        return
        except Exception as exc:  # only the live view loses detail
            logger.debug("Stopped polling task runs: %s", redact(str(exc)))

    # Run with this thread's context, so that the poller sees the same Prefect settings (API URL) as the run.
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(poll,), name="arcanos-cli-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)


def _without_heartbeats() -> contextlib.AbstractContextManager[object]:
    """No flow run heartbeats for runs on Prefect's temporary server, unless the user configured them.

    Heartbeats let a server notice a run whose process died (the arcanos zombie automation); a temporary
    server dies with the process, so nothing can watch them, while the heartbeat thread sleeps in one-second
    steps and makes every run wait for it at the end (0 to 1 s). Runs on a lasting server keep them.
    """
    from prefect.settings import get_current_settings, temporary_settings

    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        return contextlib.nullcontext()
    return temporary_settings(updates={"flows.heartbeat_frequency": None})


@dataclass
class FlowOutcome:
    """How a flow run ended, for the CLI to print and to pick its exit code.

    Attributes:
        flow_name: The flow's name.
        state_name: The final state (``Completed``, ``Failed``, ``Crashed``...).
        flow_run_id: The flow run, when one was created.
        flow_run_name: Its generated name.
        ui_url: Link to the run in the Prefect UI (``PREFECT_UI_URL`` or a configured API URL).
        result: The flow's return value when it completed.
        error: The exception the run failed with.
        message: The final state's message, redacted.
        steps: The steps as the live view saw them.
        elapsed: Seconds from the call to the final state, Prefect start-up included.
    """

    flow_name: str
    state_name: str
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    ui_url: str | None = None
    result: Any = None
    error: BaseException | None = None
    message: str | None = None
    steps: list[StepView] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def completed(self) -> bool:
        """Whether the run completed."""
        return self.state_name == "Completed"

    @property
    def exit_code(self) -> int:
        """0 completed; 2 the run failed on its configuration or parameters; 1 any other failure."""
        if self.completed:
            return 0
        if isinstance(self.error, (ConfigurationError, InvalidReasoningInput)):
            return 2
        return 1

    @property
    def error_line(self) -> str | None:
        """One redacted line saying why the run failed."""
        if self.completed:
            return None
        if self.error is not None:
            text = str(self.error).strip().splitlines()[0] if str(self.error).strip() else type(self.error).__name__
            if self.state_name == "NotStarted":
                return redact(f"Prefect could not start the run: {text}")
            return redact(f"{classify(self.error).incident_class.value}: {text}")
        return self.message or f"the flow run ended in state {self.state_name}"


def run_flow(
    console: Console,
    flow: Any,
    parameters: dict[str, Any],
    *,
    show_logs: bool = False,
    live: bool = True,
    on_step: Callable[[StepView], None] | None = None,
    expected_steps: int | None = None,
) -> FlowOutcome:
    """Call ``flow(**parameters)`` in this process and watch it; never raises for a failed run.

    On a terminal, a live view shows the progress (``3/5 steps``) and each step; elsewhere (a log, CI) each step
    gets one line on ``console`` as it finishes (:func:`arcanos_flows.cli._progress.step_line`).

    Args:
        console: Where the live view or the lines go (stderr).
        flow: A Prefect flow.
        parameters: Its parameters.
        show_logs: Keep Prefect's own log lines on the console (then there is no live view and no lines).
        live: Show the progress: the live view or the lines (off for ``--json``).
        on_step: Called with each step as it finishes (:attr:`RunTracker.on_step`), whatever is shown.
        expected_steps: How many steps the run will have, when known.

    Returns:
        The outcome, with the run id and the flow's result or error.
    """
    from prefect.settings import get_current_settings

    from arcanos_flows.prefect.runs import ui_url_for

    tracker = RunTracker(flow.name, expected_steps=expected_steps, on_step=on_step)
    temporary_server = get_current_settings().api.url is None
    if temporary_server:
        tracker.waiting_for = "starting Prefect's temporary local server"
    # A live view needs a terminal; in a log (CI, a pipe) each step gets one line as it finishes instead.
    show_live = live and not show_logs and console.is_terminal
    if not show_logs:
        quiet_prefect_console()
    handler = _TrackerHandler(
        tracker, console, show_warnings=show_live, print_lines=live and not show_logs and not show_live
    )
    root = logging.getLogger()
    root.addHandler(handler)
    display = Live(tracker, console=console, refresh_per_second=8, redirect_stdout=False, redirect_stderr=False)
    started = time.monotonic()
    state = None
    failure: BaseException | None = None
    try:
        with contextlib.ExitStack() as stack:
            if temporary_server:
                stack.enter_context(_without_heartbeats())
            if show_live:
                _quiet.live = True
                stack.enter_context(display)
                stack.enter_context(_polling(tracker))  # without a live view, the log lines say it all
            try:
                state = flow(**parameters, return_state=True)
            except Exception as exc:  # the engine could not run it at all (e.g. no Prefect API)
                failure = exc
    finally:
        _quiet.live = False
        root.removeHandler(handler)
    outcome = FlowOutcome(
        flow_name=flow.name,
        state_name=state.name if state is not None else "NotStarted",
        flow_run_name=tracker.flow_run_name,
        steps=tracker.snapshot(),
        elapsed=time.monotonic() - started,
        error=failure,
    )
    if state is not None:
        run_id = state.state_details.flow_run_id or tracker.flow_run_id
        outcome.flow_run_id = str(run_id) if run_id else None
        outcome.message = redact(state.message) if state.message else None
        if state.is_completed():
            outcome.result = state.result()
        else:
            error = state.result(raise_on_failure=False)
            outcome.error = error if isinstance(error, BaseException) else None
    if outcome.flow_run_id:
        outcome.ui_url = ui_url_for(outcome.flow_run_id)
        if temporary_server:
            wait_until_recorded(outcome.flow_run_id, tracker.finished_task_run_ids())
    return outcome


def _this_flow_run(flow_run_id: str) -> Any:
    """The API filter that selects one flow run (for reading its task runs)."""
    from uuid import UUID

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))


def wait_until_recorded(flow_run_id: str, task_run_ids: set[str], timeout: float = _RECORDED_WAIT_SECONDS) -> bool:
    """Wait until the Prefect API shows each of ``task_run_ids`` in a final state; never raises.

    A task run's states reach the server as events, which it records a moment after the run itself has finished.
    On Prefect's temporary server that moment matters: the server stops when this process exits, and a write
    still in progress is cancelled, so the task run stays ``Running`` in the database (which ``PREFECT_HOME``
    keeps for the next server) and the server prints an error with a traceback. Called at the end of a run on
    the temporary server; it usually returns within a few polls.

    Args:
        flow_run_id: The flow run.
        task_run_ids: The task runs that finished in this process.
        timeout: Seconds to wait at most.

    Returns:
        Whether all of them were recorded in time.

    Examples:
        >>> wait_until_recorded("00000000-0000-0000-0000-000000000000", set())
        True
    """
    if not task_run_ids:
        return True
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    run_filter = _this_flow_run(flow_run_id)
    try:
        with get_client(sync_client=True) as client:
            while True:
                recorded = {
                    str(task_run.id)
                    for task_run in client.read_task_runs(flow_run_filter=run_filter)
                    if task_run.state is not None and task_run.state.is_final()
                }
                if task_run_ids <= recorded:
                    return True
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
    except Exception as exc:  # the run's outcome is known; only the server's records may be incomplete
        logger.debug("Could not read the run's task runs back: %s", redact(str(exc)))
        return False
    logger.warning(
        "Prefect's temporary server had not recorded the final state of %d task run(s) after %g s; "
        "the Prefect UI may show them as still running.",
        len(task_run_ids - recorded),
        timeout,
    )
    return False


def run_research(
    console: Console,
    *,
    topic: str,
    questions: list[str] | None,
    audit: dict[str, str] | None,
    confirmation_token: str | None,
    max_parallel: int,
    mode: str = "direct",
    batch_poll_interval: float = 60.0,
    show_logs: bool = False,
    live: bool = True,
    on_step: Callable[[StepView], None] | None = None,
) -> FlowOutcome:
    """Run :func:`arcanos_flows.flows.research.research_flow` with the live view; see :func:`run_flow`.

    With the questions given, the run has as many steps as questions, plus the plan and the synthesis: the progress
    counts them as ``finished/total``.
    """
    if not show_logs:
        quiet_prefect_console()  # before the temporary server starts: its start-up message is noise here
    with temporary_server_starting(console, show_status=live and not show_logs), heavy_imports():
        from arcanos_flows.flows.research import research_flow

    return run_flow(
        console,
        research_flow,
        {
            "topic": topic,
            "questions": questions,
            "audit": audit,
            "confirmation_token": confirmation_token,
            "max_parallel": max_parallel,
            **({"mode": mode, "batch_poll_interval": batch_poll_interval} if mode != "direct" else {}),
        },
        show_logs=show_logs,
        live=live,
        on_step=on_step,
        expected_steps=len(questions) + 2 if questions else None,
    )
