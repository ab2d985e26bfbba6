"""The HTTP application: health, the chat API, and one place where errors become responses."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.config import Config
from bot.embedding import Embedder
from bot.pipeline import Pipeline, Responder
from connectors.telegram import TelegramConnector, telegram_webhook_router
from connectors.web import WebChannel
from serving.channels import RunningChannels, start_channels
from serving.runtime import Bot, running_bot

log = logging.getLogger(__name__)
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live = config.knowledge.watch if watch is None else watch
        async with running_bot(config, embedder, watch=live, responder=responder, environ=environ) as bot:
            app.state.bot = bot
            app.state.channels = await start_channels(
                config, current_pipeline, os.environ if environ is None else environ
            )
            try:
                if on_ready is not None:
                    on_ready(bot)
                yield
            finally:
                await app.state.channels.stop()

    app = FastAPI(title=config.bot_name, lifespan=lifespan, docs_url="/docs", redoc_url=None)

    def current_pipeline() -> Pipeline:
        bot: Bot = app.state.bot
        return bot.pipeline

    def current_telegram() -> TelegramConnector | None:
        channels: RunningChannels | None = getattr(app.state, "channels", None)
        return channels.telegram if channels is not None else None

    @app.get("/health")
    async def health() -> dict[str, object]:
        bot: Bot = app.state.bot
        channels: RunningChannels = app.state.channels
        return {
            "status": "ok",
            "knowledge_records": len(bot.engine.index),
            "channels": channels.status(),
            "model": None
            if bot.model is None
            else {
                "name": bot.model.model.settings.model,
                "circuit": str(bot.model.breaker.state),
                "prompt_problems": [str(p) for p in bot.model.prompts.problems],
            },
        }

    @app.get("/widget.js", include_in_schema=False)
    async def widget() -> FileResponse:
        return FileResponse(
            STATIC / "widget.js", media_type="text/javascript", headers={"Cache-Control": "max-age=300"}
        )

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        return FileResponse(STATIC / "demo.html", media_type="text/html")

    app.include_router(WebChannel(current_pipeline, config).router())
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


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            if error.get("type") == "json_invalid":
                reason = error.get("ctx", {}).get("error", "malformed JSON")
                problems.append(f"request body is not valid JSON: {reason}")
                continue
            field = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
            problems.append(f"{field}: {error.get('msg', 'invalid value')}")
        return JSONResponse(
            status_code=422,
            content={"error": "invalid_request", "detail": "; ".join(problems), "problems": problems},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": "http_error", "detail": exc.detail})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"error": "internal_error", "detail": "something went wrong"})


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
