"""Run, stop and load the CRM sandbox: the Salesforce and HubSpot emulators over HTTPS.

One background process serves both emulators (two uvicorn servers on 127.0.0.1, one event
loop) with state in ``<sandbox_dir>/sandbox.db``. Its files::

    <sandbox_dir>/sandbox.db          SQLite state of both CRMs (survives restarts)
    <sandbox_dir>/tls/                self-signed certificate made on first start
    <sandbox_dir>/credentials.json    the sandbox orgs' secrets (mode 0600, made on first start)
    <sandbox_dir>/sandbox.json        pid and URLs of the running process
    <sandbox_dir>/exports/web_tracking/  the web-tracking export (the 'file' source)

The admin endpoints under ``/__sandbox/`` (health, faults, stats) need the
``X-Sandbox-Admin`` header with ``admin_token`` from ``credentials.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "sandbox.json"
DB_FILE = "sandbox.db"
CREDENTIALS_FILE = "credentials.json"
WEB_TRACKING_DIR = Path("exports", "web_tracking")


class SandboxError(RuntimeError):
    """The sandbox cannot start, stop or answer; the message says what to do."""


@dataclass(frozen=True)
class SandboxInfo:
    """Where a running sandbox listens and how to talk to it."""

    directory: Path
    pid: int
    salesforce_url: str
    hubspot_url: str
    cert: Path
    credentials: dict[str, Any]

    @property
    def web_tracking_dir(self) -> Path:
        return self.directory / WEB_TRACKING_DIR

    def admin(self, method: str, system: str, path: str, payload: Any = None) -> Any:
        """Call an admin endpoint of one emulator (``system``: salesforce or hubspot)."""
        import requests

        base = self.salesforce_url if system == "salesforce" else self.hubspot_url
        with requests.Session() as session:
            session.trust_env = False
            response = session.request(
                method,
                f"{base}/__sandbox/{path}",
                json=payload,
                verify=str(self.cert),
                timeout=30,
                headers={"X-Sandbox-Admin": self.credentials["admin_token"]},
            )
        if response.status_code >= 300:
            raise SandboxError(
                f"sandbox admin {method} {path}: HTTP {response.status_code}: {response.text[:300]}"
            )
        return response.json() if response.content else None

    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """Replace the fault/limit configuration (both emulators share it)."""
        return self.admin("PUT", "salesforce", "faults", settings)

    def stats(self) -> dict[str, Any]:
        return self.admin("GET", "salesforce", "stats")

    def connection_env(self) -> dict[str, str]:
        """Environment variables that point the connectors at this sandbox (the CLI's way)."""
        sf, hs = self.credentials["salesforce"], self.credentials["hubspot"]
        return {
            "PROX_SALESFORCE_URL": self.salesforce_url,
            "PROX_SALESFORCE_CLIENT_ID": sf["client_id"],
            "PROX_SALESFORCE_CLIENT_SECRET": sf["client_secret"],
            "PROX_SALESFORCE_CA_BUNDLE": str(self.cert),
            "PROX_HUBSPOT_URL": self.hubspot_url,
            "PROX_HUBSPOT_ACCESS_TOKEN": hs["access_token"],
            "PROX_HUBSPOT_CA_BUNDLE": str(self.cert),
        }

    def airflow_connections(self, prefix: str = "prox") -> dict[str, str]:
        """``AIRFLOW_CONN_<PREFIX>_SALESFORCE`` / ``_HUBSPOT`` values (JSON) for this sandbox,
        the way DAGs receive credentials."""
        sf, hs = self.credentials["salesforce"], self.credentials["hubspot"]
        return {
            f"AIRFLOW_CONN_{prefix.upper()}_SALESFORCE": json.dumps(
                {
                    "conn_type": "http",
                    "host": self.salesforce_url,
                    "login": sf["client_id"],
                    "password": sf["client_secret"],
                    "extra": {"ca_bundle": str(self.cert)},
                }
            ),
            f"AIRFLOW_CONN_{prefix.upper()}_HUBSPOT": json.dumps(
                {
                    "conn_type": "http",
                    "host": self.hubspot_url,
                    "password": hs["access_token"],
                    "extra": {"ca_bundle": str(self.cert)},
                }
            ),
        }


# ---- files -----------------------------------------------------------------------------------------
def ensure_credentials(directory: Path) -> dict[str, Any]:
    """The sandbox orgs' secrets, generated once (random, never in code)."""
    path = directory / CREDENTIALS_FILE
    if path.is_file():
        return json.loads(path.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    creds = {
        "admin_token": secrets.token_urlsafe(24),
        "salesforce": {
            "client_id": "3MVG9" + secrets.token_urlsafe(30),
            "client_secret": secrets.token_hex(32),
            "username": "prox@sandbox.example",
            "password": secrets.token_urlsafe(16),
        },
        "hubspot": {
            "access_token": "pat-na1-" + str(secrets.token_hex(16)),
            "client_id": secrets.token_hex(18),
            "client_secret": secrets.token_hex(18),
            "refresh_token": "na1-" + secrets.token_hex(20),
        },
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(creds, handle, indent=2)
    os.replace(tmp, path)
    return creds


def open_store(directory: Path) -> Any:
    from sandbox.store import Store

    return Store(directory / DB_FILE)


# ---- loading a world ---------------------------------------------------------------------------------
def load_tables(directory: Path, raw_leads: Any, activities: Any, *, reset: bool = False) -> dict[str, int]:
    """Load canonical RAW_LEADS / ACTIVITIES rows into both CRMs and the web-tracking export.

    Records are upserted by id (a later load of the same lead replaces it), so a world can be
    loaded in slices to play "new data arriving". Loading bypasses the APIs' validation, as a
    data import into a real org would; dirty values arrive as the world made them.
    """
    import pyarrow.csv as pacsv

    from plugins.crm import fields as crm_views
    from sandbox.store import iso_ms

    store = open_store(directory)
    try:
        if reset:
            store.reset()
            shutil_rmtree(directory / WEB_TRACKING_DIR)
        leads = crm_views.sf_lead_records(raw_leads)
        store.put_records("salesforce", "Lead", [(r["Id"], None, _z(r["SystemModstamp"]), r) for r in leads])
        tasks, events = crm_views.sf_activity_records(activities)
        store.put_records("salesforce", "Task", [(r["Id"], None, _z(r["SystemModstamp"]), r) for r in tasks])
        store.put_records(
            "salesforce", "Event", [(r["Id"], None, _z(r["SystemModstamp"]), r) for r in events]
        )
        contacts = crm_views.hs_contact_records(raw_leads)
        store.put_records(
            "hubspot",
            "contacts",
            [(c["id"], int(c["id"]), c["properties"]["lastmodifieddate"], c) for c in contacts],
        )
        objects, hs_events = crm_views.hs_activity_records(activities)
        n_objects = 0
        for obj, records in objects.items():
            store.put_records(
                "hubspot",
                obj,
                [
                    (
                        r["id"],
                        int(r["id"]),
                        r["properties"]["hs_lastmodifieddate"],
                        {"id": r["id"], "properties": r["properties"]},
                    )
                    for r in records
                ],
            )
            store.put_assoc("hubspot", [(obj, r["id"], "contacts", r["contact"]) for r in records])
            n_objects += len(records)
        store.put_records(
            "hubspot",
            "events",
            [(e["id"], None, e["occurredAt"], {**e, "_modstamp": e["occurredAt"]}) for e in hs_events],
        )
        web = crm_views.web_tracking_rows(activities)
        if web.num_rows:
            # one file per load, named by load time (files are read in name order); the same
            # rows loaded again are not exported twice
            out_dir = directory / WEB_TRACKING_DIR
            out_dir.mkdir(parents=True, exist_ok=True)
            sink = io.BytesIO()
            pacsv.write_csv(web, sink)
            digest = hashlib.sha256(sink.getvalue()).hexdigest()[:12]
            if not any(out_dir.glob(f"web-tracking-*-{digest}.csv")):
                name = f"web-tracking-{iso_ms(_now()).replace(':', '').replace('.', '')}-{digest}.csv"
                tmp = out_dir / f".{name}.tmp"
                tmp.write_bytes(sink.getvalue())
                os.replace(tmp, out_dir / name)
        return {
            "salesforce_leads": len(leads),
            "salesforce_tasks": len(tasks),
            "salesforce_events": len(events),
            "hubspot_contacts": len(contacts),
            "hubspot_engagements": n_objects,
            "hubspot_events": len(hs_events),
            "web_tracking_rows": web.num_rows,
        }
    finally:
        store.close()


def load_world_dir(directory: Path, world_dir: Path, *, reset: bool = False) -> dict[str, int]:
    """Load a saved simulated world (``prox simulate`` output) into the sandbox."""
    from sandbox.world import load_world, world_exists

    if not world_exists(world_dir):
        raise SandboxError(f"no simulated world in {world_dir}; run `prox simulate` first")
    world = load_world(world_dir)
    return load_tables(directory, world.raw_leads, world.activities, reset=reset)


def _z(sf_datetime: str) -> str:
    return sf_datetime.replace("+0000", "Z")


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# ---- serving -----------------------------------------------------------------------------------------
def build_apps(directory: Path) -> tuple[Any, Any, Any, Any]:
    """(salesforce app, hubspot app, store, faults) sharing one store and one fault state."""
    from fastapi import Body
    from fastapi.responses import JSONResponse

    from sandbox import hubspot_api, salesforce_api
    from sandbox.faults import FaultConfig, Faults

    creds = ensure_credentials(directory)
    store = open_store(directory)
    faults = Faults(FaultConfig.from_dict(store.get_kv("faults", {})))
    sf = salesforce_api.create_app(store, faults, creds["salesforce"])
    hs = hubspot_api.create_app(store, faults, creds["hubspot"])
    admin = creds["admin_token"]

    for app in (sf, hs):

        @app.middleware("http")
        async def _admin_only(request: Any, call_next: Any) -> Any:
            if (
                request.url.path.startswith("/__sandbox/")
                and not request.url.path.startswith(("/__sandbox/docs", "/__sandbox/openapi"))
                and request.headers.get("x-sandbox-admin") != admin
            ):
                return JSONResponse({"error": "sandbox admin token required"}, status_code=401)
            return await call_next(request)

        @app.get("/__sandbox/health")
        async def _health() -> dict[str, Any]:
            return {"ok": True, "pid": os.getpid()}

        @app.put("/__sandbox/faults")
        async def _set_faults(payload: dict[str, Any] = Body(...)) -> Any:  # noqa: B008 - FastAPI idiom
            try:
                config = FaultConfig.from_dict(payload)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            store.set_kv("faults", config.to_dict())
            faults.configure(config)
            return config.to_dict()

        @app.get("/__sandbox/stats")
        async def _stats() -> dict[str, Any]:
            import datetime as dt

            day = dt.date.today().isoformat()
            return {
                "faults": dict(faults.counters),
                "usage": {
                    "salesforce": store.usage("salesforce", day),
                    "hubspot": store.usage("hubspot", day),
                },
                "write_requests": {s: store.write_requests(s) for s in ("salesforce", "hubspot")},
                "records": {
                    f"{s}.{o}": store.count(s, o)
                    for s, o in (
                        ("salesforce", "Lead"),
                        ("salesforce", "Task"),
                        ("salesforce", "Event"),
                        ("hubspot", "contacts"),
                        ("hubspot", "events"),
                    )
                },
            }

        @app.get("/__sandbox/writes/{system}/{obj}")
        async def _writes(system: str, obj: str) -> dict[str, int]:
            return store.write_counts(system, obj)

        @app.post("/__sandbox/reset-counters")
        async def _reset_counters() -> dict[str, bool]:
            store.clear_writes()
            store.reset_usage()
            faults.configure(faults.config)
            return {"ok": True}

    return sf, hs, store, faults


def serve(directory: Path, sf_port: int = 0, hs_port: int = 0) -> None:
    """Serve both emulators until SIGTERM/SIGINT; write ``sandbox.json`` once listening."""
    import uvicorn

    from sandbox.tls import ensure_certificate

    directory.mkdir(parents=True, exist_ok=True)
    pair = ensure_certificate(directory / "tls")
    sf_app, hs_app, store, _faults = build_apps(directory)

    def config(app: Any, port: int) -> uvicorn.Config:
        return uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(pair.cert),
            ssl_keyfile=str(pair.key),
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=2,
            lifespan="off",
        )

    servers = [uvicorn.Server(config(sf_app, sf_port)), uvicorn.Server(config(hs_app, hs_port))]

    async def main() -> None:
        tasks = [asyncio.create_task(s.serve()) for s in servers]
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):
                for t in tasks:
                    if t.done() and t.exception():
                        raise t.exception()  # type: ignore[misc]
                raise SandboxError("a sandbox server stopped during start-up (port in use?)")
            await asyncio.sleep(0.02)

        def stop(*_: Any) -> None:
            for s in servers:
                s.should_exit = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        ports = [s.servers[0].sockets[0].getsockname()[1] for s in servers]
        sf_app.state.sf.base_url = f"https://127.0.0.1:{ports[0]}"
        info = {
            "pid": os.getpid(),
            "salesforce_url": f"https://127.0.0.1:{ports[0]}",
            "hubspot_url": f"https://127.0.0.1:{ports[1]}",
            "cert": str(pair.cert),
        }
        tmp = directory / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, directory / STATE_FILE)
        await asyncio.gather(*tasks)

    try:
        asyncio.run(main())
    finally:
        store.close()
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            if json.loads((directory / STATE_FILE).read_text()).get("pid") == os.getpid():
                (directory / STATE_FILE).unlink()


