//! Codec bindings: `Conn`, `Message`, decode and encode.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use understudy_core::wire::sync::{
    self, ConnRepr, Decoded, DecodedEntry, Error, MessageBuilder, MessageRepr, OptionRepr, SkipReason, Verdict, Version,
};

use crate::errors;

/// Facts known only about a decoded entry.
#[derive(Clone, Debug)]
struct Decoding {
    offset: usize,
    verdict: Verdict,
    backup_flags: u32,
    v1: Option<sync::V1Framing>,
}

/// One IPVS connection entry.
#[pyclass(module = "understudy._core", frozen, eq, hash)]
#[derive(Clone, Debug)]
pub struct Conn {
    pub(crate) repr: ConnRepr,
    decoding: Option<Decoding>,
    pub(crate) expires: Option<u64>,
}

impl PartialEq for Conn {
    fn eq(&self, other: &Self) -> bool {
        self.repr == other.repr
    }
}

impl Hash for Conn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.repr.hash(state);
    }
}

impl Conn {
    pub(crate) fn from_repr(repr: ConnRepr, expires: Option<u64>) -> Self {
        Conn { repr, decoding: None, expires }
    }

    fn decoded(e: DecodedEntry) -> Self {
        let decoding = Decoding { offset: e.offset, verdict: e.verdict, backup_flags: e.backup_flags, v1: e.v1 };
        Conn { repr: e.conn, decoding: Some(decoding), expires: None }
    }
}

pub(crate) fn parse_addr(text: &str) -> PyResult<IpAddr> {
    text.parse().map_err(|_| errors::bad_address(text))
}

pub(crate) fn parse_version(version: u8) -> PyResult<Version> {
    match version {
        0 => Ok(Version::V0),
        1 => Ok(Version::V1),
        other => Err(errors::bad_version(other)),
    }
}

#[pymethods]
impl Conn {
    #[new]
    #[pyo3(signature = (protocol, caddr, cport, vaddr, vport, daddr, dport, flags=0, state=0, fwmark=0, timeout=0, options=Vec::new()),
           text_signature = "(protocol, caddr, cport, vaddr, vport, daddr, dport, flags=0, state=0, fwmark=0, timeout=0, options=())")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        protocol: u8,
        caddr: &str,
        cport: u16,
        vaddr: &str,
        vport: u16,
        daddr: &str,
        dport: u16,
        flags: u32,
        state: u16,
        fwmark: u32,
        timeout: u32,
        options: Vec<(u8, Vec<u8>)>,
    ) -> PyResult<Self> {
        let mut repr = ConnRepr::new(
            protocol,
            parse_addr(caddr)?,
            cport,
            parse_addr(vaddr)?,
            vport,
            parse_addr(daddr)?,
            dport,
            flags,
            state,
            fwmark,
            timeout,
        );
        repr.options = options.into_iter().map(|(kind, data)| OptionRepr { kind, data }).collect();
        Ok(Conn::from_repr(repr, None))
    }

    #[getter]
    fn protocol(&self) -> u8 {
        self.repr.protocol
    }
    #[getter]
    fn flags(&self) -> u32 {
        self.repr.flags
    }
    #[getter]
    fn state(&self) -> u16 {
        self.repr.state
    }
    #[getter]
    fn cport(&self) -> u16 {
        self.repr.cport
    }
    #[getter]
    fn vport(&self) -> u16 {
        self.repr.vport
    }
    #[getter]
    fn dport(&self) -> u16 {
        self.repr.dport
    }
    #[getter]
    fn fwmark(&self) -> u32 {
        self.repr.fwmark
    }
    #[getter]
    fn timeout(&self) -> u32 {
        self.repr.timeout
    }
    #[getter]
    fn caddr(&self) -> String {
        self.repr.caddr.to_string()
    }
    #[getter]
    fn vaddr(&self) -> String {
        self.repr.vaddr.to_string()
    }
    #[getter]
    fn daddr(&self) -> String {
        self.repr.daddr.to_string()
    }
    #[getter]
    fn options<'py>(&self, py: Python<'py>) -> Vec<(u8, Bound<'py, PyBytes>)> {
        self.repr.options.iter().map(|o| (o.kind, PyBytes::new(py, &o.data))).collect()
    }
    #[getter]
    fn af(&self) -> &'static str {
        if self.repr.is_ipv6() {
            "inet6"
        } else {
            "inet"
        }
    }
    #[getter]
    fn template(&self) -> bool {
        self.repr.is_template()
    }
    #[getter]
    fn offset(&self) -> Option<usize> {
        self.decoding.as_ref().map(|d| d.offset)
    }
    #[getter]
    fn entry_type(&self) -> Option<u8> {
        self.decoding.as_ref()?.v1.map(|v| v.kind)
    }
    #[getter]
    fn entry_version(&self) -> Option<u8> {
        self.decoding.as_ref()?.v1.map(|v| v.entry_version)
    }
    #[getter]
    fn size(&self) -> Option<u16> {
        self.decoding.as_ref()?.v1.map(|v| v.size)
    }
    #[getter]
    fn padded_size(&self) -> Option<u16> {
        self.decoding.as_ref()?.v1.map(|v| (v.size + 3) & !3)
    }
    #[getter]
    fn verdict(&self) -> Option<String> {
        self.decoding.as_ref().map(|d| match d.verdict {
            Verdict::Apply => "apply".to_string(),
            Verdict::Skip(r) => format!("skip: {}", r.reason()),
        })
    }
    #[getter]
    fn backup_flags(&self) -> Option<u32> {
        self.decoding.as_ref().map(|d| d.backup_flags)
    }
    #[getter]
    fn expires(&self) -> Option<u64> {
        self.expires
    }

    fn __repr__(&self) -> String {
        let r = &self.repr;
        let ep = |a: &IpAddr, p: u16| match a {
            IpAddr::V4(a) => format!("{a}:{p}"),
            IpAddr::V6(a) => format!("[{a}]:{p}"),
        };
        format!(
            "Conn(proto={} {} -> {} -> {} flags={:#x} state={} timeout={})",
            r.protocol,
            ep(&r.caddr, r.cport),
            ep(&r.vaddr, r.vport),
            ep(&r.daddr, r.dport),
            r.flags,
            r.state,
            r.timeout
        )
    }
}

