"""The counters of the fake OpenAI server (``GET /_stats``): requests received, answers by status, and the like.

Counted where the server records a request and where it answers, so they count what reached it and
what it answered, whatever the client believes; another process reads them as JSON at ``/_stats``.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from arcanos_flows.testing._replies import RecordedRequest
from arcanos_flows.testing._routes import is_completion_path, normalized_path

__all__ = ["Stats"]


class Stats:
    """The counters of ``GET /_stats`` (guarded by the server).

    Examples:
        >>> stats = Stats()
        >>> stats.answered(None, rate_limited=False)
        >>> stats.snapshot()["dropped"], stats.snapshot()["requests"]
        (1, 0)
    """

    def __init__(self) -> None:
        self.requests = 0
        self.completions = 0
        self.rate_limited = 0
        self.dropped = 0
        self.statuses: Counter[int] = Counter()
        self.paths: Counter[str] = Counter()
        self.first_request_at: float | None = None
        self.last_request_at: float | None = None

    def received(self, request: RecordedRequest) -> None:
        """Count a request as it arrives (the server does not count ``/_stats`` itself)."""
        path = normalized_path(request.path)
        now = time.time()
        self.requests += 1
        self.paths[path] += 1
        if request.method == "POST" and is_completion_path(path):
            self.completions += 1
        if self.first_request_at is None:
            self.first_request_at = now
        self.last_request_at = now

    def answered(self, status: int | None, *, rate_limited: bool) -> None:
        """Count an answer by its status (``None``: the connection was dropped), and 429s of the rate limit."""
        if status is None:
            self.dropped += 1
        else:
            self.statuses[status] += 1
        if rate_limited:
            self.rate_limited += 1

    def snapshot(self) -> dict[str, Any]:
        """Return the counters as ``GET /_stats`` answers them (without ``requests_per_minute``)."""
        return {
            "requests": self.requests,
            "completions": self.completions,
            "rate_limited": self.rate_limited,
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "dropped": self.dropped,
            "paths": dict(sorted(self.paths.items())),
            "first_request_at": self.first_request_at,
            "last_request_at": self.last_request_at,
        }
