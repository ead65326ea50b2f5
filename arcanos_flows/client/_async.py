"""The async twin of :class:`~arcanos_flows.client.ArcanosPythonClient`, for event loops; no Prefect either.

The contract is the sync client's (one model, the same checks before any request, the same errors, results and
incidents); what it shares with it lives in :mod:`arcanos_flows.client._base`. This module keeps the
non-blocking I/O: the request goes through ``openai.AsyncOpenAI``, the rate limiter is awaited, and incidents
are delivered by the (blocking) notifier in a worker thread, so a slow or unreachable webhook never stalls the
other coroutines of the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import openai

from arcanos_flows.client._base import Call, ClientCore, PreparedRequest, simple_prompt_messages
from arcanos_flows.client._http import async_event_hooks, tls_context
from arcanos_flows.client._output import DEFAULT_OUTPUT_RETRIES, OutputAttempts, check_output_options
from arcanos_flows.client._telemetry import request_span
from arcanos_flows.core.errors import InvalidReasoningInput
from arcanos_flows.core.metadata import MetadataValue
from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.incidents.notifier import MaintenanceNotifier

__all__ = ["AsyncArcanosClient"]


class AsyncArcanosClient(ClientCore):
    """Runs reasoning on ``ARCANOS_FINE_TUNED_MODEL`` and nothing else, from coroutines.

    Calls behave as :class:`~arcanos_flows.client.ArcanosPythonClient`'s and may run concurrently
    (``asyncio.gather``) on one client, which builds one SDK client and reuses its connections. A failure is
    classified, its incident attached to the exception and delivered through the notifier in a worker thread
    (the call awaits the delivery, the event loop does not), and the original exception is re-raised. With
    ``ARCANOS_REQUESTS_PER_MINUTE`` set, every HTTP attempt awaits a slot of the same process-wide
    :attr:`rate_limiter` that sync clients sleep on. Construction is synchronous, like the sync client's: bad
    configuration raises at once, after reporting its ``configuration`` incident. Use a client from one event
    loop: its connections belong to the loop that opened them.

    Args:
        settings: Settings to use; read from the environment and ``.env`` when omitted.
        notifier: Where incidents go; built from the same settings when omitted.

    Examples:
        >>> import asyncio
        >>> from arcanos_flows.testing import FakeOpenAIServer
        >>> async def audit(settings: ArcanosSettings) -> ReasoningResult:
        ...     async with AsyncArcanosClient(settings) as client:
        ...         return await client.run_reasoning([
        ...             {"role": "system", "content": "You are the Arcanos maintenance AI."},
        ...             {"role": "user", "content": "List the current confirmation layers."},
        ...         ], metadata={"intent": "audit"})
        >>> with FakeOpenAIServer() as server:
        ...     settings = ArcanosSettings(openai_api_key="sk-test-0000", fine_tuned_model="ft:gpt-5.1:arcanos::x",
        ...                                openai_base_url=server.base_url, _env_file=None)
        ...     result = asyncio.run(audit(settings))
        >>> result["model"], result.metadata
        ('ft:gpt-5.1:arcanos::x', {'intent': 'audit'})
    """

    def __init__(self, settings: ArcanosSettings | None = None, *, notifier: MaintenanceNotifier | None = None) -> None:
        super().__init__(settings, notifier=notifier)
        factory = openai.AsyncAzureOpenAI if self._azure_sdk else openai.AsyncOpenAI
        self._openai: openai.AsyncOpenAI = factory(
            **self._sdk_options(),
            http_client=openai.DefaultAsyncHttpxClient(
                verify=tls_context(), event_hooks=async_event_hooks(self.rate_limiter)
            ),
        )

    async def __aenter__(self) -> AsyncArcanosClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._openai.close()

    async def run_reasoning(
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
        """Ask the enforced model one question (``output_type=`` for a validated, typed answer).

        Arguments, result and exceptions are those of :meth:`ArcanosPythonClient.run_reasoning
        <arcanos_flows.client.ArcanosPythonClient.run_reasoning>`: bad input raises
        :class:`~arcanos_flows.errors.InvalidReasoningInput` before any request, ``model=`` and another model
        answering raise :class:`~arcanos_flows.errors.ModelEnforcementError`, SDK errors come through unchanged.

        Examples:
            >>> import asyncio
            >>> from arcanos_flows.testing import FakeOpenAIServer
            >>> with FakeOpenAIServer() as server:
            ...     settings = ArcanosSettings(openai_api_key="sk-test-0000", fine_tuned_model="ft:gpt-5.1:a::x",
            ...                                openai_base_url=server.base_url, _env_file=None)
            ...     client = AsyncArcanosClient(settings)
            ...     question = [{"role": "user", "content": "Status?"}]
            ...     async def ask_twice() -> list[ReasoningResult]:
            ...         async with client:
            ...             return await asyncio.gather(*(client.run_reasoning(question) for _ in range(2)))
            ...     results = asyncio.run(ask_twice())
            >>> [result.attempts for result in results]
            [1, 1]
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
                return await self._send(request)
            tries = OutputAttempts(spec, list(messages), output_retries)
            while (typed := tries.settle(await self._send(request))) is None:
                request = self._prepare(Call(tries.messages, notify=False), **options)
            return typed
        except Exception as exc:
            await self._report(exc, call)
            raise

    async def run_simple_prompt(
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
            >>> import asyncio
            >>> from arcanos_flows.testing import FakeOpenAIServer
            >>> async def status(settings: ArcanosSettings) -> str:
            ...     async with AsyncArcanosClient(settings) as client:
            ...         return (await client.run_simple_prompt("Status?", system="Be terse."))["content"]
            >>> with FakeOpenAIServer() as server:
            ...     settings = ArcanosSettings(openai_api_key="sk-test-0000", fine_tuned_model="ft:gpt-5.1:a::x",
            ...                                openai_base_url=server.base_url, _env_file=None)
            ...     answer = asyncio.run(status(settings))
            >>> bool(answer)
            True
        """
        try:
            messages = simple_prompt_messages(text, system)
        except InvalidReasoningInput as exc:
            await self._report(exc, Call(None, notify))
            raise
        return await self.run_reasoning(
            messages,
            metadata=metadata,
            notify=notify,
            identity=identity,
            output_type=output_type,
            output_retries=output_retries,
        )

    async def _send(self, request: PreparedRequest) -> ReasoningResult:
        started = time.perf_counter()
        with request_span(request, self._openai.base_url) as span:
            if request.api == "chat":
                raw = await self._openai.chat.completions.with_raw_response.create(**request.body, **request.options)
            else:
                raw = await self._openai.responses.with_raw_response.create(**request.body, **request.options)
            result = self._result(request, raw, started)
            span.answered(result)
        warning = self._fallback_warning(request, result)
        if warning is not None:
            # Delivered in a worker thread, as failures are: the notifier blocks.
            await asyncio.to_thread(self._warn, warning)
        return result

    async def _report(self, error: Exception, call: Call) -> None:
        incident = self._failed(error, call)
        if incident is not None:
            # The notifier blocks (HTTP, retries, backoff): a thread delivers while other coroutines run.
            await asyncio.to_thread(self._deliver, error, incident)
