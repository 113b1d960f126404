//! A small timing harness: figures, and ratios against a baseline measured in
//! the same run. Never pass/fail.

#![allow(dead_code)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use understudy_core::proto::{flags, protocol};
use understudy_core::wire::sync::ConnRepr;

/// Best-of-`runs` rate of `f`, which processes `items` items per call.
pub fn rate(items: u64, mut f: impl FnMut()) -> f64 {
    let budget = Duration::from_millis(std::env::var("BENCH_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(400));
    let mut best = 0f64;
    for _ in 0..5 {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < budget {
            f();
            calls += 1;
        }
        best = best.max((calls * items) as f64 / start.elapsed().as_secs_f64());
    }
    best
}

pub fn report(name: &str, unit: &str, value: f64, baseline: Option<(&str, f64)>) {
    match baseline {
        Some((what, base)) => println!(
            "{name:<52} {:>10.2} M{unit}/s   ({what}: {:.2} M{unit}/s, ratio {:.2}x)",
            value / 1e6,
            base / 1e6,
            value / base
        ),
        None => println!("{name:<52} {:>10.2} M{unit}/s", value / 1e6),
    }
}

/// Deterministic xorshift, so runs are comparable.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The `n`th of a family of distinct established TCP NAT connections.
pub fn conn(n: u64) -> ConnRepr {
    let c = Ipv4Addr::from(0x0a00_0000 | (n >> 16) as u32);
    ConnRepr::new(
        protocol::TCP,
        IpAddr::V4(c),
        (n & 0xffff) as u16,
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
        80,
        IpAddr::V4(Ipv4Addr::new(192, 168, 1, (n % 200) as u8 + 1)),
        8000,
        flags::MASQ,
        1,
        0,
        900,
    )
}

/// Checksum of every byte: the cost of merely reading the input.
pub fn touch(datagrams: &[Vec<u8>]) -> u64 {
    datagrams.iter().flat_map(|d| d.iter()).fold(0u64, |a, &b| a.wrapping_add(u64::from(b)))
}

pub fn keep<T>(x: T) -> T {
    black_box(x)
}
