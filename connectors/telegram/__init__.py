"""Telegram: the connector (polling or webhook), its webhook route, and how updates and replies are read."""

from connectors.telegram.connector import SECRET_ENV, TOKEN_ENV, TelegramConnector, telegram_connector
from connectors.telegram.webhook import SECRET_HEADER, telegram_webhook_router

__all__ = ["SECRET_ENV", "SECRET_HEADER", "TOKEN_ENV", "TelegramConnector", "telegram_connector",
           "telegram_webhook_router"]  # fmt: skip
