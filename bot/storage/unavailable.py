"""The error for a shared part that cannot be reached now (the store's database, the coordination's Redis)."""

from __future__ import annotations


class Unavailable(RuntimeError):
    """A part this process needs cannot be reached now. What raised it did nothing half-way that a retry
    would repeat: channels answer "try again in a moment" (HTTP 503), and the client sends again."""
