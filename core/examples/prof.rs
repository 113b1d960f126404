use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;
use understudy_core::table::{ConnTable, TableConfig};
use understudy_core::wire::sync::{ConnRepr, MessageBuilder, Version};
fn conn(n: u64) -> ConnRepr {
    ConnRepr::new(
        6,
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n >> 16) as u32)),
        (n & 0xffff) as u16,
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
        80,
        IpAddr::V4(Ipv4Addr::new(192, 168, 1, (n % 200) as u8 + 1)),
        8000,
        0,
        1,
        0,
        900,
    )
}
fn main() {
    let n: u64 = std::env::args().nth(1).map(|a| a.parse().unwrap()).unwrap_or(1 << 20);
    let mut b = MessageBuilder::new(Version::V1, 7, 1472);
    (0..n).for_each(|i| b.push(&conn(i)).unwrap());
    let d = b.finish();
    let mut t = ConnTable::new(TableConfig::default());
    let s = Instant::now();
    t.apply_batch(d.iter().map(|x| &x[..]), 1);
    println!("fill {:.2} M/s", n as f64 / s.elapsed().as_secs_f64() / 1e6);
    let s = Instant::now();
    t.apply_batch(d.iter().map(|x| &x[..]), 2);
    println!("update {:.2} M/s", n as f64 / s.elapsed().as_secs_f64() / 1e6);
}
