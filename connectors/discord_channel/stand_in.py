"""Reaching a stand-in for Discord (a loopback server in tests, a staging double) instead of Discord itself.

discord.py builds every URL from Discord's own host names: REST, interaction callbacks and webhooks at
https://discord.com/api/v10, the gateway at wss://gateway.discord.gg. It has no per-client setting for
them, but a client takes an aiohttp connector: a stand-in's connector resolves those names to the stand-in's
address and verifies its TLS certificate against the stand-in's own CA. The URLs, the Host headers and
discord.py itself stay exactly as they are with Discord; nothing process-wide changes, so any number of
clients, pointed anywhere, can run side by side.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

DISCORD_HOSTS = frozenset({"discord.com", "gateway.discord.gg"})


@dataclass(frozen=True)
class StandIn:
    """Discord's hosts, answered at `address`:`port` over TLS that `tls` verifies (the stand-in's CA)."""

    address: str  # an IP address
    port: int
    tls: ssl.SSLContext

    def connector(self) -> aiohttp.TCPConnector:
        """For discord.Client(connector=...); made inside the event loop that will use it."""
        return aiohttp.TCPConnector(resolver=StandInResolver(self.address, self.port), ssl=self.tls)


class StandInResolver(AbstractResolver):
    """Discord's host names resolve to the stand-in; any other name is refused, so nothing leaves for the
    real Internet by accident."""

    def __init__(self, address: str, port: int) -> None:
        self._address = str(ipaddress.ip_address(address))  # a clear error now for a name instead of an address
        self._family = socket.AF_INET6 if ":" in self._address else socket.AF_INET
        self._port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in DISCORD_HOSTS:
            raise OSError(f"{host} is not one of Discord's hosts, which are all the stand-in answers for")
        result = ResolveResult(
            hostname=host, host=self._address, port=self._port, family=self._family, proto=0,
            flags=socket.AI_NUMERICHOST,
        )  # fmt: skip
        return [result]

    async def close(self) -> None:
        return None
