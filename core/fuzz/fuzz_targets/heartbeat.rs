//! Arbitrary bytes as heartbeats: through the verifier and the body decoder,
//! and as a serial byte stream through the COBS deframer.
//!
//! Nothing may panic. The first byte chooses whether the rest is sealed with
//! the cluster key as a heartbeat (then it must verify) or taken raw (then it
//! must not: a forgery never lands). A body that decodes re-encodes to a body
//! that decodes to the same values.

#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_core::auth::Keyring;
use understudy_core::heartbeat::cobs::{encode_into, Block, Deframer};
use understudy_core::wire::frame::{Kind, Signer, Verifier};
use understudy_core::wire::heartbeat::HeartbeatRepr;

const KEY: &[u8] = b"the fuzzing cluster's secret key";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let keyring = Keyring::new(1, KEY).expect("a valid key");
    let frame = if mode & 1 == 1 {
        Signer::new(3, 5).seal_to_vec(&keyring, Kind::Heartbeat, rest).expect("sealing")
    } else {
        rest.to_vec()
    };
    let mut verifier = Verifier::new(keyring);
    let verified = verifier.verify(&frame);
    assert_eq!(verified.is_ok(), mode & 1 == 1, "only sealed frames verify");
    let body = verified.map(|v| v.payload).unwrap_or(rest);
    if let Ok(repr) = HeartbeatRepr::from_bytes(body) {
        let again = HeartbeatRepr::from_bytes(&repr.to_bytes()).expect("re-encoded body decodes");
        assert_eq!(again, repr);
    }

    // The same bytes as a serial stream (noise), then framed: the frame comes out whole
    // (if it fits a deframer's block; a heartbeat is far smaller).
    if frame.len() > 1800 {
        return;
    }
    let mut stream = rest.to_vec();
    encode_into(&frame, &mut stream);
    let mut last = None;
    Deframer::new().feed(&stream, |b| {
        if let Block::Frame(f) = b {
            last = Some(f.to_vec());
        }
    });
    assert_eq!(last.as_deref(), Some(&frame[..]), "a framed frame survives any noise before it");
});
