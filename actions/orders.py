"""The demo store's orders database (SQLite), created with its demo orders the first time it is opened.

Where it lives: NORTHWIND_ORDERS_DB, else .data/demo-orders.sqlite3 beside the actions package.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    number TEXT PRIMARY KEY, email TEXT NOT NULL, status TEXT NOT NULL, placed TEXT NOT NULL,
    carrier TEXT, tracking TEXT, items TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS returns (
    number TEXT PRIMARY KEY, order_number TEXT NOT NULL, item TEXT NOT NULL, reason TEXT NOT NULL,
    created_at REAL NOT NULL, message_id TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS tickets (
    number TEXT PRIMARY KEY, email TEXT NOT NULL, message TEXT NOT NULL, conversation TEXT,
    created_at REAL NOT NULL, message_id TEXT UNIQUE
);
"""
TRACKING_URL = {"DHL": "https://www.dhl.com/track?id={}", "UPS": "https://www.ups.com/track?tracknum={}",
                "PostNL": "https://postnl.nl/tracktrace/?B={}"}  # fmt: skip
_ITEMS = ["Ridgeline down jacket", "Summit 2 tent", "Trailhead boots", "Alpine sleeping bag", "Trek 40L pack"]
_STATUSES = ["processing", "shipped", "delivered", "shipped", "delivered"]
_CARRIERS = ["DHL", "UPS", "PostNL"]


@dataclass(frozen=True)
class Order:
    number: str
    email: str
    status: str
    placed: str
    carrier: str | None
    tracking: str | None
    items: tuple[str, ...]

    @property
    def tracking_link(self) -> str | None:
        if self.carrier is None or self.tracking is None:
            return None
        return TRACKING_URL[self.carrier].format(self.tracking)


def _demo_orders() -> list[tuple[str, str, str, str, str | None, str | None, str]]:
    rows: list[tuple[str, str, str, str, str | None, str | None, str]] = [
        ("NW-10023", "jane@example.com", "shipped", "2026-11-28", "DHL", "JD014600003828341", "Ridgeline down jacket"),
    ]
    for n in range(24):
        number = f"NW-{10030 + n * 7}"
        status = _STATUSES[n % len(_STATUSES)]
        carrier = None if status == "processing" else _CARRIERS[n % len(_CARRIERS)]
        tracking = None if carrier is None else f"{carrier[:2].upper()}{940000000 + n * 1237}"
        items = ", ".join(_ITEMS[(n + k) % len(_ITEMS)] for k in range(1 + n % 2))
        rows.append((number, f"customer{n + 1}@example.com", status, f"2026-11-{1 + n:02d}", carrier, tracking, items))
    return rows


class OrdersDatabase:
    def __init__(self, path: Path | None = None) -> None:
        default = Path(__file__).resolve().parent.parent / ".data" / "demo-orders.sqlite3"
        self.path = path or Path(os.environ.get("NORTHWIND_ORDERS_DB", str(default)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)
            db.executemany("INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)", _demo_orders())

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def order(self, number: str, email: str) -> Order | None:
        """The order, only for the email address it was placed with (anything else learns nothing)."""
        number = re.sub(r"^NW-?", "NW-", number.strip().upper())  # "nw10023" is NW-10023
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM orders WHERE number = ? AND lower(email) = lower(?)", (number, email.strip())
            ).fetchone()
        if row is None:
            return None
        return Order(row[0], row[1], row[2], row[3], row[4], row[5], tuple(row[6].split(", ")))

    def start_return(self, order: Order, item: str, reason: str, message_id: str | None) -> str:
        """A new return number; the same one again for a message already handled (`message_id`)."""
        row = (f"RT-{secrets.randbelow(900000) + 100000}", order.number, item, reason, time.time(), message_id)
        return self._insert_once("returns", row, message_id)

    def leave_message(self, email: str, message: str, conversation: str | None, message_id: str | None) -> str:
        row = (f"TK-{secrets.randbelow(900000) + 100000}", email, message, conversation, time.time(), message_id)
        return self._insert_once("tickets", row, message_id)

    def _insert_once(self, table: str, row: tuple[object, ...], message_id: str | None) -> str:
        with self._connect() as db:
            if message_id is not None:
                earlier = db.execute(f"SELECT number FROM {table} WHERE message_id = ?", (message_id,)).fetchone()
                if earlier is not None:
                    return str(earlier[0])
            db.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
        return str(row[0])
