//! Announcing a VIP on its link: gratuitous ARP (IPv4) and unsolicited
//! neighbour advertisements (IPv6), sent whole through an `AF_PACKET` socket
//! bound to the interface.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::arp::{ArpOp, ArpRepr, Mac};
use super::client::{Error, Rtnl};
use super::ndisc::NaFrame;

/// A raw packet socket bound to one interface, send-only (protocol 0 receives nothing).
#[derive(Debug)]
struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    fn bind(index: u32) -> io::Result<PacketSocket> {
        // SAFETY: plain syscalls; the address is a zeroed sockaddr_ll of the declared size.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            if libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(PacketSocket { fd })
        }
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: `frame` is valid for its length.
            let sent = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if sent >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// Sends announcements on one interface, from its own MAC address.
#[derive(Debug)]
pub struct Announcer {
    sock: PacketSocket,
    /// Interface name.
    pub ifname: String,
    /// Interface index.
    pub index: u32,
    /// The interface's MAC, the one announced.
    pub mac: Mac,
    /// Frames sent.
    pub sent: u64,
}

impl Announcer {
    /// Look up `ifname` and bind to it.
    pub fn open(rtnl: &mut Rtnl, ifname: &str) -> Result<Announcer, Error> {
        let link = rtnl.link(ifname)?;
        let mac =
            link.ethernet().ok_or_else(|| Error::Invalid(format!("{ifname} has no Ethernet address to announce")))?;
        let sock = PacketSocket::bind(link.index)?;
        Ok(Announcer { sock, ifname: ifname.into(), index: link.index, mac, sent: 0 })
    }

    /// The frame that announces `ip`: a gratuitous ARP (request form, or reply
    /// form if `reply`) for IPv4, an unsolicited NA (R flag if `router`) for IPv6.
    pub fn frame(&self, ip: IpAddr, reply: bool, router: bool) -> Vec<u8> {
        match ip {
            IpAddr::V4(v4) => {
                let op = if reply { ArpOp::Reply } else { ArpOp::Request };
                ArpRepr::gratuitous(self.mac, v4, op).frame()
            }
            IpAddr::V6(v6) => NaFrame::unsolicited(self.mac, v6, router).emit(),
        }
    }

    /// Send the announcement of `ip` once.
    pub fn announce(&mut self, ip: IpAddr, reply: bool, router: bool) -> Result<(), Error> {
        let frame = self.frame(ip, reply, router);
        self.sock.send(&frame).map_err(|e| match e.raw_os_error() {
            Some(errno @ (libc::ENXIO | libc::ENETDOWN)) => {
                Error::Kernel { op: format!("announce {ip} on {}", self.ifname), errno }
            }
            _ => Error::Io(e),
        })?;
        self.sent += 1;
        Ok(())
    }
}
