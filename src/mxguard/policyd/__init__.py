"""The Postfix policy delegation server: mxguard's policy for sites that keep Postfix as the MTA.

`protocol` is the pure wire format, `mapping` turns Postfix's attributes into our facts and
roles, `guard` decides what state outages cost, `server` is the asyncio adapter, `cli` the
`mxguard policyd` command. How to wire it into main.cf: docs/postfix.md.
"""
