"""bot eval and bot review."""
