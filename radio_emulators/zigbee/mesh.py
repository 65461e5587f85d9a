"""The emulated mesh's radio model: it decides, for a frame handed to the network at time
`now`, when (and whether) it reaches its destination and when the sender learns the
outcome, and books the channel time it uses. Sans-IO: times in, times out; the asyncio
runtime (`network.py`) sleeps until those times and hands the frames over.

Model (all parameters in `MeshConfig`):

- **Routes** follow the tree of `Topology` (parent links), one 802.15.4 hop per link.
- **Neighbourhoods.** Each router (and the coordinator) with its children forms one
  neighbourhood sharing one channel: a frame on the link parent<->child occupies the
  parent's neighbourhood for its airtime (plus turnaround and MAC ACK, or the ACK wait when
  lost), so frames in one neighbourhood serialise; radios are half-duplex, so a node also
  never sends or receives two frames at once (a relay receives, then forwards). With
  `shared_channel` the whole mesh is one neighbourhood. Bookings fill gaps: a frame takes
  the earliest interval free on every resource it needs.
- **Per hop:** CSMA-CA backoff (random 0..2^BE-1 unit periods, BE = 3 + attempt, max 5) and
  CCA, then the frame; each attempt is lost with the link's loss probability (the sender's
  ACK wait then expires); up to 1 + `mac_retries` attempts. A received frame is processed
  for `hop_latency_s` before the next hop (decryption, routing, queueing).
- **Sleepy end devices** receive through their parent's indirect queue: a frame that
  reaches the parent waits for the child's next data poll (MAC data request + ACK, then
  the frame and its ACK); a frame that is not polled within `indirect_timeout_s` (7.68 s,
  EmberZNet's default indirect transmission timeout; the 802.15.4
  macTransactionPersistenceTime plays the same role) is dropped. The poll times come
  from the node (`poll_schedule`), taken when the frame reaches the parent: a poll the
  node only decides on later is not foreseen (documented approximation). Idle polls that
  fetch nothing are not booked.
- **APS.** A unicast with APS ACK is retried end to end up to `aps_retries` times; each
  attempt waits `aps_ack_timeout(hops, sleepy)` for the ACK (100 ms + 2 x 50 ms per hop, as
  EmberZNet's APS ACK wait, plus the indirect timeout towards a sleepy node). The destination delivers the first copy it gets
  (duplicates are filtered by APS counter). Without APS ACK the sender's confirmation is
  the first hop's MAC result (as EmberZNet's messageSentHandler).
- **APS payload limit:** `max_aps_payload` (82 bytes, see `phy`); bigger frames are refused
  at the sender (no APS fragmentation, like ZCL OTA traffic on real stacks).
- **Broadcast:** flooded over the tree; every router that hears it rebroadcasts after a
  random jitter (0..`broadcast_jitter_s`), repeating up to `broadcast_retries` times while
  a neighbour has not heard it (passive ACK). Sleepy children get it from their parent at
  their next poll within `indirect_timeout_s`.
"""

from __future__ import annotations

import bisect
import heapq
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from radio_emulators.zigbee import phy
from radio_emulators.zigbee.topology import Topology

__all__ = ["MeshConfig", "Mesh", "UnicastPlan", "MeshStats", "Airspace"]

PollSchedule = Callable[[int, float], "float | None"]   # (node index, t) -> first poll >= t


@dataclass
class MeshConfig:
    loss: float = 0.0                    # per attempt, per hop
    link_loss: dict[tuple[int, int], float] = field(default_factory=dict)   # (index, index)
    hop_latency_s: float = 0.004
    mac_retries: int = 3
    aps_retries: int = 3
    aps_ack_wait_base_s: float = 0.1     # EmberZNet-like: 100 ms + 2 x 50 ms per hop
    aps_ack_wait_per_hop_s: float = 0.05
    max_aps_payload: int = phy.MAX_APS_PAYLOAD
    indirect_timeout_s: float = 7.68
    shared_channel: bool = False
    broadcast_retries: int = 2
    broadcast_jitter_s: float = 0.064
    passive_ack_timeout_s: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError("loss must be within [0, 1]")
        if self.mac_retries < 0 or self.aps_retries < 0 or self.max_aps_payload <= 0:
            raise ValueError("retries must be >= 0 and max_aps_payload > 0")


@dataclass
class UnicastPlan:
    delivered_at: float | None     # destination's APS layer gets the frame (first copy)
    confirm_at: float              # the sender learns the outcome
    success: bool                  # the sender's view (APS ACK, or first-hop MAC ACK)
    aps_attempts: int = 1


@dataclass
class MeshStats:
    airtime_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    mac_attempts: int = 0
    mac_failures: int = 0
    hop_failures: int = 0
    aps_retries: int = 0
    indirect_expired: int = 0
    polls: int = 0
    frames: int = 0
    broadcasts: int = 0

    @property
    def total_airtime_s(self) -> float:
        return sum(self.airtime_s.values())


