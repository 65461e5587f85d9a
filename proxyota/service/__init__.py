"""The gateway service: ``proxyota serve --config configs/<file>.toml``.

Modules: :mod:`.config` (TOML, validated), :mod:`.options` (LoRaWAN campaign options),
:mod:`.zigbee_options` (Zigbee campaign options), :mod:`.logging` (structured, redacted
logs), :mod:`.scaled_clock` (emulated time across processes), :mod:`.images` (accepted
images, TUF intake loop), :mod:`.sink` (a driver's state in the store), :mod:`.runner`
(campaign lifecycle, both kinds), :mod:`.zigbee` (what differs for Zigbee campaigns),
:mod:`.zigbee_radio` (the Zigbee coordinator), :mod:`.views` (the campaign view),
:mod:`.errors` (refused requests), :mod:`.api` (HTTP API + OpenAPI) and :mod:`.app` (the
daemon wiring and clean shutdown), :mod:`.emulated` (the in-process emulated networks and
demo repository of ``configs/emulated.toml``).
"""
