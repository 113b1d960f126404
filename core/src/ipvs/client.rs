//! The IPVS generic-netlink client: dumps, and batches of changes sent many
//! per `sendmsg` with every acknowledgement checked.

use core::fmt;
use std::io;

use super::attr::{Attr, Attrs, Writer};
use super::model::{Daemon, DaemonState, Dest, Info, Service, ServiceKey, Timeouts};
use crate::netlink::Socket;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// Stay well below the socket's send buffer (`EMSGSIZE` otherwise).
const MAX_BATCH_BYTES: usize = 60 * 1024;

mod cmd {
    pub const NEW_SERVICE: u8 = 1;
    pub const SET_SERVICE: u8 = 2;
    pub const DEL_SERVICE: u8 = 3;
    pub const GET_SERVICE: u8 = 4;
    pub const NEW_DEST: u8 = 5;
    pub const SET_DEST: u8 = 6;
    pub const DEL_DEST: u8 = 7;
    pub const GET_DEST: u8 = 8;
    pub const NEW_DAEMON: u8 = 9;
    pub const DEL_DAEMON: u8 = 10;
    pub const GET_DAEMON: u8 = 11;
    pub const SET_CONFIG: u8 = 12;
    pub const GET_CONFIG: u8 = 13;
    pub const GET_INFO: u8 = 15;
    pub const ZERO: u8 = 16;
    pub const FLUSH: u8 = 17;
}

mod top {
    pub const SERVICE: u16 = 1;
    pub const DEST: u16 = 2;
    pub const DAEMON: u16 = 3;
    pub const TIMEOUT_TCP: u16 = 4;
    pub const TIMEOUT_TCP_FIN: u16 = 5;
    pub const TIMEOUT_UDP: u16 = 6;
    /// In GET_INFO replies only, reusing numbers 1 and 2.
    pub const INFO_VERSION: u16 = 1;
    pub const INFO_CONN_TAB_SIZE: u16 = 2;
}

/// One change to the kernel's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddService(Service),
    EditService(Service),
    DelService(ServiceKey),
    AddDest(ServiceKey, Dest),
    EditDest(ServiceKey, Dest),
    DelDest(ServiceKey, Dest),
    StartDaemon(Daemon),
    StopDaemon(DaemonState),
    SetTimeouts(Timeouts),
    /// Zero the counters of one service, or of everything.
    Zero(Option<ServiceKey>),
    /// Delete every service (never used by reconcile).
    Flush,
}

impl Op {
    fn command(&self) -> u8 {
        match self {
            Op::AddService(_) => cmd::NEW_SERVICE,
            Op::EditService(_) => cmd::SET_SERVICE,
            Op::DelService(_) => cmd::DEL_SERVICE,
            Op::AddDest(..) => cmd::NEW_DEST,
            Op::EditDest(..) => cmd::SET_DEST,
            Op::DelDest(..) => cmd::DEL_DEST,
            Op::StartDaemon(_) => cmd::NEW_DAEMON,
            Op::StopDaemon(_) => cmd::DEL_DAEMON,
            Op::SetTimeouts(_) => cmd::SET_CONFIG,
            Op::Zero(_) => cmd::ZERO,
            Op::Flush => cmd::FLUSH,
        }
    }

    fn write(&self, w: &mut Writer<'_>) {
        match self {
            Op::AddService(s) | Op::EditService(s) => w.nest(top::SERVICE, |w| s.write(w)),
            Op::DelService(k) | Op::Zero(Some(k)) => w.nest(top::SERVICE, |w| k.write(w)),
            Op::AddDest(k, d) | Op::EditDest(k, d) => {
                w.nest(top::SERVICE, |w| k.write(w));
                w.nest(top::DEST, |w| d.write(w));
            }
            Op::DelDest(k, d) => {
                w.nest(top::SERVICE, |w| k.write(w));
                w.nest(top::DEST, |w| d.write_key(w));
            }
            Op::StartDaemon(d) => w.nest(top::DAEMON, |w| d.write(w)),
            Op::StopDaemon(state) => w.nest(top::DAEMON, |w| w.u32(1, *state as u32)),
            Op::SetTimeouts(t) => {
                for (kind, v) in
                    [(top::TIMEOUT_TCP, t.tcp), (top::TIMEOUT_TCP_FIN, t.tcp_fin), (top::TIMEOUT_UDP, t.udp)]
                {
                    if v != 0 {
                        w.u32(kind, v);
                    }
                }
            }
            Op::Zero(None) | Op::Flush => {}
        }
    }

