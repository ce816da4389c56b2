"""Fold parsed events into per-server counts, ratios and the cross-MX findings.

Everything that grows with the log is either a fixed-size tally (per server, per
hour) or kept only for a bounded window: queue state (capped), clients and messages
seen at several MX (folded into totals once ``window`` seconds of log time have
passed since they were last seen).  So memory follows the window, not the log.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mxguard.logs.blocks import BlockResult
from mxguard.logs.model import (
    DELIVERED,
    GREYLIST,
    KINDS,
    OP_CONTENT,
    OP_DELIVER,
    OP_DIRECT,
    OP_FORWARDED,
    OP_QCLIENT,
    OP_QDONE,
    OP_QFROM,
    OP_QLOCAL,
    OP_QMSGID,
    OP_REJECT,
    OP_ROLE,
    OP_STAT,
    RATIO_KINDS,
    REJECT_KINDS,
    SCREEN,
)
from mxguard.logs.parsers.postscreen import SCREEN_RCPT

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import TypeVar

    _V = TypeVar("_V")

QUEUE_CAP = 200_000
DEFAULT_WINDOW = 3600.0
TOP_CLIENTS = 20

ORIGIN_REMOTE = 0
ORIGIN_LOCAL = 1
ORIGIN_PEER = 2
LOOPBACK = ("127.0.0.1", "::1")


@dataclass
class Options:
    """How to attribute and filter traffic; all of it comes from the command line."""

    local_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default_factory=list
    )
    peers: set[str] = field(default_factory=set)  # MX host names / addresses
    roles: dict[str, str] = field(default_factory=dict)  # server or host -> role
    preferences: dict[str, int | None] = field(default_factory=dict)
    window: float = DEFAULT_WINDOW
    min_count: int = 30


@dataclass
class Server:
    name: str
    role: str = "unknown"
    preference: int | None = None
    counts: Counter[str] = field(default_factory=Counter)
    local: Counter[str] = field(default_factory=Counter)
    peer_relayed: int = 0
    stats: Counter[str] = field(default_factory=Counter)
    timeline: dict[int, Counter[str]] = field(default_factory=dict)
    first_ts: float | None = None
    last_ts: float | None = None
    hosts: set[str] = field(default_factory=set)

    def add(self, kind: str, n: int, ts: float | None) -> None:
        self.counts[kind] += n
        if ts is not None:
            hour = int(ts // 3600 * 3600)
            slot = self.timeline.get(hour)
            if slot is None:
                slot = self.timeline[hour] = Counter()
            slot[kind] += n

    def seen(self, ts: float | None) -> None:
        if ts is None or ts < 0:
            return
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts


@dataclass
class FileInfo:
    """One input: how its lines are attributed to a server."""

    path: str
    label: str | None = None  # server name forced by ROLE[:NAME]=FILE
    role: str | None = None
    default_name: str = "unknown"
    lines: int = 0
    corrupt: int = 0
    unparsed: int = 0  # in a known format, from a program, but not understood
    formats: Counter[str] = field(default_factory=Counter)


class Analysis:
    def __init__(self, options: Options, files: list[FileInfo]) -> None:
        self.o = options
        self.files = files
        self.servers: dict[str, Server] = {}
        self.queue: dict[tuple[str, bytes], list[object]] = {}
        self.unparsed: Counter[str] = Counter()
        self.samples: dict[str, list[str]] = {}
        self.corrupt_samples: list[str] = []
        self._local_cache: dict[str, bool] = {}
        self._peer_cache: dict[tuple[str | None, str | None], bool] = {}
        # several-MX tracking, bounded by the window
        self.clients: dict[str, dict[str, list[float]]] = {}
        self.client_last: dict[str, float] = {}
        self.messages: dict[str, list[object]] = {}
        self.watermark = float("-inf")
        self.multi_clients = 0
        self.client_visits = 0
        self.first_contact: Counter[str] = Counter()
        self.top_clients: list[tuple[int, str, list[str], str]] = []
        self.msg_keys = Counter[str]()
        self.msg_multi = Counter[str]()
        self.msg_multi_by_servers: Counter[str] = Counter()
        self.msgid_origin: dict[tuple[str, str], int] = {}
        self.exim_rejects: dict[tuple[str, float | None, bytes], int] = {}
        self.exim_reject_order: list[tuple[float, tuple[str, float | None, bytes]]] = []

    # -- attribution -----------------------------------------------------------------
    def server(self, file_idx: int, host: str | None) -> Server:
        f = self.files[file_idx]
        name = f.label or host or f.default_name
        s = self.servers.get(name)
        if s is None:
            s = self.servers[name] = Server(name)
            role = f.role or self._lookup(self.o.roles, name)
            if role:
                s.role = role
            s.preference = self._lookup(self.o.preferences, name)
        if host is not None and len(s.hosts) < 8:
            s.hosts.add(host)
        return s

    @staticmethod
    def _lookup(table: Mapping[str, _V], name: str) -> _V | None:
        if name in table:
            return table[name]
        short = name.split(".", 1)[0]
        for k, v in table.items():
            if k.split(".", 1)[0] == short:
                return v
        return None

    def is_local(self, ip: str | None) -> bool:
        if ip is None or not self.o.local_networks:
            return False
        hit = self._local_cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip)
                hit = any(addr in net for net in self.o.local_networks)
            except ValueError:
                hit = False
            if len(self._local_cache) > 100_000:
                self._local_cache.clear()
            self._local_cache[ip] = hit
        return hit

    def is_peer(self, ip: str | None, name: str | None) -> bool:
        peers = self.o.peers
        if not peers:
            return False
        key = (ip, name)
        hit = self._peer_cache.get(key)
        if hit is None:
            hit = bool(
                (ip is not None and ip in peers)
                or (
                    name is not None
                    and (name.lower() in peers or name.split(".", 1)[0].lower() in peers)
                )
            )
            if len(self._peer_cache) > 100_000:
                self._peer_cache.clear()
            self._peer_cache[key] = hit
        return hit

    def origin(self, ip: str | None, name: str | None = None, local: bool = False) -> int:
        if local or self.is_local(ip):
            return ORIGIN_LOCAL
        if self.is_peer(ip, name):
            return ORIGIN_PEER
        return ORIGIN_REMOTE

    # -- block-level tallies ---------------------------------------------------------
    def add_block(self, file_idx: int, b: BlockResult) -> None:
        f = self.files[file_idx]
        f.lines += b.lines
        f.corrupt += b.corrupt
        f.unparsed += sum(b.unparsed.values())
        f.formats.update(b.formats)
        self.unparsed.update(b.unparsed)
        for prog, lines in b.samples.items():
            s = self.samples.setdefault(prog, [])
            s.extend(lines[: max(0, 5 - len(s))])
        if len(self.corrupt_samples) < 5:
            self.corrupt_samples.extend(b.corrupt_samples[: 5 - len(self.corrupt_samples)])
        for (host, name), n in b.tallies.items():
            self.server(file_idx, host).stats[name] += n
        for (host, hour), n in b.drops.items():
            srv = self.server(file_idx, host)
            srv.add(SCREEN, n, hour if hour >= 0 else None)
            srv.stats["postscreen_dropped_connections"] += n
        for (host, ip), (first, last, conns) in b.clients.items():
            srv = self.server(file_idx, host)
            srv.seen(first)
            srv.seen(last)
            self._contact(srv.name, ip, first, last, conns)

    def _contact(self, server: str, ip: str | None, first: float, last: float, n: float) -> None:
        """A client talked to ``server`` (connections, or a transaction seen without
        its connect line)."""
        if ip is None or self.is_local(ip) or ip in LOOPBACK:
            return
        if first >= 0 and self.client_last.get(ip, first) < first - self.o.window:
            self._fold_client(ip)
        per = self.clients.get(ip)
        if per is None:
            per = self.clients[ip] = {}
        rec = per.get(server)
        if rec is None:
            per[server] = [first, last, n]
        else:
            if 0 <= first < rec[0] or rec[0] < 0:
                rec[0] = first
            rec[1] = max(rec[1], last)
            rec[2] += n
        self.client_last[ip] = max(self.client_last.get(ip, last), last)

    # -- events ----------------------------------------------------------------------
    def add_event(
        self, file_idx: int, ts: float | None, host: str | None, ev: tuple[object, ...]
    ) -> None:
        st: list[object] | None
        srv = self.server(file_idx, host)
        srv.seen(ts)
        op = ev[0]
        if op == OP_REJECT:
            self._reject(file_idx, srv, ts, ev)
        elif op == OP_QCLIENT:
            _, qid, ip, name, local = ev
            srv.stats["messages_received"] += 1
            origin = self.origin(ip, name, bool(local))  # type: ignore[arg-type]
            st = self._q(srv.name, qid)  # type: ignore[arg-type]
            st[0] = origin
            st[1] = ip
            # a content filter re-injecting over loopback: the origin is that of the
            # copy it was handed, found by Message-ID (the hand-off line may come later)
            st[4] = ip in LOOPBACK and not local
            t = ts if ts is not None else -1.0
            self._contact(srv.name, ip, t, t, 0)  # type: ignore[arg-type]
        elif op == OP_QMSGID:
            st = self._q(srv.name, ev[1])  # type: ignore[arg-type]
            st[2] = ev[2]
            key = (srv.name, ev[2])
            if st[4]:
                known = self.msgid_origin.get(key)  # type: ignore[arg-type]
                if known is not None:
                    st[0] = known
            else:
                if len(self.msgid_origin) >= QUEUE_CAP:
                    self.msgid_origin.pop(next(iter(self.msgid_origin)))
                self.msgid_origin[key] = st[0]  # type: ignore[index, assignment]
        elif op == OP_QFROM:
            self._q(srv.name, ev[1])[3] = ev[2]  # type: ignore[arg-type]
        elif op == OP_QLOCAL:
            st = self._q(srv.name, ev[1])  # type: ignore[arg-type]
            st[0] = ORIGIN_LOCAL
            if st[2] is not None:
                self.msgid_origin[(srv.name, st[2])] = ORIGIN_LOCAL  # type: ignore[index]
        elif op == OP_DELIVER:
            self._deliver(srv, ts, ev)
        elif op == OP_QDONE:
            self.queue.pop((srv.name, ev[1]), None)  # type: ignore[arg-type]
        elif op == OP_CONTENT:
            _, kind, qid, ip, sender, n = ev
            st = self.queue.get((srv.name, qid)) if qid else None  # type: ignore[arg-type]
            origin = st[0] if st is not None else self.origin(ip)  # type: ignore[assignment, arg-type]
            srv.stats["content_filter_blocked"] += n  # type: ignore[operator]
            self._count(srv, kind, n, ts, origin)  # type: ignore[arg-type]
        elif op == OP_DIRECT:
            _, kind, ip, sender, rcpt, msgid, n = ev
            origin = self.origin(ip)  # type: ignore[arg-type]
            self._count(srv, kind, n, ts, origin)  # type: ignore[arg-type]
            if origin == ORIGIN_REMOTE:
                self._register(srv.name, ts, msgid, sender, rcpt, kind == DELIVERED, n)  # type: ignore[arg-type]
        elif op == OP_STAT:
            srv.stats[ev[1]] += ev[2]  # type: ignore[index, operator]
        elif op == OP_FORWARDED:
            srv.stats["forwarded_to_other_mx"] += ev[3]  # type: ignore[operator]
            msgid = ev[2]
            if msgid:
                self._relayed(srv.name, str(msgid))
        elif op == OP_ROLE:
            if srv.role == "unknown":
                srv.role = str(ev[1])
            if srv.preference is None and isinstance(ev[2], int):
                srv.preference = ev[2]

    def _q(self, server: str, qid: bytes) -> list[object]:
        key = (server, qid)
        st = self.queue.get(key)
        if st is None:
            if len(self.queue) >= QUEUE_CAP:
                self.queue.pop(next(iter(self.queue)))
            # origin, client ip, msgid, sender, re-injected over loopback
            st = self.queue[key] = [ORIGIN_REMOTE, None, None, None, False]
        return st

    def _count(self, srv: Server, kind: str, n: int, ts: float | None, origin: int) -> None:
        if origin == ORIGIN_LOCAL:
            srv.local[kind] += n
        elif origin == ORIGIN_PEER:
            if kind == DELIVERED:
                srv.peer_relayed += n
            else:
                srv.stats["peer_" + kind] += n
        else:
            srv.add(kind, n, ts)

    def _reject(self, file_idx: int, srv: Server, ts: float | None, ev: tuple[object, ...]) -> None:
        _, kind, ip, sender, rcpt, n, dedup = ev
        t = ts if ts is not None else -1.0
        self._contact(srv.name, ip, t, t, 0)  # type: ignore[arg-type]
        if dedup is not None:
            key = (srv.name, ts, dedup)  # time and text: the same line in both logs
            seen = self.exim_rejects.get(key)  # type: ignore[arg-type]
            if seen is not None and seen != file_idx:
                srv.stats["duplicate_rejects_skipped"] += n  # type: ignore[operator]
                return
            self.exim_rejects[key] = file_idx  # type: ignore[index]
            self.exim_reject_order.append((ts if ts is not None else self.watermark, key))  # type: ignore[arg-type]
        origin = self.origin(ip)  # type: ignore[arg-type]
        if kind == SCREEN_RCPT:
            srv.stats["postscreen_rcpt_rejects"] += n  # type: ignore[operator]
        else:
            self._count(srv, kind, n, ts, origin)  # type: ignore[arg-type]
        if origin == ORIGIN_REMOTE:
            self._register(srv.name, ts, None, sender, rcpt, False, n)  # type: ignore[arg-type]

    def _deliver(self, srv: Server, ts: float | None, ev: tuple[object, ...]) -> None:
        _, qid, rcpt, final, nxt, n = ev
        st = self.queue.get((srv.name, qid))  # type: ignore[arg-type]
        if not final:
            srv.stats["content_filter_handoffs"] += n  # type: ignore[operator]
            if nxt:
                nst = self._q(srv.name, nxt)  # type: ignore[arg-type]
                if st is not None:
                    nst[0], nst[1] = st[0], st[1]
                    nst[2] = nst[2] or st[2]
                    nst[3] = nst[3] or st[3]
            return
        srv.stats["final_deliveries_all_origins"] += n  # type: ignore[operator]
        if nxt:  # "forwarded as": the new copy is ours, not a new arrival
            srv.stats["forwarded_locally"] += n  # type: ignore[operator]
            self._q(srv.name, nxt)[0] = ORIGIN_LOCAL  # type: ignore[arg-type]
        origin = st[0] if st is not None else ORIGIN_REMOTE
        if st is None:
            srv.stats["deliveries_without_arrival"] += n  # type: ignore[operator]
        self._count(srv, DELIVERED, n, ts, origin)  # type: ignore[arg-type]
        if origin == ORIGIN_REMOTE:
            msgid = st[2] if st is not None else None
            sender = st[3] if st is not None else None
            self._register(srv.name, ts, msgid, sender, rcpt, True, n)  # type: ignore[arg-type]

    # -- several-MX tracking ---------------------------------------------------------
    def _register(
        self,
        server: str,
        ts: float | None,
        msgid: str | None,
        sender: str | None,
        rcpt: str | None,
        delivered: bool,
        n: int,
    ) -> None:
        t = ts if ts is not None else self.watermark
        keys = []
        if msgid:
            keys.append("m:" + msgid)
        if rcpt and sender is not None:
            keys.append("e:" + sender + "\x00" + rcpt)
        for k in keys:
            rec = self.messages.get(k)
            if rec is not None and t - rec[1] > self.o.window:  # type: ignore[operator]
                self._fold_message(k)  # an old sighting: close it, this one is new
                rec = None
            if rec is None:
                # first ts, last ts, servers, delivered contributions [(server, hour, n)]
                rec = self.messages[k] = [t, t, {server}, []]
            else:
                rec[1] = max(rec[1], t)  # type: ignore[call-overload]
                rec[2].add(server)  # type: ignore[attr-defined]
            if delivered and k[0] == "m":
                ekey = keys[1] if len(keys) > 1 else None
                rec[3].append((server, int(t // 3600 * 3600) if t > 0 else None, n, ekey))  # type: ignore[attr-defined]

    def _relayed(self, forwarder: str, msgid: str) -> None:
        """A backup says it relayed ``msgid``: the other MX's delivery was that relay."""
        rec = self.messages.get("m:" + msgid)
        if rec is None:
            self.messages["m:" + msgid] = [self.watermark, self.watermark, {forwarder}, [], True]
            return
        for server, hour, n, ekey in rec[3]:  # type: ignore[attr-defined]
            if server == forwarder:
                continue
            erec = self.messages.get(ekey) if ekey else None
            if erec is not None:
                erec[2].discard(server)  # type: ignore[attr-defined]
            s = self.servers[server]
            s.counts[DELIVERED] -= n
            if hour is not None and hour in s.timeline:
                s.timeline[hour][DELIVERED] -= n
            s.peer_relayed += n
        rec[3] = [c for c in rec[3] if c[0] == forwarder]  # type: ignore[attr-defined]
        rec[2] = {forwarder}
        if len(rec) == 4:
            rec.append(True)

    def advance(self, watermark: float) -> None:
        """All inputs have reached ``watermark``: fold what the window has left behind."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        limit = watermark - self.o.window
        stale = [ip for ip, last in self.client_last.items() if last < limit]
        for ip in stale:
            self._fold_client(ip)
        mstale = [k for k, rec in self.messages.items() if rec[1] < limit]  # type: ignore[operator]
        for k in mstale:
            self._fold_message(k)
        order = self.exim_reject_order
        i = 0
        while i < len(order) and order[i][0] < limit:
            self.exim_rejects.pop(order[i][1], None)
            i += 1
        if i:
            del order[:i]

    def _fold_client(self, ip: str) -> None:
        per = self.clients.pop(ip, {})
        self.client_last.pop(ip, None)
        if not per:
            return
        self.client_visits += 1
        if len(per) < 2:
            return
        self.multi_clients += 1
        first = min(per.items(), key=lambda kv: kv[1][0] if kv[1][0] >= 0 else float("inf"))[0]
        self.first_contact[first] += 1
        total = int(sum(r[2] for r in per.values()))
        row = (total, ip, sorted(per), first)
        self.top_clients.append(row)
        if len(self.top_clients) > TOP_CLIENTS * 4:
            self.top_clients.sort(reverse=True)
            del self.top_clients[TOP_CLIENTS:]

    def _fold_message(self, k: str) -> None:
        rec = self.messages.pop(k)
        if len(rec) > 4:
            return  # a relay between our own MX hosts, not a sender's doing
        kind = "message_id" if k[0] == "m" else "sender_recipient"
        self.msg_keys[kind] += 1
        servers = rec[2]
        if len(servers) > 1:  # type: ignore[arg-type]
            self.msg_multi[kind] += 1
            self.msg_multi_by_servers[" + ".join(sorted(servers))] += 1  # type: ignore[call-overload]

    # -- the end -----------------------------------------------------------------------
    def finish(self) -> dict[str, object]:
        self.advance(float("inf"))
        for s in self.servers.values():
            if s.counts[GREYLIST] == 0 and s.stats["postgrey_greylist"]:
                s.counts[GREYLIST] = s.stats["postgrey_greylist"]
                s.stats["greylist_from_postgrey_lines"] = 1
        from mxguard.logs.report import build_report

        return build_report(self)


__all__ = ["KINDS", "RATIO_KINDS", "REJECT_KINDS", "Analysis", "FileInfo", "Options", "Server"]
