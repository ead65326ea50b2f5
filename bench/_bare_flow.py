"""The baseline of an ad-hoc run: a bare Prefect flow with one trivial task, run as a fresh process.

``python -m bench._bare_flow`` is what ``arcanos-flows run research`` is compared with: the same Prefect settings
(temporary server or ``PREFECT_API_URL``), the least a Prefect run can cost.
"""

from __future__ import annotations

from prefect import flow, task


@task
def trivial() -> int:
    return 1


@flow(name="bench-bare")
def bare() -> int:
    return trivial()


if __name__ == "__main__":
    bare()
