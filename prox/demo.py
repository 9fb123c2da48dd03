"""``prox demo``: the main job on embedded defaults.

For now it simulates the CRM world (if there is none yet) and summarises it; the nightly
pipeline (sandbox CRMs, validation, features, scoring, push-back) joins it as it lands.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job on embedded defaults (what `make demo` runs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prox.settings import Settings
    from sandbox.world import WorldSpec, world_exists, write_world

    settings = Settings.from_env().ensure_dirs()
    if world_exists(settings.world_dir):
        summary = json.loads((settings.world_dir / "spec.json").read_text())["summary"]
        print(f"Using the simulated world in {settings.world_dir}")
    else:
        spec = WorldSpec(n_leads=settings.demo_leads, days=settings.demo_days, seed=settings.seed,
                         crm_split=settings.crm_split, dirt_rate=settings.dirt_rate)
        print(f"Simulating a world of {spec.n_leads:,} leads over {spec.days} days into {settings.world_dir}")
        summary = write_world(spec, settings.world_dir)
    print(
        f"World: {summary['leads']:,} leads ({', '.join(f'{k} {v:,}' for k, v in summary['by_crm'].items())}), "
        f"{summary['events']:,} engagement events, {summary['converted']:,} converted "
        f"({summary['conversion_rate']:.1%}), {summary['start'][:10]} to {summary['end'][:10]}"
    )
    return 0
