"""What several bot processes must agree on: one message at a time per conversation, and rate limits.

`LocalCoordination` holds it in this process (the embedded default); `RedisCoordination` in Redis, for
several `bot serve` processes behind a load balancer (`coordination.redis_url`).
"""

from bot.storage.coordination.base import Coordination, CoordinationUnavailable, RateCheck
from bot.storage.coordination.local import LocalCoordination

__all__ = ["Coordination", "CoordinationUnavailable", "LocalCoordination", "RateCheck"]
