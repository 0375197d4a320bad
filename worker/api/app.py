"""The API's aiohttp application: routes, authentication, error shape, metrics."""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from worker.api.auth import KeyStore, presented_key
from worker.api.events import stream_events
from worker.api.pools import RedisPools
from worker.api.problems import problem
from worker.api.settings import ApiSettings
from worker.api.speakings import Speakings
from worker.api.voices import list_voices
from worker.metrics import Registry
from worker.redis_retry import REDIS_OUTAGE
from worker.store import Keys

log = logging.getLogger(__name__)

OPENAPI = Path(__file__).with_name("openapi.json")
PUBLIC = {"/healthz", "/metrics", "/v1.0/openapi.json"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(settings: ApiSettings, pools: RedisPools) -> web.Application:
    keys = Keys(settings.redis_prefix)
    speakings = Speakings(settings, pools, keys)
    key_store = KeyStore(pools.main, settings.redis_prefix)
    metrics = Registry()
    metrics.describe("speaking_api_requests_total", "counter", "Requests, by route and status")
    metrics.describe(
        "speaking_api_request_seconds",
        "histogram",
        "Request latency",
        [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
    )

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        route = (
            request.match_info.route.resource.canonical
            if request.match_info.route.resource
            else "?"
        )
        customer: str | None = None
        try:
            if request.path not in PUBLIC:
                key = presented_key(request)
                customer = await key_store.customer_for(key) if key else None
            if request.path in PUBLIC:
                response: web.StreamResponse = await handler(request)
            elif customer is None:
                response = problem(
                    401,
                    "unauthenticated",
                    "missing or unknown API key: pass ?token=, ?accesskey= or "
                    "an Authorization: Bearer header",
                )
            elif request.path.endswith("/events"):  # long-lived: bounded on their own
                request["customer_id"] = customer
                response = await handler(request)
            else:
                request["customer_id"] = customer
                response = await _bounded(customer, handler, request)
        except web.HTTPException as exc:  # aiohttp's own 404/405 for unknown routes
            response = problem(exc.status, _code(exc.status), exc.reason)
        except REDIS_OUTAGE:  # Redis down, restarting, or every connection of a pool busy
            response = problem(
                503, "unavailable", "the speaking service's data store is unreachable; try again"
            )
        except Exception:
            log.exception("request failed", extra={"path": request.path, "method": request.method})
            response = problem(500, "internal", "internal error; the request was not applied")
        metrics.inc("speaking_api_requests_total", route=route, status=str(response.status))
        metrics.observe("speaking_api_request_seconds", time.monotonic() - started)
        # Never the query string: it may carry the key.
        log.info(
            "request",
            extra={"method": request.method, "path": request.path, "status": response.status},
        )
        return response

    active: dict[str, int] = {}  # customer -> requests being handled

    async def _bounded(customer: str, handler: Handler, request: web.Request) -> web.StreamResponse:
        """One customer's requests being handled at once are capped: past the cap the
        answer is an immediate 429 that costs no Redis call, so a customer's flood
        cannot take the process (or its Redis connections) from the others."""
        cap = settings.max_requests_in_flight_per_customer
        if active.get(customer, 0) >= cap:
            return problem(
                429,
                "limit_exceeded",
                f"this API key's customer already has {cap} requests being handled; at most "
                f"{cap} are allowed at once: wait for their answers",
            )
        active[customer] = active.get(customer, 0) + 1
        try:
            return await handler(request)
        finally:
            active[customer] -= 1
            if not active[customer]:
                del active[customer]

    async def healthz(_request: web.Request) -> web.Response:
        try:
            workers = len(await speakings.directory.live())
        except REDIS_OUTAGE:
            return web.json_response({"status": "redis unavailable", "workers": 0}, status=503)
        return web.json_response(
            {"status": "ok" if workers else "no workers", "workers": workers},
            status=200 if workers else 503,
        )

    async def metrics_handler(request: web.Request) -> web.Response:
        return render_metrics(request, metrics, settings.metrics_token)

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(json.loads(OPENAPI.read_text()))

    async def events(request: web.Request) -> web.StreamResponse:
        return await stream_events(speakings, request)

    async def voices(request: web.Request) -> web.Response:
        return await list_voices(
            request, pools.main, settings.redis_prefix, settings.default_provider
        )

    app = web.Application(middlewares=[guard], client_max_size=256 * 1024)
    # Before the resource's routes: "voices" would otherwise match /speakings/{id}.
    app.add_routes([web.get("/v1.0/speakings/voices", voices)])
    app.add_routes(speakings.routes())
    app.add_routes(
        [
            web.get("/v1.0/speakings/{id}/events", events),
            web.get("/healthz", healthz),
            web.get("/v1.0/openapi.json", openapi),
        ]
    )
    # With a metrics address of its own (worker/api/main.py) the public port has none.
    if not settings.metrics_address:
        app.add_routes([web.get("/metrics", metrics_handler)])
    app[METRICS] = metrics
    return app


#: The application's metrics registry, for a metrics listener of its own.
METRICS = web.AppKey("metrics", Registry)


def render_metrics(request: web.Request, metrics: Registry, token: str) -> web.Response:
    """The Prometheus text; with a token configured, only for ``Authorization: Bearer
    <token>`` (compared in constant time), else 401."""
    if token:
        presented = request.headers.get("Authorization", "")
        if not hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
            return problem(
                401, "unauthenticated", "metrics need an Authorization: Bearer <metrics token>"
            )
    return web.Response(text=metrics.render(), content_type="text/plain")


def make_metrics_app(app: web.Application, token: str) -> web.Application:
    """A separate application serving only ``app``'s /metrics (its own listener)."""
    metrics = app[METRICS]

    async def handler(request: web.Request) -> web.Response:
        return render_metrics(request, metrics, token)

    served = web.Application()
    served.add_routes([web.get("/metrics", handler)])
    return served


def _code(status: int) -> str:
    return {
        400: "invalid_argument",
        401: "unauthenticated",
        404: "not_found",
        405: "invalid_argument",
        409: "conflict",
        413: "invalid_argument",
        429: "limit_exceeded",
    }.get(status, "internal")
