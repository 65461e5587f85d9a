"""ChirpStack v4 adapter: the gRPC API client and the integration event receiver.

* :mod:`.client`: :class:`ChirpStackClient` (multicast groups, device queue, keys) over
  ``grpc.aio`` with retries, :class:`ChirpStackError`, :class:`RetryPolicy`.
* :mod:`.events`: proxyota's transport-neutral event dataclasses (:class:`UplinkEvent`,
  :class:`StatusEvent`...) and :func:`parse_event` for ChirpStack's JSON / Protobuf bodies.
* :mod:`.integration`: :class:`IntegrationReceiver`, the aiohttp endpoint for ChirpStack's
  HTTP integration, on top of the reusable :class:`EventDispatcher`.
"""

from proxyota.chirpstack.client import (
    ChirpStackClient,
    ChirpStackError,
    DeviceInfo,
    DeviceKeys,
    DeviceQueueItem,
    MulticastQueueItem,
    RetryPolicy,
)
from proxyota.chirpstack.events import (
    AckEvent,
    Event,
    JoinEvent,
    LogEvent,
    RxInfo,
    StatusEvent,
    TxAckEvent,
    UplinkEvent,
    parse_event,
)
from proxyota.chirpstack.integration import DispatchResult, EventDispatcher, IntegrationReceiver

__all__ = [
    "AckEvent",
    "ChirpStackClient",
    "ChirpStackError",
    "DeviceInfo",
    "DeviceKeys",
    "DeviceQueueItem",
    "DispatchResult",
    "Event",
    "EventDispatcher",
    "IntegrationReceiver",
    "JoinEvent",
    "LogEvent",
    "MulticastQueueItem",
    "RetryPolicy",
    "RxInfo",
    "StatusEvent",
    "TxAckEvent",
    "UplinkEvent",
    "parse_event",
]
