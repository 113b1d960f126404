//! The codec and table against real Linux 6.1 kernel captures
//! (tests/data/ipvs-sync/, see its README).

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::Value;
use understudy_core::table::{ConnTable, TableConfig};
use understudy_core::wire::sync::{ConnRepr, Message, MessageRepr, SkipReason, Verdict};

fn data(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/ipvs-sync").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("vector file")).expect("vector json")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn int(v: &Value) -> Option<u64> {
    v.as_u64()
}

/// What our walker says of an entry, in the vectors' vocabulary.
fn verdict_matches(expected: &str, got: Verdict) -> bool {
    match (expected, got) {
        ("apply", Verdict::Apply) => true,
        (e, Verdict::Apply) if e.starts_with("apply if PE 'sip'") => true,
        (e, Verdict::Skip(SkipReason::UnknownPe)) if e.starts_with("apply if PE '") => true,
        (e, Verdict::Skip(r)) if e.starts_with("skip entry") => {
            let want = match r {
                SkipReason::UnknownMandatoryOption => "unknown mandatory option",
                SkipReason::InvalidState => "invalid state",
                SkipReason::UnsupportedProtocol => "unsupported protocol",
                SkipReason::PeDataWithoutName => "PE data without PE name",
                SkipReason::UnknownPe => "PE",
                _ => return false,
            };
            e.contains(want)
        }
        _ => false,
    }
}

fn check_conn(exp: &Value, repr: &ConnRepr, frame: u64) {
    let ctx = format!("frame {frame} offset {}", exp["offset"]);
    assert_eq!(int(&exp["protocol"]), Some(u64::from(repr.protocol)), "{ctx}");
    assert_eq!(int(&exp["flags"]), Some(u64::from(repr.flags)), "{ctx}");
    assert_eq!(int(&exp["state"]), Some(u64::from(repr.state)), "{ctx}");
    for (field, got) in [("cport", repr.cport), ("vport", repr.vport), ("dport", repr.dport)] {
        assert_eq!(int(&exp[field]), Some(u64::from(got)), "{ctx} {field}");
    }
    assert_eq!(int(&exp["fwmark"]).unwrap_or(0), u64::from(repr.fwmark), "{ctx}");
    assert_eq!(int(&exp["timeout"]).unwrap_or(0), u64::from(repr.timeout), "{ctx}");
    for (field, got) in [("caddr", repr.caddr), ("vaddr", repr.vaddr), ("daddr", repr.daddr)] {
        let want: IpAddr = exp[field].as_str().unwrap().parse().unwrap();
        assert_eq!(want, got, "{ctx} {field}");
    }
}

#[test]
fn shared_captures_decode_and_reencode_byte_for_byte() {
    for name in ["shared-v1.json", "shared-v0.json"] {
        let doc = data(name);
        let mut entries = 0;
        for m in doc["messages"].as_array().unwrap() {
            let frame = int(&m["frame"]).unwrap();
            let bytes = hex(m["payload_hex"].as_str().unwrap());
            let msg = Message::new_checked(&bytes).expect("real kernel message");
            let h = msg.header();
            assert_eq!(h.version.as_str(), m["header"]["format"].as_str().unwrap());
            assert_eq!(u64::from(h.nr_conns), int(&m["header"]["nr_conns"]).unwrap());
            assert_eq!(u64::from(h.syncid), int(&m["header"]["syncid"]).unwrap());
            let got: Vec<_> = msg.entries().collect::<Result<_, _>>().expect("no errors in real traffic");
            let exp = m["conns"].as_array().unwrap();
            assert_eq!(got.len(), exp.len(), "{name} frame {frame}");
            for (e, x) in got.iter().zip(exp) {
                assert_eq!(e.offset as u64, int(&x["offset"]).unwrap());
                assert_eq!(u64::from(e.conn.backup_flags()), int(&x["backup_flags"]).unwrap());
                assert!(verdict_matches(x["backup_verdict"].as_str().unwrap(), e.verdict), "{name} {frame}");
                check_conn(x, &ConnRepr::parse(e), frame);
            }
            let repr = MessageRepr::parse(&msg).unwrap();
            assert_eq!(repr.to_bytes().unwrap(), bytes, "{name} frame {frame} re-encodes");
            entries += got.len();
        }
        assert!(entries > 30, "{name}: {entries} entries");
    }
}

