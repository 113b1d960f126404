"""Sync codec and connection table through the Python API, in batches, beside
the pure-Python reference (tests/refcodec.py, tests/reftable.py)."""

import pytest

import refcodec
from reftable import RefTable
from understudy.sync import Conn, ConnTable, decode_many, encode

ENTRIES = 10_000  # 250 datagrams of 40 IPv4 entries


def conn(n):
    return Conn(6, f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 1024 + n % 50_000, "10.0.0.100", 80,
                f"192.168.1.{n % 200 + 1}", 8000, flags=0, state=1, timeout=900)


def as_dict(c):
    return {"af": c.af, "protocol": c.protocol, "caddr": c.caddr, "cport": c.cport, "vaddr": c.vaddr,
            "vport": c.vport, "daddr": c.daddr, "dport": c.dport, "flags": c.flags, "state": c.state,
            "fwmark": c.fwmark, "timeout": c.timeout, "options": []}


@pytest.fixture(scope="module")
def conns():
    return [conn(n) for n in range(ENTRIES)]


@pytest.fixture(scope="module")
def datagrams(conns):
    out = encode(conns, version=1, syncid=7)
    assert len(out) == ENTRIES // 40
    return out


def run(benchmark, group, side, entries, fn, *args):
    benchmark.group = group
    benchmark.extra_info.update(side=side, entries=entries)
    return benchmark(fn, *args)


def test_decode(benchmark, datagrams):
    messages = run(benchmark, "decode v1 (40-entry datagrams)", "understudy", ENTRIES, decode_many, datagrams)
    assert sum(m.nr_conns for m in messages) == ENTRIES


def test_decode_reference(benchmark, datagrams):
    run(benchmark, "decode v1 (40-entry datagrams)", "reference", ENTRIES,
        lambda: [refcodec.decode(d) for d in datagrams])


def test_encode(benchmark, conns):
    out = run(benchmark, "encode v1 (1472-byte datagrams)", "understudy", ENTRIES, encode, conns, 1, 7)
    assert len(out) == ENTRIES // 40


def test_encode_reference(benchmark, conns):
    dicts = [as_dict(c) for c in conns]
    header = {"format": "v1", "syncid": 7}
    run(benchmark, "encode v1 (1472-byte datagrams)", "reference", ENTRIES,
        lambda: [refcodec.encode(header, dicts[i:i + 40]) for i in range(0, ENTRIES, 40)])


def filled(size, table_cls):
    """A table holding `size` connections, and 10,000 updates of random ones."""
    import random

    rng = random.Random(7)
    table = table_cls()
    base = encode([conn(n) for n in range(size)], version=1, syncid=7)
    table.apply(base, 1)
    updates = encode([conn(rng.randrange(size)) for _ in range(ENTRIES)], version=1, syncid=7)
    return table, updates


@pytest.mark.parametrize("size", [200_000, 1_000_000])
def test_apply(benchmark, size):
    table, updates = filled(size, ConnTable)
    assert len(table) == size
    applied = run(benchmark, f"decode + apply, table of {size:,}", "understudy", ENTRIES,
                  table.apply, updates, 2.0)
    assert applied == ENTRIES


@pytest.mark.parametrize("size", [200_000])
def test_apply_reference(benchmark, size):
    table, updates = filled(size, RefTable)
    benchmark.group = f"decode + apply, table of {size:,}"
    benchmark.extra_info.update(side="reference", entries=ENTRIES)
    benchmark.pedantic(table.apply, (updates, 2), rounds=3, iterations=1)


@pytest.mark.parametrize("size", [1_000_000])
def test_memory_per_connection(benchmark, size):
    """Bytes the engine holds per IPv4 connection (reported, with the fill rate)."""
    datagrams = encode([conn(n) for n in range(size)], version=1, syncid=7)

    def fill():
        table = ConnTable()
        table.apply(datagrams, 1)
        return table

    benchmark.group = f"fill a table to {size:,} (memory)"
    table = benchmark.pedantic(fill, rounds=1, iterations=1)
    benchmark.extra_info.update(side="understudy", entries=size,
                                bytes_per_conn=table.memory_bytes() / len(table))
    assert len(table) == size
