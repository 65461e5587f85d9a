"""The emulated node's OTA Upgrade client (device side of cluster 0x0019), sans-IO: it
takes decoded server commands and timer expiries with an explicit `now`, and returns what
to do (send a command, activate the new image) plus its next deadline.

Behaviour (the profile sets the numbers):

- IDLE: queries (QueryNextImageRequest, with the hardware version when the profile has
  one) `first_query_delay_s` after boot, every `query_interval_s`, and a random delay
  (up to `notify_delay_max_s`) after an ImageNotify whose filters match and whose jitter
  draw passes.
- QUERYING: SUCCESS offering another version of its own manufacturer code and image type
  starts (or, when the flash holds part of that same image, resumes) the download;
  anything else, or `max_query_retries` unanswered queries, back to IDLE.
- DOWNLOADING: ImageBlockRequest for the next offset with its own `max_data_size` (or
  ImagePageRequest with `page_size` and `response_spacing_ms` for paging profiles); a block
  is written only at the expected offset (others are counted and ignored); WAIT_FOR_DATA
  (with or without the trailing minimum_block_period) waits request_time - current_time
  (an offset when current_time is 0) and adopts the block period if honoured; the next
  request is sent no earlier than the block period after the previous one; ABORT or
  another status returns to IDLE, keeping the partial image to resume later. Once the
  header is in, it must name the offered image and allow the node's hardware version,
  else UpgradeEndRequest(INVALID_IMAGE).
- VERIFYING (`verify_time_s` after the last block): `otafile.verify_image`; failure ->
  UpgradeEndRequest(INVALID_IMAGE), the image is erased and re-requested after
  `invalid_image_retry_s`; success -> UpgradeEndRequest(SUCCESS).
- ENDING: UpgradeEndResponse -> activation after upgrade_time - current_time (offset when
  current_time is 0); upgrade_time 0xFFFFFFFF -> wait for a later UpgradeEndResponse,
  asking again every `wait_command_requery_s`; no answer after `end_request_retries`
  retries -> apply anyway (Silicon Labs' "upgrade wait threshold").
- ACTIVATE: the node reboots into the new file version, then queries with it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

from radio_emulators.zigbee import otafile
from radio_emulators.zigbee.devices import DeviceProfile
from radio_emulators.zigbee.ota_codec import (ImageBlockRequest, ImageBlockResponse, ImageNotify,
                                              ImagePageRequest, QueryNextImageRequest,
                                              QueryNextImageResponse, UpgradeEndRequest,
                                              UpgradeEndResponse)
from radio_emulators.zigbee.zcl import Status

__all__ = ["OtaState", "OtaStorage", "OtaClient", "Send", "Activate", "ClientStats", "Offer"]

MAX_WAIT_S = 24 * 3600.0


class OtaState(str, Enum):
    IDLE = "idle"
    QUERYING = "querying"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    ENDING = "ending"
    WAITING_COMMAND = "waiting-command"
    WAITING_UPGRADE = "waiting-upgrade"
    ACTIVATING = "activating"


@dataclass(frozen=True)
class Offer:
    manufacturer_code: int
    image_type: int
    file_version: int
    image_size: int


@dataclass
class OtaStorage:
    """The node's flash: what survives a reboot."""
    offer: Offer | None = None
    data: bytearray = field(default_factory=bytearray)

    def reset(self, offer: Offer | None) -> None:
        self.offer = offer
        self.data = bytearray()

    @property
    def offset(self) -> int:
        return len(self.data)

    @property
    def complete(self) -> bool:
        return self.offer is not None and len(self.data) == self.offer.image_size > 0


@dataclass(frozen=True)
class Send:
    command: object


@dataclass(frozen=True)
class Activate:
    file_version: int


@dataclass
class ClientStats:
    queries: int = 0
    block_requests: int = 0
    page_requests: int = 0
    end_requests: int = 0
    blocks: int = 0
    bytes: int = 0
    ignored_blocks: int = 0
    timeouts: int = 0
    wait_for_data: int = 0
    aborts: int = 0
    no_image: int = 0
    integrity_failures: int = 0
    header_rejects: int = 0
    resumes: int = 0
    restarts_from_zero: int = 0
    applied_without_response: int = 0
    download_started_at: float | None = None
    download_done_at: float | None = None


