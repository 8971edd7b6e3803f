"""The one thread of a process that seals and delivers the batches of every open run, on the process's ticks.

A run's pending batch is sealed by the run itself when it is full (producer.sender), and by this dispatcher at
the first tick of the process's clock after its first event (so at most one tick after it). Ticks are
``linger_s`` apart, stretched when many runs of the process log: a process sends about ``max_records_per_s``
records a second at most (each logging run sends one record per tick, and the consumer's cost is mostly per
record), so with 50 runs logging the ticks are 0.25 s apart (``max_linger_s`` apart at most: 1 s; see
``producer.sender.tick_s``).

The dispatcher serves every open run in each run's order. The ticks are shared (with a random phase per
process), so all runs of a process seal together and their records reach the (shared) KafkaProducer within a
few milliseconds, which sends them in one request. Measured with bench/load.py's trainers (50 runs, 2,500
events/s): a sender thread per run cost ~0.5 of a core, nearly all of it 50 threads fighting for the GIL at
every tick (futex storms) plus kafka-python's per-request cost; one thread per process costs a fraction of that.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from typing import Protocol

__all__ = ["LOGGING_WINDOW_S", "Dispatcher", "ServedRun", "process_dispatcher"]

#: a run counts as logging for tick_s between LOGGING_WINDOW_S and twice that after its last batch began
LOGGING_WINDOW_S = 1.0


class ServedRun(Protocol):
    """What the dispatcher serves: a run's sender (producer.sender.Sender)."""

    def serve(self, dispatcher: Dispatcher) -> None:
        """Seal the pending batch if it is due and deliver the sealed batches, in order."""
        ...


class Dispatcher:
    """The one thread of a process that seals and delivers the batches of every open run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._due: dict[ServedRun, float] = {}  # senders with a pending batch -> when it is due
        self._ready: dict[ServedRun, None] = {}  # senders with sealed batches (or closing): serve now
        self._next_wake = math.inf  # when the thread wakes by itself; earlier work must notify it
        self._logging: dict[ServedRun, float] = {}  # senders whose batch began lately -> when (see logging_runs)
        self._logging_since = time.monotonic()
        #: where this process's ticks fall within linger_s (a fraction): processes on one host do not all
        #: send at the same instant, so the consumer gets an even stream instead of bursts
        self.phase = random.random()
        self.thread = threading.Thread(target=self._loop, name="metricfold-sender", daemon=True)
        self.thread.start()

    def schedule(self, sender: ServedRun, due: float) -> None:
        """*sender*'s pending batch is due at *due* (the caller may hold the sender's lock)."""
        with self._lock:
            known = self._due.get(sender)
            if known is None or due < known:
                self._due[sender] = due
            if due < self._next_wake:
                self._next_wake = due
                self._wake.notify()

    def logging_runs(self, sender: ServedRun, now: float) -> int:
        """Note that *sender*'s pending batch began at *now*; return how many runs of this process began one
        within the last LOGGING_WINDOW_S (up to twice that: the list is pruned once per window)."""
        with self._lock:
            if now - self._logging_since > LOGGING_WINDOW_S:
                self._logging = {s: t for s, t in self._logging.items() if now - t <= LOGGING_WINDOW_S}
                self._logging_since = now
            self._logging[sender] = now
            return len(self._logging)

    def forget(self, sender: ServedRun) -> None:
        """*sender*'s run finished: it no longer counts as logging."""
        with self._lock:
            self._logging.pop(sender, None)

    def ready(self, sender: ServedRun) -> None:
        """*sender* has sealed batches to deliver, or is closing (the caller may hold the sender's lock)."""
        with self._lock:
            self._ready[sender] = None
            self._next_wake = -math.inf
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    work = list(self._ready)
                    self._ready.clear()
                    for sender, due in list(self._due.items()):
                        if due <= now:
                            del self._due[sender]
                            work.append(sender)
                    if work:
                        self._next_wake = -math.inf  # busy: callers need not wake the thread
                        break
                    self._next_wake = min(self._due.values(), default=math.inf)
                    self._wake.wait(None if self._next_wake == math.inf else self._next_wake - now)
            for sender in dict.fromkeys(work):
                sender.serve(self)


_DISPATCHERS: dict[int, Dispatcher] = {}  # pid -> the process's dispatcher (a forked child starts its own)
_DISPATCHERS_LOCK = threading.Lock()


def process_dispatcher() -> Dispatcher:
    """This process's dispatcher, started on first use (again after a fork, or if its thread died)."""
    with _DISPATCHERS_LOCK:
        dispatcher = _DISPATCHERS.get(os.getpid())
        if dispatcher is None or not dispatcher.thread.is_alive():
            dispatcher = _DISPATCHERS[os.getpid()] = Dispatcher()
        return dispatcher
