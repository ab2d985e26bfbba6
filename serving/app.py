"""The HTTP application: health, the chat API, and one place where errors become responses."""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.config import Config
from bot.conversation.desk import AgentDesk
from bot.conversation.state import Staffing
from bot.pipeline import Pipeline, Responder
from bot.retrieval.embedding import Embedder
from bot.storage.turns import Turn
from bot.storage.unavailable import Unavailable
from connectors.telegram import TelegramConnector, telegram_webhook_router
from connectors.web import CHANNEL as WEB_CHANNEL
from connectors.web import WebChannel, resume_web
from serving.agent_api import AgentApi
from serving.agents import AgentDirectory, AgentPresence, AgentTokenError, InboxFeed
from serving.channels import RunningChannels, start_channels
from serving.health import health_report
from serving.inbox_relay import InboxRelay
from serving.metrics import SupportMetrics
from serving.ownership_webhook import SECRET_ENV as WEBHOOK_SECRET_ENV
from serving.ownership_webhook import OwnershipWebhook
from serving.runtime import Bot, running_bot

log = logging.getLogger(__name__)
METRICS_TOKEN_ENV = "SUPPORTBOT_METRICS_TOKEN"
# The inbox shows customers' words: no framing by other sites, no scripts but its own.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "Cache-Control": "no-cache",
}
STATIC = Path(__file__).resolve().parent / "static"


