//! Arbitrary bytes as a received sync datagram.
//!
//! Walks the message exactly as a backup would; every entry a backup would
//! apply must re-encode, and the re-encoded one-entry message must decode to
//! the same entry with the same verdict.

#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_core::wire::sync::{ConnRepr, Message, MessageRepr, Verdict};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::new_checked(data) else {
        return;
    };
    let version = msg.version();
    let syncid = msg.syncid();
    let header = msg.header();
    assert_eq!(usize::from(header.size), data.len());

    let mut walked = 0usize;
    let mut failed = false;
    for entry in msg.entries() {
        walked += 1;
        let entry = match entry {
            Ok(entry) => entry,
            Err(_) => {
                failed = true;
                continue;
            }
        };
        assert!(!failed, "an entry after the error that stops the walk");
        let repr = ConnRepr::parse(&entry);
        if entry.verdict != Verdict::Apply {
            continue;
        }

        let len = repr.buffer_len(version).expect("an applied entry must be encodable");
        let mut buf = vec![0u8; len];
        repr.emit(version, &mut buf).expect("emit into buffer_len bytes");

        let bytes = MessageRepr { version, syncid, conns: vec![repr.clone()] }
            .to_bytes()
            .expect("a one-entry message must be encodable");
        assert_eq!(&bytes[version.header_len()..], &buf[..], "message body != emitted entry");

        let again = Message::new_checked(&bytes).expect("re-encoded message passes the header checks");
        assert_eq!(again.version(), version);
        assert_eq!(again.syncid(), syncid);
        let mut entries = again.entries();
        let first = entries
            .next()
            .expect("re-encoded message has one entry")
            .expect("re-encoded entry is well-formed");
        assert!(entries.next().is_none(), "re-encoded message has more than one entry");
        assert_eq!(first.verdict, Verdict::Apply, "re-encoded entry is no longer applied");
        assert_eq!(ConnRepr::parse(&first), repr, "re-parsed entry differs");
    }
    assert!(walked <= usize::from(header.nr_conns));

    // The owned parse agrees with the walk: it fails iff some entry failed.
    assert_eq!(MessageRepr::parse(&msg).is_err(), failed);
});
