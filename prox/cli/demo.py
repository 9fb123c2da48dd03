"""``prox demo``: the main job on embedded defaults (what ``make demo`` runs).

The composition root of the demo: the sandbox's world and servers are chosen here and handed
to :func:`pipelines.demo.run_demo`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from typing import Any

from prox.settings import Settings, export_environ


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job on embedded defaults (what `make demo` runs)")
    p.add_argument("--retrain", action="store_true", help="retrain even if a champion exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    settings = Settings.from_env().ensure_dirs()
    return run_demo(
        settings, ensure_world=ensure_world, running_sandbox=running_sandbox, retrain=args.retrain
    )


def ensure_world(settings: Settings) -> dict:
    from sandbox.world import WorldSpec, world_exists, write_world

    if world_exists(settings.world_dir):
        return json.loads((settings.world_dir / "spec.json").read_text())["summary"]
    spec = WorldSpec(
        n_leads=settings.demo_leads,
        days=settings.demo_days,
        seed=settings.seed,
        crm_split=settings.crm_split,
        dirt_rate=settings.dirt_rate,
    )
    print(f"Simulating a world of {spec.n_leads:,} leads over {spec.days} days into {settings.world_dir} ...")
    return write_world(spec, settings.world_dir)


@contextlib.contextmanager
def running_sandbox(settings: Settings) -> Iterator[Any]:
    """The CRM sandbox with the world loaded, its credentials in the environment; stopped after
    if this call started it."""
    from sandbox import server

    already = server.status(settings.sandbox_dir)
    # ProX is for medium and large companies: their HubSpot portals are Pro/Enterprise, whose
    # real limit is 190 requests per 10 s (the sandbox's default is the Free/Starter 100)
    info = already or server.start(settings.sandbox_dir, faults={"hubspot_rate_limit": 190})
    try:
        marker = settings.sandbox_dir / "loaded-world.json"
        world_spec = (settings.world_dir / "spec.json").read_text()
        if not marker.is_file() or marker.read_text() != world_spec:
            counts = server.load_world_dir(settings.sandbox_dir, settings.world_dir, reset=True)
            marker.write_text(world_spec)
            print(f"Loaded the world into the CRM sandbox: {counts}")
        export_environ({**info.connection_env(), "PROX_WEB_TRACKING_DIR": str(info.web_tracking_dir)})
        yield info
    finally:
        if already is None:
            server.stop(settings.sandbox_dir)
