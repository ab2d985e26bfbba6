"""Operators' knowledge files: parsing, validation, and keeping the index in step with them."""
