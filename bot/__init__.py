"""The engine: channel-agnostic and server-agnostic support-bot core."""
