"""``prox sandbox up|down|status|load``: run the CRM sandbox (HTTPS emulators of Salesforce
and HubSpot) on this machine, and load a simulated world into it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prox.cli import UsageError, non_negative_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sandbox",
        help="start, stop, inspect or load the CRM sandbox (Salesforce and HubSpot emulators)",
        description="The CRM sandbox: HTTPS emulators of the Salesforce and HubSpot APIs ProX uses, "
        "with state under <data dir>/sandbox.",
    )
    sub = p.add_subparsers(dest="action", metavar="<action>", required=True)
    up = sub.add_parser("up", help="start the sandbox in the background (loads the world if it is empty)")
    up.add_argument("--salesforce-port", type=non_negative_int, default=0, help="port (default: a free one)")
    up.add_argument("--hubspot-port", type=non_negative_int, default=0, help="port (default: a free one)")
    up.add_argument(
        "--faults",
        default=None,
        help='fault/limit settings as JSON, e.g. \'{"error_rate": 0.1, "hubspot_rate_limit": 190}\'',
    )
    up.add_argument(
        "--no-load", action="store_true", help="do not load the simulated world into an empty sandbox"
    )
    up.set_defaults(func=run_up)
    down = sub.add_parser("down", help="stop the sandbox")
    down.set_defaults(func=run_down)
    status = sub.add_parser(
        "status", help="print where the sandbox listens and how to connect (exit 1 if down)"
    )
    status.add_argument(
        "--env", action="store_true", help="print the connectors' environment variables (secrets!)"
    )
    status.set_defaults(func=run_status)
    load = sub.add_parser("load", help="load a simulated world into the sandbox")
    load.add_argument("--world", type=Path, default=None, help="world directory (default <data dir>/world)")
    load.add_argument("--reset", action="store_true", help="forget the sandbox's records first")
    load.set_defaults(func=run_load)


def _settings():
    from prox.settings import Settings

    return Settings.from_env()


def run_up(args: argparse.Namespace) -> int:
    from sandbox import server

    settings = _settings().ensure_dirs()
    faults = None
    if args.faults:
        try:
            faults = json.loads(args.faults)
            from sandbox.faults import FaultConfig

            FaultConfig.from_dict(faults)
        except (json.JSONDecodeError, ValueError, TypeError) as exc:
            raise UsageError(f"--faults: {exc}") from None
    directory = settings.sandbox_dir
    store_file = directory / server.DB_FILE
    empty = not store_file.exists()
    if empty and not args.no_load:
        from sandbox.world import world_exists

        if world_exists(settings.world_dir):
            counts = server.load_world_dir(directory, settings.world_dir)
            print(f"loaded the world from {settings.world_dir}: {json.dumps(counts)}")
    try:
        info = server.start(directory, sf_port=args.salesforce_port, hs_port=args.hubspot_port, faults=faults)
    except server.SandboxError as exc:
        raise UsageError(str(exc)) from None
    _print(info)
    return 0


def run_down(args: argparse.Namespace) -> int:
    from sandbox import server

    stopped = server.stop(_settings().sandbox_dir)
    print("sandbox stopped" if stopped else "sandbox was not running")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from sandbox import server

    info = server.status(_settings().sandbox_dir)
    if info is None:
        print("sandbox is not running (start it with `prox sandbox up`)")
        return 1
    _print(info)
    stats = info.stats()
    print(f"records: {json.dumps(stats['records'])}")
    print(f"API calls today: {json.dumps(stats['usage'])}")
    if args.env:
        for key, value in info.connection_env().items():
            print(f"export {key}={value}")
    return 0


def run_load(args: argparse.Namespace) -> int:
    from sandbox import server

    settings = _settings().ensure_dirs()
    world_dir = args.world or settings.world_dir
    try:
        counts = server.load_world_dir(settings.sandbox_dir, world_dir, reset=args.reset)
    except server.SandboxError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps(counts, indent=2))
    return 0


def _print(info) -> None:
    print(f"sandbox running (pid {info.pid})")
    print(f"  Salesforce: {info.salesforce_url}")
    print(f"  HubSpot:    {info.hubspot_url}")
    print(f"  certificate: {info.cert}")
    print(f"  credentials: {info.directory / 'credentials.json'} (`prox sandbox status --env` prints them)")
