"""Forward error correction for fragmented firmware delivery.

``ts004``: the LoRa Alliance TS004 parity code (FragAlgo 0), v1 and v2 matrices.
``rs``: a Reed–Solomon (MDS) erasure code over GF(2^8), for nodes that implement it
(layout in docs/fec-rs.md).
"""
