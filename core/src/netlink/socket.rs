//! A netlink socket (generic netlink for IPVS, rtnetlink for interfaces):
//! the only unsafe code of the netlink clients.

use std::io;

use crate::sys::check;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Big enough for the largest dump reply batch the kernel sends at once.
const RECV_BUF: usize = 1 << 20;

/// One netlink socket bound to the caller's network namespace.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// A socket of netlink `protocol` (`NETLINK_GENERIC`, `NETLINK_ROUTE`) in
    /// the caller's network namespace, subscribed to the multicast `groups` bitmask.
    pub fn open(protocol: libc::c_int, groups: u32) -> io::Result<Socket> {
        // SAFETY: plain syscalls on a descriptor we own; pointers are to locals of the right size.
        unsafe {
            let fd = check(libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol))?;
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            addr.nl_groups = groups;
            check(libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            ))?;
            let one: libc::c_int = 1;
            // Errors need not echo our whole request back.
            check(libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_CAP_ACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ))?;
            let size: libc::c_int = RECV_BUF as libc::c_int;
            for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
                // Best effort: the defaults work, just with smaller batches.
                let _ = libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            Ok(Socket { fd })
        }
    }

    /// Send one buffer of (possibly many) netlink messages to the kernel.
    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: `buf` is valid for its length; the address is a zeroed sockaddr_nl (the kernel).
        unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            loop {
                let sent = libc::sendto(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    (&addr as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                );
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

    /// Receive one datagram of netlink messages into `buf`, blocking (up to
    /// the receive timeout, if one is set).
    pub fn recv(&self, buf: &mut Vec<u8>) -> io::Result<Received> {
        self.recv_flags(buf, 0)?.ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
    }

    /// Fail a blocking `recv` that waits longer than `timeout`.
    pub fn set_recv_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
        };
        // SAFETY: a timeval of the declared size.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
        Ok(())
    }

    /// Receive one datagram without blocking: `Ok(None)` when none is queued.
    /// The sender's port id comes along so multicast listeners can drop
    /// anything not sent by the kernel (port 0).
    pub fn try_recv(&self, buf: &mut Vec<u8>) -> io::Result<Option<Received>> {
        self.recv_flags(buf, libc::MSG_DONTWAIT)
    }

    fn recv_flags(&self, buf: &mut Vec<u8>, flags: libc::c_int) -> io::Result<Option<Received>> {
        buf.resize(RECV_BUF, 0);
        loop {
            // SAFETY: `buf` has RECV_BUF writable bytes; `from` is a zeroed sockaddr_nl of the declared size.
            let (got, from) = unsafe {
                let mut from: libc::sockaddr_nl = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
                let got = libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    flags,
                    (&mut from as *mut libc::sockaddr_nl).cast(),
                    &mut len,
                );
                (got, from)
            };
            if got >= 0 {
                buf.truncate(got as usize);
                return Ok(Some(Received { port: from.nl_pid }));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    buf.clear();
                    return Ok(None);
                }
                _ => return Err(err),
            }
        }
    }
}

/// Where a datagram came from.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// The sender's netlink port id: 0 for the kernel.
    pub port: u32,
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}