/// A decoded sync datagram.
#[pyclass(module = "understudy._core", frozen)]
pub struct Message {
    decoded: Decoded,
}

#[pymethods]
impl Message {
    #[getter]
    fn format(&self) -> Option<&'static str> {
        self.decoded.header.map(|h| h.version.as_str())
    }
    #[getter]
    fn syncid(&self) -> Option<u8> {
        self.decoded.header.map(|h| h.syncid)
    }
    #[getter]
    fn size(&self) -> Option<u16> {
        self.decoded.header.map(|h| h.size)
    }
    #[getter]
    fn nr_conns(&self) -> Option<u8> {
        self.decoded.header.map(|h| h.nr_conns)
    }
    #[getter]
    fn length(&self) -> usize {
        self.decoded.length
    }
    #[getter]
    fn conns(&self) -> Vec<Conn> {
        self.decoded.entries.iter().cloned().map(Conn::decoded).collect()
    }
    #[getter]
    fn error(&self) -> Option<&'static str> {
        self.decoded.error.map(|e| e.error.reason())
    }
    #[getter]
    fn error_detail(&self) -> Option<String> {
        self.decoded.error_detail()
    }
    #[getter]
    fn trailing(&self) -> usize {
        self.decoded.trailing
    }

    fn __repr__(&self) -> String {
        format!(
            "Message(format={:?}, conns={}, error={:?})",
            self.format().unwrap_or("none"),
            self.decoded.entries.len(),
            self.error()
        )
    }
}

/// The persistence engines of a stock 6.1 backup, unless told otherwise.
pub(crate) fn pe_names_or_default(pe_names: Option<Vec<String>>) -> Vec<String> {
    pe_names.unwrap_or_else(|| vec!["sip".to_string()])
}

fn pe_filter(pe_names: &[String]) -> impl Fn(&[u8]) -> bool + '_ {
    move |name| pe_names.iter().any(|n| n.as_bytes() == name)
}

#[pyfunction]
#[pyo3(signature = (datagram, pe_names=None))]
pub fn decode(datagram: &[u8], pe_names: Option<Vec<String>>) -> Message {
    let pe_names = pe_names_or_default(pe_names);
    Message { decoded: sync::decode(datagram, pe_filter(&pe_names)) }
}

#[pyfunction]
#[pyo3(signature = (datagrams, pe_names=None))]
pub fn decode_many(py: Python<'_>, datagrams: Vec<PyBackedBytes>, pe_names: Option<Vec<String>>) -> Vec<Message> {
    let pe_names = pe_names_or_default(pe_names);
    let decoded: Vec<Decoded> = py.detach(|| datagrams.iter().map(|d| sync::decode(d, pe_filter(&pe_names))).collect());
    decoded.into_iter().map(|decoded| Message { decoded }).collect()
}

fn reprs(conns: &[PyRef<'_, Conn>]) -> Vec<ConnRepr> {
    conns.iter().map(|c| c.repr.clone()).collect()
}

pub(crate) fn to_bytes_list(py: Python<'_>, datagrams: Vec<Vec<u8>>) -> Vec<Bound<'_, PyBytes>> {
    datagrams.iter().map(|d| PyBytes::new(py, d)).collect()
}

#[pyfunction]
#[pyo3(signature = (conns, version=1, syncid=0, max_len=sync::DEFAULT_MAX_LEN), text_signature = "(conns, version=1, syncid=0, max_len=1472)")]
pub fn encode<'py>(
    py: Python<'py>,
    conns: Vec<PyRef<'py, Conn>>,
    version: u8,
    syncid: u8,
    max_len: usize,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let version = parse_version(version)?;
    let conns = reprs(&conns);
    let datagrams = py.detach(|| {
        let mut builder = MessageBuilder::new(version, syncid, max_len);
        conns.iter().try_for_each(|c| builder.push(c)).map(|()| builder.finish())
    });
    Ok(to_bytes_list(py, datagrams.map_err(errors::encode_error)?))
}

#[pyfunction]
#[pyo3(signature = (conns, version=1, syncid=0))]
pub fn encode_message<'py>(
    py: Python<'py>,
    conns: Vec<PyRef<'py, Conn>>,
    version: u8,
    syncid: u8,
) -> PyResult<Bound<'py, PyBytes>> {
    let message = MessageRepr { version: parse_version(version)?, syncid, conns: reprs(&conns) };
    let bytes = message.to_bytes().map_err(errors::encode_error)?;
    Ok(PyBytes::new(py, &bytes))
}

#[pyfunction]
pub fn error_reasons() -> Vec<&'static str> {
    Error::ALL.iter().map(|e| e.reason()).collect()
}

#[pyfunction]
pub fn skip_reasons() -> Vec<&'static str> {
    SkipReason::ALL.iter().map(|r| r.reason()).collect()
}
