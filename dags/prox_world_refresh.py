"""
### ProX: refresh the simulated CRM world

Draws a new simulated world (leads, engagement, status history and hidden truth) into the
data directory, for the CRM sandbox, demos and benchmarks. Triggered by hand with the size,
history length and seed as parameters; the same parameters always give the same world, so
a rerun rewrites identical files.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task


@dag(
    dag_id="prox_world_refresh",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["prox", "sandbox"],
    doc_md=__doc__,
    default_args={"owner": "prox", "retries": 2, "retry_delay": dt.timedelta(minutes=1)},
    params={
        "leads": Param(20_000, type="integer", minimum=1, description="number of leads"),
        "days": Param(540, type="integer", minimum=1, description="days of history"),
        "seed": Param(7, type="integer", minimum=0, description="random seed"),
        "end": Param("2026-11-01", type="string", format="date", description="last day observed"),
    },
)
def prox_world_refresh():
    @task
    def simulate(params: dict | None = None) -> dict:
        """Write the world into the data directory; returns its summary (small, for XCom)."""
        from prox.settings import Settings
        from sandbox.world import WorldSpec, write_world

        settings = Settings.from_env().ensure_dirs()
        spec = WorldSpec(
            n_leads=int(params["leads"]),
            days=int(params["days"]),
            seed=int(params["seed"]),
            end=dt.date.fromisoformat(params["end"]),
            crm_split=settings.crm_split,
            dirt_rate=settings.dirt_rate,
        )
        return {"out": str(settings.world_dir), **write_world(spec, settings.world_dir)}

    simulate()


prox_world_refresh()
