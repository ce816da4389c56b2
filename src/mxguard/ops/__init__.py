"""Running mxguard in production: metrics, the status endpoint, `mxguard top`.

`feature.install` wires the metrics into `serve` (and `policyd`) through the hooks the
server offers (event-log listeners, session observers, `Server.gauges`, runtime hooks);
nothing here reaches into another feature's files or private state.
"""
