"""proxyota: a gateway service for proxy firmware updates of constrained radio nodes.

The data flow is visible in the sub-packages: ``fec`` (erasure codes), ``lorawan``
(LoRa Alliance FUOTA codecs and session machine), and the CLI in ``cli``.
"""

__version__ = "0.1.0"
