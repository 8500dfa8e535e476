"""Warnings about a listener: syn-flood (half-open connections whose SYN-ACK the kernel keeps sending again:
their final ACK never comes). From the SYN-ACK retransmission events the kernel program already sends (a
retransmission event in state NEW_SYN_RECV, owned by the listener), picked at C speed."""

from itertools import compress
from operator import itemgetter

from ...kernel.abi import EV_RETRANSMIT
from ..decode import CGROUP, IDENT, NETNS, TS, TYPE, TCP_NEW_SYN_RECV, UID
from .alerts import Alerts, addr_text, bounded_get, owner_of

WINDOW_S = 10  # a half-open connection counts while its SYN-ACK was sent again within this
MAX_REQUESTS = 65536  # half-open connections followed per listener
# only a SYN-ACK sent again is in NEW_SYN_RECV (no state change goes there); bytes.translate: it -> 1
_MARK = bytes(int(n == TCP_NEW_SYN_RECV) for n in range(256))
_RETRANSMIT_MARK = bytes(int(n == EV_RETRANSMIT) for n in range(256))
_type = itemgetter(TYPE)


class SynFlood:
    """A listener (netns, address, port) with threshold or more half-open connections whose SYN-ACK was sent
    again within WINDOW_S, with the SYN-ACKs sent again and the distinct source addresses."""

    kind = "syn-flood"
    setting = "syn_flood"  # its Thresholds field
    states = (TCP_NEW_SYN_RECV,)  # the events it needs: a SYN-ACK sent again (and new connections)

    def __init__(self, t):
        self.threshold = t.syn_flood
        self.alerts = Alerts(self.kind, t.interval)
        self.listeners = {}  # (netns, family, laddr, lport) -> [{(raddr, rport): last ts}, SYN-ACKs again, Owner]
        self.overflow = 0

    def events(self, rows, news):
        if TCP_NEW_SYN_RECV not in news:
            return
        picked = list(compress(rows, news.translate(_MARK)))  # each new connection has a row here too
        types = bytes(map(_type, picked))
        if EV_RETRANSMIT not in types:
            return
        for r in compress(picked, types.translate(_RETRANSMIT_MARK)):
            who = r[IDENT]
            key = (r[NETNS], who[56], who[8:24], int.from_bytes(who[4:6], "little"))
            lst = bounded_get(self.listeners, key, lambda: [{}, 0, None])
            if lst is None:
                self.overflow += 1
                continue
            reqs = lst[0]
            peer = (who[24:40], who[6:8])
            if peer in reqs or len(reqs) < MAX_REQUESTS:
                reqs[peer] = r[TS]
            lst[1] += 1
            lst[2] = owner_of(who, r[UID], r[CGROUP])

    def tick(self, now):
        cut = now - WINDOW_S * 1_000_000_000
        for key, lst in list(self.listeners.items()):
            reqs = lst[0]
            for peer in [p for p, ts in reqs.items() if ts < cut]:
                del reqs[peer]
            if not reqs:
                del self.listeners[key]
                continue
            if len(reqs) >= self.threshold:
                netns, family, laddr, lport = key
                sources = len({addr for addr, _port in reqs})
                self.alerts.update(now, key, lst[2], (
                    ("listener", addr_text(family, laddr)), ("port", lport), ("netns", netns),
                    ("half_open", len(reqs)), ("synack_retransmits", lst[1]), ("sources", sources),
                    ("window_s", WINDOW_S)),
                    f"{len(reqs)} half-open connections (SYN received, SYN-ACK sent again, no final ACK) from "
                    f"{sources} address{'es' if sources != 1 else ''}: a SYN flood (often from spoofed addresses), "
                    "or clients whose ACKs a firewall drops")
        return self.alerts.settle(now, "no more half-open connections past the threshold on this listener")
