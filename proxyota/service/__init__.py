"""The gateway service: ``proxyota serve --config configs/<file>.toml``.

Modules: :mod:`.config` (TOML, validated), :mod:`.options` (campaign options),
:mod:`.logging` (structured, redacted logs), :mod:`.scaled_clock` (emulated time across
processes), :mod:`.images` (accepted images, TUF intake loop), :mod:`.sink` (the FUOTA
driver's state in the store), :mod:`.runner` (campaign lifecycle), :mod:`.api` (HTTP API +
OpenAPI) and :mod:`.app` (the daemon wiring and clean shutdown), :mod:`.emulated` (the in-process
emulated network and demo repository of ``configs/emulated.toml``).
"""
