"""The store: turns, conversations, events; in-process coordination (rate limits)."""
