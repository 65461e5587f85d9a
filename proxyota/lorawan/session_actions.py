"""What the FUOTA session machine asks its driver to do (frozen dataclasses, no IO).

:class:`~proxyota.lorawan.session.FuotaSession` returns lists of these from ``start``,
``on_uplink`` and ``on_timer``; a driver (the ChirpStack adapter) executes them in order,
at once:

* :class:`CreateMulticastGroup` / :class:`DeleteMulticastGroup`: the network server's
  multicast group (ChirpStack ``MulticastGroupService``) carrying the session;
* :class:`SendUnicast`: enqueue one class A downlink for a device (ChirpStack
  ``DeviceService.Enqueue``); every request is its own action, one FRMPayload each;
* :class:`SendMulticast`: enqueue one multicast downlink now (the machine paces them
  under the duty cycle and returns each one from ``on_timer`` at its planned time);
* :class:`Log`: a note for the operator (the same event is in the device's history).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "Action",
    "CreateMulticastGroup",
    "DeleteMulticastGroup",
    "Log",
    "SendMulticast",
    "SendUnicast",
]


@dataclass(frozen=True)
class CreateMulticastGroup:
    """Create the multicast group (keys derived from McKey and McAddr) for ``dev_euis``."""

    mc_addr: int
    mc_app_s_key: bytes
    mc_nwk_s_key: bytes
    group_type: str  # "C" or "B"
    dr: int
    frequency: int  # Hz; 0 = class B ping-slot frequency hopping
    ping_slot_periodicity: int | None
    dev_euis: tuple[str, ...]


@dataclass(frozen=True)
class DeleteMulticastGroup:
    """Delete the multicast group created by :class:`CreateMulticastGroup`."""


@dataclass(frozen=True)
class SendUnicast:
    """Enqueue one unicast (class A) downlink. ``kind`` names the request (for logs)."""

    dev_eui: str
    fport: int
    payload: bytes
    kind: str = "request"


@dataclass(frozen=True)
class SendMulticast:
    """Send one multicast downlink now. ``kind``: "fragment" or "status"; ``airtime`` is
    the time on air (s) the machine accounted for it."""

    fport: int
    payload: bytes
    kind: str = "fragment"
    airtime: float = 0.0


@dataclass(frozen=True)
class Log:
    """An operator note: ``event`` names it; ``detail`` holds plain values."""

    event: str
    dev_eui: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


Action = CreateMulticastGroup | DeleteMulticastGroup | SendUnicast | SendMulticast | Log
