//! An rtnetlink client: link queries and idempotent address changes, each
//! request acknowledged before the next.

use core::fmt;
use std::io;
use std::net::IpAddr;

use super::rtnl::{self, kind, AddrRepr, LinkRepr, ParseError};
use crate::netlink::Socket;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A failed interface operation, naming what was attempted.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No interface of that name (or index) in this network namespace.
    NoSuchInterface(String),
    /// The kernel refused an operation.
    Kernel {
        op: String,
        errno: i32,
    },
    /// A request we refuse to send (bad prefix length, label).
    Invalid(String),
    Io(io::Error),
    /// A reply we could not make sense of.
    Protocol(ParseError),
}

impl Error {
    /// The errno behind the error, where there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::NoSuchInterface(_) => Some(libc::ENODEV),
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Invalid(_) => Some(libc::EINVAL),
            Error::Io(e) => e.raw_os_error(),
            Error::Protocol(_) => Some(libc::EPROTO),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSuchInterface(name) => write!(f, "no such interface: {name:?}"),
            Error::Kernel { op, errno } => write!(f, "{op}: {}", io::Error::from_raw_os_error(*errno)),
            Error::Invalid(why) => f.write_str(why),
            Error::Io(e) => write!(f, "rtnetlink: {e}"),
            Error::Protocol(why) => write!(f, "rtnetlink reply: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Self {
        Error::Protocol(e)
    }
}

/// What an address change did: `true` changed the kernel, `false` found it already so.
pub type Changed = bool;

/// A `NETLINK_ROUTE` connection of the caller's network namespace.
#[derive(Debug)]
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    rx: Vec<u8>,
}

impl Rtnl {
    /// Open a socket (no multicast groups: requests only).
    pub fn open() -> Result<Rtnl, Error> {
        let sock = Socket::open(libc::NETLINK_ROUTE, 0)?;
        // The kernel answers at once; a missing answer must not hang the daemon.
        sock.set_recv_timeout(REPLY_TIMEOUT)?;
        Ok(Rtnl { sock, seq: 0, rx: Vec::new() })
    }

