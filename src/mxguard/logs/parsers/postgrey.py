"""postgrey's own decision lines (``action=greylist, reason=new, ...``).

Postfix logs the same deferral as a ``450 ... Greylisted`` reject, so the analysis
counts postgrey's lines only for servers where no such reject was seen.
"""

from __future__ import annotations

from mxguard.logs.model import OP_STAT
from mxguard.logs.parsers.common import UNPARSED


def postgrey(service: bytes, msg: bytes) -> object:
    i = msg.find(b"action=")
    if i < 0:
        if msg.startswith(
            (
                b"Process Backgrounded",
                b"Resolved",
                b"cleaning",
                b"Setting",
                b"2",
                b"Binding",
                b"whitelisted",
                b"tarpit",
            )
        ):
            return None
        return UNPARSED if b"whitelisted" not in msg else None
    action = msg[i + 7 : msg.find(b",", i)]
    if action == b"greylist":
        return (OP_STAT, "postgrey_greylist", 1)
    if action == b"pass":
        return (OP_STAT, "postgrey_pass", 1)
    return None
