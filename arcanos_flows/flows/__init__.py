"""The bundled flows, built on :mod:`arcanos_flows.prefect`: research, the maintenance check, the incident relay.

Each is deployable from ``prefect.yaml`` through the entrypoints in the repository's ``flows/`` folder, and
re-exported (lazily) by :mod:`arcanos_flows.prefect`. A new flow gets a module here, or a subpackage when it has
report models, prompts and artifacts of its own (as :mod:`~arcanos_flows.flows.research` does).
"""