class OtaClient:
    def __init__(self, profile: DeviceProfile, storage: OtaStorage, *, current_file_version: int,
                 rng: random.Random, stats: ClientStats | None = None,
                 expected_sha256: Callable[[Offer], "bytes | None"] | None = None) -> None:
        self.profile = profile
        self.storage = storage
        self.current_file_version = current_file_version
        self.rng = rng
        self.stats = stats or ClientStats()
        self.expected_sha256 = expected_sha256 or (lambda offer: None)
        self.state = OtaState.IDLE
        self.deadline: float | None = None
        self.block_period_s = 0.0
        self.retries = 0
        self.awaiting = False
        self.last_request_at = float("-inf")
        self.page_end = 0
        self.header_checked = False
        self.last_reject: str | None = None

    # -- inputs -------------------------------------------------------------------------------
    def start(self, now: float) -> list:
        """At boot: resume a complete image's check, or query after the boot delay."""
        if not self.profile.resume_after_reboot:
            self.storage.reset(None)
        if self.storage.complete:
            self._enter(OtaState.VERIFYING, now + self.profile.verify_time_s)
        else:
            self._enter(OtaState.IDLE, now + self.profile.first_query_delay_s)
        return []

    def on_timer(self, now: float) -> list:
        if self.deadline is None or now < self.deadline:
            return []
        handler = {
            OtaState.IDLE: self._timer_idle,
            OtaState.QUERYING: self._timer_querying,
            OtaState.DOWNLOADING: self._timer_downloading,
            OtaState.VERIFYING: self._timer_verifying,
            OtaState.ENDING: self._timer_ending,
            OtaState.WAITING_COMMAND: self._timer_waiting_command,
            OtaState.WAITING_UPGRADE: self._timer_waiting_upgrade,
        }.get(self.state)
        if handler is None:
            self.deadline = None
            return []
        return handler(now)

    def handle(self, command: object, now: float) -> list:
        if isinstance(command, ImageNotify):
            return self._on_notify(command, now)
        if isinstance(command, QueryNextImageResponse):
            return self._on_query_response(command, now)
        if isinstance(command, ImageBlockResponse):
            return self._on_block_response(command, now)
        if isinstance(command, UpgradeEndResponse):
            return self._on_end_response(command, now)
        return []

    # -- helpers ----------------------------------------------------------------------------------
    def _enter(self, state: OtaState, deadline: float | None) -> None:
        self.state = state
        self.deadline = deadline

    def _ids(self) -> tuple[int, int]:
        return self.profile.manufacturer_code, self.profile.image_type

    def _query(self, now: float) -> list:
        self.stats.queries += 1
        self._enter(OtaState.QUERYING, now + self.profile.response_timeout_s)
        mfr, itype = self._ids()
        return [Send(QueryNextImageRequest(mfr, itype, self.current_file_version, self.profile.hardware_version))]

    def _end_request(self, status: int) -> Send:
        self.stats.end_requests += 1
        o = self.storage.offer
        return Send(UpgradeEndRequest(status, o.manufacturer_code, o.image_type, o.file_version))

    def _idle(self, now: float, delay: float) -> None:
        self.awaiting = False
        self.retries = 0
        self._enter(OtaState.IDLE, now + delay)

    def _reject(self, now: float, reason: str) -> list:
        """The image is not acceptable: tell the server, erase, ask again later."""
        self.last_reject = reason
        out = [self._end_request(Status.INVALID_IMAGE)]
        self.storage.reset(None)
        self._idle(now, self.profile.invalid_image_retry_s)
        return out

    def _request(self, now: float) -> list:
        p = self.profile
        o = self.storage.offer
        offset = self.storage.offset
        self.awaiting = True
        self.last_request_at = now
        if p.use_page_requests:
            self.stats.page_requests += 1
            self.page_end = min(offset + p.page_size, o.image_size)
            blocks = -(-(self.page_end - offset) // p.max_data_size)
            self.deadline = now + p.response_timeout_s + blocks * p.response_spacing_ms / 1000.0
            return [Send(ImagePageRequest(o.manufacturer_code, o.image_type, o.file_version, offset,
                                          p.max_data_size, p.page_size, p.response_spacing_ms))]
        self.stats.block_requests += 1
        self.deadline = now + p.response_timeout_s
        period = None
        if p.send_min_block_period:
            period = int(round(self.block_period_s / p.min_block_period_unit_s))
        return [Send(ImageBlockRequest(o.manufacturer_code, o.image_type, o.file_version, offset,
                                       p.max_data_size, None, min(period, 0xFFFF) if period is not None else None))]

    def _schedule_request(self, now: float, delay: float = 0.0) -> None:
        self.awaiting = False
        t = now + max(delay, self.profile.block_request_delay_s)
        if self.profile.honour_min_block_period:
            t = max(t, self.last_request_at + self.block_period_s)
        self._enter(OtaState.DOWNLOADING, t)

    def _check_header(self, now: float) -> list:
        data = bytes(self.storage.data)
        hlen = otafile.header_length_of(data)
        if hlen is None or len(data) < max(hlen, otafile.HEADER_MIN):
            return []
        self.header_checked = True
        o = self.storage.offer
        try:
            h = otafile.parse_header(data)
        except otafile.OtaFileError as exc:
            self.stats.header_rejects += 1
            return self._reject(now, f"header: {exc}")
        problem = None
        if (h.manufacturer_id, h.image_type, h.file_version) != (o.manufacturer_code, o.image_type, o.file_version):
            problem = "header does not name the offered image"
        elif h.total_image_size != o.image_size:
            problem = f"header total_image_size {h.total_image_size} != offered {o.image_size}"
        elif (self.profile.hardware_version is not None and h.minimum_hardware_version is not None
              and not h.minimum_hardware_version <= self.profile.hardware_version <= h.maximum_hardware_version):
            problem = f"hardware version {self.profile.hardware_version} outside the image's range"
        if problem:
            self.stats.header_rejects += 1
            return self._reject(now, problem)
        return []

    # -- timers ------------------------------------------------------------------------------------
    def _timer_idle(self, now: float) -> list:
        self.retries = 0
        return self._query(now)

    def _timer_querying(self, now: float) -> list:
        self.stats.timeouts += 1
        self.retries += 1
        if self.retries > self.profile.max_query_retries:
            self._idle(now, self.profile.retry_backoff_s)
            return []
        return self._query(now)

    def _timer_downloading(self, now: float) -> list:
        if self.awaiting:
            self.stats.timeouts += 1
            self.retries += 1
            if self.retries > self.profile.max_block_retries:
                if not self.profile.keep_partial_on_abort:
                    self.storage.reset(None)
                self._idle(now, self.profile.retry_backoff_s)
                return []
        return self._request(now)

    def _timer_verifying(self, now: float) -> list:
        o = self.storage.offer
        reason = otafile.verify_image(
            bytes(self.storage.data), manufacturer_id=o.manufacturer_code, image_type=o.image_type,
            file_version=o.file_version, image_size=o.image_size,
            hardware_version=self.profile.hardware_version, sha256=self.expected_sha256(o),
            trusted_keys=self.profile.trusted_keys)
        if reason is not None:
            self.stats.integrity_failures += 1
            return self._reject(now, reason)
        self.retries = 0
        self._enter(OtaState.ENDING, now + self.profile.end_response_timeout_s)
        return [self._end_request(Status.SUCCESS)]

    def _timer_ending(self, now: float) -> list:
        self.retries += 1
        self.stats.timeouts += 1
        if self.retries > self.profile.end_request_retries:
            self.stats.applied_without_response += 1
            return self._activate()
        self.deadline = now + self.profile.end_response_timeout_s
        return [self._end_request(Status.SUCCESS)]

    def _timer_waiting_command(self, now: float) -> list:
        self.deadline = now + self.profile.wait_command_requery_s
        return [self._end_request(Status.SUCCESS)]

    def _timer_waiting_upgrade(self, now: float) -> list:
        return self._activate()

    def _activate(self) -> list:
        self._enter(OtaState.ACTIVATING, None)
        return [Activate(self.storage.offer.file_version)]

    # -- commands ----------------------------------------------------------------------------------
    def _on_notify(self, cmd: ImageNotify, now: float) -> list:
        if self.state != OtaState.IDLE:
            return []
        mfr, itype = self._ids()
        if cmd.manufacturer_code is not None and cmd.manufacturer_code not in (mfr, 0xFFFF):
            return []
        if cmd.image_type is not None and cmd.image_type not in (itype, 0xFFFF):
            return []
        if cmd.new_file_version is not None and cmd.new_file_version == self.current_file_version:
            return []
        if not 1 <= cmd.query_jitter <= 100 or self.rng.randint(1, 100) > cmd.query_jitter:
            return []
        self.deadline = min(self.deadline or float("inf"),
                            now + self.rng.uniform(0.0, self.profile.notify_delay_max_s))
        return []

    def _on_query_response(self, rsp: QueryNextImageResponse, now: float) -> list:
        if self.state != OtaState.QUERYING:
            return []
        mfr, itype = self._ids()
        if (rsp.status != Status.SUCCESS or (rsp.manufacturer_code, rsp.image_type) != (mfr, itype)
                or rsp.file_version == self.current_file_version or not rsp.image_size):
            self.stats.no_image += 1
            self._idle(now, self.profile.query_interval_s)
            return []
        offer = Offer(rsp.manufacturer_code, rsp.image_type, rsp.file_version, rsp.image_size)
        if self.storage.offer == offer and self.storage.offset:
            self.stats.resumes += 1
        else:
            if self.storage.offset:
                self.stats.restarts_from_zero += 1
            self.storage.reset(offer)
            self.header_checked = False
        if self.stats.download_started_at is None:
            self.stats.download_started_at = now
        self.retries = 0
        if self.storage.complete:
            self._enter(OtaState.VERIFYING, now + self.profile.verify_time_s)
            return []
        self.header_checked = self.storage.offset >= otafile.HEADER_MIN and self.header_checked
        self._schedule_request(now)
        if self.deadline <= now:
            return self._request(now)
        return []

    def _on_block_response(self, rsp: ImageBlockResponse, now: float) -> list:
        if self.state != OtaState.DOWNLOADING:
            return []
        p = self.profile
        o = self.storage.offer
        if rsp.status == Status.SUCCESS:
            if (rsp.manufacturer_code, rsp.image_type, rsp.file_version) != (
                    o.manufacturer_code, o.image_type, o.file_version):
                self.stats.ignored_blocks += 1
                return []
            data = rsp.image_data
            if (rsp.file_offset != self.storage.offset or not data or len(data) > p.max_data_size
                    or rsp.file_offset + len(data) > o.image_size):
                self.stats.ignored_blocks += 1
                return []
            self.storage.data += data
            self.stats.blocks += 1
            self.stats.bytes += len(data)
            self.retries = 0
            out: list = []
            if not self.header_checked:
                out = self._check_header(now)
                if self.state != OtaState.DOWNLOADING:
                    return out
            if self.storage.complete:
                self.awaiting = False
                self.stats.download_done_at = now
                self._enter(OtaState.VERIFYING, now + p.verify_time_s)
                return out
            if p.use_page_requests and self.storage.offset < self.page_end:
                self.deadline = now + p.response_timeout_s       # more of this page to come
                return out
            self._schedule_request(now)
            if self.deadline <= now:
                out += self._request(now)
            return out
        if rsp.status == Status.WAIT_FOR_DATA:
            self.stats.wait_for_data += 1
            if rsp.current_time:
                delay = max(0, rsp.request_time - rsp.current_time)
            else:
                delay = rsp.request_time
            if rsp.minimum_block_period is not None and p.honour_min_block_period:
                self.block_period_s = rsp.minimum_block_period * p.min_block_period_unit_s
            self._schedule_request(now, min(float(delay), MAX_WAIT_S))
            return []
        self.stats.aborts += 1
        if not p.keep_partial_on_abort:
            self.storage.reset(None)
        self._idle(now, p.retry_backoff_s)
        return []

    def _on_end_response(self, rsp: UpgradeEndResponse, now: float) -> list:
        if self.state not in (OtaState.ENDING, OtaState.WAITING_COMMAND, OtaState.WAITING_UPGRADE):
            return []
        o = self.storage.offer
        if rsp.manufacturer_code not in (o.manufacturer_code, 0xFFFF) or rsp.image_type not in (
                o.image_type, 0xFFFF) or rsp.file_version not in (o.file_version, 0xFFFFFFFF):
            return []
        delay = rsp.delay_s()
        if delay is None:
            self._enter(OtaState.WAITING_COMMAND, now + self.profile.wait_command_requery_s)
            return []
        self._enter(OtaState.WAITING_UPGRADE, now + min(delay, MAX_WAIT_S))
        if delay <= 0:
            return self._activate()
        return []

    # -- attributes ------------------------------------------------------------------------------------
    @property
    def image_upgrade_status(self) -> int:
        return {OtaState.DOWNLOADING: 1, OtaState.VERIFYING: 2, OtaState.ENDING: 2,
                OtaState.WAITING_COMMAND: 3, OtaState.WAITING_UPGRADE: 4,
                OtaState.ACTIVATING: 4}.get(self.state, 0)