    /// What the operation does to what, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Op::AddService(s) => format!("add service {}", s.key),
            Op::EditService(s) => format!("edit service {}", s.key),
            Op::DelService(k) => format!("delete service {k}"),
            Op::AddDest(k, d) => format!("add destination {} to {k}", d.endpoint()),
            Op::EditDest(k, d) => format!("edit destination {} of {k}", d.endpoint()),
            Op::DelDest(k, d) => format!("delete destination {} of {k}", d.endpoint()),
            Op::StartDaemon(d) => format!("start {} sync daemon on {}", d.state.name(), d.ifname),
            Op::StopDaemon(s) => format!("stop {} sync daemon", s.name()),
            Op::SetTimeouts(_) => "set timeouts".into(),
            Op::Zero(Some(k)) => format!("zero counters of {k}"),
            Op::Zero(None) => "zero all counters".into(),
            Op::Flush => "flush".into(),
        }
    }

    /// The kernel's answer in words, where IPVS gives an errno its own meaning.
    fn reason(&self, errno: i32) -> String {
        let dest_op = matches!(self, Op::AddDest(..) | Op::EditDest(..) | Op::DelDest(..));
        match errno {
            libc::EEXIST => "exists".into(),
            libc::ESRCH if matches!(self, Op::StopDaemon(_)) => "not running".into(),
            libc::ESRCH => "no such service".into(),
            libc::ENOENT if dest_op => "no such destination".into(),
            libc::ENOENT => "unknown scheduler or persistence engine".into(),
            libc::ERANGE => "out of range (negative weight, or lower threshold above upper)".into(),
            libc::EPERM => "permission denied (needs CAP_NET_ADMIN)".into(),
            libc::ENODEV => "no such interface".into(),
            libc::EAFNOSUPPORT => "address family not supported".into(),
            libc::EINVAL if dest_op => "invalid (address not unicast, mixed address families without tunnelling, \
                 or no IPv4 address configured in this namespace)"
                .into(),
            libc::EINVAL => "invalid argument".into(),
            e => io::Error::from_raw_os_error(e).to_string(),
        }
    }
}

/// A failed IPVS operation, naming what was attempted on which object.
#[derive(Debug)]
pub enum Error {
    /// The kernel refused an operation.
    Kernel {
        op: String,
        errno: i32,
        reason: String,
    },
    /// IPVS is not there (module not loaded, or no generic-netlink family).
    Unavailable(String),
    Io(io::Error),
    /// A reply we could not make sense of.
    Protocol(String),
}

