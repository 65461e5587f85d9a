"""Layout of the emulated mesh: a coordinator, routers and end devices (rx-on or sleepy)
arranged as a tree of parent links with a hop count (depth) per node, generated from a
seed so that every run has the same addresses and the same tree.

Routing follows the tree (a node's route to the coordinator is its chain of parents, as
the many-to-one routes a Zigbee concentrator sets up); no route repair is modelled, so a
dropped router cuts off everything below it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["MeshNode", "Topology", "COORDINATOR", "ROUTER", "END_DEVICE"]

COORDINATOR = "coordinator"
ROUTER = "router"
END_DEVICE = "end_device"


@dataclass
class MeshNode:
    index: int
    nwk: int
    ieee: bytes                 # 8 bytes, over-the-air (little-endian) order
    role: str
    sleepy: bool = False
    parent: int | None = None   # index of the parent node
    depth: int = 0              # hops from the coordinator

    @property
    def is_router(self) -> bool:
        return self.role in (COORDINATOR, ROUTER)

    @property
    def rx_on_when_idle(self) -> bool:
        return not self.sleepy

    @property
    def ieee_str(self) -> str:
        return ":".join(f"{b:02x}" for b in reversed(self.ieee))


@dataclass
class Topology:
    nodes: list[MeshNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_nwk = {n.nwk: n for n in self.nodes}
        self._children: dict[int, list[int]] = {n.index: [] for n in self.nodes}
        for n in self.nodes:
            if n.parent is not None:
                self._children[n.parent].append(n.index)

    # -- look-ups --------------------------------------------------------------------------
    @property
    def coordinator(self) -> MeshNode:
        return self.nodes[0]

    def by_nwk(self, nwk: int) -> MeshNode:
        return self._by_nwk[nwk]

    def has_nwk(self, nwk: int) -> bool:
        return nwk in self._by_nwk

    def children(self, index: int) -> list[int]:
        return list(self._children[index])

    def neighbours(self, index: int) -> list[int]:
        """Tree neighbours: parent and children."""
        node = self.nodes[index]
        out = list(self._children[index])
        if node.parent is not None:
            out.insert(0, node.parent)
        return out

    def chain_up(self, index: int) -> list[int]:
        """index, parent, ..., coordinator."""
        out = [index]
        while self.nodes[out[-1]].parent is not None:
            out.append(self.nodes[out[-1]].parent)
        return out

    def path(self, src: int, dst: int) -> list[int]:
        """The node indices a frame visits from src to dst along the tree."""
        up = self.chain_up(src)
        down = self.chain_up(dst)
        common = set(up) & set(down)
        i = next(k for k, n in enumerate(up) if n in common)
        j = down.index(up[i])
        return up[:i + 1] + list(reversed(down[:j]))

    def hops(self, index: int) -> int:
        return self.nodes[index].depth

    @property
    def max_depth(self) -> int:
        return max(n.depth for n in self.nodes)

    # -- generation -------------------------------------------------------------------------
    @classmethod
    def generate(cls, *, routers: int, end_devices: int = 0, sleepy: int = 0, max_hops: int = 3,
                 seed: int = 0, coordinator_ieee: bytes | None = None) -> "Topology":
        """`routers` routers, `end_devices` rx-on end devices and `sleepy` sleepy end devices
        (all but the coordinator run an OTA client), no node more than `max_hops` hops from
        the coordinator. The first routers form a chain so that the deepest hop count is
        reached when there are enough routers; the others pick a random parent."""
        if routers < 0 or end_devices < 0 or sleepy < 0 or max_hops < 1:
            raise ValueError("counts must be >= 0 and max_hops >= 1")
        rng = random.Random(seed)
        used_nwk = {0x0000}
        used_ieee: set[bytes] = set()

        def new_nwk() -> int:
            while True:
                nwk = rng.randint(0x0001, 0xFFF7)
                if nwk not in used_nwk:
                    used_nwk.add(nwk)
                    return nwk

        def new_ieee() -> bytes:
            while True:
                display = bytes([0x00, 0x0D, 0x6F]) + bytes(rng.randrange(256) for _ in range(5))
                wire = bytes(reversed(display))
                if wire not in used_ieee:
                    used_ieee.add(wire)
                    return wire

        nodes = [MeshNode(0, 0x0000, coordinator_ieee or new_ieee(), COORDINATOR)]
        chain = min(routers, max(0, max_hops - 1)) if (end_devices + sleepy) else min(routers, max_hops)
        for k in range(routers):
            if k < chain:
                parent = nodes[-1] if k else nodes[0]
            else:
                options = [n for n in nodes if n.is_router and n.depth < max_hops]
                parent = rng.choice(options)
            nodes.append(MeshNode(len(nodes), new_nwk(), new_ieee(), ROUTER, parent=parent.index,
                                  depth=parent.depth + 1))
        deepest = max((n for n in nodes if n.is_router and n.depth < max_hops), key=lambda n: n.depth)
        kinds = [True] * sleepy + [False] * end_devices
        for k, is_sleepy in enumerate(kinds):
            if k == 0:
                parent = deepest
            else:
                parent = rng.choice([n for n in nodes if n.is_router and n.depth < max_hops])
            nodes.append(MeshNode(len(nodes), new_nwk(), new_ieee(), END_DEVICE, sleepy=is_sleepy,
                                  parent=parent.index, depth=parent.depth + 1))
        return cls(nodes)
