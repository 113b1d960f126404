use super::*;

/// Written by hand from the table in docs/heartbeat.md.
const GOLDEN: [u8; 29] = [
    0x01, // version 1
    0x02, // role: primary
    0x96, // configured priority 150
    0x64, // effective priority 100
    0x00, 0x00, 0x00, 0x2a, // cluster 42
    0x00, 0x00, 0x00, 0x05, // flags: public up, sync caught up
    0x00, 0x00, 0x00, 0x0b, // members: nodes 0, 1 and 3
    0x01, // primary: node 1
    0x02, // two load entries
    0x00, 0x64, // interval 100 ms
    0x01, 0xf4, // load[0] = 500
    0xff, 0xff, // load[1] = 65535
    0xc8, 0x03, 0xaa, 0xbb, 0xcc, // optional field 200, 3 bytes
];

fn golden() -> HeartbeatRepr {
    HeartbeatRepr {
        cluster: 42,
        role: Role::Primary,
        configured_priority: 150,
        effective_priority: 100,
        flags: flags::PUBLIC_UP | flags::SYNC_CAUGHT_UP,
        members: 0b1011,
        primary: Some(1),
        interval_ms: 100,
        load: vec![500, 65535],
        tlvs: vec![Tlv::Other { kind: 200, bytes: vec![0xaa, 0xbb, 0xcc] }],
    }
}

#[test]
fn golden_parses() {
    assert_eq!(HeartbeatRepr::from_bytes(&GOLDEN), Ok(golden()));
}

#[test]
fn golden_emits() {
    assert_eq!(golden().to_bytes(), GOLDEN);
}

#[test]
fn round_trips_minimal_and_full() {
    let minimal = HeartbeatRepr::default();
    let bytes = minimal.to_bytes();
    assert_eq!(bytes.len(), FIXED_LEN);
    assert_eq!(bytes[16], NO_PRIMARY);
    assert_eq!(HeartbeatRepr::from_bytes(&bytes), Ok(minimal));
    let full = HeartbeatRepr {
        role: Role::Unknown(9),
        members: u32::MAX,
        primary: Some(31),
        load: (0..255).collect(),
        tlvs: vec![Tlv::Other { kind: 1, bytes: vec![] }, Tlv::Other { kind: 2, bytes: vec![7; 255] }],
        ..golden()
    };
    assert_eq!(HeartbeatRepr::from_bytes(&full.to_bytes()), Ok(full));
}

#[test]
fn rejects_truncated() {
    assert_eq!(HeartbeatRepr::from_bytes(&[]), Err(HeartbeatError::Truncated));
    for n in 1..FIXED_LEN {
        assert_eq!(HeartbeatRepr::from_bytes(&GOLDEN[..n]), Err(HeartbeatError::Truncated), "{n} bytes");
    }
}

#[test]
fn rejects_other_versions() {
    for v in [0u8, 2, 0xff] {
        let mut b = GOLDEN;
        b[0] = v;
        assert_eq!(HeartbeatRepr::from_bytes(&b), Err(HeartbeatError::BadVersion));
    }
}

#[test]
fn rejects_load_past_end() {
    assert_eq!(HeartbeatRepr::from_bytes(&GOLDEN[..FIXED_LEN + 3]), Err(HeartbeatError::BadLoadLen));
    let mut b = GOLDEN;
    b[17] = 5;
    assert_eq!(HeartbeatRepr::from_bytes(&b), Err(HeartbeatError::BadLoadLen));
}

#[test]
fn rejects_tlv_past_end() {
    for cut in [GOLDEN.len() - 1, GOLDEN.len() - 4] {
        assert_eq!(HeartbeatRepr::from_bytes(&GOLDEN[..cut]), Err(HeartbeatError::BadTlv), "{cut} bytes");
    }
}

#[test]
fn rejects_primary_outside_node_ids() {
    let mut b = GOLDEN;
    for p in [32u8, 0xfe] {
        b[16] = p;
        assert_eq!(HeartbeatRepr::from_bytes(&b), Err(HeartbeatError::BadPrimary));
    }
    b[16] = NO_PRIMARY;
    assert_eq!(HeartbeatRepr::from_bytes(&b).map(|r| r.primary), Ok(None));
}

#[test]
fn every_reason_is_distinct() {
    let reasons: std::collections::HashSet<_> = HeartbeatError::ALL.iter().map(|e| e.reason()).collect();
    assert_eq!(reasons.len(), HeartbeatError::ALL.len());
}

#[test]
fn inside_a_signed_frame() {
    use crate::auth::Keyring;
    use crate::wire::frame::{Kind, Signer, Verifier};
    let ring = Keyring::new(7, &[0x11; 32]).unwrap();
    let frame = Signer::new(3, 9).seal_to_vec(&ring, Kind::Heartbeat, &GOLDEN).unwrap();
    assert_eq!(frame[3], 7, "kind byte");
    let v = Verifier::new(ring).verify(&frame).unwrap();
    assert_eq!((v.kind, v.sender, v.epoch), (Kind::Heartbeat, 3, 9));
    assert_eq!(HeartbeatRepr::from_bytes(v.payload), Ok(golden()));
}