#[test]
fn validation_cases_get_the_kernels_verdict() {
    let doc = data("validation.json");
    let messages = doc["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 42);
    for m in messages {
        let frame = int(&m["frame"]).unwrap();
        let bytes = hex(m["payload_hex"].as_str().unwrap());
        let msg = match Message::new_checked(&bytes) {
            Ok(msg) => msg,
            Err(e) => {
                let why = m["backup_verdict"].as_str().unwrap_or_default();
                assert!(why.starts_with("drop: header size"), "frame {frame}: {e} vs {why}");
                continue;
            }
        };
        let exp = m["conns"].as_array().unwrap();
        let items: Vec<_> = msg.entries().collect();
        let mut exp_iter = exp.iter();
        for item in &items {
            match item {
                Ok(e) => {
                    let x = exp_iter.next().unwrap_or_else(|| panic!("frame {frame}: extra entry"));
                    let verdict = x["backup_verdict"].as_str().unwrap();
                    assert!(verdict_matches(verdict, e.verdict), "frame {frame}: {verdict} vs {:?}", e.verdict);
                    assert_eq!(u64::from(e.conn.backup_flags()), int(&x["backup_flags"]).unwrap(), "frame {frame}");
                    check_conn(x, &ConnRepr::parse(e), frame);
                }
                Err(err) => {
                    // The expected decoding lists the failing entry with a
                    // "drop message" verdict, or notes the problem at message level.
                    let next = exp_iter.next();
                    let noted = next.map(|x| x["backup_verdict"].as_str().unwrap().starts_with("drop message"));
                    let problems = m["problems"].as_array().map(|p| !p.is_empty()).unwrap_or(false);
                    assert!(noted == Some(true) || problems, "frame {frame}: unexpected {err}");
                }
            }
        }
        assert!(exp_iter.next().is_none(), "frame {frame}: entries missing");
    }
}

/// The backup's table after all 42 validation messages, as the kernel built it.
#[test]
fn validation_table_matches_kernel_backup() {
    let cases = data("validation.results.json");
    let mut table = ConnTable::new(TableConfig { syncid: 7, max_len: 1472, ..TableConfig::default() });
    let mut last = 0;
    for case in cases["cases"].as_array().unwrap() {
        let bytes = hex(case["payload_hex"].as_str().unwrap());
        let at = case["sent_at"].as_f64().unwrap() as u64;
        table.apply_datagram(&bytes, at);
        last = at;
    }
    let records: Vec<_> = table.iter().collect();
    for case in cases["cases"].as_array().unwrap() {
        let id = int(&case["id"]).unwrap();
        for (marker, observed) in case["observed_on_backup"].as_object().unwrap() {
            let ours: Vec<_> = match marker.strip_prefix("templates_with_vport_") {
                Some(vport) => {
                    let vport: u16 = vport.parse().unwrap();
                    records.iter().filter(|r| r.conn.is_template() && r.conn.vport == vport).collect()
                }
                None => {
                    let cport: u16 = marker.parse().unwrap();
                    records.iter().filter(|r| !r.conn.is_template() && r.conn.cport == cport).collect()
                }
            };
            if observed == "absent" {
                assert!(ours.is_empty(), "case {id} marker {marker}: kernel has none, we have {ours:?}");
                continue;
            }
            let rows = observed.as_array().unwrap();
            assert_eq!(ours.len(), rows.len(), "case {id} marker {marker}");
            for (row, r) in rows.iter().zip(&ours) {
                let daddr: IpAddr = row["daddr"].as_str().unwrap().parse().unwrap();
                assert_eq!(r.conn.daddr, daddr, "case {id}");
                assert_eq!(u64::from(r.conn.dport), int(&row["dport"]).unwrap(), "case {id}");
                let state = understudy_core::proto::state_name(r.conn.protocol, false, r.conn.state);
                let state = if r.conn.is_template() { "NONE".to_string() } else { state };
                assert_eq!(state, row["state"].as_str().unwrap(), "case {id}");
                // The kernel listing was taken a few seconds after the last
                // message, and shows at most 2^32 ms (4294967 s).
                let left = r.expires.saturating_sub(last).min(4_294_967);
                let shown = int(&row["expires"]).unwrap();
                assert!(left >= shown && left <= shown + 10, "case {id}: ours {left} s, kernel {shown} s");
            }
        }
    }
    let s = table.stats();
    assert_eq!(s.syncid_mismatch, 2, "cases 3 and 4");
    assert_eq!(s.stale, 1, "case 33");
    assert_eq!(s.replaced, 1, "case 32");
}
