"""The walk check over real sockets: a tier on 127.0.0.x, scripted clients, a clock moved by hand."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

from mxguard.policy.facts import Role
from mxguard.walk.blockentry import BlockEntry
from tests.helpers import senders
from tests.helpers.walklab import PEER_IP, Lab, lab

BOT = "127.0.2.9"


async def dialogue(mx: senders.MxTarget, ip: str, lines: list[bytes]) -> list[bytes]:
    """Send commands one by one from `ip` and return every reply line (banner first)."""
    reader, writer = await asyncio.open_connection(mx.ip, mx.port, local_addr=(ip, 0))
    replies = [await asyncio.wait_for(reader.readline(), 5)]
    for line in lines:
        if replies[-1][:1] != b"2" and replies[-1][:3] != b"354":
            break
        writer.write(line)
        await writer.drain()
        replies.append(await asyncio.wait_for(reader.readline(), 5))
        while replies[-1][3:4] == b"-":  # multi-line EHLO
            replies.append(await asyncio.wait_for(reader.readline(), 5))
    writer.close()
    return [r for r in replies if r[3:4] != b"-"]


ENVELOPE = [
    b"EHLO bot.test\r\n",
    b"MAIL FROM:<x@bot.test>\r\n",
    b"RCPT TO:<alice@example.test>\r\n",
]


def reasons(the_lab: Lab, host: str, client: str) -> list[str]:
    return [
        e["reason"]
        for e in the_lab.run.events()
        if e["mx"] == host and e["client"] == client and e["stage"] == "rcpt"
    ]


async def test_trap_takes_the_envelope_then_451_and_blocklists_a_skipper(tmp_path: Path) -> None:
    async with lab(tmp_path) as the_lab:
        trap = the_lab.world.named["trap"]
        replies = await dialogue(trap, BOT, ENVELOPE)
        assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"451"]
        assert replies[-1].startswith(b"451 4.3.2")
        assert await the_lab.blocklisted(BOT)
        assert reasons(the_lab, "trap.mx.example.test", BOT) == ["trap_blocklisted"]
        events = [e for e in the_lab.run.events() if e["reason"] == "trap_blocklisted"]
        assert events[0]["sender"] == "x@bot.test"
        # the blocklist is the tier's: the primary refuses the bot at RCPT, envelope logged
        primary = the_lab.world.named["primary"]
        replies = await dialogue(primary, BOT, ENVELOPE)
        assert replies[-1].startswith(b"554 5.7.1")
        assert reasons(the_lab, "mail.example.test", BOT) == ["blocklisted"]


async def test_trap_never_answers_5xx(tmp_path: Path) -> None:
    """Unknown users and relay attempts get the trap's 451 too: no 5xx, no recipient oracle."""
    async with lab(tmp_path) as the_lab:
        trap = the_lab.world.named["trap"]
        for rcpt in (b"nobody@example.test", b"victim@elsewhere.test", b"a%b@example.test"):
            lines = [*ENVELOPE[:2], b"RCPT TO:<" + rcpt + b">\r\n"]
            replies = await dialogue(trap, BOT, lines)
            assert replies[-1].startswith(b"451 4.3.2"), (rcpt, replies)


async def test_trap_answer_connect(tmp_path: Path) -> None:
    async with lab(tmp_path, trap_answer="connect") as the_lab:
        bot = await senders.bot_highest(the_lab.world, BOT)
        assert bot[0].attempts[0].hops[0].outcome == "greet4xx"
        assert bot[0].attempts[0].hops[0].code == 421
        assert await the_lab.blocklisted(BOT)
        # a real Postfix whose primary is down reaches the trap: 421, and no block
        await the_lab.stop("mail.example.test")
        good = await senders.rfc_sender(the_lab.world, "127.0.1.7")
        assert ("trap.mx.example.test", "greet4xx", 421) in good[0].codes()
        assert good[0].delivered
        assert not await the_lab.blocklisted("127.0.1.7")


async def test_walker_reaching_the_trap_with_every_lower_mx_tempfailing(tmp_path: Path) -> None:
    """Exim walks primary (greylisted), backup (greylisted), trap: never blocklisted."""
    async with lab(tmp_path, greylist_roles=("primary", "backup")) as the_lab:
        logs = await senders.exim_sender(the_lab.world, "127.0.1.3")
        hosts = [h for h, _, _ in logs[0].codes()]
        assert "trap.mx.example.test" in hosts
        assert logs[0].delivered and not logs[0].refused
        assert not await the_lab.blocklisted("127.0.1.3")
        assert reasons(the_lab, "trap.mx.example.test", "127.0.1.3") == ["trap"]


async def test_primary_down_then_back(tmp_path: Path) -> None:
    """While the primary is stopped the backup is normal policy; once it has been back up for
    the health window, skipping it is a walk violation again."""
    async with lab(tmp_path) as the_lab:
        await the_lab.stop("mail.example.test")
        logs = await senders.rfc_sender(the_lab.world, "127.0.1.2")
        assert logs[0].delivered and not await the_lab.blocklisted("127.0.1.2")
        assert reasons(the_lab, "backup.example.test", "127.0.1.2")[0] == "greylisted"
        await the_lab.start("mail.example.test")
        await the_lab.advance(30)
        # back for 30 s only: not yet trusted as healthy, so a skip is not judged
        assert (await senders.bot_highest(the_lab.world, "127.0.2.5"))[0].attempts[0]
        assert not await the_lab.blocklisted("127.0.2.5")
        await the_lab.advance(60)
        await senders.bot_highest(the_lab.world, "127.0.2.6")
        assert await the_lab.blocklisted("127.0.2.6")


