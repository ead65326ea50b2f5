"""Exceptions that survive pickling: from a Dask or process-pool worker back to the flow, and into result storage.

Prefect hands a failed step's exception from a worker to the flow pickled, and writes a failed run's exception to
result storage pickled. An exception pickles as its class, its ``args`` and its ``__dict__``, and is rebuilt by
calling ``cls(*args)``: a class whose ``__init__`` wants anything else (keyword-only arguments, or the ``response``
and ``body`` of the OpenAI SDK's ``APIStatusError``) cannot be rebuilt, and the flow gets a ``TypeError`` in place of
the failure, and of the incident attached to it.

:func:`reduce_exception` rebuilds an exception the way :mod:`copyreg` rebuilds plain objects: ``cls.__new__(cls,
*args)`` (the standard library's ``copyreg.__newobj__``), then its ``__dict__`` restored, without calling
``__init__``. The class, the ``args`` (hence ``str()``) and every attribute survive: ``status_code``,
``request_id``, ``body``, the redacted ``request`` and ``response`` of an SDK error, the incident attached by
:func:`arcanos_flows.incidents.attach_incident`. Like any pickled exception, it loses ``__cause__``,
``__context__`` and ``__traceback__``.

The project's exceptions use it as their ``__reduce__``. The SDK's are not ours to change, so
:func:`register_sdk_exceptions` registers it with :func:`copyreg.pickle`, the standard library's documented way to
pickle instances of classes one does not own, for the SDK's exact exception classes. Why ``copyreg`` rather than a
``__reduce_ex__`` set on each raised instance (pickle does look it up on the instance, but only when the dispatch table
has no entry for the class): the registration adds no attribute to the exception (``vars()``, scrubbing and leak scans
see what the SDK made), is honoured alike by :mod:`pickle`, ``cloudpickle`` (Prefect's result storage, Dask) and
:mod:`copy`, applies to the exact classes registered and not to subclasses a user defines, and leaves the SDK's classes
untouched. The pickled stream names only ``copyreg.__newobj__`` and the SDK's class: the process that loads it needs no
registration. A class that defines its own ``__reduce__`` (a later SDK release) is left alone.

The dispatch table is process-wide and the last registration wins. ``import distributed`` (Dask) registers ``tblib``'s
reducer for every exception class that exists at that moment, and that reducer pickles ``__cause__``, ``__context__``
and the traceback too: the SDK's status errors keep, as their (suppressed) ``__context__``, the HTTP client's error with
the original request, ``Authorization`` header and API key included. Hence :func:`keep_picklable`, which re-asserts
this module's reduction for one exception's class; the Prefect task hook calls it for the failure it hands over (to the
flow, across a process boundary, or to result storage).
"""

from __future__ import annotations

import copyreg
import sys
import threading
from typing import Any

__all__ = ["keep_picklable", "reduce_exception", "register_sdk_exceptions"]

_lock = threading.Lock()


def reduce_exception(error: BaseException) -> tuple[Any, ...]:
    """The pickle reduction of an exception that keeps its class, ``args`` and attributes, without ``__init__``.

    Args:
        error: The exception to pickle.

    Returns:
        ``(copyreg.__newobj__, (type(error), *error.args), attributes)``, what ``__reduce__`` returns.

    Examples:
        >>> import copy  # rebuilds through __reduce__, as pickle does
        >>> class Refused(Exception):
        ...     def __init__(self, message, *, status):
        ...         super().__init__(message)
        ...         self.status = status
        ...     __reduce__ = reduce_exception
        >>> clone = copy.deepcopy(Refused("no", status=403))
        >>> type(clone).__name__, str(clone), clone.status
        ('Refused', 'no', 403)
    """
    # typeshed does not declare copyreg.__newobj__, which pickle's protocol 2 itself names (the NEWOBJ opcode).
    return (copyreg.__newobj__, (type(error), *error.args), dict(vars(error)))  # type: ignore[attr-defined]


def _defines_its_own_reduction(cls: type[BaseException]) -> bool:
    return cls.__reduce__ is not BaseException.__reduce__ or cls.__reduce_ex__ is not BaseException.__reduce_ex__


def _is_sdk_class(cls: type[BaseException]) -> bool:
    return cls.__module__.split(".")[0] == "openai" and not _defines_its_own_reduction(cls)


def _claim(classes: list[type[BaseException]]) -> int:
    count = 0
    with _lock:
        for cls in classes:
            if copyreg.dispatch_table.get(cls) is not reduce_exception:
                copyreg.pickle(cls, reduce_exception)
                count += 1
    return count


def register_sdk_exceptions() -> int:
    """Make the OpenAI SDK's exceptions picklable in this process (idempotent, thread-safe).

    Registers :func:`reduce_exception` with :func:`copyreg.pickle` for every exception class the ``openai`` package
    defines (``APIStatusError`` and its subclasses, ``APIConnectionError``, ``APITimeoutError``...) that has no
    reduction of its own, in place of whatever another library registered for them since. Does nothing when ``openai``
    was never imported (no SDK exception can exist then); the client calls it when it is imported.

    Returns:
        How many classes this call (re)registered (0 when all were registered already).

    Examples:
        >>> import pickle, httpx2, openai
        >>> _ = register_sdk_exceptions()
        >>> request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")
        >>> error = openai.AuthenticationError(
        ...     "Incorrect API key provided", body=None,
        ...     response=httpx2.Response(401, headers={"x-request-id": "req_1"}, request=request),
        ... )
        >>> copy = pickle.loads(pickle.dumps(error))
        >>> type(copy).__name__, copy.status_code, copy.request_id, str(copy)
        ('AuthenticationError', 401, 'req_1', 'Incorrect API key provided')
        >>> register_sdk_exceptions()
        0
    """
    openai = sys.modules.get("openai")
    if openai is None:
        return 0
    found: list[type[BaseException]] = []
    pending: list[type[BaseException]] = [openai.OpenAIError]
    while pending:
        cls = pending.pop()
        if cls.__module__.split(".")[0] == "openai" and cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return _claim([cls for cls in found if not _defines_its_own_reduction(cls)])


def keep_picklable(error: BaseException) -> None:
    """Re-assert :func:`reduce_exception` for this exception's class, if it is the SDK's or the project's.

    Call it where an exception is handed over pickled (a task's failure going back to the flow or into result
    storage): a library imported since the client may have registered another reduction for the class (``import
    distributed`` does, for every exception class), one that pickles the exception's chain with the secrets in it.
    Other exceptions are left alone.

    Examples:
        >>> import copyreg, openai
        >>> copyreg.pickle(openai.RateLimitError, lambda error: (RuntimeError, (str(error),)))  # a library's
        >>> keep_picklable(openai.RateLimitError.__new__(openai.RateLimitError, "slow down"))
        >>> copyreg.dispatch_table[openai.RateLimitError] is reduce_exception
        True
    """
    cls = type(error)
    if _is_sdk_class(cls) or cls.__reduce__ is reduce_exception:  # the project's exceptions use it as __reduce__
        _claim([cls])