class Airspace:
    """Booked busy intervals per resource (a neighbourhood's channel, a node's radio)."""

    def __init__(self) -> None:
        self._busy: dict[object, list[tuple[float, float]]] = defaultdict(list)

    def _conflict_end(self, res: object, t: float, dur: float) -> float | None:
        lst = self._busy[res]
        i = bisect.bisect_right(lst, (t, float("inf")))
        if i > 0 and lst[i - 1][1] > t:
            return lst[i - 1][1]
        if i < len(lst) and lst[i][0] < t + dur:
            return lst[i][1]
        return None

    def book(self, resources: tuple, earliest: float, dur: float) -> float:
        t = earliest
        while True:
            moved = False
            for res in resources:
                end = self._conflict_end(res, t, dur)
                if end is not None:
                    t, moved = end, True
            if not moved:
                break
        for res in resources:
            bisect.insort(self._busy[res], (t, t + dur))
        return t

    def prune(self, before: float) -> None:
        for res, lst in self._busy.items():
            k = 0
            while k < len(lst) and lst[k][1] < before:
                k += 1
            if k:
                del lst[:k]


class Mesh:
    def __init__(self, topology: Topology, config: MeshConfig | None = None, *, seed: int = 0,
                 poll_schedule: PollSchedule | None = None,
                 alive: Callable[[int], bool] | None = None) -> None:
        self.topology = topology
        self.config = config or MeshConfig()
        self.rng = random.Random(seed)
        self.poll_schedule = poll_schedule or (lambda index, t: t)
        self.alive = alive or (lambda index: True)
        self.air = Airspace()
        self.stats = MeshStats()
        self._last_prune = float("-inf")

    # -- helpers ---------------------------------------------------------------------------
    def cell_of(self, a: int, b: int) -> str:
        if self.config.shared_channel:
            return "mesh"
        nb = self.topology.nodes[b]
        parent = a if nb.parent == a else b
        return f"cell:{self.topology.nodes[parent].nwk:04x}"

    def loss_of(self, a: int, b: int) -> float:
        cfg = self.config
        return cfg.link_loss.get((a, b), cfg.link_loss.get((b, a), cfg.loss))

    def aps_ack_timeout(self, hops: int, sleepy: bool) -> float:
        cfg = self.config
        return cfg.aps_ack_wait_base_s + cfg.aps_ack_wait_per_hop_s * 2 * hops + (
            cfg.indirect_timeout_s if sleepy else 0.0)

    def _prune(self, now: float) -> None:
        if now - self._last_prune > 5.0:
            self.air.prune(now - 1.0)
            self._last_prune = now

    def _exchange(self, a: int, b: int, psdu: int, t_ready: float, *, attempts: int) -> tuple[bool, float]:
        """Up to `attempts` MAC attempts a -> b from t_ready; (received, time the sender is
        done). Books the channel and both radios."""
        cell = self.cell_of(a, b)
        resources = (cell, ("radio", a), ("radio", b))
        loss = self.loss_of(a, b)
        t = t_ready
        air = phy.frame_airtime(psdu)
        for attempt in range(attempts):
            be = min(3 + attempt, 5)
            t += self.rng.randrange(1 << be) * phy.BACKOFF_UNIT_S + phy.CCA_S
            ok = self.alive(b) and self.rng.random() >= loss
            dur = air + (phy.TURNAROUND_S + phy.frame_airtime(phy.ACK_PSDU) if ok else phy.ACK_WAIT_S)
            start = self.air.book(resources, t, dur)
            self.stats.mac_attempts += 1
            self.stats.airtime_s[cell] += air + (phy.frame_airtime(phy.ACK_PSDU) if ok else 0.0)
            t = start + dur
            if ok:
                return True, t
            self.stats.mac_failures += 1
        return False, t

    def _hop(self, a: int, b: int, psdu: int, t_ready: float) -> tuple[bool, float]:
        """One hop a -> b with MAC retries; indirect when b is a sleepy child of a."""
        attempts = 1 + self.config.mac_retries
        nb = self.topology.nodes[b]
        if not (nb.sleepy and nb.parent == a):
            ok, t = self._exchange(a, b, psdu, t_ready, attempts=attempts)
            if not ok:
                self.stats.hop_failures += 1
            return ok, t
        expiry = t_ready + self.config.indirect_timeout_s
        t = t_ready
        while True:
            poll = self.poll_schedule(b, t) if self.alive(b) else None
            if poll is None or poll > expiry:
                self.stats.indirect_expired += 1
                self.stats.hop_failures += 1
                return False, expiry
            self.stats.polls += 1
            polled, t_poll = self._exchange(b, a, phy.POLL_PSDU, poll, attempts=1)
            if polled:
                ok, t_done = self._exchange(a, b, psdu, t_poll, attempts=attempts)
                if ok:
                    return True, t_done
                t = t_done
            else:
                t = t_poll
            t += 1e-6

    def _traverse(self, path: list[int], psdu: int, t0: float) -> tuple[bool, float, float, bool]:
        """(arrived, arrival or failure time, time the first hop finished, first hop ok)."""
        t = t0
        first_done, first_ok = t0, False
        for k, (a, b) in enumerate(zip(path, path[1:])):
            if k and not self.alive(a):
                return False, t, first_done, first_ok
            ok, t = self._hop(a, b, psdu, t)
            if k == 0:
                first_done, first_ok = t, ok
            if not ok:
                return False, t, first_done, first_ok
            t += self.config.hop_latency_s
        return True, t, first_done, first_ok

    # -- public ----------------------------------------------------------------------------
    def plan_unicast(self, src: int, dst: int, aps_payload: int, now: float, *, aps_ack: bool) -> UnicastPlan:
        if aps_payload > self.config.max_aps_payload:
            raise ValueError(f"APS payload {aps_payload} bytes > limit {self.config.max_aps_payload}")
        self._prune(now)
        self.stats.frames += 1
        path = self.topology.path(src, dst)
        if len(path) == 1:
            return UnicastPlan(now, now, True)
        psdu = phy.data_psdu(aps_payload)
        if not self.alive(src):
            return UnicastPlan(None, now, False)
        if not aps_ack:
            ok, t, first, first_ok = self._traverse(path, psdu, now)
            return UnicastPlan(t if ok else None, first, first_ok)
        hops = len(path) - 1
        timeout = self.aps_ack_timeout(hops, self.topology.nodes[dst].sleepy)
        delivered = None
        t_attempt = now
        back = list(reversed(path))
        for attempt in range(1 + self.config.aps_retries):
            if attempt:
                self.stats.aps_retries += 1
            ok, t, _, _ = self._traverse(path, psdu, t_attempt)
            if ok:
                if delivered is None:
                    delivered = t
                ack_ok, t_ack, _, _ = self._traverse(back, phy.APS_ACK_PSDU, t)
                if ack_ok and t_ack <= t_attempt + timeout:
                    return UnicastPlan(delivered, t_ack, True, attempt + 1)
            t_attempt = max(t_attempt + timeout, t)
        return UnicastPlan(delivered, t_attempt, False, 1 + self.config.aps_retries)

    def plan_broadcast(self, src: int, aps_payload: int, now: float) -> dict[int, float]:
        """Node index -> time it first gets the broadcast (the source excluded)."""
        if aps_payload > self.config.max_aps_payload:
            raise ValueError(f"APS payload {aps_payload} bytes > limit {self.config.max_aps_payload}")
        self._prune(now)
        self.stats.broadcasts += 1
        cfg = self.config
        topo = self.topology
        psdu = phy.data_psdu(aps_payload)
        air = phy.frame_airtime(psdu)
        heard: dict[int, float] = {src: now}
        queue: list[tuple[float, int]] = [(now, src)]
        sleepy_parent: dict[int, float] = {}
        while queue:
            t_heard, x = heapq.heappop(queue)
            if not self.alive(x):
                continue
            if not topo.nodes[x].is_router:
                parent = topo.nodes[x].parent
                if x == src and parent is not None:      # an end device hands it to its parent
                    ok, t_done = self._exchange(x, parent, psdu, now, attempts=1 + cfg.mac_retries)
                    if ok:
                        heard[parent] = t_done
                        heapq.heappush(queue, (t_done, parent))
                continue
            targets = [n for n in topo.neighbours(x) if not topo.nodes[n].sleepy or topo.nodes[n].parent != x]
            sleepy_children = [n for n in topo.children(x) if topo.nodes[n].sleepy]
            t = t_heard + (cfg.hop_latency_s + self.rng.uniform(0, cfg.broadcast_jitter_s) if x != src else 0.0)
            pending = [n for n in targets if n not in heard]
            cells = tuple(sorted({self.cell_of(x, n) for n in topo.neighbours(x)})) or ("mesh",)
            for _ in range(1 + cfg.broadcast_retries):
                t += self.rng.randrange(8) * phy.BACKOFF_UNIT_S + phy.CCA_S
                start = self.air.book(cells + (("radio", x),), t, air)
                for c in cells:
                    self.stats.airtime_s[c] += air
                t_end = start + air
                for n in list(pending):
                    if self.alive(n) and self.rng.random() >= self.loss_of(x, n):
                        pending.remove(n)
                        if n not in heard or heard[n] > t_end:
                            heard[n] = t_end
                            heapq.heappush(queue, (t_end, n))
                if not pending:
                    break
                t = t_end + cfg.passive_ack_timeout_s
            for n in sleepy_children:
                if n not in heard:
                    sleepy_parent[n] = t_heard
        for n, t_parent in sleepy_parent.items():
            ok, t_done = self._hop(topo.nodes[n].parent, n, psdu, t_parent)   # from the parent's buffer
            if ok:
                heard[n] = t_done
        heard.pop(src, None)
        return heard
