"""What the DAG files share inside their tasks: the run's context, halting, mapped results.

Light at import (the DAG files import it at parse time); Airflow and the jobs are imported
inside the functions, which only run inside a task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def task_context() -> tuple[Any, Any, dict[str, Any]]:
    """``(Settings, the run's logical moment, the DAG params)`` of the running task."""
    from airflow.sdk import get_current_context

    from prox.settings import Settings

    ctx = get_current_context()
    moment = ctx.get("logical_date") or ctx["dag_run"].run_after
    return Settings.from_env(), moment, ctx["params"] | {"run_id": ctx["run_id"]}


def halting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a step; a deliberate stop (:class:`pipelines.common.PipelineHalted`: a gate, drift,
    missing credentials) fails the task without retries, with the step's message."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.common import PipelineHalted

    try:
        return fn(*args, **kwargs)
    except PipelineHalted as exc:
        raise AirflowFailException(str(exc)) from None


def mapped_items(mapped: Any) -> list[Any]:
    """The values of a mapped task's XComs; a failed or skipped map index leaves nothing."""
    if mapped is None:
        return []
    return [mapped[i] for i in range(len(mapped)) if mapped[i] is not None]


def fail_run(message: str) -> None:
    """Fail the running task without retries (the run's report is already written)."""
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)
