"""Fixtures for the Zigbee OTA tests: the shared real OTA files (never copied into the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ../shared/zigbee-ota relative to the repository (see its SOURCES.txt).
SHARED_OTA_DIR = Path(__file__).parents[2].parent / "shared" / "zigbee-ota"

NODON = "128b-0109-010300-700_nodon_sin_rs_fm_stm32_V010300.zigbee"
UBISYS = "10F2-7B2A-0000-0005-02010230-m7b-r0.ota.zigbee"
REAL_FILES = (NODON, UBISYS)


def read_real(name: str) -> bytes:
    path = SHARED_OTA_DIR / name
    if not path.is_file():
        pytest.skip(f"real OTA file {path} not available")
    return path.read_bytes()


@pytest.fixture
def nodon() -> bytes:
    return read_real(NODON)


@pytest.fixture
def ubisys() -> bytes:
    return read_real(UBISYS)


@pytest.fixture(params=REAL_FILES)
def real_file(request) -> tuple[str, bytes]:
    return request.param, read_real(request.param)
