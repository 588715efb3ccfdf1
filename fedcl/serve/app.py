"""The shop's recommendation service: a FastAPI app over the shop's own serving snapshots.

FastAPI + uvicorn: the maintained ASGI pair Flower itself installs (no new heavy
dependency), with pydantic validation whose errors name the field, and a threadpool for the
scoring so a slow request never blocks the event loop. Endpoints (see deploy/SHOP_GUIDE.md):

* ``GET /recommendations?user=ID&k=10`` and ``POST /recommendations/batch``
  (``{"users": [...], "k": 10}``): the lists of :mod:`fedcl.serve.recommend`, each answer
  with a ``request_id`` the site sends back with the events it causes;
* ``POST /events``: :mod:`fedcl.serve.events` (422 naming the event, field and fix; nothing
  appended unless the whole batch is good);
* ``GET /healthz`` (open: status, generation, window; 503 until a model is there) and
  ``GET /metrics`` (Prometheus text: requests, latency histogram, model generation, last
  training time, refused generations, events).

With a token every endpoint but ``/healthz`` needs ``Authorization: Bearer <token>``
(compared in constant time). Binding to anything but loopback without a token is refused
at start (:mod:`fedcl.serve.__main__`).
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedcl.data.config import ValidationConfig
from fedcl.data.plan import Plan
from fedcl.data.sources.csv import CsvConfig
from fedcl.serve.events import FIXES, MAX_BATCH, EventBatch, EventChecker, EventSink
from fedcl.serve.online import SERVE_DIR, ImpressionLog, impression
from fedcl.serve.recommend import Recommendation, Recommender
from fedcl.serve.swap import ModelHolder
from fedcl.shop.store import safe_name

log = logging.getLogger("fedcl.serve")

MAX_K = 100
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class ServeConfig:
    """Where the shop's files are and how the service behaves."""

    state_dir: Path
    shop: str
    events: Path | None = None  # the shop's event log (purchases are appended to it)
    plan: Path | None = None  # the federation's public plan (checks posted events)
    layout: CsvConfig = field(default_factory=CsvConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    token: str | None = None
    poll_s: float = 1.0  # how often to look for a new serving generation
    follow: bool = True  # False: keep the first model (a frozen service)
    sellable: Path | None = None  # item ids the shop can sell, one per line (None: all)
    #: False: purchases are not appended to the log (the shop's own pipeline does that).
    log_purchases: bool = True

    @property
    def shop_dir(self) -> Path:
        return Path(self.state_dir) / safe_name(self.shop)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=MAX_BATCH
    )
    k: int = Field(default=10, ge=1, le=MAX_K)


class Metrics:
    """The service's Prometheus metrics (a registry of its own per app)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "fedcl_serve_requests", "HTTP requests", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "fedcl_serve_request_seconds", "Request latency", ["endpoint"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.generation = Gauge("fedcl_serve_model_generation", "Serving generation", registry=r)
        self.window = Gauge("fedcl_serve_model_window", "Window of the served model", registry=r)
        self.trained = Gauge(
            "fedcl_serve_last_training_timestamp_seconds",
            "When the served model was written by the agent (unix s)", registry=r,
        )  # fmt: skip
        self.refused = Counter(
            "fedcl_serve_generations_refused", "Serving generations refused", registry=r
        )
        self.events = Counter("fedcl_serve_events", "Events accepted", ["type"], registry=r)
        self.rejected = Counter("fedcl_serve_event_batches_rejected", "Batches refused", registry=r)

    def served(self, model: Recommender) -> None:
        self.generation.set(model.generation)
        self.window.set(model.window)
        self.trained.set(model.snap.written_at)


class Service:
    """The app's state: the model holder, the event checker and sink, the impression log."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self._sellable_mtime: float | None = None
        self.holder = ModelHolder(
            cfg.shop_dir,
            sellable=self._read_sellable,
            follow=cfg.follow,
            on_swap=self.metrics.served,
            on_refuse=lambda gen, why: self.metrics.refused.inc(),
            on_poll=self.poll_sellable,
        )
        folder = cfg.shop_dir / SERVE_DIR
        self.impressions = ImpressionLog(folder)
        self.checker = self.sink = None
        if cfg.events is not None:
            if cfg.plan is None:
                raise ValueError("--events needs --plan (events are checked on its catalogue)")
            self.checker = EventChecker(Plan.load(cfg.plan), cfg.shop, cfg.validation)
            self.sink = EventSink(cfg.events, cfg.layout, cfg.shop, folder, cfg.log_purchases)

    def _read_sellable(self) -> set[str] | None:
        path = self.cfg.sellable
        if path is None:
            return None
        self._sellable_mtime = path.stat().st_mtime
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}

    def poll_sellable(self) -> None:
        """Rebuild the catalogue view when the sellable file changed (at each poll of the
        swap watcher; a file missing for a moment keeps the current view)."""
        path = self.cfg.sellable
        try:
            if path is not None and path.stat().st_mtime != self._sellable_mtime:
                self.holder.reload_sellable()
        except OSError as e:
            log.warning("sellable list %s unreadable (%s): keeping the current one", path, e)

    def model(self) -> Recommender:
        model = self.holder.current
        if model is None:
            raise HTTPException(
                503,
                "no model yet: the shop agent writes one after its first evaluated window "
                f"(into {self.cfg.shop_dir / 'serving'})",
            )
        return model

    def answer(self, model: Recommender, recs: list[Recommendation]) -> list[dict]:
        """The JSON of each customer's lists, with a request id; logs the impressions."""
        out, shown = [], []
        for rec in recs:
            rid = secrets.token_hex(8)
            lists = {
                name: [{"item": i, "score": round(s, 6)} for i, s in items]
                for name, items in rec.lists.items()
            }
            out.append(
                {
                    "request_id": rid,
                    "user": rec.user,
                    "known": rec.known,
                    "source": rec.source,
                    "generation": model.generation,
                    "window": model.window,
                    "lists": lists,
                }
            )
            shown.append(impression(rid, rec.user, model.generation, model.window, rec.lists))
        self.impressions.write(shown)
        return out