async def test_backup_tempfails_a_bot_that_starts_there(tmp_path: Path) -> None:
    async with lab(tmp_path) as the_lab:
        logs = await senders.bot_backup(the_lab.world, BOT)
        assert not logs[0].delivered
        assert set(reasons(the_lab, "backup.example.test", BOT)) == {"mx_walk"}
        assert not await the_lab.blocklisted(BOT)


async def test_backup_action_greylist_leaves_it_to_greylisting(tmp_path: Path) -> None:
    """The trade-off `backup_action = "greylist"` makes: a client that skips the primary is
    only greylisted, so one that retries there gets through after the delay."""
    async with lab(tmp_path, walk_extra='backup_action = "greylist"') as the_lab:
        logs = await senders.bot_backup(the_lab.world, BOT)
        got = reasons(the_lab, "backup.example.test", BOT)
        assert got[0] == "greylisted" and "mx_walk" not in got
        assert logs[0].delivered


async def test_capacity_refusal_at_the_primary_is_a_contact(tmp_path: Path) -> None:
    """Refused by the per-network cap, a client that walks on to the trap is not blocklisted;
    the total cap marks the primary itself as at capacity."""
    extra = "[limits]\nmax_connections_per_network = 1\n"
    async with lab(tmp_path, extra=extra) as the_lab:
        primary = the_lab.world.named["primary"]
        holder = await asyncio.open_connection(
            primary.ip, primary.port, local_addr=("127.0.4.1", 0)
        )
        await holder[0].readline()
        # same /24 as the holder: refused with 421 before any policy runs
        hop = await senders.contact(primary, "127.0.4.2", senders.message("cap"))
        assert (hop.outcome, hop.code) == ("greet4xx", 421)
        holder[1].close()
        await asyncio.sleep(0.05)
        await the_lab.walk.settle()
        trap = the_lab.world.named["trap"]
        hop = await senders.contact(trap, "127.0.4.2", senders.message("cap"))
        assert hop.code == 451
        assert not await the_lab.blocklisted("127.0.4.2")
        assert reasons(the_lab, "trap.mx.example.test", "127.0.4.2") == ["trap"]


async def test_total_cap_marks_the_mx_at_capacity(tmp_path: Path) -> None:
    async with lab(tmp_path, extra="[limits]\nmax_connections = 1\n") as the_lab:
        primary = the_lab.world.named["primary"]
        holder = await asyncio.open_connection(
            primary.ip, primary.port, local_addr=("127.0.4.1", 0)
        )
        await holder[0].readline()
        hop = await senders.contact(primary, "127.0.5.1", senders.message("cap"))
        assert hop.code == 421
        await the_lab.walk.settle()
        status = await the_lab.walk.health.status("mail.example.test", the_lab.clock.now)
        assert not status.healthy and status.why.startswith("capacity")
        holder[1].close()


async def test_trusted_peer_is_never_judged_or_blocked(tmp_path: Path) -> None:
    async with lab(tmp_path) as the_lab:
        trap = the_lab.world.named["trap"]
        replies = await dialogue(trap, PEER_IP, ENVELOPE)
        assert replies[-1].startswith(b"451 4.3.2")  # a trap never takes mail, from anyone
        assert not await the_lab.blocklisted(PEER_IP)
        assert reasons(the_lab, "trap.mx.example.test", PEER_IP) == ["trap"]
        # even a blocklist entry made by hand does not stop our backup forwarding
        now = the_lab.clock.now
        entry = BlockEntry(f"{PEER_IP}/32", "manual", now, now + 3600, "cli")
        await the_lab.walk.blocklist.add(entry, now)
        hop = await senders.contact(the_lab.world.named["primary"], PEER_IP, senders.message("fw"))
        assert hop.outcome == "delivered"


async def test_blocklist_expires(tmp_path: Path) -> None:
    async with lab(tmp_path) as the_lab:
        await senders.bot_retired(the_lab.world, BOT)
        assert await the_lab.blocklisted(BOT)
        the_lab.clock.now += 86400 + 1
        hop = await senders.contact(the_lab.world.named["primary"], BOT, senders.message("later"))
        assert hop.outcome == "delivered"


async def test_sightings_record_every_contact_with_its_outcome(tmp_path: Path) -> None:
    async with lab(tmp_path) as the_lab:
        await the_lab.stop("mail.example.test")
        await senders.rfc_sender(the_lab.world, "127.0.1.2")
        await the_lab.walk.settle()
        contacts = await the_lab.walk.sightings.contacts(
            ipaddress.ip_address("127.0.1.2"), the_lab.clock.now
        )
        assert set(contacts) == {"backup.example.test", "trap.mx.example.test"}
        backup = contacts["backup.example.test"]
        assert backup.count == 2 and backup.walk.value == "lower_unhealthy"
        assert backup.outcome is not None and backup.outcome.reason == "queued"
        assert contacts["trap.mx.example.test"].walk.value == "walked"
        assert Role(backup.role) is Role.BACKUP
