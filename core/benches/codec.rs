//! Sync codec throughput: decode and encode of full v1 IPv4 datagrams
//! (40 entries, 1448 bytes, as a kernel master sends them).

mod common;

use common::{conn, keep, rate, report, touch};
use understudy_core::wire::sync::{ConnRepr, Message, MessageBuilder, Verdict, Version, DEFAULT_MAX_LEN};

fn main() {
    let conns: Vec<ConnRepr> = (0..40_000).map(conn).collect();
    let mut builder = MessageBuilder::new(Version::V1, 7, DEFAULT_MAX_LEN);
    conns.iter().for_each(|c| builder.push(c).unwrap());
    let datagrams = builder.finish();
    let entries = conns.len() as u64;
    assert!(datagrams.iter().all(|d| Message::new_checked(d).unwrap().header().nr_conns == 40));
    println!("{} datagrams of 40 IPv4 entries ({} bytes each)\n", datagrams.len(), datagrams[0].len());

    let read = rate(entries, || {
        keep(touch(&datagrams));
    });

    let walk = rate(entries, || {
        let mut applied = 0u32;
        for d in &datagrams {
            for e in Message::new_checked(d).unwrap().entries().flatten() {
                applied += u32::from(e.verdict == Verdict::Apply) + u32::from(e.conn.cport() & 1 == 0);
            }
        }
        keep(applied);
    });
    report("decode v1: walk + verdicts (zero-copy views)", "entries", walk, Some(("reading the bytes", read)));

    let parse = rate(entries, || {
        for d in &datagrams {
            for e in Message::new_checked(d).unwrap().entries().flatten() {
                keep(ConnRepr::parse(&e));
            }
        }
    });
    report("decode v1: to owned ConnRepr", "entries", parse, Some(("reading the bytes", read)));

    let mut out = Vec::with_capacity(datagrams.iter().map(Vec::len).sum());
    let copy = rate(entries, || {
        out.clear();
        datagrams.iter().for_each(|d| out.extend_from_slice(d));
        keep(out.len());
    });
    // A sender reuses its builder: clear() keeps the buffer.
    let mut b = MessageBuilder::new(Version::V1, 7, DEFAULT_MAX_LEN);
    let encode = rate(entries, || {
        b.clear();
        conns.iter().for_each(|c| b.push(c).unwrap());
        b.flush();
        keep(b.finished());
    });
    report("encode v1: ConnRepr -> 1472-byte datagrams", "entries", encode, Some(("copying the bytes", copy)));

    let mut b = MessageBuilder::new(Version::V0, 7, DEFAULT_MAX_LEN);
    let encode_v0 = rate(entries, || {
        b.clear();
        conns.iter().for_each(|c| b.push(c).unwrap());
        b.flush();
        keep(b.finished());
    });
    report("encode v0: ConnRepr -> 1472-byte datagrams", "entries", encode_v0, Some(("copying the bytes", copy)));
}