class Measure:
    """Counts and times every HTTP request by its route (a plain ASGI middleware: Starlette's
    ``BaseHTTPMiddleware`` costs a task and a stream per request)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = getattr(scope.get("route"), "path", "other")
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
            self.metrics.requests.labels(endpoint, str(status[0])).inc()


def make_app(cfg: ServeConfig, start_watcher: bool = True) -> FastAPI:
    """The service's app; ``start_watcher`` runs the swap watcher while the app lives."""
    svc = Service(cfg)
    svc.holder.refresh()

    async def lifespan(app: FastAPI):
        if start_watcher:
            svc.holder.start(cfg.poll_s)
        yield
        svc.holder.stop()
        svc.impressions.close()

    app = FastAPI(title=f"fedcl recommendations: {cfg.shop}", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)  # fmt: skip
    app.state.service = svc

    async def auth(authorization: str | None = Header(default=None)) -> None:
        # async: a check this cheap runs on the event loop, not in a threadpool hop
        if cfg.token is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), cfg.token.encode()):
            raise HTTPException(
                401, "missing or wrong token: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip

    app.add_middleware(Measure, metrics=svc.metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_problem(e) for e in exc.errors()]
        if request.url.path == "/events":
            svc.metrics.rejected.inc()
        return JSONResponse({"error": "invalid request", "problems": problems}, status_code=422)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        model = svc.holder.current
        body = {
            "status": "ok" if model is not None else "no_model",
            "shop": cfg.shop,
            "generation": None if model is None else model.generation,
            "window": None if model is None else model.window,
            "refused_generations": sorted(svc.holder.refused),
        }
        return JSONResponse(body, status_code=200 if model is not None else 503)

    @app.get("/recommendations", dependencies=[Depends(auth)])
    def recommendations(
        user: str = Query(min_length=1, max_length=256), k: int = Query(10, ge=1, le=MAX_K)
    ) -> Response:
        model = svc.model()
        (body,) = svc.answer(model, model.recommend([user], k))
        return _json(body)

    @app.post("/recommendations/batch", dependencies=[Depends(auth)])
    def batch(req: BatchRequest) -> Response:
        model = svc.model()
        return _json({"results": svc.answer(model, model.recommend(req.users, req.k))})

    @app.post("/events", dependencies=[Depends(auth)])
    def events(batch: EventBatch) -> Response:
        if svc.checker is None or svc.sink is None:
            raise HTTPException(503, "this service has no event log: start it with --events")
        times, problems = svc.checker.check(batch.events, datetime.now(UTC))
        if problems:
            svc.metrics.rejected.inc()
            listed = [p.as_dict() for p in problems]
            return JSONResponse({"error": "events refused, none written", "problems": listed}, 422)
        try:
            accepted, logged, duplicates = svc.sink.write(batch.events, times)
        except OSError as e:  # e.g. a full disk: say so, the site sends the batch again
            raise HTTPException(
                503, f"events not written ({e}): send them again later (an event with an "
                "event_id is taken once)",
            ) from e  # fmt: skip
        for e in batch.events:
            svc.metrics.events.labels(e.type).inc()
        return _json({"accepted": accepted, "purchases_logged": logged, "duplicates": duplicates})

    @app.get("/metrics", dependencies=[Depends(auth)])
    def metrics() -> Response:
        svc.poll_sellable()
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


_FIXES = {
    **FIXES,
    "k": f"send k from 1 to {MAX_K}",
    "users": f"send 1 to {MAX_BATCH} customer ids",
}


def _problem(error: dict) -> dict:
    """A pydantic error as {event, field, reason, fix}."""
    loc = [p for p in error.get("loc", ()) if p not in ("body", "query")]
    event = loc[1] if len(loc) >= 2 and loc[0] == "events" and isinstance(loc[1], int) else None
    names = [p for p in loc if isinstance(p, str)]
    name = names[-1] if names else "body"
    if error.get("type") == "extra_forbidden":
        fix = f"remove {name!r}: it is not a field this endpoint reads"
    else:
        fix = _FIXES.get(name, "see deploy/SHOP_GUIDE.md, section 6")
    return {"event": event, "field": name, "reason": error.get("msg", ""), "fix": fix}


def _json(body: dict) -> Response:
    return Response(json.dumps(body), media_type="application/json")