def create_app(
    config: Config,
    embedder: Embedder | None = None,
    watch: bool | None = None,
    on_ready: Callable[[Bot], None] | None = None,
    responder: Responder | None = None,
    environ: Mapping[str, str] | None = None,
) -> FastAPI:
    """The app owns a running bot for its lifetime (index synced, store open, knowledge watched)."""

    env = os.environ if environ is None else environ
    agents = agent_directory(env)
    presence = AgentPresence(config.handoff.presence_window_s)
    feed = InboxFeed()
    metrics = SupportMetrics()
    metrics_token = env.get(METRICS_TOKEN_ENV, "").strip() or None
    web = WebChannel(lambda: current_pipeline(), config)

    def staffing() -> Staffing:
        if not agents.tokens:
            return Staffing.NO_AGENTS
        hours = config.handoff.office_hours
        if hours is not None and not hours.open_at(dt.datetime.now(dt.UTC)):
            return Staffing.OFFLINE
        return Staffing.ONLINE if presence.any_online() else Staffing.OFFLINE

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live = config.knowledge.watch if watch is None else watch
        async with running_bot(
            config, embedder, watch=live, responder=responder, environ=environ, staffing=staffing,
            notify=feed.publish, on_reply=metrics.observe_reply,
        ) as bot:  # fmt: skip
            app.state.bot = bot
            app.state.desk = AgentDesk(bot.store, feed.publish)
            app.state.channels = await start_channels(config, current_pipeline, env)
            resuming = asyncio.create_task(_resume_web(bot), name="resume web")
            # With several processes: replies for widgets connected here, published by the others.
            shared = bot.pipeline.coordination.kind != "in-process"
            following = asyncio.create_task(web.follow_pushes(), name="web pushes") if shared else None
            relay = InboxRelay(bot.pipeline.coordination, feed, presence, bot.pipeline.instance)
            relaying = asyncio.create_task(relay.run(), name="inbox relay") if shared else None
            webhook = ownership_webhook(config, env, feed, app.state.desk)
            posting = asyncio.create_task(webhook.run(), name="handoff webhook") if webhook else None
            try:
                if on_ready is not None:
                    on_ready(bot)
                yield
            finally:
                background = [task for task in (resuming, posting, following, relaying) if task is not None]
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await app.state.channels.stop()

    app = FastAPI(title=config.bot_name, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.end_streams = feed.close  # serving.server.BotServer calls it first when asked to stop

    def current_pipeline() -> Pipeline:
        bot: Bot = app.state.bot
        return bot.pipeline

    def current_telegram() -> TelegramConnector | None:
        channels: RunningChannels | None = getattr(app.state, "channels", None)
        return channels.telegram if channels is not None else None

    async def deliver(channel: str, turn: Turn) -> bool:
        """A person's reply, to the customer on the channel the conversation came from."""
        if channel == WEB_CHANNEL:
            return await web.deliver(turn)
        running: RunningChannels = app.state.channels
        connector = running.deliverer(channel)
        if connector is None:
            log.warning("agent reply %s kept: the %s channel is not running", turn.id, channel)
            return False
        return await connector.deliver(turn)

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 while this process can serve; 503 (for the load balancer) when a shared part it needs is down."""
        bot: Bot = app.state.bot
        channels: RunningChannels = app.state.channels
        body, ok = await health_report(
            bot, channels.status(), {"configured": len(agents.tokens), "online": presence.online()}
        )
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        """Prometheus' text format; with SUPPORTBOT_METRICS_TOKEN set, only for `Authorization: Bearer` it."""
        if metrics_token is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip().encode()
            if not hmac.compare_digest(given, metrics_token.encode()):
                raise StarletteHTTPException(401, "send Authorization: Bearer <SUPPORTBOT_METRICS_TOKEN>",
                                             headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        bot: Bot = app.state.bot
        body = metrics.render(await bot.store.stats.snapshot())
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/widget.js", include_in_schema=False)
    async def widget() -> FileResponse:
        return FileResponse(
            STATIC / "widget.js", media_type="text/javascript", headers={"Cache-Control": "max-age=300"}
        )

    @app.get("/agent", include_in_schema=False)
    async def agent_inbox() -> FileResponse:
        return FileResponse(STATIC / "agent.html", media_type="text/html", headers=_PAGE_HEADERS)

    @app.get("/agent.js", include_in_schema=False)
    async def agent_script() -> FileResponse:
        return FileResponse(STATIC / "agent.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        return FileResponse(STATIC / "demo.html", media_type="text/html")

    app.include_router(web.router())
    app.include_router(AgentApi(lambda: app.state.desk, agents, presence, feed, deliver).router())
    app.include_router(telegram_webhook_router(current_telegram))
    _install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=config.server.max_body_bytes)
    origins = config.web.allowed_origins
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=["*"] if "*" in origins else origins,
            allow_methods=["GET", "POST"],
            allow_headers=["content-type"],
            max_age=600,
        )
    return app


def ownership_webhook(
    config: Config, environ: Mapping[str, str], feed: InboxFeed, desk: AgentDesk
) -> OwnershipWebhook | None:
    url = config.handoff.webhook_url
    if url is None:
        return None
    secret = environ.get(WEBHOOK_SECRET_ENV, "").strip()
    if not secret:
        log.error("handoff.webhook_url is set but %s is not: no events are sent", WEBHOOK_SECRET_ENV)
        return None

    async def describe(conversation_id: str) -> dict[str, Any]:
        found = await desk.owner(conversation_id)
        if found is None:
            return {}
        conversation, o = found
        return {"channel": conversation.channel, "state": str(o.state), "owner": o.agent, "trigger": o.trigger}

    return OwnershipWebhook(url, secret, feed, describe)


def agent_directory(environ: Mapping[str, str]) -> AgentDirectory:
    """The agents from the environment; a malformed list is logged (never its tokens) and nobody can sign in."""
    try:
        directory = AgentDirectory.from_environ(environ)
    except AgentTokenError as err:
        log.error("%s: the agent inbox is closed until it is fixed", err)
        return AgentDirectory({})
    if not directory.tokens:
        log.info("no agents: set SUPPORTBOT_AGENT_TOKENS to open the agent inbox (/agent)")
    return directory


async def _resume_web(bot: Bot) -> None:
    try:
        await resume_web(bot.pipeline)
    except Exception:
        log.exception("web: answering the messages stored before the restart failed")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid_request(request, [_problem(request, error) for error in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        undecodable = _undecodable_body(request, exc)
        if undecodable is not None:
            return _invalid_request(request, [undecodable])
        return JSONResponse(
            status_code=exc.status_code, content={"error": "http_error", "detail": exc.detail}, headers=exc.headers
        )

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        # The store or the coordination is down: nothing half-done to repeat (acting alone could answer out
        # of order or twice). The client sends again; a resent message is answered once.
        log.error("unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=503, headers={"Retry-After": "5"},
                            content={"error": "unavailable", "detail": "please try again in a moment"})  # fmt: skip

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"error": "internal_error", "detail": "something went wrong"})


def _invalid_request(request: Request, problems: list[str]) -> JSONResponse:
    """Every request refused for its body or fields: one 422 shape, and one log line (no traceback)."""
    detail = "; ".join(problems)
    log.info("invalid request on %s %s: %s", request.method, request.url.path, detail)
    return JSONResponse(
        status_code=422,
        content={"error": "invalid_request", "detail": detail, "problems": problems},
    )


def _problem(request: Request, error: Mapping[str, Any]) -> str:
    """One validation error in words; errors about the body as a whole say what the body should have been."""
    if error.get("type") == "json_invalid":
        reason = error.get("ctx", {}).get("error", "malformed JSON")
        return f"request body is not valid JSON: {reason}"
    if tuple(error.get("loc", ())) == ("body",):
        value = error.get("input")
        if error.get("type") == "missing":
            return "request body is empty: send a JSON object"
        if isinstance(value, bytes | bytearray):
            # FastAPI decodes JSON only when the content type says it is JSON (application/json or */*+json).
            content_type = request.headers.get("content-type")
            got = f"got {content_type!r}" if content_type else "no Content-Type header was sent"
            return f"request body must be sent with Content-Type: application/json ({got})"
        if not isinstance(value, Mapping):
            return f"request body must be a JSON object, not {_json_kind(value)}"
    field = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
    return f"{field}: {error.get('msg', 'invalid value')}"


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _undecodable_body(request: Request, exc: StarletteHTTPException) -> str | None:
    """What is wrong with a JSON body that FastAPI could not decode, or None for any other HTTP error.

    FastAPI turns a body it cannot decode into a bare 400 "There was an error parsing the body", raised
    from the decoding error, before the endpoint runs; only a route that declares a body gets there.
    JSON syntax errors never come this way (FastAPI reports them as validation errors). A client that
    disconnected mid-body (ClientDisconnect) and routes that read the body themselves (the Telegram
    webhook, say) keep their own responses.
    """
    route = request.scope.get("route")
    if exc.status_code != 400 or getattr(route, "body_field", None) is None:
        return None
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        # json.loads takes UTF-8, UTF-16 or UTF-32 (it tells them apart by the first bytes, BOM or not).
        # A UTF-8 BOM is stripped before decoding: count the offset from the body's first byte all the same.
        length = request.headers.get("content-length", "")
        skipped = int(length) - len(cause.object) if length.isdigit() and int(length) >= len(cause.object) else 0
        where = f"byte 0x{cause.object[cause.start]:02x} at offset {cause.start + skipped}"
        return f"request body is not valid {cause.encoding.upper()} ({where}: {cause.reason})"
    if isinstance(cause, RecursionError):
        return "request body is nested too deeply"
    if isinstance(cause, ValueError):
        if "integer string conversion" in str(cause):
            return f"request body has a number longer than {sys.get_int_max_str_digits()} digits"
        return f"request body is not valid JSON: {str(cause).split(':')[0]}"
    return None


class BodySizeLimit:
    """Refuses request bodies over the limit before reading them, so a huge upload costs nothing."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            chunked = b"chunked" in headers.get(b"transfer-encoding", b"")
            too_big = length is not None and (not length.isdigit() or int(length) > self.max_bytes)
            if too_big or chunked:
                status = 413 if too_big else 411
                detail = f"request body over {self.max_bytes} bytes" if too_big else "send a Content-Length header"
                await JSONResponse(status_code=status, content={"error": "http_error", "detail": detail})(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)
