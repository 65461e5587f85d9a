"""Emulated LoRaWAN network benchmark: a multicast campaign of NbFrag uncoded + coded
fragments to N devices (lossy channels, three device profiles), in emulated time. Prints the
wall time against its target and what the campaign would take on air.

    .venv/bin/python benchmarks/emulator_lorawan.py [--devices 100] [--fragments 1000]

Target (2-core machine): 1000 fragments to 100 devices in < 10 s of wall time.
"""

from __future__ import annotations

import argparse
import random
import struct
import time

from radio_emulators.lorawan import crypto
from radio_emulators.lorawan.channel import GilbertElliott, IndependentLoss
from radio_emulators.lorawan.device import IDEAL, LORAMAC_NODE, EndDevice
from radio_emulators.lorawan.firmware import make_test_image
from radio_emulators.lorawan.fragdecoder import encode_fragments
from radio_emulators.lorawan.network import Network
from radio_emulators.lorawan.phy import EU868

T0 = 1_400_000_000.0
GEN_APP_KEY = bytes(range(1, 17))
MC_KEY = bytes(16)
MC_ADDR = 0x01AB23CD
TARGET_S = 10.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--fragments", type=int, default=1000, help="total fragments sent")
    ap.add_argument("--frag-size", type=int, default=112)
    ap.add_argument("--loss", type=float, default=0.1)
    args = ap.parse_args()

    fs = args.frag_size
    nb = int(args.fragments / 1.3)
    body = random.Random(1).randbytes(nb * fs - 50)
    img = make_test_image(body, 2, 1)
    pad = (-len(img)) % fs
    blk = img + bytes(pad)
    m = len(blk) // fs
    t_wall = time.perf_counter()
    net = Network(EU868, start=T0)
    keys = (crypto.mc_nwk_s_key(MC_KEY, MC_ADDR), crypto.mc_app_s_key(MC_KEY, MC_ADDR))
    net.add_group("g", MC_ADDR, *keys, dr=3)
    root = crypto.mc_root_key(gen_app_key=GEN_APP_KEY)
    enc = crypto.aes128_decrypt(crypto.mc_ke_key(root), MC_KEY)
    profiles = [IDEAL, LORAMAC_NODE]   # v1 decoders on one v1 stream
    devs = []
    for i in range(args.devices):
        d = EndDevice(profiles[i % 2], struct.pack(">Q", i + 1), gen_app_key=GEN_APP_KEY,
                      now=T0, strict_rx_windows=False, uplink_period=3600.0)
        model = (GilbertElliott.from_mean(args.loss, 3.0, random.Random(i)) if i % 3 == 0
                 else IndependentLoss(args.loss, random.Random(i)))
        net.add_device(d, downlink=model)
        net.add_to_group("g", d.dev_eui)
        d.on_downlink(200, b"\x02\x00" + struct.pack("<I", MC_ADDR) + enc
                      + struct.pack("<II", 0, 0xFFFFFFFF), T0 + 1)
        d.on_downlink(201, b"\x02\x01" + struct.pack("<H", m) + bytes((fs, 0, pad)) + bytes(4),
                      T0 + 2)
        d.on_downlink(200, b"\x04\x00" + struct.pack("<I", int(T0) + 60) + b"\x0e"
                      + (8695250).to_bytes(3, "little") + b"\x03", T0 + 3)
        devs.append(d)
    frags = encode_fragments(blk, fs, args.fragments - m, 1)
    for n, f in enumerate(frags, start=1):
        net.schedule_multicast("g", 201, b"\x08" + struct.pack("<H", n) + f,
                               not_before=T0 + 61)
    t_setup = time.perf_counter() - t_wall
    net.run_until(T0 + 61 + len(frags) * 10 + 100)
    wall = time.perf_counter() - t_wall
    st = net.stats()
    done = sum(1 for d in devs if d.image_status == 3)
    mc = [x for x in net.downlink_log if x.kind == "multicast"]
    on_air = mc[-1].t_end - mc[0].t_start
    print(f"devices {args.devices}, fragments {len(frags)} (NbFrag {m}, FragSize {fs}), "
          f"loss ~{args.loss:.0%}")
    print(f"complete images: {done}/{args.devices}")
    print(f"emulated campaign: {on_air:.0f} s on air window ({on_air / 3600:.2f} h), "
          f"gateway airtime {sum(st.gateway_airtime.values()):.0f} s, "
          f"deliveries {st.deliveries}, channel losses {st.delivery_losses}")
    print(f"wall time {wall:.2f} s (set-up {t_setup:.2f} s); target < {TARGET_S:.0f} s; "
          f"ratio {wall / TARGET_S:.2f}; emulated/wall speed-up {on_air / wall:.0f}x")


if __name__ == "__main__":
    main()
