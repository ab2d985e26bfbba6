"""GET /metrics in Prometheus' text format, through prometheus_client.

Totals come from the store at each scrape, so every process behind a load balancer reports the same
numbers and they survive restarts: replies by channel and who answered, handoffs by trigger, containment,
conversations per owner state (the queue), and the waits for a claim and for the first agent reply.
Reply latency is this process's own histogram (Prometheus sums it across processes).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.conversation.stats import SupportStats
from bot.types import Message, Reply

WAIT_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _StoreCollector(Collector):
    """Yields the families of the snapshot taken just before this scrape."""

    def __init__(self) -> None:
        self.stats = SupportStats()

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        replies = CounterMetricFamily(
            "supportbot_replies", "Replies to customers, by channel and who answered", labels=["channel", "answered_by"]
        )
        for (channel, answered_by), n in sorted(stats.replies.items()):
            replies.add_metric([channel, answered_by], n)
        yield replies
        handoffs = CounterMetricFamily("supportbot_handoffs", "Conversations handed to a person, by trigger",
                                       labels=["trigger"])  # fmt: skip
        for trigger, n in sorted(stats.handoffs.items()):
            handoffs.add_metric([trigger], n)
        yield handoffs
        yield CounterMetricFamily("supportbot_conversations", "Conversations begun", value=stats.conversations)
        yield CounterMetricFamily(
            "supportbot_conversations_contained", "Conversations no person took part in", value=stats.contained
        )
        if stats.containment is not None:
            yield GaugeMetricFamily("supportbot_containment_ratio", "Contained / all conversations",
                                    value=stats.containment)  # fmt: skip
        owners = GaugeMetricFamily("supportbot_conversations_by_owner", "Conversations now with the bot, queued "
                                   "(the queue's length) or with an agent", labels=["state"])  # fmt: skip
        for state, n in sorted(stats.owners.items()):
            owners.add_metric([state], n)
        yield owners
        yield _histogram("supportbot_time_to_claim_seconds", "From a handoff to an agent's claim", stats.claim_waits)
        yield _histogram(
            "supportbot_time_to_first_agent_reply_seconds",
            "From a handoff (or a pull) to the first reply a person wrote",
            stats.first_reply_waits,
        )


def _histogram(name: str, documentation: str, values: Iterable[float]) -> HistogramMetricFamily:
    values = sorted(values)
    buckets = [(f"{bound:g}", float(sum(1 for v in values if v <= bound))) for bound in WAIT_BUCKETS]
    buckets.append(("+Inf", float(len(values))))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=sum(values))


class SupportMetrics:
    """One app's registry: never the library's global one."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._store = _StoreCollector()
        self.registry.register(self._store)
        self._latency = Histogram(
            "supportbot_reply_latency_seconds",
            "From a customer message to the bot's reply, in this process",
            ["channel", "answered_by"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_reply(self, message: Message, reply: Reply, seconds: float) -> None:
        self._latency.labels(message.channel, str(reply.answered_by)).observe(seconds)

    def render(self, stats: SupportStats) -> bytes:
        self._store.stats = stats
        return generate_latest(self.registry)
