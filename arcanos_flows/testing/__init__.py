"""Test doubles for running flows offline: a fake OpenAI API and a webhook receiver.

Both are real HTTP servers on 127.0.0.1 (a random port by default) running in a background thread,
so the code under test talks HTTP exactly as in production. They are also runnable as processes:
``python -m arcanos_flows.testing openai`` and ``python -m arcanos_flows.testing webhook``. The fake
OpenAI server answers by arrival order (``script``) or by what a request asks (``reply_when``), can
enforce a requests-per-minute limit (``requests_per_minute=``, ``--rpm``), and serves its counters
at ``GET /_stats``. It also keeps files and runs batches (``server.files``, ``server.batches``: a
:class:`FileStore` and :class:`BatchControls` that scripts failed rows, other models, expiry and failed
validation).

Examples:
    >>> from arcanos_flows.testing import FakeOpenAIServer, Reply
    >>> with FakeOpenAIServer() as server:
    ...     server.script(Reply.error(500))
    ...     server.base_url.startswith("http://127.0.0.1:")
    True
"""

from arcanos_flows.testing._batches import BatchControls
from arcanos_flows.testing._files import FileStore, StoredFile
from arcanos_flows.testing.openai_server import FakeOpenAIServer, RecordedRequest, Reply
from arcanos_flows.testing.webhook_receiver import Delivery, WebhookReceiver

__all__ = [
    "BatchControls",
    "Delivery",
    "FakeOpenAIServer",
    "FileStore",
    "RecordedRequest",
    "Reply",
    "StoredFile",
    "WebhookReceiver",
]
