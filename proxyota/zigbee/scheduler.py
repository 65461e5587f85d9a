"""Fleet scheduler for Zigbee OTA downloads: how many nodes pull image blocks at once.

A mesh carries only so many block exchanges; "update all" must not start every node at
once, and nodes that cannot start yet must be told when to come back (the OTA server
answers them WAIT_FOR_DATA with that time) instead of being left to time out.

Pure and sans-IO: every call takes ``now`` (the project clock, seconds). The rules:

* at most ``max_concurrent`` nodes are *active* (admitted, downloading);
* a node that asks while no slot is free joins a FIFO queue; free slots go to the
  earliest waiters (a slot freed while the queue is non-empty is reserved for its head,
  whoever asks first), so admission is in order of waiting time;
* a waiter is told a realistic ``request_time``: when a slot should free for its position
  (active nodes' ETAs, then ``expected_duration`` per node ahead of it), bounded to
  ``[now + min_wait, now + max_wait]``; the bound keeps waiters polling, so a slot freed
  early is taken soon;
* slots are freed by :meth:`release` (completed, aborted, failed) and by :meth:`expire`
  when an active node has been silent for its stall timeout; a waiter that does not come
  back within ``grace`` after its request time loses its place (it queues again at the
  back when it returns), so an absent node never blocks the queue.

Hence no starvation: while nodes finish or go silent, every waiter that keeps asking when
told reaches the head and is admitted. :class:`SchedulerState` holds everything (plain
values, ``to_dict`` / ``from_dict``) so the gateway resumes after a restart.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from proxyota.errors import InvalidArgument

__all__ = ["Admit", "ActiveEntry", "Expired", "FleetScheduler", "SchedulerState", "Wait", "WaitingEntry"]


def _finite(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise InvalidArgument(f"{name} must be > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Admit:
    """The node may download now (it holds a slot)."""

    node: str
    newly: bool  # True when this call gave it the slot


@dataclass(frozen=True)
class Wait:
    """No slot for the node yet: come back at ``request_time`` (0-based ``position`` in the queue)."""

    node: str
    request_time: float
    position: int


@dataclass(frozen=True)
class Expired:
    """What :meth:`FleetScheduler.expire` removed."""

    stalled: tuple[str, ...] = ()  # active nodes silent for their stall timeout
    dropped: tuple[str, ...] = ()  # waiters that did not come back in time


@dataclass
class ActiveEntry:
    since: float
    last_seen: float
    stall_timeout: float
    eta: float | None = None  # expected finish (absolute time), when known


@dataclass
class WaitingEntry:
    enqueued_at: float
    request_time: float
    grace: float


@dataclass
class SchedulerState:
    """Active nodes and the FIFO queue (dict order = queue order), plus counters."""

    active: dict[str, ActiveEntry] = field(default_factory=dict)
    queue: dict[str, WaitingEntry] = field(default_factory=dict)
    admitted: int = 0
    stalled: int = 0
    dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "active": {k: dataclasses.asdict(v) for k, v in self.active.items()},
            "queue": [{"node": k, **dataclasses.asdict(v)} for k, v in self.queue.items()],
            "admitted": self.admitted,
            "stalled": self.stalled,
            "dropped": self.dropped,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SchedulerState:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"scheduler state must be an object, got {type(data).__name__}")
        try:
            active = {str(k): ActiveEntry(**v) for k, v in dict(data.get("active", {})).items()}
            queue = {}
            for item in data.get("queue", []):
                fields = dict(item)
                node = str(fields.pop("node"))
                queue[node] = WaitingEntry(**fields)
            return cls(
                active=active,
                queue=queue,
                admitted=int(data.get("admitted", 0)),
                stalled=int(data.get("stalled", 0)),
                dropped=int(data.get("dropped", 0)),
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise InvalidArgument(f"malformed scheduler state: {exc}") from None


class FleetScheduler:
    """Bounded, fair admission of nodes to download (see the module docstring)."""

    def __init__(
        self,
        max_concurrent: int,
        *,
        min_wait: float = 10.0,
        max_wait: float = 300.0,
        default_duration: float = 3600.0,
        state: SchedulerState | None = None,
    ) -> None:
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise InvalidArgument(f"max_concurrent must be an integer >= 1, got {max_concurrent!r}")
        self.max_concurrent = max_concurrent
        self.min_wait = _finite("min_wait", min_wait)
        self.max_wait = _finite("max_wait", max_wait, positive=True)
        if not 0 <= self.min_wait <= self.max_wait:
            raise InvalidArgument(f"need 0 <= min_wait <= max_wait, got {min_wait!r}, {max_wait!r}")
        self.default_duration = _finite("default_duration", default_duration, positive=True)
        self.state = state if state is not None else SchedulerState()

    # -- queries ---------------------------------------------------------------------

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(self.state.active)

    @property
    def waiting(self) -> tuple[str, ...]:
        return tuple(self.state.queue)

    @property
    def free_slots(self) -> int:
        return max(0, self.max_concurrent - len(self.state.active))

    def is_active(self, node: str) -> bool:
        return node in self.state.active

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do."""
        times = [e.last_seen + e.stall_timeout for e in self.state.active.values()]
        times += [w.request_time + w.grace for w in self.state.queue.values()]
        return min(times) if times else None

    # -- events ----------------------------------------------------------------------

    def request(
        self,
        node: str,
        now: float,
        *,
        stall_timeout: float,
        expected_duration: float | None = None,
        eta: float | None = None,
    ) -> Admit | Wait:
        """Node ``node`` wants to download (a block or page request): admit or queue it.

        ``stall_timeout``: how long it may stay silent (active) or late (waiting);
        ``expected_duration``: a whole download's duration, for waiters' request times;
        ``eta``: the node's own expected finish, when it is active and that is known.
        """
        now = _finite("now", now)
        stall_timeout = _finite("stall_timeout", stall_timeout, positive=True)
        duration = self.default_duration
        if expected_duration is not None:
            duration = _finite("expected_duration", expected_duration, positive=True)
        if eta is not None:
            eta = _finite("eta", eta)
        self.expire(now)
        st = self.state
        entry = st.active.get(node)
        if entry is not None:
            entry.last_seen = max(entry.last_seen, now)
            entry.stall_timeout = stall_timeout
            entry.eta = eta
            return Admit(node, newly=False)
        waiter = st.queue.get(node)
        if waiter is None:
            waiter = st.queue[node] = WaitingEntry(enqueued_at=now, request_time=now, grace=stall_timeout)
        waiter.grace = stall_timeout
        position = list(st.queue).index(node)
        if position < self.free_slots:
            del st.queue[node]
            st.active[node] = ActiveEntry(since=now, last_seen=now, stall_timeout=stall_timeout, eta=eta)
            st.admitted += 1
            return Admit(node, newly=True)
        slot_time = self._slot_time(position, now, duration)
        waiter.request_time = min(max(slot_time, now + self.min_wait), now + self.max_wait)
        return Wait(node, waiter.request_time, position)

    def touch(self, node: str, now: float, *, stall_timeout: float | None = None, eta: float | None = None) -> None:
        """Activity of an active node that is not a request (e.g. a page being sent to it)."""
        now = _finite("now", now)
        entry = self.state.active.get(node)
        if entry is None:
            return
        entry.last_seen = max(entry.last_seen, now)
        if stall_timeout is not None:
            entry.stall_timeout = _finite("stall_timeout", stall_timeout, positive=True)
        if eta is not None:
            entry.eta = _finite("eta", eta)

    def release(self, node: str) -> bool:
        """The node is done (finished, aborted, failed, gave up): free its slot or place."""
        if self.state.active.pop(node, None) is not None:
            return True
        return self.state.queue.pop(node, None) is not None

    def expire(self, now: float) -> Expired:
        """Free the slots of active nodes silent for their stall timeout; drop waiters
        that are ``grace`` late."""
        now = _finite("now", now)
        st = self.state
        stalled = tuple(n for n, e in st.active.items() if now >= e.last_seen + e.stall_timeout)
        for n in stalled:
            del st.active[n]
        dropped = tuple(n for n, w in st.queue.items() if now >= w.request_time + w.grace)
        for n in dropped:
            del st.queue[n]
        st.stalled += len(stalled)
        st.dropped += len(dropped)
        return Expired(stalled, dropped)

    # -- internals -------------------------------------------------------------------

    def _slot_time(self, position: int, now: float, duration: float) -> float:
        """When a slot should be free for the waiter at ``position``: each slot frees at
        its holder's ETA (or start + duration), free slots now; each waiter ahead then
        holds a slot for ``duration``."""
        slots = [now] * self.free_slots
        for entry in self.state.active.values():
            finish = entry.eta if entry.eta is not None else entry.since + duration
            slots.append(max(now, finish))
        heapq.heapify(slots)
        for _ in range(position):
            start = heapq.heappop(slots)
            heapq.heappush(slots, start + duration)
        return slots[0]
