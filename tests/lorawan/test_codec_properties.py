"""Hypothesis properties of the application-layer codecs, for every command of every package.

* decode(encode(x)) == [x] and from_json(to_json(x)) == x for valid instances of each command;
* frames of several commands round-trip in order;
* decoding arbitrary (or mutated valid) bytes returns commands or raises DecodeError only,
  and a strict decode is canonical (re-encoding gives the same bytes).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyota.errors import DecodeError
from proxyota.lorawan import applayer as al
from proxyota.lorawan.codec import U24, U32

SETTINGS = settings(derandomize=True, deadline=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u24 = st.integers(0, U24)
u32 = st.integers(0, U32)
idx = st.integers(0, 3)
flag = st.booleans()
dr = st.integers(0, 15)
freq = st.integers(0, U24).map(lambda v: v * 100)


@st.composite
def _frag_status_ans(draw, version):
    if version == 2 and draw(flag):
        return al.FragSessionStatusAns(None, None, None, draw(flag), draw(flag), True, version=2)
    return al.FragSessionStatusAns(
        draw(idx), draw(st.integers(0, 0x3FFF)), draw(u8), draw(flag),
        draw(flag) if version == 2 else False, False, version=version,
    )


@st.composite
def _frag_setup_req(draw, version):
    frag_size = draw(st.integers(1, 255))
    v2 = version == 2
    return al.FragSessionSetupReq(
        frag_index=draw(idx), nb_frag=draw(st.integers(1, 0xFFFF)), frag_size=frag_size,
        padding=draw(st.integers(0, frag_size - 1)), mc_group_bit_mask=draw(st.integers(0, 15)),
        frag_algo=draw(st.integers(0, 7)), block_ack_delay=draw(st.integers(0, 7)),
        descriptor=draw(st.binary(min_size=4, max_size=4)),
        ack_reception=draw(flag) if v2 else False,
        session_cnt=draw(u16) if v2 else None,
        mic=draw(st.binary(min_size=4, max_size=4)) if v2 else None,
        version=version,
    )


@st.composite
def _frag_setup_ans(draw, version):
    return al.FragSessionSetupAns(draw(idx), draw(flag), draw(flag), draw(flag), draw(flag),
                                  draw(flag) if version == 2 else False, version=version)


@st.composite
def _mc_group_status_ans(draw):
    mask = draw(st.integers(0, 15))
    ids = draw(st.permutations([i for i in range(4) if mask >> i & 1]))
    groups = tuple(al.McGroupStatusItem(i, draw(u32)) for i in ids)
    return al.McGroupStatusAns(draw(st.integers(0, 7)), mask, groups)


@st.composite
def _session_ans(draw, cls, version):
    undefined, freq_error, dr_error = draw(flag), draw(flag), draw(flag)
    missed = draw(flag) if version == 2 else False
    error = undefined or freq_error or dr_error or missed
    tts = None if error else draw(st.one_of(u24, st.just(U24)))
    return cls(draw(idx), undefined, freq_error, dr_error, missed, tts, version=version)


@st.composite
def _upgrade_image_ans(draw):
    status = draw(st.sampled_from(list(al.UpImageStatus)))
    return al.DevUpgradeImageAns(status, draw(u32) if status is al.UpImageStatus.VALID else None)


def strategy(cls, package, version):
    """Valid instances of ``cls`` as decoded from ``package`` at ``version``."""
    table = {
        al.PackageVersionReq: lambda: st.just(al.PackageVersionReq()),
        al.PackageVersionAns: lambda: st.builds(al.PackageVersionAns, st.just(package.identifier), u8),
        al.AppTimeReq: lambda: st.builds(al.AppTimeReq, u32, st.integers(0, 15), flag),
        al.AppTimeAns: lambda: st.builds(al.AppTimeAns, st.integers(-(2**31), 2**31 - 1), st.integers(0, 15)),
        al.DeviceAppTimePeriodicityReq: lambda: st.builds(al.DeviceAppTimePeriodicityReq, st.integers(0, 15)),
        al.DeviceAppTimePeriodicityAns: lambda: st.builds(al.DeviceAppTimePeriodicityAns, flag, u32),
        al.ForceDeviceResyncReq: lambda: st.builds(al.ForceDeviceResyncReq, st.integers(0, 7)),
        al.ForceDeviceResyncCmd: lambda: st.builds(al.ForceDeviceResyncCmd, st.integers(0, 7)),
        al.FragSessionStatusReq: lambda: st.builds(al.FragSessionStatusReq, idx, flag),
        al.FragSessionStatusAns: lambda: _frag_status_ans(version),
        al.FragSessionSetupReq: lambda: _frag_setup_req(version),
        al.FragSessionSetupAns: lambda: _frag_setup_ans(version),
        al.FragSessionDeleteReq: lambda: st.builds(al.FragSessionDeleteReq, idx),
        al.FragSessionDeleteAns: lambda: st.builds(al.FragSessionDeleteAns, idx, flag),
        al.FragDataBlockReceivedReq: lambda: st.builds(al.FragDataBlockReceivedReq, idx, flag),
        al.FragDataBlockReceivedAns: lambda: st.builds(al.FragDataBlockReceivedAns, idx),
        al.DataFragment: lambda: st.builds(al.DataFragment, idx, st.integers(1, 0x3FFF),
                                           st.binary(min_size=1, max_size=64)),
        al.McGroupStatusReq: lambda: st.builds(al.McGroupStatusReq, st.integers(0, 15)),
        al.McGroupStatusAns: lambda: _mc_group_status_ans(),
        al.McGroupSetupReq: lambda: st.builds(al.McGroupSetupReq, idx, u32, st.binary(min_size=16, max_size=16),
                                              u32, u32),
        al.McGroupSetupAns: lambda: st.builds(al.McGroupSetupAns, idx, flag),
        al.McGroupDeleteReq: lambda: st.builds(al.McGroupDeleteReq, idx),
        al.McGroupDeleteAns: lambda: st.builds(al.McGroupDeleteAns, idx, flag),
        al.McClassCSessionReq: lambda: st.builds(al.McClassCSessionReq, idx, u32, st.integers(0, 15), freq, dr),
        al.McClassBSessionReq: lambda: st.builds(al.McClassBSessionReq, idx, u32, st.integers(0, 15),
                                                 st.integers(0, 7), freq, dr),
        al.McClassCSessionAns: lambda: _session_ans(al.McClassCSessionAns, version),
        al.McClassBSessionAns: lambda: _session_ans(al.McClassBSessionAns, version),
        al.DevVersionReq: lambda: st.just(al.DevVersionReq()),
        al.DevVersionAns: lambda: st.builds(al.DevVersionAns, u32, u32),
        al.DevRebootTimeReq: lambda: st.builds(al.DevRebootTimeReq, st.one_of(u32, st.sampled_from([0, U32]))),
        al.DevRebootTimeAns: lambda: st.builds(al.DevRebootTimeAns, st.one_of(u32, st.sampled_from([0, U32]))),
        al.DevRebootCountdownReq: lambda: st.builds(al.DevRebootCountdownReq, st.one_of(u24, st.sampled_from([0, U24]))),
        al.DevRebootCountdownAns: lambda: st.builds(al.DevRebootCountdownAns, st.one_of(u24, st.sampled_from([0, U24]))),
        al.DevUpgradeImageReq: lambda: st.just(al.DevUpgradeImageReq()),
        al.DevUpgradeImageAns: lambda: _upgrade_image_ans(),
        al.DevDeleteImageReq: lambda: st.builds(al.DevDeleteImageReq, u32),
        al.DevDeleteImageAns: lambda: st.builds(al.DevDeleteImageAns, flag, flag),
    }
    return table[cls]()


TABLES = [
    (package, direction, version)
    for package in al.PACKAGES.values()
    for direction in (al.UPLINK, al.DOWNLINK)
    for version in package.versions
]
COMMANDS = [
    pytest.param(package, direction, version, cls,
                 id=f"{package.fport}-{direction}-v{version}-{cls.__name__}")
    for package, direction, version in TABLES
    for cls in package.table(direction, version).values()
]


@pytest.mark.parametrize("package,direction,version,cls", COMMANDS)
def test_every_command_round_trips(package, direction, version, cls):
    @SETTINGS
    @given(strategy(cls, package, version))
    def check(cmd):
        wire = cmd.encode()
        assert wire[0] == cls.CID
        assert al.decode(package.fport, direction, wire, version) == [cmd]
        assert al.decode(package.fport, direction, wire, version, strict=False) == [cmd]
        obj = json.loads(json.dumps(al.to_json(cmd)))
        assert obj["command"] == cls.__name__
        assert al.from_json(obj, fport=package.fport, direction=direction, version=version) == cmd

    check()


def _frames(package, direction, version):
    classes = list(package.table(direction, version).values())
    several = [c for c in classes if not getattr(c, "ALONE_IN_FRAME", False)]
    alone = [c for c in classes if getattr(c, "ALONE_IN_FRAME", False)]
    options = [st.lists(st.one_of([strategy(c, package, version) for c in several]), min_size=1, max_size=6)]
    options += [strategy(c, package, version).map(lambda cmd: [cmd]) for c in alone]
    return st.one_of(options)


@pytest.mark.parametrize(
    "package,direction,version", [pytest.param(*t, id=f"{t[0].fport}-{t[1]}-v{t[2]}") for t in TABLES]
)
def test_frames_of_several_commands_round_trip(package, direction, version):
    @SETTINGS
    @given(_frames(package, direction, version))
    def check(cmds):
        assert al.decode(package.fport, direction, al.encode_commands(cmds), version) == cmds

    check()


def _mutated(package, direction, version):
    """Valid frames, then truncated, extended, or with one byte replaced."""

    @st.composite
    def build(draw):
        wire = bytearray(al.encode_commands(draw(_frames(package, direction, version))))
        how = draw(st.sampled_from(["cut", "append", "flip"]))
        if how == "cut":
            del wire[draw(st.integers(0, len(wire) - 1)):]
        elif how == "append":
            wire += draw(st.binary(min_size=1, max_size=8))
        else:
            wire[draw(st.integers(0, len(wire) - 1))] = draw(u8)
        return bytes(wire)

    return build()


def _assert_total(package, direction, version, payload):
    for strict in (True, False):
        try:
            cmds = al.decode(package.fport, direction, payload, version, strict=strict)
        except DecodeError as exc:
            assert exc.offset is not None and 0 <= exc.offset <= len(payload)
            assert exc.command
            continue
        assert all(isinstance(c, al.Command) for c in cmds)
        long_status = any(isinstance(c, al.FragSessionStatusAns) and c.session_does_not_exist for c in cmds)
        if strict and not long_status:  # a strict decode is canonical
            assert b"".join(c.encode() for c in cmds) == payload


@pytest.mark.parametrize(
    "package,direction,version", [pytest.param(*t, id=f"{t[0].fport}-{t[1]}-v{t[2]}") for t in TABLES]
)
def test_arbitrary_bytes_raise_only_decode_error(package, direction, version):
    @settings(derandomize=True, deadline=None, max_examples=150)
    @given(st.one_of(st.binary(max_size=64), _mutated(package, direction, version)))
    def check(payload):
        _assert_total(package, direction, version, payload)

    check()
