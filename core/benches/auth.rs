//! The authenticated envelope: frames signed and verified per second, and forged
//! frames rejected per second on one core, beside plain SHA-256 and memcpy of the
//! same bytes measured in the same run.

mod common;

use common::{keep, rate, report, Rng};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use understudy_core::auth::{Keyring, TAG_LEN};
use understudy_core::wire::frame::{FrameError, Kind, Signer, Verifier, MIN_LEN};

/// Frames per timed call: enough to leave the loop overhead out.
const BATCH: u64 = 1024;
const SECRET: [u8; 32] = [0x42; 32];

fn main() {
    println!("one core, {BATCH} frames per batch; ratios against the baseline in parentheses\n");
    for size in [100usize, 1448] {
        run(size);
        println!();
    }
}

fn run(size: usize) {
    let ring = Keyring::new(1, &SECRET).unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let payload: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
    let len = MIN_LEN + size;
    let mut signer = Signer::new(1, 1);
    let frames: Vec<Vec<u8>> = (0..BATCH).map(|_| signer.seal_to_vec(&ring, Kind::Data, &payload).unwrap()).collect();
    let forged: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut f = f.clone();
            let tag_at = f.len() - TAG_LEN;
            f[tag_at..].iter_mut().for_each(|b| *b = rng.next() as u8);
            f
        })
        .collect();
    println!("payload {size} bytes, frame {len} bytes");

    // Baselines: what merely moving, or hashing once, the same bytes costs.
    let mut out = vec![0u8; len];
    let memcpy = rate(BATCH, || {
        for f in &frames {
            out.copy_from_slice(f);
            keep(&out);
        }
    });
    let sha = rate(BATCH, || {
        for f in &frames {
            keep(Sha256::digest(&f[..len - TAG_LEN]));
        }
    });
    report(&format!("baseline: memcpy of the frame ({len} B)"), "frames", memcpy, None);
    report(&format!("baseline: SHA-256 of the signed bytes ({} B)", len - TAG_LEN), "frames", sha, None);

    // Why the keyring keeps a keyed HMAC state: HMAC costs two compressions over SHA-256,
    // and re-keying per message two more.
    let rekey = rate(BATCH, || {
        for f in &frames {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&SECRET) else { return };
            mac.update(&f[..len - TAG_LEN]);
            keep(mac.finalize());
        }
    });
    let precomputed = rate(BATCH, || {
        for f in &frames {
            keep(ring.sign(1, &f[..len - TAG_LEN]).is_ok());
        }
    });
    report("HMAC, key hashed per message", "frames", rekey, Some(("SHA-256", sha)));
    report("Keyring::sign (keyed state cloned)", "frames", precomputed, Some(("key hashed per message", rekey)));

    let mut buf = vec![0u8; 1500];
    let sign = rate(BATCH, || {
        for _ in 0..BATCH {
            keep(signer.seal(&ring, Kind::Data, &payload, &mut buf).is_ok());
        }
    });
    report(&format!("sign: Signer::seal, {size} B payload"), "frames", sign, Some(("SHA-256", sha)));

    let mut v = Verifier::new(ring.clone());
    assert!(frames.iter().all(|f| v.verify(f).is_ok()), "genuine frames verify");
    let verify = rate(BATCH, || {
        // A fresh window per batch, so the same frames are new again.
        v.forget(1);
        for f in &frames {
            keep(v.verify(f).is_ok());
        }
    });
    report(&format!("verify: Verifier::verify, {size} B payload"), "frames", verify, Some(("SHA-256", sha)));

    let before = v.counters().rejected(FrameError::BadTag);
    let reject = rate(BATCH, || {
        for f in &forged {
            keep(v.verify(f).is_err());
        }
    });
    assert_eq!(v.counters().accepted % BATCH, 0, "no forged frame accepted");
    assert!(v.counters().rejected(FrameError::BadTag) > before, "forged frames counted as bad_tag");
    report(&format!("reject forged (random tag), {size} B payload"), "frames", reject, Some(("SHA-256", sha)));

    let foreign: Vec<Vec<u8>> = forged
        .iter()
        .map(|f| {
            let mut f = f.clone();
            f[0] = 0;
            f
        })
        .collect();
    let cheap = rate(BATCH, || {
        for f in &foreign {
            keep(v.verify(f).is_err());
        }
    });
    report("reject foreign (bad magic)", "frames", cheap, Some(("memcpy", memcpy)));
    println!(
        "{:<52} {:>10.0} MB/s verified, {:.0} MB/s SHA-256",
        "throughput",
        verify * len as f64 / 1e6,
        sha * (len - TAG_LEN) as f64 / 1e6
    );
}
