"""The core: what every layer speaks, and no Prefect.

Settings (:mod:`~arcanos_flows.core.settings`), the exceptions and their incident classes
(:mod:`~arcanos_flows.core.errors`), messages and options (:mod:`~arcanos_flows.core.messages`), request metadata
(:mod:`~arcanos_flows.core.metadata`), results and usage (:mod:`~arcanos_flows.core.results`), secret redaction
(:mod:`~arcanos_flows.core.redaction`), the request rate limiter (:mod:`~arcanos_flows.core.ratelimit`) and the
wire protocol to the OpenAI-compatible upstream (:mod:`~arcanos_flows.core.upstream`). The public names are
re-exported by :mod:`arcanos_flows`; nothing here imports the layers above (incidents, client, prefect, flows, cli).
"""
