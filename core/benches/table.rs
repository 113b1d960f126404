//! Connection-table throughput and memory: decode + apply into a table that
//! holds 1 M and 4 M connections, memory per IPv4 connection at 1 M and 10 M,
//! and expiry; beside a naive std `HashMap` table fed the same datagrams.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use common::{conn, keep, rate, Rng};
use understudy_core::table::{ConnTable, TableConfig};
use understudy_core::wire::sync::{ConnRepr, Message, MessageBuilder, Version, DEFAULT_MAX_LEN};

fn datagrams(ids: impl Iterator<Item = u64>) -> Vec<Vec<u8>> {
    let mut b = MessageBuilder::new(Version::V1, 7, DEFAULT_MAX_LEN);
    for n in ids {
        b.push(&conn(n)).unwrap();
    }
    b.finish()
}

/// The obvious table: decode every entry to an owned value, SipHash map, no expiry.
#[derive(Default)]
struct Naive(HashMap<(u8, bool, IpAddr, u16, IpAddr, u16), ConnRepr>);

impl Naive {
    fn apply(&mut self, d: &[u8]) {
        if let Ok(m) = Message::new_checked(d) {
            for e in m.entries().flatten() {
                let c = ConnRepr::parse(&e);
                self.0.insert((c.protocol, c.is_template(), c.caddr, c.cport, c.vaddr, c.vport), c);
            }
        }
    }

    fn bytes(&self) -> usize {
        self.0.capacity() * (std::mem::size_of::<((u8, bool, IpAddr, u16, IpAddr, u16), ConnRepr)>() + 1)
    }
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0) * 4096
}

fn fill(table: &mut ConnTable, n: u64, now: u64) -> f64 {
    let start = Instant::now();
    for chunk in (0..n).step_by(1 << 20) {
        let batch = datagrams(chunk..(chunk + (1 << 20)).min(n));
        table.apply_batch(batch.iter().map(|d| &d[..]), now);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn steady_state(n: u64) {
    let mut table = ConnTable::new(TableConfig::default());
    let created = fill(&mut table, n, 1);
    assert_eq!(table.len() as u64, n);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let updates = datagrams((0..200_000).map(|_| rng.next() % n));
    let entries = 200_000;
    let ours = rate(entries, || {
        keep(table.apply_batch(updates.iter().map(|d| &d[..]), 2));
    });

    let mut naive = Naive::default();
    let all = datagrams(0..n);
    all.iter().for_each(|d| naive.apply(d));
    let base = rate(entries, || updates.iter().for_each(|d| naive.apply(d)));
    let label = format!("decode + apply, table of {}M (updates)", n >> 20);
    common::report(&label, "entries", ours, Some(("naive HashMap", base)));
    common::report(&format!("decode + apply, filling to {}M (creates)", n >> 20), "entries", created, None);
}

fn memory(n: u64) {
    let before = rss_bytes();
    let mut table = ConnTable::new(TableConfig::default());
    fill(&mut table, n, 1);
    let rss = rss_bytes().saturating_sub(before);
    let mut naive_bytes = 0;
    if n <= 1 << 20 {
        let mut naive = Naive::default();
        datagrams(0..n).iter().for_each(|d| naive.apply(d));
        naive_bytes = naive.bytes();
    }
    let per = table.memory_bytes() as f64 / n as f64;
    let naive =
        if naive_bytes > 0 { format!(", naive HashMap {:.0} B", naive_bytes as f64 / n as f64) } else { String::new() };
    println!(
        "{:<52} {per:>10.1} B/conn   (RSS delta {:.1} B/conn{naive})",
        format!("memory per IPv4 connection at {}M", n >> 20),
        rss as f64 / n as f64
    );
    let start = Instant::now();
    let expired = table.expire(1 + 10_000);
    assert_eq!(expired as u64, n);
    println!(
        "{:<52} {:>10.2} Mentries/s",
        format!("expire all {}M", n >> 20),
        n as f64 / start.elapsed().as_secs_f64() / 1e6
    );
}

fn main() {
    steady_state(1 << 20);
    steady_state(4 << 20);
    memory(1 << 20);
    memory(10 << 20);
}
