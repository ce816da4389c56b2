"""Delivery status notifications (RFC 3464) for mail the backup had to hold.

Off by default: the backup validated recipients at RCPT, so a hold means the primary changed
its mind later, and a bounce then risks backscatter to a forged sender (seed 004). When on, the
forwarder never sends one to the null sender, for a message marked as spam, or for a DSN.
The notice carries only the original headers (``text/rfc822-headers``), never the body.
"""

from __future__ import annotations

import re
from email.utils import formatdate, make_msgid

from mxguard.queue.spool import QueuedMessage

_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def _status_of(reply: str) -> str:
    m = _STATUS.search(reply)
    if m and m.group(1).startswith("5"):
        return m.group(1)
    return "5.0.0" if reply[:1] == "5" else "4.4.7"  # 4.4.7: delivery time expired


def _headers_of(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data[: end + 2] if end >= 0 else data[:65536]


def build_dsn(
    reporting_mta: str,
    m: QueuedMessage,
    failed: list[tuple[str, str]],
    original: bytes,
    now: float,
    dsn_id: str,
) -> bytes:
    """A multipart/report DSN for `failed` [(recipient, last reply)], addressed to m.sender."""
    boundary = f"=_mxguard_{dsn_id}"
    expired = any(not reply.startswith("5") for _, reply in failed)
    human = [
        f"This is the mail system at {reporting_mta} (a backup MX).",
        "",
        "Your message could not be delivered to the following recipients"
        + (" before it expired." if expired else ":"),
        "",
    ]
    human += [f"<{rcpt}>: {reply}" for rcpt, reply in failed]
    per_message = [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Mxguard-Queue-ID: {m.id}",
        f"Arrival-Date: {formatdate(m.created)}",
    ]
    per_rcpt: list[str] = []
    for rcpt, reply in failed:
        per_rcpt += [
            "",
            f"Final-Recipient: rfc822; {rcpt}",
            "Action: failed",
            f"Status: {_status_of(reply)}",
        ]
        if reply[:1] in "45" and reply[:3].isdigit():
            per_rcpt.append(f"Diagnostic-Code: smtp; {reply}")
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{m.sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {formatdate(now)}",
        f"Message-ID: {make_msgid(domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        *human,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        *per_message,
        *per_rcpt,
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    text = "\r\n".join(head).encode("utf-8") + b"\r\n" + _headers_of(original)
    return text + f"\r\n--{boundary}--\r\n".encode()