    /// Send one request and collect the bodies of its reply messages of type
    /// `want` until the acknowledgement (or, for dumps, `NLMSG_DONE`).
    /// `Err(errno)` is the kernel's refusal.
    fn transact(
        &mut self,
        req: u16,
        flags: u16,
        want: u16,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Result<Vec<Vec<u8>>, i32>, Error> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut buf = Vec::new();
        rtnl::emit_message(&mut buf, req, NLM_F_REQUEST | flags, seq, body);
        self.sock.send(&buf)?;
        let mut out = Vec::new();
        loop {
            if self.sock.recv(&mut self.rx)?.port != 0 {
                continue; // not from the kernel
            }
            for msg in rtnl::messages(&self.rx) {
                let msg = msg?;
                if msg.seq != seq {
                    continue; // a late reply to an earlier request
                }
                match msg.kind {
                    kind::NLMSG_ERROR | kind::NLMSG_DONE => {
                        let code = rtnl::error_code(msg.body);
                        return Ok(if code == 0 { Ok(out) } else { Err(-code) });
                    }
                    k if k == want => out.push(msg.body.to_vec()),
                    _ => {}
                }
            }
        }
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<LinkRepr>, Error> {
        let bodies = self
            .transact(kind::RTM_GETLINK, NLM_F_DUMP, kind::RTM_NEWLINK, |b| rtnl::emit_ifinfomsg(b, 0, 0, 0))?
            .map_err(|errno| Error::Kernel { op: "list links".into(), errno })?;
        bodies.iter().map(|b| LinkRepr::parse(b).map_err(Error::from)).collect()
    }

    /// The link called `name`.
    pub fn link(&mut self, name: &str) -> Result<LinkRepr, Error> {
        if name.is_empty() || name.len() > rtnl::MAX_NAME || name.contains(['/', '\0']) {
            return Err(Error::NoSuchInterface(name.into()));
        }
        match self.transact(kind::RTM_GETLINK, NLM_F_ACK, kind::RTM_NEWLINK, |b| rtnl::emit_link_query(b, name))? {
            Ok(bodies) => match bodies.first() {
                Some(body) => Ok(LinkRepr::parse(body)?),
                None => Err(Error::NoSuchInterface(name.into())),
            },
            Err(libc::ENODEV) => Err(Error::NoSuchInterface(name.into())),
            Err(errno) => Err(Error::Kernel { op: format!("query link {name}"), errno }),
        }
    }

    /// Every address of the namespace, or of link `index` only.
    pub fn addresses(&mut self, index: Option<u32>) -> Result<Vec<AddrRepr>, Error> {
        let mut all = Vec::new();
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            let bodies = self
                .transact(kind::RTM_GETADDR, NLM_F_DUMP, kind::RTM_NEWADDR, |b| rtnl::emit_addr_query(b, family))?
                .map_err(|errno| Error::Kernel { op: "list addresses".into(), errno })?;
            for body in bodies {
                match AddrRepr::parse(&body) {
                    Ok(a) if index.map_or(true, |i| a.index == i) => all.push(a),
                    Ok(_) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(all)
    }

    /// Ensure `address/prefix_len` is on interface `ifname`: `Ok(false)` when it
    /// already was (`EEXIST`). IPv6 addresses are added without DAD
    /// (`IFA_F_NODAD`) so a VIP answers at once.
    pub fn add_address(
        &mut self,
        ifname: &str,
        address: IpAddr,
        prefix_len: u8,
        label: Option<&str>,
    ) -> Result<Changed, Error> {
        let repr = self.address_repr(ifname, address, prefix_len, label)?;
        let op = || format!("add {address}/{prefix_len} to {ifname}");
        match self.transact(kind::RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, 0, |b| repr.emit(b))? {
            Ok(_) => Ok(true),
            Err(libc::EEXIST) => Ok(false),
            Err(libc::ENODEV) => Err(Error::NoSuchInterface(ifname.into())),
            Err(errno) => Err(Error::Kernel { op: op(), errno }),
        }
    }

    /// Ensure `address/prefix_len` is not on `ifname`: `Ok(false)` when it was
    /// not there (`EADDRNOTAVAIL`, `ENOENT`).
    pub fn del_address(&mut self, ifname: &str, address: IpAddr, prefix_len: u8) -> Result<Changed, Error> {
        let repr = self.address_repr(ifname, address, prefix_len, None)?;
        match self.transact(kind::RTM_DELADDR, NLM_F_ACK, 0, |b| repr.emit(b))? {
            Ok(_) => Ok(true),
            Err(libc::EADDRNOTAVAIL | libc::ENOENT) => Ok(false),
            Err(libc::ENODEV) => Err(Error::NoSuchInterface(ifname.into())),
            Err(errno) => Err(Error::Kernel { op: format!("delete {address}/{prefix_len} from {ifname}"), errno }),
        }
    }

    fn address_repr(
        &mut self,
        ifname: &str,
        address: IpAddr,
        prefix_len: u8,
        label: Option<&str>,
    ) -> Result<AddrRepr, Error> {
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(Error::Invalid(format!("prefix length {prefix_len} is over {max} for {address}")));
        }
        if let Some(label) = label {
            // The kernel stores IPv4 labels only; `ip` insists they start with the device name.
            if address.is_ipv6() {
                return Err(Error::Invalid(format!("{address}: address labels are IPv4 only")));
            }
            if !label.starts_with(ifname) || label.len() > rtnl::MAX_NAME {
                return Err(Error::Invalid(format!(
                    "label {label:?} must start with {ifname:?} and be at most {} bytes",
                    rtnl::MAX_NAME
                )));
            }
        }
        let index = self.link(ifname)?.index;
        let flags = if address.is_ipv6() { rtnl::ifa_flags::NODAD | rtnl::ifa_flags::PERMANENT } else { 0 };
        Ok(AddrRepr { index, address, prefix_len, flags, scope: 0, label: label.map(str::to_owned) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real kernel's replies, read-only: every namespace has `lo`.
    #[test]
    fn loopback_from_the_kernel() {
        let mut rtnl = Rtnl::open().expect("rtnetlink socket");
        let lo = rtnl.link("lo").expect("lo");
        assert!(lo.flags & rtnl::iff::LOOPBACK != 0);
        assert_eq!((lo.name.as_str(), lo.hw_type), ("lo", 772)); // ARPHRD_LOOPBACK
        assert!(rtnl.links().expect("dump").iter().any(|l| l.index == lo.index && l.name == "lo"));
        match rtnl.link("no-such-if0") {
            Err(Error::NoSuchInterface(name)) => assert_eq!(name, "no-such-if0"),
            other => panic!("{other:?}"),
        }
        let err = rtnl.add_address("lo", "::1".parse().unwrap(), 129, None).unwrap_err();
        assert!(err.to_string().contains("prefix length 129"), "{err}");
        if lo.flags & rtnl::iff::UP != 0 {
            let addrs = rtnl.addresses(Some(lo.index)).expect("addresses");
            assert!(addrs.iter().any(|a| a.address == IpAddr::from([127, 0, 0, 1]) && a.prefix_len == 8));
        }
    }
}
