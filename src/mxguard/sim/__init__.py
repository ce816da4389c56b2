"""`mxguard simulate`: sender behaviours against an MX layout, through the same policy checks
that `serve` runs, on a virtual clock (and `--live`, over real loopback sockets).

Map: `loop` (clock, event heap, coroutine driver), `tier` (MX hosts and one session as facts),
`backup` (store-and-forward), `senders` (behaviour models), `scenario` (the TOML format),
`layouts` (variants for --compare), `policy` and `liveness` (the engine and the features'
background work, as serve builds them), `run` (one layout), `report`, `live`, `cli`.
"""
