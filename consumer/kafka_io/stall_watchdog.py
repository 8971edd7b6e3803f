"""The group consumer's stall watchdog: a client that stops fetching (a rebalance kafka-python never finishes,
a broker that stops answering, a client that stops asking) raises ConsumerStalled from its poll, and the consume
loop makes a new one (tests/test_stall_watchdog.py; the chaos scenario tests/chaos/test_chaos_stall.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from schemas.errors import BrokerUnavailable

__all__ = [
    "STALL_CHECK_EVERY_S",
    "STALL_CHECK_TIMEOUT_S",
    "STALL_LIMIT_S",
    "UNSETTLED_LIMIT_S",
    "ConsumerStalled",
    "StallWatchdog",
]


class ConsumerStalled(BrokerUnavailable):
    """The group membership did not settle in time: the client must be closed and made anew."""


#: kafka-python 3.0.12 can stop midway through a rebalance (joined, then never handles the SyncGroup reply),
#: spinning without error and never fetching again (seen under load and in chaos runs). A member that has
#: not been stable for this long (the session timeout is 20 s) gives up its client and starts over.
UNSETTLED_LIMIT_S = 30.0
#: a member that holds partitions with records to read but fetches nothing for this long (its broker stopped
#: answering, or the client stopped asking) gives up its client and starts over from the Redis checkpoints;
#: `metricfold consume --stall-timeout` sets it
STALL_LIMIT_S = 30.0
#: how often a member that fetches nothing asks for the end offsets (is there anything to read?) past the limit,
#: and how long the brokers have to answer that
STALL_CHECK_EVERY_S = 5.0
STALL_CHECK_TIMEOUT_S = 10.0


class StallWatchdog:
    """Watches the polls of one kafka-python consumer (*client*); *lag(timeout_s)* gives the records waiting in
    its assigned partitions (None: none assigned). *group*: it is a group member (its membership is watched too)."""

    def __init__(self, client: Any, lag: Callable[[float], int | None], *, group: bool, stall_limit_s: float) -> None:
        self._client = client
        self._lag = lag
        self.group = group
        self.stall_limit_s = stall_limit_s
        self._unsettled_since: float | None = None
        self._idle_since: float | None = None  # monotonic time since which polls returned nothing
        self._waiting_since: float | None = None  # ... and since which records were seen waiting
        self._next_stall_check = 0.0

    def fetched(self) -> None:
        """A poll returned records."""
        self._idle_since = self._waiting_since = None

    def fetched_nothing(self) -> None:
        """A poll returned nothing: raise ConsumerStalled if the client has stalled."""
        if self.group:
            self._check_settled()
        self._check_fetching()

    def _check_settled(self) -> None:
        """Raise ConsumerStalled when the group membership has not been stable for UNSETTLED_LIMIT_S."""
        coordinator = getattr(self._client, "_coordinator", None)
        stable = getattr(coordinator, "stable", None)
        if not callable(stable):  # another kafka-python: nothing to watch
            return
        if stable() and not getattr(coordinator, "rejoin_needed", False):
            self._unsettled_since = None
            return
        now = time.monotonic()
        if self._unsettled_since is None:
            self._unsettled_since = now
        elif now - self._unsettled_since > UNSETTLED_LIMIT_S:
            self._unsettled_since = None
            raise ConsumerStalled(
                f"the consumer group membership has not settled for {UNSETTLED_LIMIT_S:.0f} s (a stalled rebalance); "
                "starting over with a new Kafka client"
            )

    def _check_fetching(self) -> None:
        """Raise ConsumerStalled when polls have returned nothing for stall_limit_s and either the brokers do not
        answer an end-offsets request within STALL_CHECK_TIMEOUT_S, or records have waited in the assigned
        partitions (end offset past our position) for STALL_CHECK_EVERY_S without one being fetched."""
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
            return
        idle = now - self._idle_since
        if idle < self.stall_limit_s or now < self._next_stall_check:
            return
        try:
            lag = self._lag(STALL_CHECK_TIMEOUT_S)
        except BrokerUnavailable as exc:
            idle = time.monotonic() - self._idle_since
            self._idle_since = self._waiting_since = None
            raise ConsumerStalled(f"fetched nothing for {idle:.0f} s and the brokers do not answer ({exc}); "
                                  "starting over with a new Kafka client") from exc
        now = time.monotonic()
        self._next_stall_check = now + STALL_CHECK_EVERY_S
        if not lag:
            self._waiting_since = None
        elif self._waiting_since is None:  # seen once: it may be on its way; if it still waits next time, it is not
            self._waiting_since = now
        else:
            waited, idle = now - self._waiting_since, now - self._idle_since
            self._idle_since = self._waiting_since = None
            raise ConsumerStalled(f"fetched nothing for {idle:.0f} s although {lag} records have waited in the assigned "
                                  f"partitions for {waited:.0f} s; starting over with a new Kafka client")
