"""The webhook route Telegram calls in webhook mode: checked, read, stored, then acknowledged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from telegram import Update

from connectors.telegram.connector import TelegramConnector

log = logging.getLogger("connectors.telegram")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def read_webhook_update(payload: Any, connector: TelegramConnector) -> Update:
    """The update in a webhook body; HTTPException 400 naming what is wrong when it is not one."""
    if not isinstance(payload, dict):
        raise HTTPException(400, f"not a Telegram update: the body is a JSON {type(payload).__name__}, not an object")
    if not isinstance(payload.get("update_id"), int) or isinstance(payload.get("update_id"), bool):
        raise HTTPException(400, "not a Telegram update: no integer update_id")
    try:
        update = Update.de_json(payload, connector.bot)
    except Exception as err:  # python-telegram-bot raises whatever its parsing meets (TypeError, KeyError...)
        raise HTTPException(400, f"not a Telegram update: {type(err).__name__}: {str(err)[:200]}") from None
    if update is None:
        raise HTTPException(400, "not a Telegram update")
    return update


def telegram_webhook_router(connector: Callable[[], TelegramConnector | None]) -> APIRouter:
    router = APIRouter()

    @router.post("/telegram/webhook", include_in_schema=False)
    async def webhook(request: Request) -> dict[str, bool]:
        current = connector()
        if current is None:
            raise HTTPException(404, "telegram webhook is not enabled")
        if not current.verify_secret(request.headers.get(SECRET_HEADER)):
            raise HTTPException(403, "bad secret token")
        try:
            payload = await request.json()
        except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, or nested past what json parses
            log.warning("telegram: webhook body is not JSON; refused")
            raise HTTPException(400, "body is not JSON") from err
        try:
            update = read_webhook_update(payload, current)
        except HTTPException as err:
            log.warning("telegram: webhook body refused: %s", err.detail)
            raise
        # Stored before the 200: Telegram never sends an acknowledged update again. If storing fails, the
        # 500 makes Telegram retry it.
        await current.receive(update)
        return {"ok": True}

    return router
