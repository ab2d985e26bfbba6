"""The outbound proxy the environment names, read as httpx reads it (so as python-telegram-bot does).

HTTPS_PROXY (or ALL_PROXY) names the proxy, NO_PROXY the hosts reached directly; lower-case names win,
as with curl and urllib. A proxy URL may carry credentials (http://user:password@proxy:3128): they stay
in the environment and are never logged.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping


def https_proxy(environ: Mapping[str, str], host: str) -> str | None:
    """The proxy for HTTPS to `host`; None to connect directly."""

    def named(name: str) -> str:
        return (environ.get(name) or environ.get(name.upper()) or "").strip()

    proxy = named("https_proxy") or named("all_proxy")
    if not proxy:
        return None
    if any(_covers(entry, host) for entry in named("no_proxy").split(",")):
        return None
    return proxy


def _covers(entry: str, host: str) -> bool:
    """Whether a NO_PROXY entry ("*", "example.com", ".example.com", "example.com:443") covers `host`."""
    name = entry.strip().lower()
    if name.count(":") == 1:  # a port (an IPv6 address has several colons)
        name = name.split(":")[0]
    if name == "*":
        return True
    name = name.lstrip(".")
    return bool(name) and (host.lower() == name or host.lower().endswith("." + name))


def where(proxy: str) -> str:
    """A proxy URL for a log line: scheme, host and port, never its credentials."""
    parts = urllib.parse.urlsplit(proxy)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a number
        port = ":?"
    return f"{parts.scheme}://{parts.hostname or '?'}{port}"
