"""The emulated device's TS004 side: session setup and its errors, fragment acceptance,
decoding with losses, the status answers of each profile, v2 MIC and block ack."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radio_emulators.lorawan import crypto
from radio_emulators.lorawan.device import IDEAL, LBM, LORAMAC_NODE

from . import frames as F
from .bench import Bench, fragments, image_block

H = bytes.fromhex


def ready(profile, *, nb=20, size=10, mask=0b0001, bad=0, data=None, **kw) -> Bench:
    """A device with group 0 in an open class C session and fragmentation session 0 (for
    v2, with the MIC of `data`)."""
    b = Bench(profile, **kw)
    b.setup_group(0)
    v = b.version
    mic = bytes(4) if data is None else crypto.data_block_mic(
        crypto.data_block_int_key(F.GEN_APP_KEY), 0, 0, bytes(4), data)
    assert b.send(201, F.frag_setup_req(0, nb, size, mask=mask, block_ack_delay=bad,
                                        version=v, mic=mic)) == [H("0200")]
    b.open_class_c(0)
    return b


# ------------------------------------------------------------------ setup
@pytest.mark.parametrize("kw,status", [
    (dict(algo=1), 0x01),                                 # EncodingUnsupported
    (dict(nb_frag=5000), 0x02),                           # > max NbFrag
    (dict(frag_size=250), 0x02),                          # > max FragSize
    (dict(nb_frag=3000, frag_size=200), 0x02),            # > flash (600000 > 524288)
    (dict(index=2), 0x84),                                # IndexNotSupported (max 2)
    (dict(descriptor=H("deadbeef")), 0x08),               # WrongDescriptor
    (dict(nb_frag=0), 0x01),
])
def test_setup_errors(kw, status):
    b = Bench(LORAMAC_NODE, max_frag_sessions=2,
              descriptor_check=lambda d: d == b"\x00\x00\x00\x00")
    args = dict(index=0, nb_frag=100, frag_size=50)
    args.update(kw)
    ans = b.send(201, F.frag_setup_req(args.pop("index"), args.pop("nb_frag"),
                                       args.pop("frag_size"), **args))
    assert ans == [bytes((0x02, status))]
    assert b.dev.frag_sessions == {}
    assert b.dev.counters["frag.setup-refused"] == 1


def test_setup_ok_and_delete():
    b = Bench(LORAMAC_NODE)
    assert b.send(201, F.frag_setup_req(1, 100, 50, mask=0b0011)) == [H("0240")]
    s = b.dev.frag_sessions[1]
    assert (s.nb_frag, s.frag_size, s.mc_group_mask, s.version) == (100, 50, 0b0011, 1)
    assert b.send(201, F.frag_delete_req(1)) == [H("0301")]
    assert b.send(201, F.frag_delete_req(1)) == [H("0305")]      # SessionDoesNotExist


def test_v2_session_counter_replay():
    b = Bench(LBM)
    ok = F.frag_setup_req(0, 10, 10, version=2, session_cnt=5)
    assert b.send(201, ok) == [H("0200")]
    assert b.send(201, ok) == [H("0200")]       # resent before any fragment: not a replay
    b.setup_group(0)
    b.open_class_c(0)
    b.mc(201, F.data_fragment(0, 1, bytes(10)))
    assert b.send(201, ok) == [H("0210")]       # SessionCntReplay
    assert b.send(201, F.frag_setup_req(0, 10, 10, version=2, session_cnt=4)) == [H("0210")]
    assert b.send(201, F.frag_setup_req(0, 10, 10, version=2, session_cnt=6)) == [H("0200")]


# ------------------------------------------------------------------ fragment acceptance
def test_fragments_need_an_open_session_on_the_right_group():
    b = Bench(LORAMAC_NODE)
    b.setup_group(0, 0x11111111)
    b.setup_group(1, 0x22222222)
    b.send(201, F.frag_setup_req(0, 20, 10, mask=0b0001))
    frag = F.data_fragment(0, 1, bytes(10))
    assert not b.mc(201, frag, addr=0x11111111)                     # session not started
    b.open_class_c(0, wait=False, lead=60)
    assert not b.mc(201, frag, addr=0x11111111)                     # not yet
    b.advance(70)
    assert b.mc(201, frag, addr=0x11111111)
    assert not b.mc(201, frag, addr=0x33333333)                     # unknown McAddr
    b.open_class_c(1)
    assert b.mc(201, F.data_fragment(0, 2, bytes(10)), addr=0x22222222)   # frame accepted,
    assert b.dev.counters["drop.fragment-wrong-group"] == 1              # fragment is not
    g = b.dev.mc_groups[0]
    bad_keys = (g.nwk_s_key, bytes(16))
    assert not b.mc(201, frag, addr=0x11111111, keys=bad_keys)
    assert b.mc(201, F.data_fragment(0, 3, bytes(10)), addr=0x11111111,
                keys=(g.nwk_s_key, g.app_s_key))
    assert not b.mc(201, frag, addr=0x11111111, freq=868_100_000)
    assert not b.mc(201, frag, addr=0x11111111, dr=3)
    assert b.mc(201, F.data_fragment(0, 4, bytes(10)), addr=0x11111111, f_cnt=10)
    assert not b.mc(201, F.data_fragment(0, 5, bytes(10)), addr=0x11111111, f_cnt=10)
    for reason in ("no-open-session", "unknown-mcaddr", "mic-failure", "wrong-frequency",
                   "wrong-dr", "fcnt-replay"):
        assert b.dev.counters["drop." + reason] >= 1, reason
    assert b.dev.frag_sessions[0].decoder.received == 3


def test_no_reception_while_transmitting():
    b = ready(IDEAL)
    b.dev.on_downlink(201, b"\x00", b.t)              # makes it answer
    up = b.advance(30)[0]
    assert not b.dev.on_downlink(201, F.data_fragment(0, 1, bytes(10)), up.t_start + 0.01,
                                 mc_addr=F.MC_ADDR)
    assert b.dev.counters["drop.half-duplex"] == 1
    assert b.dev.on_downlink(201, F.data_fragment(0, 1, bytes(10)), up.t_end + 0.01,
                             mc_addr=F.MC_ADDR)


def test_multicast_fcnt_range():
    b = Bench(IDEAL)
    b.setup_group(0, fmin=100, fmax=200)
    b.open_class_c(0)
    assert not b.mc(201, F.data_fragment(0, 1, b"x"), f_cnt=99)
    assert b.mc(201, F.data_fragment(0, 1, b"x"), f_cnt=150)
    assert not b.mc(201, F.data_fragment(0, 1, b"x"), f_cnt=201)
    assert b.dev.counters["drop.fcnt-out-of-range"] == 2


def test_malformed_and_orphan_fragments_are_dropped():
    b = ready(IDEAL)
    b.mc(201, F.data_fragment(0, 1, bytes(9)))
    b.mc(201, F.data_fragment(0, 0, bytes(10)))
    b.mc(201, F.data_fragment(3, 1, bytes(10)))
    assert b.dev.counters["drop.fragment-malformed"] == 2
    assert b.dev.counters["drop.fragment-no-session"] == 1
    assert b.dev.frag_sessions[0].decoder.received == 0


def test_unicast_fragments_are_accepted():
    b = Bench(IDEAL)
    blk, m, pad = image_block(2, size=200, frag_size=20)
    b.send(201, F.frag_setup_req(0, m, 20, padding=pad))
    for n, f in enumerate(fragments(blk, 20, 0, 1), start=1):
        b.send(201, F.data_fragment(0, n, f), window=0)
    assert b.dev.image_status == 3 and b.dev.image_version == 2


# ------------------------------------------------------------------ decoding
@pytest.mark.parametrize("profile", [IDEAL, LORAMAC_NODE, LBM])
def test_image_recovered_through_losses(profile):
    rng = random.Random(11)
    v = profile.packages[3]
    blk, m, pad = image_block(7, size=3000)
    b = Bench(profile)
    b.setup_group(0)
    b.send(201, F.frag_setup_req(0, m, 48, padding=pad, version=v, mic=crypto.data_block_mic(
        crypto.data_block_int_key(F.GEN_APP_KEY), 0, 0, bytes(4), blk[:len(blk) - pad])))
    b.open_class_c(0)
    frags = fragments(blk, 48, m, v)
    order = [n for n in range(1, len(frags) + 1) if rng.random() > 0.25]
    if profile is IDEAL:
        rng.shuffle(order)                         # any order is fine for this decoder
    b.stream(frags, order)
    s = b.dev.frag_sessions[0]
    assert s.result == "complete" and s.block == blk[:len(blk) - pad]
    assert b.dev.image_status == 3 and b.dev.image_version == 7


def test_in_order_profile_loses_late_uncoded_fragments():
    blk, m, pad = image_block(3, size=400, frag_size=20)
    frags = fragments(blk, 20, 10, 1)
    order = list(range(1, m + 11))
    order.remove(2)
    order.append(2)                                    # fragment 2 arrives last
    lmn, ideal = ready(LORAMAC_NODE, nb=m, size=20), ready(IDEAL, nb=m, size=20)
    for b in (lmn, ideal):
        b.stream(frags, order)
    assert ideal.dev.frag_sessions[0].decoder.complete
    d = lmn.dev.frag_sessions[0].decoder
    assert d.complete and d.lost == 1            # recovered 2 from a coded fragment instead
    assert lmn.dev.counters["frag.out-of-order"] == 0   # done before 2 arrived
    # out of order inside the uncoded part: dropped
    lmn2 = ready(LORAMAC_NODE, nb=m, size=20)
    lmn2.stream(frags, [1, 3, 2])
    assert lmn2.dev.counters["frag.out-of-order"] == 1


# ------------------------------------------------------------------ status answers
LOSSY = [n for n in range(1, 21) if n not in (3, 7)]   # M = 20, uncoded 3 and 7 lost


def run_lossy(profile):
    b = ready(profile, nb=20, size=10, data=bytes(range(200)))
    frags = fragments(bytes(range(200)), 10, 30, profile.packages[3])
    b.stream(frags, LOSSY)
    mid = b.send(201, F.frag_status_req(0), window=20)
    k = 21
    while not b.dev.frag_sessions[0].decoder.complete:
        b.mc(201, F.data_fragment(0, k, frags[k - 1]))
        k += 1
    end = b.send(201, F.frag_status_req(0), window=20)
    lazy = b.send(201, F.frag_status_req(0, participants=False), window=20)
    return b, k - 1, F.status_ans(mid[0], b.version), F.status_ans(end[0], b.version), lazy


def test_status_loramac_node_semantics():
    b, last, mid, end, lazy = run_lossy(LORAMAC_NODE)
    assert (mid["received"], mid["missing"], mid["len"]) == (20, 2, 5)   # last counter, lost
    assert (end["received"], end["missing"]) == (last, 2)          # lost is never lowered
    assert len(lazy) == 1                                          # so it still answers


def test_status_lbm_semantics():
    b, last, mid, end, lazy = run_lossy(LBM)
    assert (mid["received"], mid["missing"], mid["len"]) == (18, 2, 5)   # counter - lost
    assert (end["received"], end["missing"]) == (last - 2, 0)      # still needed
    assert not end["no_session"] and not end["mic_error"]
    assert lazy == []


def test_status_true_count_semantics():
    b, last, mid, end, lazy = run_lossy(IDEAL)
    assert (mid["received"], mid["missing"]) == (18, 2)
    assert (end["received"], end["missing"]) == (last - 2, 0)
    assert lazy == []


def test_lbm_lossless_block_reports_stale_missing():
    b = ready(LBM, nb=10, size=10)
    b.stream(fragments(bytes(100), 10, 0, 2), range(1, 11))
    assert b.dev.frag_sessions[0].decoder.complete
    st = F.status_ans(b.send(201, F.frag_status_req(0), window=20)[0], 2)
    assert (st["received"], st["missing"]) == (10, 1)              # LBM's MissingFrag quirk
    assert len(b.send(201, F.frag_status_req(0, participants=False), window=20)) == 1
    fixed = ready(LBM, nb=10, size=10, lbm_stale_missing=False)
    fixed.stream(fragments(bytes(100), 10, 0, 2), range(1, 11))
    assert F.status_ans(fixed.send(201, F.frag_status_req(0), window=20)[0], 2)["missing"] == 0


def test_status_for_missing_session_per_profile():
    lbm = Bench(LBM)
    st = F.status_ans(lbm.send(201, F.frag_status_req(1), window=20)[0], 2)
    assert st["no_session"] and st["len"] == 5 and st["index"] == 1
    lmn = Bench(LORAMAC_NODE)
    assert F.status_ans(lmn.send(201, F.frag_status_req(1), window=20)[0], 1)["received"] == 0
    assert lmn.send(201, F.frag_status_req(1, participants=False), window=20) == []
    assert Bench(IDEAL).send(201, F.frag_status_req(1), window=20) == []


def test_lbm_status_before_any_fragment():
    b = ready(LBM)
    st = F.status_ans(b.send(201, F.frag_status_req(0), window=20)[0], 2)
    assert (st["received"], st["missing"], st["no_session"]) == (0, 0, False)


def test_status_answers_are_delayed_randomly_by_block_ack_delay():
    b = ready(IDEAL, bad=1)                         # delay in [0, 32] s
    delays = []
    for _ in range(12):
        b.t += 40
        t_req = b.t
        assert b.mc(201, F.frag_status_req(0), dt=0)          # by multicast
        ups = [u for u in b.advance(40) if u.fport == 201]
        assert len(ups) == 1
        delays.append(ups[0].t_start - t_req)
    assert all(0 <= d <= 32 + 6 for d in delays)              # + duty-cycle wait
    assert max(delays) - min(delays) > 5                      # spread, not fixed


# ------------------------------------------------------------------ memory limits
def test_loramac_node_matrix_error_completes_with_a_corrupt_image():
    blk, m, pad = image_block(4, size=1000)
    b = ready(LORAMAC_NODE, nb=m, size=48, max_lost=2)
    frags = fragments(blk, 48, 10, 1)
    b.stream(frags, [n for n in range(1, m + 11) if n not in (2, 3, 4)])
    s = b.dev.frag_sessions[0]
    assert s.result == "matrix-error"
    assert b.dev.image_status == 1                       # the block failed its check
    st = F.status_ans(b.send(201, F.frag_status_req(0), window=20)[0], 1)
    assert st["memory_error"] and st["missing"] == 3


def test_lbm_matrix_error_fails_the_session():
    b = ready(LBM, nb=20, size=10, max_lost=2)
    frags = fragments(bytes(200), 10, 10, 2)
    b.stream(frags, [1, 5, 21, 22])
    assert b.dev.frag_sessions[0].result == "failed"
    assert b.dev.image_status == 0
    st = F.status_ans(b.send(201, F.frag_status_req(0), window=20)[0], 2)
    assert st["memory_error"]


def test_any_order_decoder_memory_limit():
    b = ready(IDEAL, nb=20, size=10, max_lost=2)
    frags = fragments(bytes(range(200)), 10, 10, 1)
    b.stream(frags, [21, 22])                            # 20 missing > 2: dropped
    assert b.dev.counters["frag.memory"] == 2
    st = F.status_ans(b.send(201, F.frag_status_req(0), window=20)[0], 1)
    assert st["memory_error"] and st["received"] == 0


# ------------------------------------------------------------------ v2 integrity
def v2_session(mic_ok: bool, ack: bool = True):
    blk, m, pad = image_block(9, size=600)
    data = blk[:len(blk) - pad]
    mic = crypto.data_block_mic(crypto.data_block_int_key(F.GEN_APP_KEY), 7, 0,
                                H("01020304"), data)
    if not mic_ok:
        mic = bytes(4)
    b = Bench(LBM)
    b.setup_group(0)
    b.send(201, F.frag_setup_req(0, m, 48, padding=pad, version=2, session_cnt=7, mic=mic,
                                 descriptor=H("01020304"), ack_reception=ack))
    b.open_class_c(0)
    b.stream(fragments(blk, 48, 4, 2), [n for n in range(1, m + 5) if n != 2])
    return b


def test_v2_mic_ok_image_valid_and_block_ack_repeated_until_answered():
    b = v2_session(True)
    assert b.dev.frag_sessions[0].mic_ok and b.dev.image_status == 3
    acks = [u for u in b.advance(200) if u.fport == 201]
    assert [u.payload for u in acks] == [H("0400")] * 3       # 3 tries, no answer
    b2 = v2_session(True)
    first: list = []
    while not first:
        first = [u for u in b2.advance(1) if u.fport == 201]
    assert [u.payload for u in first] == [H("0400")]
    b2.send(201, F.block_received_ans(0), window=200)
    assert [u for u in b2.sent if u.fport == 201 and u.t_start > first[0].t_start] == []


def test_v2_mic_error():
    b = v2_session(False)
    assert b.dev.frag_sessions[0].mic_ok is False
    assert b.dev.image_status == 1 and "MIC" in b.dev.image_reason
    assert [u.payload for u in b.advance(40) if u.fport == 201][0] == H("0404")
    st = F.status_ans(b.send(201, F.frag_status_req(0), window=20)[0], 2)
    assert st["mic_error"]


# ------------------------------------------------------------------ robustness
@settings(derandomize=True, deadline=None, max_examples=300,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(port=st.sampled_from([200, 201, 202, 203, 2]), payload=st.binary(max_size=40),
       multicast=st.booleans(), profile=st.sampled_from([IDEAL, LORAMAC_NODE, LBM]))
def test_garbage_downlinks_never_raise(port, payload, multicast, profile):
    b = ready(profile)
    b.mc(port, payload) if multicast else b.send(port, payload, window=30)
    b.advance(100)
    assert b.dev.alive