impl Error {
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Kernel { op, reason, .. } => write!(f, "{op}: {reason}"),
            Error::Unavailable(why) => write!(f, "IPVS unavailable: {why}"),
            Error::Io(e) => write!(f, "netlink: {e}"),
            Error::Protocol(why) => write!(f, "netlink protocol: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// One received netlink message.
struct Reply<'a> {
    kind: u16,
    seq: u32,
    /// After the netlink header.
    body: &'a [u8],
}

fn replies(buf: &[u8]) -> impl Iterator<Item = Reply<'_>> {
    let mut rest = buf;
    core::iter::from_fn(move || {
        let head = rest.get(..NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes(head[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            rest = &[];
            return None;
        }
        let reply = Reply {
            kind: u16::from_ne_bytes(head[4..6].try_into().ok()?),
            seq: u32::from_ne_bytes(head[8..12].try_into().ok()?),
            body: &rest[NLMSG_HDRLEN..len],
        };
        rest = rest.get(super::attr::align(len)..).unwrap_or(&[]);
        Some(reply)
    })
}

/// The `-errno` of an `NLMSG_ERROR` (0 = acknowledgement).
fn error_code(body: &[u8]) -> i32 {
    body.get(..4).map_or(-libc::EPROTO, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// A connection to the IPVS family of the caller's network namespace.
#[derive(Debug)]
pub struct Client {
    sock: Socket,
    family: u16,
    seq: u32,
    rx: Vec<u8>,
}

impl Client {
    /// Open a socket and resolve the "IPVS" family.
    pub fn open() -> Result<Client, Error> {
        let mut client = Client { sock: Socket::open(libc::NETLINK_GENERIC, 0)?, family: 0, seq: 0, rx: Vec::new() };
        let request = client.message(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, CTRL_CMD_GETFAMILY, |w| {
            w.str(CTRL_ATTR_FAMILY_NAME, "IPVS")
        });
        let answers = client.exchange(&request.1, request.0, false).map_err(|e| match e.errno() {
            Some(libc::ENOENT) => {
                Error::Unavailable("no IPVS generic-netlink family (is the ip_vs module loaded?)".into())
            }
            _ => e,
        })?;
        client.family = answers
            .iter()
            .flat_map(|body| Attrs { rest: body.get(GENL_HDRLEN..).unwrap_or(&[]) })
            .find(|a| a.kind == CTRL_ATTR_FAMILY_ID)
            .and_then(|a| a.u16())
            .ok_or_else(|| Error::Protocol("family id missing from nlctrl reply".into()))?;
        Ok(client)
    }

    pub fn family_id(&self) -> u16 {
        self.family
    }

    fn message(&mut self, kind: u16, flags: u16, command: u8, fill: impl FnOnce(&mut Writer<'_>)) -> (u32, Vec<u8>) {
        self.seq = self.seq.wrapping_add(1);
        (self.seq, build(kind, flags, self.seq, command, fill))
    }

    /// Send one request and collect its answers until the ACK (or DONE for dumps).
    fn exchange(&mut self, request: &[u8], seq: u32, dump: bool) -> Result<Vec<Vec<u8>>, Error> {
        self.sock.send(request)?;
        let mut out = Vec::new();
        loop {
            self.sock.recv(&mut self.rx)?;
            for reply in replies(&self.rx) {
                if reply.seq != seq {
                    continue;
                }
                match reply.kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = error_code(reply.body);
                        if code == 0 && !dump {
                            return Ok(out);
                        }
                        return Err(Error::Kernel {
                            op: String::new(),
                            errno: -code,
                            reason: io::Error::from_raw_os_error(-code).to_string(),
                        });
                    }
                    _ => out.push(reply.body.to_vec()),
                }
            }
        }
    }

    fn query(
        &mut self,
        command: u8,
        dump: bool,
        what: &str,
        fill: impl FnOnce(&mut Writer<'_>),
    ) -> Result<Vec<Vec<u8>>, Error> {
        let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        let family = self.family;
        let (seq, request) = self.message(family, flags, command, fill);
        self.exchange(&request, seq, dump).map_err(|e| match e {
            Error::Kernel { errno, reason, .. } => Error::Kernel { op: what.into(), errno, reason },
            other => other,
        })
    }

    fn nests(replies: &[Vec<u8>], kind: u16) -> impl Iterator<Item = Attr<'_>> {
        replies.iter().flat_map(move |body| {
            Attrs { rest: body.get(GENL_HDRLEN..).unwrap_or(&[]) }.filter(move |a| a.kind == kind)
        })
    }

    /// Every service of the namespace (without destinations).
    pub fn services(&mut self) -> Result<Vec<Service>, Error> {
        let replies = self.query(cmd::GET_SERVICE, true, "list services", |_| {})?;
        Ok(Self::nests(&replies, top::SERVICE).filter_map(|a| Service::parse(a.nested())).collect())
    }

    /// One service, or `None` if the kernel has no such service.
    pub fn service(&mut self, key: &ServiceKey) -> Result<Option<Service>, Error> {
        match self
            .query(cmd::GET_SERVICE, false, &format!("get service {key}"), |w| w.nest(top::SERVICE, |w| key.write(w)))
        {
            Ok(replies) => Ok(Self::nests(&replies, top::SERVICE).find_map(|a| Service::parse(a.nested()))),
            Err(e) if e.errno() == Some(libc::ESRCH) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The destinations of a service (empty when the service does not exist).
    pub fn dests(&mut self, key: &ServiceKey) -> Result<Vec<Dest>, Error> {
        let replies = self.query(cmd::GET_DEST, true, &format!("list destinations of {key}"), |w| {
            w.nest(top::SERVICE, |w| key.write(w))
        })?;
        let af = key.af();
        Ok(Self::nests(&replies, top::DEST).filter_map(|a| Dest::parse(a.nested(), af)).collect())
    }

    /// Every service with its destinations. (One destination dump per
    /// service: a dump keeps the socket busy until it is read to its end, so
    /// the kernel refuses to run several from one `sendmsg`.)
    pub fn dump(&mut self) -> Result<Vec<(Service, Vec<Dest>)>, Error> {
        let services = self.services()?;
        services.into_iter().map(|s| Ok((s.clone(), self.dests(&s.key)?))).collect()
    }

    pub fn daemons(&mut self) -> Result<Vec<Daemon>, Error> {
        let replies = self.query(cmd::GET_DAEMON, true, "list sync daemons", |_| {})?;
        Ok(Self::nests(&replies, top::DAEMON).filter_map(|a| Daemon::parse(a.nested())).collect())
    }

    pub fn timeouts(&mut self) -> Result<Timeouts, Error> {
        let replies = self.query(cmd::GET_CONFIG, false, "get timeouts", |_| {})?;
        let mut t = Timeouts::default();
        for a in replies.iter().flat_map(|b| Attrs { rest: b.get(GENL_HDRLEN..).unwrap_or(&[]) }) {
            let v = a.u32().unwrap_or(0);
            match a.kind {
                top::TIMEOUT_TCP => t.tcp = v,
                top::TIMEOUT_TCP_FIN => t.tcp_fin = v,
                top::TIMEOUT_UDP => t.udp = v,
                _ => {}
            }
        }
        Ok(t)
    }

    pub fn info(&mut self) -> Result<Info, Error> {
        let replies = self.query(cmd::GET_INFO, false, "get info", |_| {})?;
        let mut info = Info { version: 0, conn_tab_size: 0 };
        // GET_INFO's reply reuses top-level numbers 1 and 2 for its own fields.
        for a in replies.iter().flat_map(|b| Attrs { rest: b.get(GENL_HDRLEN..).unwrap_or(&[]) }) {
            match a.kind {
                top::INFO_VERSION => info.version = a.u32().unwrap_or(0),
                top::INFO_CONN_TAB_SIZE => info.conn_tab_size = a.u32().unwrap_or(0),
                _ => {}
            }
        }
        Ok(info)
    }

    /// Apply one change.
    pub fn execute(&mut self, op: &Op) -> Result<(), Error> {
        self.execute_all(core::slice::from_ref(op)).pop().unwrap_or(Ok(()))
    }

    /// Apply many changes in order, packing up to 60 KB of requests into each
    /// `sendmsg`; every request is acknowledged and each result returned.
    /// Stopping a daemon that was interrupted mid-start (`EINTR`) counts as done.
    pub fn execute_all(&mut self, ops: &[Op]) -> Vec<Result<(), Error>> {
        let mut results: Vec<Result<(), Error>> = Vec::with_capacity(ops.len());
        let mut start = 0;
        while start < ops.len() {
            let mut batch = Vec::new();
            let mut seqs = Vec::new();
            let mut end = start;
            while end < ops.len() && (batch.is_empty() || batch.len() < MAX_BATCH_BYTES) {
                let family = self.family;
                let op = &ops[end];
                let (seq, msg) = self.message(family, NLM_F_REQUEST | NLM_F_ACK, op.command(), |w| op.write(w));
                batch.extend_from_slice(&msg);
                seqs.push(seq);
                end += 1;
            }
            match self.acknowledge(&batch, &seqs) {
                Ok(codes) => {
                    for (op, code) in ops[start..end].iter().zip(codes) {
                        results.push(match code {
                            0 => Ok(()),
                            e if e == libc::EINTR && matches!(op, Op::StopDaemon(_)) => Ok(()),
                            e => Err(Error::Kernel { op: op.describe(), errno: e, reason: op.reason(e) }),
                        });
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    results.extend(
                        ops[start..end].iter().map(|op| Err(Error::Protocol(format!("{}: {text}", op.describe())))),
                    );
                }
            }
            start = end;
        }
        results
    }

    /// Send a batch and wait for the acknowledgement of each sequence number.
    fn acknowledge(&mut self, batch: &[u8], seqs: &[u32]) -> Result<Vec<i32>, Error> {
        self.sock.send(batch)?;
        let first = seqs[0];
        let mut codes = vec![None; seqs.len()];
        let mut pending = seqs.len();
        while pending > 0 {
            self.sock.recv(&mut self.rx)?;
            for reply in replies(&self.rx) {
                let index = reply.seq.wrapping_sub(first) as usize;
                if reply.kind != NLMSG_ERROR || index >= codes.len() || codes[index].is_some() {
                    continue;
                }
                codes[index] = Some(-error_code(reply.body));
                pending -= 1;
            }
        }
        Ok(codes.into_iter().map(|c| c.unwrap_or(0)).collect())
    }
}

/// One request: netlink header, generic-netlink header, attributes.
fn build(kind: u16, flags: u16, seq: u32, command: u8, fill: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[command, 1, 0, 0]);
    fill(&mut Writer { buf: &mut buf });
    let len = buf.len() as u32;
    buf[..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

/// Request bytes for `op`, as [`Client`] sends them, without a socket.
pub fn encode_request(op: &Op, family: u16, seq: u32) -> Vec<u8> {
    build(family, NLM_F_REQUEST | NLM_F_ACK, seq, op.command(), |w| op.write(w))
}

/// Parse a reply body (generic-netlink header and attributes) of a service dump.
pub fn parse_service_reply(body: &[u8]) -> Option<Service> {
    Client::nests(&[body.to_vec()], top::SERVICE).find_map(|a| Service::parse(a.nested()))
}

/// Parse a reply body of a destination dump.
pub fn parse_dest_reply(body: &[u8], service_af: u16) -> Option<Dest> {
    Client::nests(&[body.to_vec()], top::DEST).find_map(|a| Dest::parse(a.nested(), service_af))
}
