"""Device profiles of the emulated Zigbee nodes: identity (Basic cluster strings,
manufacturer code, image type, hardware version), how their OTA client behaves (block
size, paging, pacing, timeouts, verification time), sleepy polling, and the quirks seen in
the field, as presets.

Quirk presets (`PROFILES`):
- `slow-crc`: spends 30 s checking the image after the last block before it sends
  UpgradeEndRequest (some EFR32 devices; breaks servers with a fixed 30 s stall timeout);
- `small-blocks`: asks for 32-byte blocks;
- `ignores-min-block-period`: ignores the MinimumBlockPeriod a server sets (it still waits
  the WAIT_FOR_DATA delay), and keeps its own fast pace;
- `legacy-ms-period`: reads MinimumBlockPeriod in milliseconds (older OTA revisions);
- `reboots-mid-download`: reboots once when half of the image is in, then resumes;
- `corrupting-link`: one block (the 3rd) arrives with a flipped byte, caught at the
  integrity check, image re-requested;
- `hw-out-of-range`: hardware version 9 (test images allow 1..3): the server must answer
  NO_IMAGE_AVAILABLE; the node also refuses such an image itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["DeviceProfile", "ROUTER", "END_DEVICE", "SLEEPY", "PROFILES", "profile"]


@dataclass(frozen=True)
class DeviceProfile:
    name: str = "router"
    manufacturer: str = "Emulated Devices"
    model: str = "EMU-R1"
    manufacturer_code: int = 0x1234
    image_type: int = 0x0001
    file_version: int = 0x00000001
    hardware_version: int | None = 1         # sent in QueryNextImage when not None
    device_type: int = 0x0100                # HA On/Off light
    stack_version: int = 0x0002              # Zigbee PRO
    # OTA client
    max_data_size: int = 64
    use_page_requests: bool = False
    page_size: int = 256
    response_spacing_ms: int = 100
    send_min_block_period: bool = False      # field-control bit 1 in ImageBlockRequest
    honour_min_block_period: bool = True
    min_block_period_unit_s: float = 1.0     # 1.0: seconds (current spec); 0.001: ms (older)
    block_request_delay_s: float = 0.0       # own pause between a block and the next request
    response_timeout_s: float = 5.0
    max_block_retries: int = 8
    max_query_retries: int = 3
    first_query_delay_s: float = 5.0         # after boot
    query_interval_s: float = 3600.0         # while idle
    retry_backoff_s: float = 60.0            # after a stalled or aborted download
    invalid_image_retry_s: float = 10.0      # after an image failed verification
    notify_delay_max_s: float = 2.0          # random delay before answering ImageNotify
    verify_time_s: float = 0.5               # image check after the last block
    end_response_timeout_s: float = 10.0
    end_request_retries: int = 3             # then the image is applied anyway
    wait_command_requery_s: float = 3600.0   # upgrade_time 0xFFFFFFFF: ask again after
    boot_time_s: float = 3.0
    resume_after_reboot: bool = True
    keep_partial_on_abort: bool = True
    aps_ack: bool = True
    # sleepy end devices
    sleepy: bool = False
    poll_period_s: float = 5.0               # long poll
    fast_poll_s: float = 0.25                # short poll while waiting for data
    fast_poll_window_s: float = 4.0          # short polls for this long after a transmission
    # quirks
    reboot_at_fraction: float | None = None
    corrupt_block_index: int | None = None   # 1-based index of the block delivered corrupted
    trusted_keys: tuple[bytes, ...] = ()     # raw public keys; then a 0xF519 signature is required

    @property
    def rx_on_when_idle(self) -> bool:
        return not self.sleepy

    def with_(self, **changes) -> "DeviceProfile":
        return replace(self, **changes)


ROUTER = DeviceProfile()
END_DEVICE = DeviceProfile(name="end-device", model="EMU-E1", device_type=0x0302)
SLEEPY = DeviceProfile(name="sleepy", model="EMU-S1", device_type=0x0302, sleepy=True,
                       use_page_requests=True, max_data_size=48, page_size=256,
                       response_spacing_ms=200, response_timeout_s=8.0)

PROFILES: dict[str, DeviceProfile] = {
    "router": ROUTER,
    "end-device": END_DEVICE,
    "sleepy": SLEEPY,
    "slow-crc": ROUTER.with_(name="slow-crc", model="EMU-R1-SLOWCRC", verify_time_s=30.0),
    "small-blocks": ROUTER.with_(name="small-blocks", model="EMU-R1-SMALL", max_data_size=32),
    "ignores-min-block-period": ROUTER.with_(name="ignores-min-block-period", model="EMU-R1-FAST",
                                             honour_min_block_period=False, send_min_block_period=False),
    "legacy-ms-period": ROUTER.with_(name="legacy-ms-period", model="EMU-R1-MS",
                                     min_block_period_unit_s=0.001, send_min_block_period=True),
    "reboots-mid-download": ROUTER.with_(name="reboots-mid-download", model="EMU-R1-REBOOT",
                                         reboot_at_fraction=0.5),
    "corrupting-link": ROUTER.with_(name="corrupting-link", model="EMU-R1-CORRUPT", corrupt_block_index=3),
    "hw-out-of-range": ROUTER.with_(name="hw-out-of-range", model="EMU-R1-HW9", hardware_version=9),
}


def profile(name: str) -> DeviceProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown device profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
