"""The Rust ConnTable against the kernel's rules and against its Python twin."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refcodec
from reftable import RefTable, rows_of
from understudy.sync import Conn, ConnTable, decode, encode

DATA = Path(__file__).parent / "data" / "ipvs-sync"
SEQ = bytes(range(24))


def v1(*conns, syncid=7):
    return refcodec.encode({"format": "v1", "syncid": syncid}, list(conns))


def tcp(cport, daddr="192.168.1.11", flags=0, state=1, timeout=900, options=(), af="inet"):
    caddr, vaddr = ("fd00::2", "fd00::100") if af == "inet6" else ("10.0.0.2", "10.0.0.100")
    return {"af": af, "protocol": 6, "caddr": caddr, "cport": cport, "vaddr": vaddr, "vport": 80,
            "daddr": daddr if af == "inet" else "fd00:1::11", "dport": 8000, "flags": flags,
            "state": state, "fwmark": 0, "timeout": timeout, "options": list(options)}


def test_update_changes_state_and_timeout_but_keeps_binding():
    t = ConnTable()
    t.apply([v1(tcp(1000, flags=0x3))], now=10)
    t.apply([v1(tcp(1000, flags=0x100, state=5, timeout=120))], now=20)
    (c,) = list(t)
    # INACTIVE and seq bits follow the update; the forwarding method stays.
    assert (c.state, c.timeout, c.flags, c.expires) == (5, 120, 0x3 | 0x100 | 0x20, 140)


def test_replacement_and_stale_expiry_follow_the_kernel():
    t = ConnTable()
    t.apply([v1(tcp(1000))], now=10)
    t.apply([v1(tcp(1000, daddr="192.168.2.12", flags=0x100))], now=11)  # stale: ignored
    assert [c.daddr for c in t] == ["192.168.1.11"]
    t.apply([v1(tcp(1000, daddr="192.168.2.12"))], now=12)  # active: replaces
    assert [c.daddr for c in t] == ["192.168.2.12"]
    stats = t.stats()
    assert (stats["stale"], stats["replaced"], stats["created"]) == (1, 1, 2)


def test_expiry_is_by_timeout_and_counted():
    t = ConnTable()
    t.apply([v1(tcp(1, timeout=10), tcp(2, timeout=0), tcp(3, state=6, timeout=0))], now=100)
    assert t.expire(now=109) == 0
    assert t.expire(now=110) == 2  # the 10 s conn, and CLOSE's default of 10 s
    assert [c.cport for c in t] == [2]
    assert t.expire(now=100 + 900) == 1
    assert len(t) == 0 and t.stats()["expired"] == 3


def test_syncid_filter_and_receive_limit():
    t = ConnTable(syncid=7, max_len=1472)
    assert t.apply([v1(tcp(1), syncid=8), v1(tcp(2), syncid=0)], now=1) == 0
    big = encode([Conn(6, "10.0.0.2", p, "10.0.0.100", 80, "192.168.1.11", 8000) for p in range(41)],
                 syncid=7, max_len=1500)
    assert len(big) == 1 and len(big[0]) == 1484
    assert t.apply(big, now=1) == 0
    s = t.stats()
    assert (s["syncid_mismatch"], s["dropped_oversize"]) == (2, 1)


def test_pe_templates_are_told_apart_by_pe_data():
    def sip(call_id):
        opts = [{"type": 2, "data_hex": call_id.encode().hex()}, {"type": 3, "data_hex": b"sip".hex()}]
        return {"af": "inet", "protocol": 17, "caddr": "10.0.0.2", "cport": 0, "vaddr": "10.0.0.100",
                "vport": 5060, "daddr": "192.168.2.12", "dport": 5060, "flags": 0x1100, "state": 0,
                "fwmark": 0, "timeout": 60, "options": opts}

    t = ConnTable()
    t.apply([v1(sip("a@x"), sip("b@x"), sip("a@x"))], now=1)
    assert sorted(dict(c.options)[2] for c in t) == [b"a@x", b"b@x"]
    assert ConnTable(pe_names=()).apply([v1(sip("a@x"))], now=1) == 0


def test_table_reencodes_itself():
    t = ConnTable()
    conns = [tcp(p) for p in range(100)] + [tcp(7, af="inet6", options=[{"type": 1, "data_hex": SEQ.hex()}],
                                                flags=0x400)]
    t.apply([v1(*conns[:50]), v1(*conns[50:])], now=5)
    copy = ConnTable()
    datagrams = t.encode(version=1, syncid=7)
    assert all(len(d) <= 1472 for d in datagrams)
    copy.apply(datagrams, now=5)
    assert rows_of(copy) == rows_of(t)
    # v0 cannot carry IPv6: the resync leaves it out rather than failing.
    assert sum(decode(d).nr_conns for d in t.encode(version=0)) == 100


def test_validation_vectors_through_python():
    """The 42 validation messages, applied in order, leave the kernel's rows."""
    cases = json.loads((DATA / "validation.results.json").read_text())["cases"]
    t = ConnTable(syncid=7, max_len=1472)
    for case in cases:
        t.apply([bytes.fromhex(case["payload_hex"])], now=case["sent_at"])
    conns = list(t)
    for case in cases:
        for marker, observed in case["observed_on_backup"].items():
            if marker.startswith("templates_with_vport_"):
                vport = int(marker.rsplit("_", 1)[1])
                ours = [c for c in conns if c.template and c.vport == vport]
            else:
                ours = [c for c in conns if not c.template and c.cport == int(marker)]
            if observed == "absent":
                assert ours == [], f"case {case['id']}"
            else:
                assert [(c.daddr, c.dport) for c in ours] == [(r["daddr"], r["dport"]) for r in observed]


