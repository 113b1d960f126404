//! Time a full dump of the kernel's IPVS table: `cargo run --release --example ipvs_dump`.
use std::time::Instant;
use understudy_core::ipvs::Client;

fn main() {
    let mut client = Client::open().expect("IPVS");
    let t = Instant::now();
    let services = client.services().expect("services");
    let t_services = t.elapsed();
    let t = Instant::now();
    let table = client.dump().expect("dump");
    let dests: usize = table.iter().map(|(_, d)| d.len()).sum();
    println!("{} services in {:?}; full dump ({} dests) in {:?}", services.len(), t_services, dests, t.elapsed());
}
