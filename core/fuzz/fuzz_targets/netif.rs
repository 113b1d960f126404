//! Arbitrary bytes as what the interface module receives or captures: an
//! rtnetlink datagram, a gratuitous ARP frame, a neighbour advertisement.
//!
//! Nothing may panic; whatever parses must re-emit to bytes that parse back
//! to the same thing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_core::netif::arp::{ArpPacket, ArpRepr, EthernetRepr};
use understudy_core::netif::ndisc::NaFrame;
use understudy_core::netif::{decode_datagram, rtnl, AddrRepr, LinkRepr, MonitorStats};

fuzz_target!(|data: &[u8]| {
    let mut stats = MonitorStats::default();
    let mut events = Vec::new();
    decode_datagram(data, &mut stats, &mut events);
    for msg in rtnl::messages(data).flatten() {
        if let Ok(link) = LinkRepr::parse(msg.body) {
            let mut out = Vec::new();
            link.emit(&mut out);
            assert_eq!(LinkRepr::parse(&out), Ok(link));
        }
        if let Ok(addr) = AddrRepr::parse(msg.body) {
            let mut out = Vec::new();
            addr.emit(&mut out);
            assert_eq!(AddrRepr::parse(&out), Ok(addr));
        }
    }
    // The same bytes as body only, as a request reply would carry them.
    let _ = LinkRepr::parse(data);
    let _ = AddrRepr::parse(data);

    if let Ok((eth, arp)) = ArpRepr::parse_frame(data) {
        assert_eq!(EthernetRepr::parse(data), Ok(eth));
        let mut out = [0u8; ArpRepr::LEN];
        arp.emit(&mut out);
        assert_eq!(&out[..], &data[EthernetRepr::LEN..EthernetRepr::LEN + ArpRepr::LEN]);
        let view = ArpPacket::new_checked(&out[..]).expect("emitted ARP is whole");
        assert_eq!(ArpRepr::parse(&view), Ok(arp));
    }
    if let Ok(na) = NaFrame::parse(data) {
        assert_eq!(NaFrame::parse(&na.emit()), Ok(na));
    }
});