# --- parity with the pure-Python twin ---------------------------------------

addrs = st.sampled_from(["10.0.0.2", "10.0.0.3"])
daddrs = st.sampled_from(["192.168.1.11", "192.168.2.12"])


@st.composite
def entries(draw):
    protocol = draw(st.sampled_from([6, 17, 132, 47]))
    template = draw(st.booleans())
    flags = draw(st.sampled_from([0, 0x3, 0x100, 0x183, 0x80, 0x20])) | (0x1000 if template else 0)
    states = {6: 11, 17: 1, 132: 14}.get(protocol, 1)
    options = []
    if draw(st.booleans()):
        flags |= 0x400
        options.append({"type": 1, "data_hex": draw(st.binary(min_size=24, max_size=24)).hex()})
    if template and protocol == 17 and draw(st.booleans()):
        options += [{"type": 2, "data_hex": draw(st.sampled_from([b"a", b"b"])).hex()},
                    {"type": 3, "data_hex": draw(st.sampled_from([b"sip", b"xyz"])).hex()}]
    return {"af": "inet", "protocol": protocol, "caddr": draw(addrs), "cport": draw(st.sampled_from([0, 1, 2])),
            "vaddr": "10.0.0.100", "vport": draw(st.sampled_from([80, 5060])), "daddr": draw(daddrs),
            "dport": draw(st.sampled_from([8000, 8001])), "flags": flags,
            "state": draw(st.integers(0, states)), "fwmark": draw(st.sampled_from([0, 1])),
            "timeout": draw(st.sampled_from([0, 3, 60, 2**32 - 1])), "options": options}


@st.composite
def messages(draw):
    conns = draw(st.lists(entries(), min_size=1, max_size=6))
    v0 = draw(st.booleans()) and all(c["options"] == [] or c["options"][0]["type"] == 1 and len(c["options"]) == 1
                                      for c in conns)
    if v0:
        conns = [dict(c, flags=c["flags"] & 0xFFFF, fwmark=None, timeout=None) for c in conns]
    return refcodec.encode({"format": "v0" if v0 else "v1", "syncid": draw(st.sampled_from([7, 8]))}, conns)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.lists(messages(), max_size=4), st.integers(0, 200), st.booleans()),
                      min_size=1, max_size=8),
       syncid=st.sampled_from([0, 7]))
def test_parity_with_python_twin(steps, syncid):
    rust, ref = ConnTable(syncid=syncid), RefTable(syncid=syncid)
    now = 1000
    for datagrams, dt, expire in steps:
        now += dt
        assert rust.apply(datagrams, now=now) == ref.apply(datagrams, now)
        if expire:
            assert rust.expire(now=now) == ref.expire(now)
        assert rows_of(rust) == ref.rows()


@pytest.mark.parametrize("now", [0.0, 1e9])
def test_apply_accepts_bytes_like_and_clock(now):
    t = ConnTable()
    assert t.apply([v1(tcp(1))], now=now) == 1
    assert t.apply([bytearray(v1(tcp(2)))]) == 1  # default clock
    assert t.now() > 0 and len(t) == 2 and t.memory_bytes() > 0
