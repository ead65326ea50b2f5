"""The model-enforced reasoning client: one fine-tuned model, no fallback, every failure reported.

Works in a plain script or notebook; nothing here imports Prefect. What it shares with
:class:`~arcanos_flows.client.AsyncArcanosClient` lives in :mod:`arcanos_flows.client._base`; this module keeps
the blocking I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import openai

from arcanos_flows.client._base import Call, ClientCore, PreparedRequest, simple_prompt_messages
from arcanos_flows.client._http import event_hooks, tls_context
from arcanos_flows.client._output import DEFAULT_OUTPUT_RETRIES, OutputAttempts, check_output_options
from arcanos_flows.client._telemetry import request_span
from arcanos_flows.core.errors import InvalidReasoningInput
from arcanos_flows.core.metadata import MetadataValue
from arcanos_flows.core.pickling import register_sdk_exceptions
from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.incidents.notifier import MaintenanceNotifier

__all__ = ["ArcanosPythonClient"]

# The SDK errors this client re-raises (redacted by `scrub`) must survive pickling, class and attributes intact: a
# failed step's exception crosses processes (Dask workers) and goes into result storage pickled. Once per process.
register_sdk_exceptions()


class ArcanosPythonClient(ClientCore):
    """Runs reasoning on ``ARCANOS_FINE_TUNED_MODEL`` and nothing else.

    Construction fails fast on bad configuration (after reporting a ``configuration`` incident). Every
    failure of a call is classified, reported through the notifier, and the original exception is
    re-raised. With ``ARCANOS_REQUESTS_PER_MINUTE`` set, every HTTP attempt (SDK retries included) first
    waits for a slot of the process-wide :attr:`rate_limiter` (:mod:`arcanos_flows.core.ratelimit`).

    Args:
        settings: Settings to use; read from the environment and ``.env`` when omitted.
        notifier: Where incidents go; built from the same settings when omitted.

    Examples:
        >>> from arcanos_flows.testing import FakeOpenAIServer
        >>> with FakeOpenAIServer() as server:
        ...     settings = ArcanosSettings(openai_api_key="sk-test-0000", fine_tuned_model="ft:gpt-5.1:arcanos::x",
        ...                                openai_base_url=server.base_url, _env_file=None)
        ...     with ArcanosPythonClient(settings) as client:
        ...         result = client.run_reasoning([
        ...             {"role": "system", "content": "You are the Arcanos maintenance AI."},
        ...             {"role": "user", "content": "List the current confirmation layers."},
        ...         ], metadata={"intent": "audit"})
        >>> result["model"], result.metadata
        ('ft:gpt-5.1:arcanos::x', {'intent': 'audit'})
    """

    def __init__(self, settings: ArcanosSettings | None = None, *, notifier: MaintenanceNotifier | None = None) -> None:
        super().__init__(settings, notifier=notifier)
        factory = openai.AzureOpenAI if self._azure_sdk else openai.OpenAI
        self._openai: openai.OpenAI = factory(
            **self._sdk_options(),
            http_client=openai.DefaultHttpxClient(verify=tls_context(), event_hooks=event_hooks(self.rate_limiter)),
        )

    def __enter__(self) -> ArcanosPythonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._openai.close()

    def run_reasoning(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        metadata: Mapping[str, MetadataValue] | None = None,
        reasoning_effort: str | None = None,
        max_output_tokens: int | None = None,
        response_format: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        notify: bool = True,
        identity: Mapping[str, str | None] | None = None,
        model: None = None,
        output_type: Any = None,
        output_retries: int = DEFAULT_OUTPUT_RETRIES,
    ) -> ReasoningResult:
        """Ask the enforced model one question.

        Args:
            messages: Chat messages: ``role`` in system/developer/user/assistant, non-empty ``content``.
            metadata: Audit metadata; ``confirmation_token`` is added from settings unless given here.
                At most 16 keys in total, keys of at most 64 and values of at most 512 characters.
            reasoning_effort: ``none``, ``minimal``, ``low``, ``medium``, ``high`` or ``xhigh``.
            max_output_tokens: Output budget, reasoning included.
            response_format: Chat Completions ``response_format`` (translated for the Responses API).
            timeout: Seconds per HTTP attempt, overriding ``ARCANOS_REQUEST_TIMEOUT``.
            notify: Report failures through the notifier; ``False`` when the caller reports them (the incident
                is still built and attached to the exception, see :func:`arcanos_flows.incidents.attached_incident`).
            identity: Metadata keys naming where the call runs (the Prefect layer passes run ids); they count
                against the 16-key limit.
            model: Not accepted: every request uses ``ARCANOS_FINE_TUNED_MODEL``. Any value raises
                :class:`ModelEnforcementError`.
            output_type: A pydantic model (or any type pydantic validates): the request asks for a strict JSON
                schema of it, and ``result.output`` is the validated instance (``content`` stays the text).
            output_retries: With ``output_type``, how many times an answer that does not validate is asked again
                (the problem sent back to the model; every attempt is billed and counted in ``usage``).

        Returns:
            The typed result; ``result["content"]`` is the answer.

        Raises:
            InvalidReasoningInput: Bad messages, metadata or options, before any request.
            ModelEnforcementError: A model was passed, or another model answered.
            openai.APIError: What the SDK raised (rate limits, timeouts, 4xx/5xx), unchanged.
            UpstreamResponseError: A 2xx whose body is not a valid completion.
            EmptyCompletionError: No choices, or empty content.
            IncompleteCompletionError: The output budget ran out.
            RefusalError: The model refused.
            InvalidOutputError: With ``output_type``, no answer validated.
        """
        call = Call(messages, notify)
        try:
            spec = check_output_options(output_type, output_retries, response_format)
            options: dict[str, Any] = {
                "metadata": metadata,
                "reasoning_effort": reasoning_effort,
                "max_output_tokens": max_output_tokens,
                "response_format": spec.response_format if spec is not None else response_format,
                "timeout": timeout,
                "identity": identity,
                "model": model,
            }
            request = self._prepare(call, **options)
            if spec is None:
                return self._send(request)
            tries = OutputAttempts(spec, list(messages), output_retries)
            while (typed := tries.settle(self._send(request))) is None:
                request = self._prepare(Call(tries.messages, notify=False), **options)
            return typed
        except Exception as exc:
            self._report(exc, call)
            raise

    def run_simple_prompt(
        self,
        text: str,
        *,
        metadata: Mapping[str, MetadataValue] | None = None,
        system: str | None = None,
        notify: bool = True,
        identity: Mapping[str, str | None] | None = None,
        output_type: Any = None,
        output_retries: int = DEFAULT_OUTPUT_RETRIES,
    ) -> ReasoningResult:
        """Ask one user-turn question, optionally with a system message.

        Arguments other than ``text`` and ``system`` are those of :meth:`run_reasoning`.

        Examples:
            >>> from arcanos_flows.testing import FakeOpenAIServer
            >>> with FakeOpenAIServer() as server:
            ...     settings = ArcanosSettings(openai_api_key="sk-test-0000", fine_tuned_model="ft:gpt-5.1:a::x",
            ...                                openai_base_url=server.base_url, _env_file=None)
            ...     answer = ArcanosPythonClient(settings).run_simple_prompt("Status?")["content"]
            >>> bool(answer)
            True
        """
        try:
            messages = simple_prompt_messages(text, system)
        except InvalidReasoningInput as exc:
            self._report(exc, Call(None, notify))
            raise
        return self.run_reasoning(
            messages,
            metadata=metadata,
            notify=notify,
            identity=identity,
            output_type=output_type,
            output_retries=output_retries,
        )

    def _send(self, request: PreparedRequest) -> ReasoningResult:
        started = time.perf_counter()
        with request_span(request, self._openai.base_url) as span:
            if request.api == "chat":
                raw = self._openai.chat.completions.with_raw_response.create(**request.body, **request.options)
            else:
                raw = self._openai.responses.with_raw_response.create(**request.body, **request.options)
            result = self._result(request, raw, started)
            span.answered(result)
        warning = self._fallback_warning(request, result)
        if warning is not None:
            self._warn(warning)
        return result

    def _report(self, error: Exception, call: Call) -> None:
        incident = self._failed(error, call)
        if incident is not None:
            self._deliver(error, incident)
