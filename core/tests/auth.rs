//! The authenticated envelope: HMAC-SHA256 against RFC 4231, keys and rotation,
//! replay windows, the frame format, and untrusted bytes that must never verify.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use understudy_core::auth::{
    hmac_sha256, AuthError, KeyError, Keyring, ReplayTable, ReplayWindow, MIN_KEY_LEN, TAG_LEN, WINDOW_SIZE,
};
use understudy_core::wire::frame::{
    EmitError, Frame, FrameError, FrameRepr, Kind, Signer, Verifier, HEADER_LEN, MAGIC, MIN_LEN, VERSION,
};

/// Counts this thread's allocations, so the receive path can be shown not to allocate
/// while other tests run in parallel.
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count_alloc() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_alloc();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_alloc();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_alloc();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

const SECRET_1: &[u8] = b"understudy-test-key-0001";
const SECRET_2: &[u8] = b"understudy-test-key-0002";

fn ring() -> Keyring {
    Keyring::new(1, SECRET_1).unwrap()
}

/// Deterministic xorshift64, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// RFC 4231 §4: HMAC-SHA-256 test cases (key, data, MAC; case 5 is given truncated to 128 bits).
const RFC4231: [(&str, &str, &str); 7] = [
    (
        "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        "4869205468657265",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ),
    (
        "4a656665",
        "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ),
    (
        "0102030405060708090a0b0c0d0e0f10111213141516171819",
        "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    ("0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c", "546573742057697468205472756e636174696f6e", "a3b6167473100ee06e0c796c2955552b"),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368204b6579204669727374",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73697a65206b657920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e20546865206b6579206e6565647320746f20626520686173686564206265666f7265206265696e6720757365642062792074686520484d414320616c676f726974686d2e",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
];

#[test]
fn hmac_sha256_matches_rfc4231() {
    for (i, (key, data, mac)) in RFC4231.iter().enumerate() {
        let (key, data, mac) = (hex(key), hex(data), hex(mac));
        let full = hmac_sha256(&key, &data);
        assert_eq!(&full[..mac.len()], &mac[..], "RFC 4231 test case {}", i + 1);
        if key.len() >= MIN_KEY_LEN {
            // The keyring's tag is the RFC value truncated to 128 bits.
            let ring = Keyring::new(7, &key).unwrap();
            let tag = ring.sign(7, &data).unwrap();
            assert_eq!(&tag[..], &mac[..TAG_LEN], "test case {} truncated", i + 1);
            assert_eq!(ring.verify(7, &data, &mac[..TAG_LEN]), Ok(()));
        } else {
            // Case 2's "Jefe" is too short for a keyring.
            assert_eq!(Keyring::new(7, &key).unwrap_err(), KeyError::TooShort { id: 7, len: 4 });
        }
    }
}

#[test]
fn keyring_rejects_short_secrets_and_keeps_a_current_key() {
    assert_eq!(Keyring::new(1, &[0; 15]).unwrap_err(), KeyError::TooShort { id: 1, len: 15 });
    let mut ring = ring();
    assert_eq!(ring.insert(2, b"short").unwrap_err(), KeyError::TooShort { id: 2, len: 5 });
    assert!(!ring.contains(2));
    assert_eq!(ring.set_current(2).unwrap_err(), KeyError::UnknownKey(2));
    assert_eq!(ring.remove(1).unwrap_err(), KeyError::RemoveCurrent(1));
    assert_eq!(ring.remove(9).unwrap_err(), KeyError::UnknownKey(9));
    ring.insert(2, SECRET_2).unwrap();
    assert_eq!(ring.ids().collect::<Vec<_>>(), [1, 2]);
    ring.set_current(2).unwrap();
    ring.remove(1).unwrap();
    assert_eq!((ring.current(), ring.ids().collect::<Vec<_>>()), (2, vec![2]));
    // Secrets stay out of logs.
    let shown = format!("{ring:?}");
    assert!(!shown.contains("understudy-test-key"), "{shown}");
}

#[test]
fn keyring_sign_and_verify() {
    let mut ring = ring();
    let tag = ring.sign(1, b"hello").unwrap();
    assert_eq!(ring.verify(1, b"hello", &tag), Ok(()));
    assert_eq!(ring.verify(1, b"hellO", &tag), Err(AuthError::BadTag));
    assert_eq!(ring.verify(1, b"hello", &tag[..15]), Err(AuthError::BadTag));
    assert_eq!(ring.verify(1, b"hello", &[tag.as_slice(), &[0]].concat()), Err(AuthError::BadTag));
    assert_eq!(ring.verify(2, b"hello", &tag), Err(AuthError::UnknownKey));
    assert_eq!(ring.sign(2, b"hello"), Err(AuthError::UnknownKey));
    // Same secret under another id: same tag (the id is authenticated by the frame header, not the key).
    ring.insert(2, SECRET_1).unwrap();
    assert_eq!(ring.sign(2, b"hello").unwrap(), tag);
    // Replacing a secret takes effect.
    ring.insert(2, SECRET_2).unwrap();
    assert_eq!(ring.verify(2, b"hello", &tag), Err(AuthError::BadTag));
}

/// A frame computed outside Rust (Python's hmac): key 1 = SECRET_1, DATA,
/// sender 7, epoch 2, seq 1, payload "hello".
const GOLDEN: &str = "55530101000100000000000700000002000000000000000168656c6c6f46e73bfd5e0ddd6db58ebc371dcfa031";

#[test]
fn golden_frame_both_ways() {
    let bytes = hex(GOLDEN);
    let expected = FrameRepr { kind: Kind::Data, key_id: 1, sender: 7, epoch: 2, seq: 1, payload: b"hello" };
    let frame = Frame::new_checked(&bytes[..]).unwrap();
    assert_eq!(FrameRepr::parse(&frame), expected);
    assert_eq!((frame.magic(), frame.version(), frame.flags(), frame.len()), (MAGIC, VERSION, 0, MIN_LEN + 5));
    assert_eq!(expected.to_bytes(&ring()).unwrap(), bytes);
    assert_eq!(expected.buffer_len(), bytes.len());
    let mut v = Verifier::new(ring());
    let got = v.verify(&bytes).unwrap();
    assert_eq!(
        (got.kind, got.key_id, got.sender, got.epoch, got.seq, got.payload, got.gap, got.fresh),
        (Kind::Data, 1, 7, 2, 1, &b"hello"[..], 0, true)
    );
}

#[test]
fn emit_errors_and_longer_buffers() {
    let repr = FrameRepr { kind: Kind::Status, key_id: 1, sender: 1, epoch: 1, seq: 1, payload: &[9; 10] };
    let mut small = [0u8; 49];
    assert_eq!(repr.emit(&ring(), &mut small), Err(EmitError::BufferTooShort { needed: 50, got: 49 }));
    let other = FrameRepr { key_id: 3, ..repr };
    assert_eq!(other.to_bytes(&ring()), Err(EmitError::UnknownKey(3)));
    let mut big = [0xeeu8; 1500];
    assert_eq!(repr.emit(&ring(), &mut big), Ok(50));
    assert_eq!(&big[..50], &repr.to_bytes(&ring()).unwrap()[..]);
    assert!(big[50..].iter().all(|&b| b == 0xee), "bytes past the frame untouched");
    // A failed seal does not use up a number.
    let mut signer = Signer::new(1, 1);
    assert!(signer.seal(&ring(), Kind::Data, &[0; 10], &mut small[..20]).is_err());
    assert_eq!(signer.next_seq(), 1);
}

#[test]
fn frames_built_in_place_verify() {
    let ring = ring();
    let mut buf = vec![0u8; MIN_LEN + 3];
    let mut frame = Frame::new_unchecked(&mut buf[..]);
    frame.set_preamble();
    frame.set_kind(Kind::Data);
    frame.set_key_id(1);
    frame.set_flags(0);
    frame.set_sender(4);
    frame.set_epoch(9);
    frame.set_seq(1);
    frame.payload_mut().copy_from_slice(b"abc");
    frame.fill_tag(&ring).unwrap();
    assert_eq!(Verifier::new(ring).verify(&buf).map(|v| v.payload), Ok(&b"abc"[..]));
}

#[test]
fn kinds_round_trip_every_byte() {
    for b in 0..=255u8 {
        let kind = Kind::from(b);
        assert_eq!(u8::from(kind), b);
        assert_eq!(matches!(kind, Kind::Unknown(_)), !(1..=7).contains(&b), "{b}");
    }
}

#[test]
fn signer_numbers_frames_and_verifier_accepts_them_once() {
    let ring = ring();
    let mut signer = Signer::new(3, 100);
    let mut v = Verifier::new(ring.clone());
    for seq in 1..=5u64 {
        let payload = vec![seq as u8; seq as usize * 10];
        let bytes = signer.seal_to_vec(&ring, Kind::Data, &payload).unwrap();
        let got = v.verify(&bytes).unwrap();
        assert_eq!((got.sender, got.epoch, got.seq, got.payload, got.gap), (3, 100, seq, &payload[..], 0));
        assert_eq!(got.fresh, seq == 1);
        assert_eq!(v.verify(&bytes).unwrap_err(), FrameError::Replayed);
    }
    let c = v.counters();
    assert_eq!((c.accepted, c.fresh, c.skipped, c.rejected(FrameError::Replayed), c.rejected_total()), (5, 1, 0, 5, 5));
    assert_eq!(v.replay().get(3).map(|(epoch, w)| (epoch, w.highest())), Some((100, 5)));
}

#[test]
fn a_flipped_bit_anywhere_is_rejected() {
    let ring = ring();
    let payload: Vec<u8> = (0..100).collect();
    let bytes = Signer::new(5, 1).seal_to_vec(&ring, Kind::Data, &payload).unwrap();
    let mut v = Verifier::new(ring);
    for bit in 0..bytes.len() * 8 {
        let mut bad = bytes.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let expected = match bit / 8 {
            0 | 1 => FrameError::BadMagic,
            2 => FrameError::BadVersion,
            4 | 5 => FrameError::UnknownKey,
            _ => FrameError::BadTag,
        };
        assert_eq!(v.verify(&bad).unwrap_err(), expected, "bit {bit}");
    }
    let c = v.counters().clone();
    assert_eq!(c.accepted, 0);
    assert_eq!(c.rejected(FrameError::BadTag), (bytes.len() - 5) as u64 * 8);
    assert_eq!(c.rejected_total(), bytes.len() as u64 * 8);
    // Forgeries moved no state: the genuine frame is still new.
    assert_eq!(v.verify(&bytes).map(|f| f.seq), Ok(1));
}

#[test]
fn short_and_foreign_datagrams_are_rejected_by_the_cheap_checks() {
    let bytes = Signer::new(5, 1).seal_to_vec(&ring(), Kind::Data, b"").unwrap();
    assert_eq!(bytes.len(), MIN_LEN);
    let mut v = Verifier::new(ring());
    for len in 0..MIN_LEN {
        assert_eq!(v.verify(&bytes[..len]).unwrap_err(), FrameError::Truncated, "{len}");
    }
    // A kernel sync message is not a frame.
    let mut kernel = vec![0u8; 48];
    kernel[..8].copy_from_slice(&[0x00, 0x07, 0x00, 0x30, 0x01, 0x01, 0x00, 0x00]);
    assert_eq!(v.verify(&kernel).unwrap_err(), FrameError::BadMagic);
    let mut v2 = bytes.clone();
    v2[2] = 2;
    assert_eq!(v.verify(&v2).unwrap_err(), FrameError::BadVersion);
    assert_eq!(v.counters().rejected(FrameError::Truncated), MIN_LEN as u64);
}

#[test]
fn unknown_key_id_is_rejected() {
    let mut other = Keyring::new(2, SECRET_2).unwrap();
    let bytes = Signer::new(5, 1).seal_to_vec(&other, Kind::Data, b"x").unwrap();
    let mut v = Verifier::new(ring());
    assert_eq!(v.verify(&bytes).unwrap_err(), FrameError::UnknownKey);
    // Key id 1 with another secret: the right id does not help a wrong key.
    other.insert(1, SECRET_2).unwrap();
    other.set_current(1).unwrap();
    let bytes = Signer::new(5, 1).seal_to_vec(&other, Kind::Data, b"x").unwrap();
    assert_eq!(v.verify(&bytes).unwrap_err(), FrameError::BadTag);
}

#[test]
fn key_rotation_accepts_old_and_new_until_the_old_is_removed() {
    let mut sender_ring = ring();
    let mut signer = Signer::new(1, 1);
    let mut v = Verifier::new(ring());
    let old = signer.seal_to_vec(&sender_ring, Kind::Data, b"a").unwrap();
    let old_late = signer.seal_to_vec(&sender_ring, Kind::Data, b"b").unwrap();

    // Step 1: every node learns key 2. Step 2: the sender switches to it.
    v.keyring_mut().insert(2, SECRET_2).unwrap();
    sender_ring.insert(2, SECRET_2).unwrap();
    sender_ring.set_current(2).unwrap();
    let new = signer.seal_to_vec(&sender_ring, Kind::Data, b"c").unwrap();
    assert_eq!(Frame::new_checked(&new[..]).unwrap().key_id(), 2);
    assert_eq!(v.verify(&old).map(|f| f.key_id), Ok(1));
    assert_eq!(v.verify(&new).map(|f| f.key_id), Ok(2));

    // Step 3: key 1 is removed (the receiver signs too, so it switches first);
    // frames still signed with it no longer pass.
    assert_eq!(v.keyring_mut().remove(1), Err(KeyError::RemoveCurrent(1)));
    v.keyring_mut().set_current(2).unwrap();
    v.keyring_mut().remove(1).unwrap();
    assert_eq!(v.verify(&old_late).unwrap_err(), FrameError::UnknownKey);
    let newer = signer.seal_to_vec(&sender_ring, Kind::Data, b"d").unwrap();
    assert_eq!(v.verify(&newer).map(|f| (f.key_id, f.seq)), Ok((2, 4)));
}

#[test]
fn reordered_frames_within_the_window_are_accepted_once_each() {
    let ring = ring();
    let mut signer = Signer::new(8, 1);
    let frames: Vec<Vec<u8>> =
        (0..300).map(|i| signer.seal_to_vec(&ring, Kind::Data, &[i as u8; 20]).unwrap()).collect();
    let mut order: Vec<usize> = (0..frames.len()).collect();
    let mut rng = Rng(0x5eed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut v = Verifier::new(ring);
    let mut seen = vec![false; frames.len()];
    for &i in &order {
        let got = v.verify(&frames[i]).unwrap();
        assert_eq!(got.seq, i as u64 + 1);
        seen[i] = true;
    }
    assert!(seen.iter().all(|&s| s));
    for &i in &order {
        assert_eq!(v.verify(&frames[i]).unwrap_err(), FrameError::Replayed);
    }
    assert_eq!(v.counters().accepted, 300);
}

#[test]
fn frames_below_the_window_are_too_old() {
    let ring = ring();
    let seal = |seq: u64| {
        FrameRepr { kind: Kind::Data, key_id: 1, sender: 2, epoch: 1, seq, payload: b"" }.to_bytes(&ring).unwrap()
    };
    let mut v = Verifier::new(ring.clone());
    assert_eq!(v.verify(&seal(1)).map(|f| f.gap), Ok(0));
    assert_eq!(v.verify(&seal(2000)).map(|f| f.gap), Ok(1998));
    // The window now holds 977 ..= 2000.
    assert_eq!(v.verify(&seal(2000 - WINDOW_SIZE)).unwrap_err(), FrameError::TooOld);
    assert_eq!(v.verify(&seal(1)).unwrap_err(), FrameError::TooOld);
    assert_eq!(v.verify(&seal(2001 - WINDOW_SIZE)).map(|f| f.gap), Ok(0));
    assert_eq!(v.verify(&seal(2001 - WINDOW_SIZE)).unwrap_err(), FrameError::Replayed);
    assert_eq!(v.verify(&seal(0)).unwrap_err(), FrameError::ZeroSeq);
    assert_eq!(v.counters().rejected(FrameError::TooOld), 2);
}

#[test]
fn a_restarted_sender_is_accepted_and_its_old_epoch_is_stale() {
    let ring = ring();
    let mut v = Verifier::new(ring.clone());
    let mut before = Signer::new(6, 1000);
    let first = before.seal_to_vec(&ring, Kind::Data, b"1").unwrap();
    let second = before.seal_to_vec(&ring, Kind::Data, b"2").unwrap();
    for _ in 0..40 {
        v.verify(&before.seal_to_vec(&ring, Kind::Data, b"x").unwrap()).unwrap();
    }
    let mut after = Signer::new(6, 1001);
    let restart = after.seal_to_vec(&ring, Kind::ResyncRequest, b"").unwrap();
    let got = v.verify(&restart).unwrap();
    assert_eq!((got.kind, got.epoch, got.seq, got.gap, got.fresh), (Kind::ResyncRequest, 1001, 1, 0, true));
    // Frames from before the restart, even unseen ones, are now stale.
    assert_eq!(v.verify(&first).unwrap_err(), FrameError::StaleEpoch);
    assert_eq!(v.verify(&second).unwrap_err(), FrameError::StaleEpoch);
    assert_eq!(v.verify(&before.seal_to_vec(&ring, Kind::Data, b"y").unwrap()).unwrap_err(), FrameError::StaleEpoch);
    assert_eq!(v.verify(&after.seal_to_vec(&ring, Kind::Data, b"").unwrap()).map(|f| (f.seq, f.fresh)), Ok((2, false)));
    assert_eq!(v.counters().fresh, 2);
    // An operator can accept a node whose epoch went backwards.
    assert!(v.forget(6));
    assert_eq!(v.verify(&second).map(|f| (f.epoch, f.seq, f.gap, f.fresh)), Ok((1000, 2, 1, true)));
}

#[test]
fn gaps_are_reported_for_loss_detection() {
    let ring = ring();
    let mut signer = Signer::new(1, 1);
    let frames: Vec<Vec<u8>> = (0..10).map(|_| signer.seal_to_vec(&ring, Kind::Data, b"").unwrap()).collect();
    let mut v = Verifier::new(ring);
    let gaps: Vec<(u64, u64)> =
        [0usize, 1, 4, 9, 2, 3].iter().map(|&i| v.verify(&frames[i]).map(|f| (f.seq, f.gap)).unwrap()).collect();
    // 3 and 4 are skipped when 5 arrives, 6..=9 when 10 does; 3 and 4 then arrive late.
    assert_eq!(gaps, [(1, 0), (2, 0), (5, 2), (10, 4), (3, 0), (4, 0)]);
    assert_eq!(v.counters().skipped, 6);
}

#[test]
fn the_sender_table_is_bounded() {
    let ring = ring();
    let mut v = Verifier::with_max_senders(ring.clone(), 2);
    for sender in [10, 11] {
        v.verify(&Signer::new(sender, 1).seal_to_vec(&ring, Kind::Data, b"").unwrap()).unwrap();
    }
    let third = Signer::new(12, 1).seal_to_vec(&ring, Kind::Data, b"").unwrap();
    assert_eq!(v.verify(&third).unwrap_err(), FrameError::SenderTableFull);
    // Known senders carry on.
    let mut s10 = Signer::new(10, 1);
    s10.seal_to_vec(&ring, Kind::Data, b"").unwrap();
    assert!(v.verify(&s10.seal_to_vec(&ring, Kind::Data, b"").unwrap()).is_ok());
    assert!(v.forget(11));
    assert!(!v.forget(11));
    assert!(v.verify(&third).is_ok());
    assert_eq!(v.replay().len(), 2);
}

#[test]
fn unknown_kinds_verify_and_are_counted() {
    let ring = ring();
    let bytes = FrameRepr { kind: Kind::from(0x7f), key_id: 1, sender: 1, epoch: 1, seq: 1, payload: b"future" }
        .to_bytes(&ring)
        .unwrap();
    let mut v = Verifier::new(ring);
    assert_eq!(v.verify(&bytes).map(|f| f.kind), Ok(Kind::Unknown(0x7f)));
    assert_eq!((v.counters().accepted, v.counters().unknown_kind), (1, 1));
}

#[test]
fn reasons_are_distinct_and_shared_with_auth_errors() {
    let reasons: Vec<&str> = FrameError::ALL.iter().map(|e| e.reason()).collect();
    let mut unique = reasons.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), reasons.len());
    for (i, e) in FrameError::ALL.iter().enumerate() {
        assert_eq!(e.index(), i);
        if let Some(a) = e.auth() {
            assert_eq!((a.reason(), FrameError::from(a)), (e.reason(), *e));
            assert_eq!(a.to_string(), e.to_string());
        }
    }
    for (i, a) in AuthError::ALL.iter().enumerate() {
        assert_eq!(a.index(), i);
        assert_eq!(FrameError::from(*a).auth(), Some(*a));
    }
    let v = Verifier::new(ring());
    assert_eq!(v.counters().by_reason().map(|(e, _)| e.reason()).collect::<Vec<_>>(), reasons);
}

#[test]
fn replay_window_check_changes_nothing() {
    let mut w = ReplayWindow::new();
    assert_eq!(w.check(0), Err(AuthError::ZeroSeq));
    assert_eq!(w.check(3), Ok(()));
    assert_eq!(w.highest(), 0);
    assert_eq!(w.accept(3), Ok(2));
    assert_eq!(w.check(3), Err(AuthError::Replayed));
    assert_eq!(w.check(1), Ok(()));
    w.reset();
    assert_eq!(w.check(3), Ok(()));

    let mut t = ReplayTable::new(1);
    assert_eq!(t.check(1, 5, 1), Ok(()));
    assert!(t.is_empty());
    assert_eq!(t.accept(1, 5, 1).map(|a| (a.gap, a.fresh)), Ok((0, true)));
    assert_eq!(t.check(1, 4, 9), Err(AuthError::StaleEpoch));
    assert_eq!(t.check(2, 1, 1), Err(AuthError::SenderTableFull));
    assert_eq!(t.check(1, 6, 9), Ok(()));
    assert_eq!(t.get(1).map(|(e, w)| (e, w.highest())), Some((5, 1)));
}

#[test]
fn verifying_allocates_nothing() {
    let ring = ring();
    let mut signer = Signer::new(1, 1);
    let good: Vec<Vec<u8>> = (0..50).map(|_| signer.seal_to_vec(&ring, Kind::Data, &[7; 1448]).unwrap()).collect();
    let mut forged = good[0].clone();
    let n = forged.len();
    forged[n - 1] ^= 1;
    let mut v = Verifier::new(ring);
    let probe = allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(allocations() > probe, "the counting allocator is in place");
    let before = allocations();
    for g in &good {
        assert!(v.verify(g).is_ok());
        assert!(v.verify(g).is_err());
        assert!(v.verify(&forged).is_err());
        assert!(v.verify(&g[..30]).is_err());
        assert!(v.verify(&g[3..]).is_err());
    }
    assert_eq!(allocations() - before, 0);
}

#[test]
fn random_and_mutated_bytes_never_verify() {
    let ring = ring();
    let mut signer = Signer::new(9, 77);
    let originals: Vec<Vec<u8>> = (0..64)
        .map(|i| signer.seal_to_vec(&ring, Kind::from((i % 8) as u8), &vec![i as u8; i * 23]).unwrap())
        .collect();
    let mut v = Verifier::new(ring);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..200_000u32 {
        let original = &originals[rng.below(originals.len())];
        let bytes = match round % 4 {
            // Random bytes, sometimes behind a valid preamble and key id so they reach the tag check.
            0 => {
                let len = rng.below(200);
                let mut b = rng.bytes(len);
                if b.len() >= 6 && rng.next() & 1 == 0 {
                    b[..6].copy_from_slice(&[0x55, 0x53, 1, 1, 0, 1]);
                }
                b
            }
            // A few flipped bits.
            1 => {
                let mut b = original.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(b.len());
                    b[at] ^= 1 << rng.below(8);
                }
                b
            }
            // Cut short, or grown by a few bytes.
            2 => {
                let mut b = original.clone();
                if rng.next() & 1 == 0 {
                    b.truncate(rng.below(b.len()));
                } else {
                    let len = 1 + rng.below(16);
                    let extra = rng.bytes(len);
                    b.extend_from_slice(&extra);
                }
                b
            }
            // A new header or tag over a genuine payload.
            _ => {
                let mut b = original.clone();
                let (at, len) = if rng.next() & 1 == 0 { (8, HEADER_LEN - 8) } else { (b.len() - TAG_LEN, TAG_LEN) };
                let fresh = rng.bytes(len);
                b[at..at + len].copy_from_slice(&fresh);
                b
            }
        };
        if &bytes == original {
            continue;
        }
        assert!(v.verify(&bytes).is_err(), "round {round} verified: {bytes:02x?}");
    }
    let c = v.counters();
    assert_eq!(c.accepted, 0);
    assert!(c.rejected_total() > 190_000, "{c:?}");
    assert!(c.rejected(FrameError::BadTag) > 50_000, "{c:?}");
    // None of that moved the replay state: every genuine frame is still new.
    for (i, o) in originals.iter().enumerate() {
        assert_eq!(v.verify(o).map(|f| f.seq), Ok(i as u64 + 1));
    }
}
