"""The FastAPI app: /v1/score, /v1/events, /v1/admin/reload, /healthz, /readyz, /metrics.

Built by :func:`create_app` (tests, the benchmark) or :func:`app_from_env` (uvicorn
``--factory``, ``prox serve``). Endpoints are ``async`` and run their (short, CPU-bound)
work on the event loop: one SQLite connection, no thread hop per request. Scoring goes
through a :class:`serve.batching.Coalescer`: the requests that arrive together share
one pass of the feature code and one booster call (a lone request is not delayed). Loading a
new champion runs in a thread, so scoring goes on meanwhile with the old one.

Logs hold counts, versions and error types only: no lead fields, no tokens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import threading
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from features.build import FeatureInputError
from features.eligibility import ineligible_field, is_eligible
from features.online import OnlineInput
from prox.settings import Settings
from serve.auth import TokenStore, allowed
from serve.batching import Coalescer
from serve.metrics import Metrics
from serve.model import ModelHolder
from serve.online import open_state, prune_forever
from serve.push import PushWorker
from serve.schemas import EventsRequest, EventsResponse, ScoreRequest, ScoreResponse
from serve.scoring import ScoreJob, run_jobs
from serve.store import OnlineStore

log = logging.getLogger(__name__)
# the Settings defaults, so a config built directly matches one read from the environment
DEFAULT_MAX_BODY: int = Settings.model_fields["serve_max_body_bytes"].default
DEFAULT_MAX_BATCH: int = Settings.model_fields["serve_max_batch"].default


@dataclass
class ServeConfig:
    """Everything the app needs; :meth:`from_env` reads PROX_* / PROX_SERVE_* variables."""

    tracking_uri: str
    model_name: str
    data_dir: Path
    state_path: Path
    tokens: TokenStore
    alias: str = "champion"
    poll_seconds: float = 0.0
    max_body_bytes: int = DEFAULT_MAX_BODY
    synchronous: str = "FULL"
    push: bool = True
    consent_policy: str = "opt_in"
    online_state: str = "sqlite"  # or "redis" (PROX_ONLINE_STATE, PROX_REDIS_URL)
    redis_url: str = ""
    prune_hours: float = 24.0  # events past every feature window are deleted this often (0: never)
    max_batch: int = DEFAULT_MAX_BATCH  # leads scored in one pass at most (PROX_SERVE_MAX_BATCH)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeConfig:
        """From :class:`prox.settings.Settings` read from ``environ`` (default: the process's)."""

        settings = Settings.from_env(environ)
        return cls(
            tracking_uri=settings.tracking_uri,
            model_name=settings.model_name,
            data_dir=settings.data_dir,
            state_path=settings.serve_state_path,
            tokens=TokenStore.load(settings.serve_token_path, tokens=settings.serve_tokens),
            alias=settings.serve_alias,
            poll_seconds=settings.serve_poll_seconds,
            max_body_bytes=settings.serve_max_body_bytes,
            synchronous=settings.serve_sync,
            push=settings.serve_push,
            consent_policy=settings.consent_policy,
            online_state=settings.online_state,
            redis_url=settings.redis_url,
            prune_hours=settings.serve_prune_hours,
            max_batch=settings.serve_max_batch,
        )

    def open_state(self) -> OnlineStore:
        """A connection to the configured online state (one per thread)."""
        return open_state(
            self.online_state, path=self.state_path, redis_url=self.redis_url, synchronous=self.synchronous
        )


class _Guard:
    """Pure ASGI middleware: request size limit (413) and per-route metrics, cheaply."""

    def __init__(self, app: Any, metrics: Metrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await _plain(send, 413, b'{"detail":"request body larger than the limit"}')
                self.metrics.observe(scope["method"], scope["path"], 413, time.perf_counter() - started)
                return
        seen = [0]

        async def limited_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    raise HTTPException(413, "request body larger than the limit")
            return message

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, watch)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "other"
            self.metrics.observe(scope["method"], path, status[0], time.perf_counter() - started)


async def _plain(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _role(role: str) -> Any:
    """A dependency requiring ``role`` (runs before body validation: no token, no 422 hints)."""

    async def check(request: Request) -> None:  # async: a plain def would cost a thread hop per request
        _check(request, role)

    return Depends(check)


def _check(request: Request, role: str) -> None:
    code = allowed(request.app.state.config.tokens, request.headers.get("authorization"), role)
    if code == 401:
        raise HTTPException(401, "missing or unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
    if code == 403:
        raise HTTPException(403, f"this token lacks the {role!r} role")


def _json(model: ScoreResponse) -> Response:
    """The response model as JSON bytes straight from pydantic-core: the same body FastAPI's
    ``response_model`` path would send (None fields left out), without validating the model
    a second time and re-encoding it through ``json.dumps``."""
    return Response(model.model_dump_json(exclude_none=True), media_type="application/json")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_app(config: ServeConfig) -> FastAPI:
    """The service; state, model and push worker are opened at startup, closed at shutdown."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.config = config
        app.state.state = config.open_state()

        def counted(n: int) -> None:
            metrics.inc("score_batches")
            metrics.inc("score_batch_leads", n)

        app.state.scoring = Coalescer(
            lambda jobs: run_jobs(jobs, app.state.state, _now), max_batch=config.max_batch, on_batch=counted
        )

        def committed(n: int) -> None:
            metrics.inc("ingest_commits")
            metrics.inc("ingest_requests", n)

        app.state.ingesting = Coalescer(
            app.state.state.ingest_many, max_batch=config.max_batch, on_batch=committed
        )

        def record(rows: list) -> list[None]:
            app.state.state.record_scores(rows)
            return [None] * len(rows)

        app.state.recording = Coalescer(record, max_batch=256)
        app.state.model = await asyncio.to_thread(
            ModelHolder, config.tracking_uri, config.model_name, config.alias
        )
        stop = threading.Event()
        threads = []
        app.state.pusher = None
        if config.push:
            app.state.pusher = PushWorker(
                config.state_path,
                config.data_dir,
                synchronous=config.synchronous,
                open_store=config.open_state,
            )
            threads.append(threading.Thread(target=app.state.pusher.run, name="prox-push", daemon=True))
        if config.prune_hours > 0:
            threads.append(
                threading.Thread(
                    target=prune_forever,
                    args=(config.open_state, config.prune_hours * 3600, stop),
                    name="prox-prune",
                    daemon=True,
                )
            )
        if config.poll_seconds > 0:
            threads.append(
                threading.Thread(
                    target=app.state.model.poll_forever,
                    args=(config.poll_seconds, stop),
                    name="prox-model-poll",
                    daemon=True,
                )
            )
        for t in threads:
            t.start()
        # what start-up loaded (MLflow, FastAPI, the model) lives as long as the process: out of
        # the collector's sight, a full collection walks only what requests allocate, which
        # keeps its pauses out of the latency tail
        gc.collect()
        gc.freeze()
        app.state.ready = True
        log.info("serving %s version %s", config.model_name, app.state.model.current.model_version)
        try:
            yield
        finally:
            app.state.ready = False
            stop.set()
            if app.state.pusher is not None:
                app.state.pusher.stop.set()
                app.state.pusher.wake.set()
            for t in threads:
                t.join(timeout=5)
            app.state.state.close()

    app = FastAPI(
        title="ProX hot scoring",
        version="1",
        lifespan=lifespan,
        description="Scores one lead in milliseconds as its engagement arrives.",
    )
    app.state.ready = False
    app.state.config = config

    @app.post(
        "/v1/score",
        response_model=ScoreResponse,
        response_model_exclude_none=True,
        dependencies=[_role("score")],
    )
    async def score(body: ScoreRequest, request: Request) -> ScoreResponse:
        """Probability, score, tier and reasons of one lead (role ``score``)."""
        scorer = request.app.state.model.current  # this request keeps this model to its end
        lead = body.lead.row()
        if not is_eligible(lead, config.consent_policy):
            field = ineligible_field(lead)
            raise HTTPException(
                422,
                [
                    {
                        "loc": ["body", "lead", field],
                        "type": "consent",
                        "msg": f"lead is not scored without processing consent ({config.consent_policy})",
                    }
                ],
            )
        inputs = None
        if body.events is not None:
            # an Event's __dict__ is its validated fields (flat scalars): the feature code reads
            # them in place, no model_dump copy per event
            inputs = OnlineInput(
                lead,
                [vars(e) for e in body.events],
                status_history=[vars(s) for s in body.status_history or []],
                peers=[p.row() for p in body.peers] if body.peers else None,
                peer_events=[vars(e) for e in body.peer_events] if body.peer_events else None,
            )
        job = ScoreJob(scorer, lead, body.as_of, inputs, body.include_features)
        try:
            result = await request.app.state.scoring.submit(job)
        except FeatureInputError as exc:
            raise HTTPException(422, [{"loc": ["body", "lead", "created_at"], "msg": str(exc)}]) from None
        metrics.inc("scored")
        return _json(result)

    @app.post(
        "/v1/events",
        response_model=EventsResponse,
        response_model_exclude_none=True,
        dependencies=[_role("ingest")],
    )
    async def events(body: EventsRequest, request: Request) -> EventsResponse:
        """Store events durably (acknowledged after commit), re-score their leads, queue tier-A pushes."""
        state: OnlineStore = request.app.state.state
        batch = ([body.event] if body.event else []) + body.events
        # group commit: the ingests that arrive together share one transaction (one fsync);
        # each request is answered only after that commit
        new, dup, touched = await request.app.state.ingesting.submit(
            (
                [lead.row() for lead in body.leads],
                [vars(e) for e in batch],
                [vars(s) for s in body.status_history],
            )
        )
        metrics.inc("events_accepted", new)
        metrics.inc("events_duplicate", dup)
        scorer = request.app.state.model.current
        as_of = body.as_of or _now()
        scored, unknown, queued, withheld = [], [], [], []
        jobs, last_tiers = [], []
        for lead_id in sorted(touched):
            found = state.lead(lead_id)
            if found is None:
                unknown.append(lead_id)
                continue
            lead, last_tier = found
            if not is_eligible(lead, config.consent_policy):
                withheld.append(lead_id)  # engagement is kept, the lead is neither scored nor pushed
                continue
            jobs.append(ScoreJob(scorer, lead, as_of))
            last_tiers.append(last_tier)
        results = await asyncio.gather(
            *(request.app.state.scoring.submit(job) for job in jobs), return_exceptions=True
        )
        records = []
        for job, last_tier, result in zip(jobs, last_tiers, results, strict=True):
            lead_id = job.lead["lead_id"]
            if isinstance(result, FeatureInputError):
                unknown.append(lead_id)  # created after as_of: nothing to score yet
                continue
            if isinstance(result, BaseException):
                raise result
            payload = None
            if result.tier == "A" and last_tier != "A":
                payload = {
                    "lead_id": lead_id,
                    "scored_at": as_of.isoformat(),
                    "model_name": result.model_name,
                    "model_version": result.model_version,
                    "probability": result.probability,
                    "score": result.score,
                    "tier": result.tier,
                    "reasons_positive": result.reasons_positive,
                    "reasons_negative": result.reasons_negative,
                    "run_id": f"hot-{as_of.strftime('%Y%m%dT%H%M%S')}",
                }
                queued.append(lead_id)
            records.append((lead_id, result.tier, result.score, payload))
            # a webhook's answer never carries features (a coalesced /v1/score twin may have asked)
            scored.append(result if result.features is None else result.model_copy(update={"features": None}))
        if records:  # the last tiers and queued pushes, committed before the answer
            await asyncio.gather(*(request.app.state.recording.submit(r) for r in records))
        if queued and request.app.state.pusher is not None:
            metrics.inc("pushes_queued", len(queued))
            request.app.state.pusher.wake.set()
        return EventsResponse(
            accepted=new,
            duplicates=dup,
            scored=scored,
            unknown_leads=sorted(unknown),
            queued_pushes=queued,
            withheld_for_consent=withheld,
        )

    @app.post("/v1/admin/reload", dependencies=[_role("admin")])
    async def reload(request: Request) -> dict:
        """Load the registry alias's current version and switch to it (role ``admin``)."""
        old, new = await asyncio.to_thread(request.app.state.model.reload)
        return {"previous_version": old, "model_version": new, "switched": old != new}

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: state open and a model (champion or cold-start rules) loaded."""
        if not request.app.state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        scorer = request.app.state.model.current
        return JSONResponse(
            {
                "status": "ready",
                "model_name": scorer.model_name,
                "model_version": scorer.model_version,
                "cold_start": scorer.cold_start,
            }
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_text(request: Request) -> PlainTextResponse:
        """Prometheus text format."""
        holder = request.app.state.model
        scorer = holder.current
        pusher = request.app.state.pusher
        gauges = {
            "model_switches": holder.switches,
            "push_outbox": request.app.state.state.outbox_size(),
            "pushes_sent": pusher.pushed if pusher else 0,
            "push_failures": pusher.failures if pusher else 0,
        }
        return PlainTextResponse(
            metrics.render(scorer.model_name, scorer.model_version, scorer.cold_start, gauges),
            media_type="text/plain; version=0.0.4",
        )

    return _GuardedApp(app, metrics, config.max_body_bytes)


class _GuardedApp(_Guard):
    """The FastAPI app behind the guard; ``.fastapi`` reaches the app (OpenAPI, state)."""

    def __init__(self, app: FastAPI, metrics: Metrics, max_body: int) -> None:
        super().__init__(app, metrics, max_body)
        self.fastapi = app


def app_from_env() -> Any:
    """uvicorn factory: ``uvicorn --factory serve.app:app_from_env``."""
    return create_app(ServeConfig.from_env())
