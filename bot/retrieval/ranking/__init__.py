"""Scoring knowledge items against a message: dense similarity, lexical overlap, and their calibration."""
