"""Firmware images: the signed envelope, vendor keys and signatures, the gateway's cache.

``envelope``: the binary envelope LoRaWAN nodes receive (docs/image-envelope.md) and the
same end-to-end signature as a Zigbee OTA manufacturer-specific sub-element.
``signing``: Ed25519 / ECDSA P-256 keys (PEM) and 64-byte signatures; the gateway only
ever loads public keys.
``cache``: the content-addressed, crash-safe, size-bounded image cache with pins.
"""
