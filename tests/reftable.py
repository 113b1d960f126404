"""Reference connection table: a Linux 6.1 backup's `ip_vs_proc_conn`, in
plain Python on top of the reference codec. Slow and obvious, so the Rust
`ConnTable` can be checked against it (and benchmarked beside it).
"""

import refcodec

F_INACTIVE = 0x0100
F_BACKUP_UPD_MASK = 0x0700  # INACTIVE | SEQ_MASK
TEMPLATE_TIMEOUT = 180
# Default timeouts by protocol and state (ip_vs_proto_{tcp,udp,sctp}.c).
TIMEOUTS = {
    6: [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120],
    17: [300],
    132: [2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61],
}
MAX_TICK = 2**32 - 2  # the Rust table counts expiry in u32 seconds


class RefTable:
    def __init__(self, syncid=0, max_len=65535, pe_names=("sip",)):
        self.syncid, self.max_len, self.pe_names = syncid, max_len, pe_names
        self.conns = {}
        self.base = None

    def apply(self, datagrams, now):
        now = int(now)
        applied = 0
        for datagram in datagrams:
            self._start_clock(now)
            if len(datagram) > self.max_len:
                continue
            msg = refcodec.decode(datagram, self.pe_names)
            if msg["error"] in ("header_truncated", "size_mismatch"):
                continue
            if self.syncid and msg["header"]["syncid"] != self.syncid:
                continue
            for conn in msg["conns"]:
                if conn["verdict"] == "apply":
                    self._apply(conn, now)
                    applied += 1
        return applied

    def _apply(self, c, now):
        flags = c["backup_flags"]
        template = bool(flags & refcodec.F_TEMPLATE)
        options = {o["type"] & ~refcodec.OPT_F_PARAM: bytes.fromhex(o["data_hex"]) for o in c["options"]}
        pe_data = options.get(refcodec.OPT_PE_DATA) if template else None
        key = (c["protocol"], template, c["caddr"], c["cport"], c["vaddr"], c["vport"], pe_data)
        old = self.conns.get(key)
        if old and not template and (old["daddr"], old["dport"]) != (c["daddr"], c["dport"]):
            if flags & F_INACTIVE:
                return  # late expiry of a conn that was already replaced
            del self.conns[key]
            old = None
        state = c["state"]
        timeout = c["timeout"] or self._default_timeout(c["protocol"], template, state)
        tick = now - self.base
        expires = self.base + min(tick + timeout, MAX_TICK)
        if old:
            old["flags"] = (flags & F_BACKUP_UPD_MASK) | (old["flags"] & ~F_BACKUP_UPD_MASK)
        else:
            old = self.conns[key] = {
                "protocol": c["protocol"], "caddr": c["caddr"], "cport": c["cport"],
                "vaddr": c["vaddr"], "vport": c["vport"], "daddr": c["daddr"], "dport": c["dport"],
                "flags": flags, "fwmark": c["fwmark"] or 0, "seq": None,
                "pe": (pe_data, options.get(refcodec.OPT_PE_NAME)) if pe_data else None,
            }
        old.update(state=state, timeout=timeout, expires=expires)
        if refcodec.OPT_SEQ_DATA in options:
            old["seq"] = options[refcodec.OPT_SEQ_DATA]

    @staticmethod
    def _default_timeout(protocol, template, state):
        table = TIMEOUTS.get(protocol)
        if template or table is None:
            return TEMPLATE_TIMEOUT
        return table[state]

    def _start_clock(self, now):
        # Like the Rust table: expiry counts u32 seconds from the first event.
        if self.base is None:
            self.base = now

    def expire(self, now):
        self._start_clock(int(now))
        due = [k for k, c in self.conns.items() if c["expires"] <= int(now)]
        for key in due:
            del self.conns[key]
        return len(due)

    def __len__(self):
        return len(self.conns)

    def rows(self):
        """Comparable rows, the same shape `rows_of` gives for the Rust table."""
        out = []
        for c in self.conns.values():
            options = []
            if c["seq"] is not None:
                options.append((refcodec.OPT_SEQ_DATA, c["seq"]))
            if c["pe"]:
                options.append((refcodec.OPT_PE_DATA, c["pe"][0]))
                options.append((refcodec.OPT_PE_NAME, c["pe"][1]))
            out.append(_row(c, options))
        return sorted(out)


def _row(c, options):
    fields = ("protocol", "caddr", "cport", "vaddr", "vport", "daddr", "dport",
              "flags", "state", "fwmark", "timeout", "expires")
    return tuple(c[f] for f in fields) + (tuple(options),)


def rows_of(table):
    """Rows of a Rust `ConnTable`, comparable with `RefTable.rows()`."""
    rows = []
    for conn in table:
        c = {f: getattr(conn, f) for f in ("protocol", "caddr", "cport", "vaddr", "vport",
                                           "daddr", "dport", "flags", "state", "fwmark",
                                           "timeout", "expires")}
        rows.append(_row(c, [(k, bytes(v)) for k, v in conn.options]))
    return sorted(rows)