# ---- control from other processes -------------------------------------------------------------------
def status(directory: Path) -> SandboxInfo | None:
    """The running sandbox of ``directory`` (None when none answers)."""
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if not _alive(int(data["pid"])):
        return None
    info = SandboxInfo(
        directory,
        int(data["pid"]),
        data["salesforce_url"],
        data["hubspot_url"],
        Path(data["cert"]),
        ensure_credentials(directory),
    )
    try:
        info.admin("GET", "salesforce", "health")
    except Exception:
        return None
    return info


def start(
    directory: Path,
    *,
    sf_port: int = 0,
    hs_port: int = 0,
    faults: dict[str, Any] | None = None,
    timeout: float = 30.0,
) -> SandboxInfo:
    """Start the sandbox process (or return the one already running) and wait until it answers."""
    from prox.settings import child_environ

    running = status(directory)
    if running is not None:
        if faults is not None:
            running.set_faults(**faults)
        return running
    directory.mkdir(parents=True, exist_ok=True)
    ensure_credentials(directory)
    if faults is not None:
        from sandbox.faults import FaultConfig

        store = open_store(directory)
        try:
            store.set_kv("faults", FaultConfig.from_dict(faults).to_dict())
        finally:
            store.close()
    with contextlib.suppress(FileNotFoundError):
        (directory / STATE_FILE).unlink()
    log = open(directory / "sandbox.log", "ab")  # noqa: SIM115 - handed to the child process
    cmd = [
        sys.executable,
        "-m",
        "sandbox.server",
        "serve",
        "--dir",
        str(directory),
        "--salesforce-port",
        str(sf_port),
        "--hubspot-port",
        str(hs_port),
    ]
    env = child_environ()
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (directory / "sandbox.log").read_text(errors="replace")[-800:]
            raise SandboxError(f"the sandbox exited during start-up (code {proc.returncode}): {tail}")
        info = status(directory)
        if info is not None and info.pid == proc.pid:
            return info
        time.sleep(0.05)
    proc.terminate()
    raise SandboxError(f"the sandbox did not answer within {timeout:.0f} s; see {directory / 'sandbox.log'}")


def stop(directory: Path, *, timeout: float = 15.0) -> bool:
    """Stop the sandbox started from ``directory``; False if none was running."""
    path = directory / STATE_FILE
    if not path.is_file():
        return False
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except (json.JSONDecodeError, KeyError, ValueError):
        path.unlink(missing_ok=True)
        return False
    if not _alive(pid):
        path.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def running(directory: Path, **kwargs: Any) -> Iterator[SandboxInfo]:
    """Start a sandbox for the duration of a block (stopping it only if this block started it)."""
    was_running = status(directory) is not None
    info = start(directory, **kwargs)
    try:
        yield info
    finally:
        if not was_running:
            stop(directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.server")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("serve", help="serve both emulators in the foreground")
    run.add_argument("--dir", type=Path, required=True)
    run.add_argument("--salesforce-port", type=int, default=0)
    run.add_argument("--hubspot-port", type=int, default=0)
    args = parser.parse_args(argv)
    serve(args.dir, args.salesforce_port, args.hubspot_port)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
