//! UDP sockets set up like the kernel's sync sockets: the only unsafe code of the transport.
//!
//! Option for option this follows `make_send_sock` and `make_receive_sock` of
//! `net/netfilter/ipvs/ip_vs_sync.c`.

use std::ffi::CString;
use std::io;

use crate::sys::check;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::batch::{RecvBatch, SendError, Slot};
use super::Datagram;

/// Datagrams handed to one `sendmmsg` call; the headers live on the stack, so sending allocates nothing.
const SEND_CHUNK: usize = 64;

/// How a multicast sender is set up. `Default` is what a kernel master does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulticastOptions {
    /// IPv4 TTL or IPv6 hop limit; the kernel's default (`--mcast-ttl`) is 1.
    pub ttl: u8,
    /// Whether sockets of this host hear what is sent; a kernel master turns this off.
    pub loopback: bool,
    /// Which source address the socket is bound to.
    pub source: Source,
}

impl Default for MulticastOptions {
    fn default() -> Self {
        MulticastOptions { ttl: 1, loopback: false, source: Source::Interface }
    }
}

/// Source address of a multicast sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// As the kernel: IPv4 binds the interface's primary address (`bind_mcastif_addr`); IPv6
    /// binds nothing, so routing picks the link-local address.
    Interface,
    /// Bind nothing: routing picks the source.
    Routed,
    /// Bind this address (port chosen by the kernel).
    Addr(IpAddr),
}

/// A UDP socket of the sync protocol, IPv4 or IPv6.
///
/// Receiving never blocks (`MSG_DONTWAIT`): wait with [`SyncSocket::wait_readable`] or watch
/// [`AsRawFd::as_raw_fd`] from an event loop. Sending blocks when the send buffer is full
/// unless [`SyncSocket::set_nonblocking`] was called.
#[derive(Debug)]
pub struct SyncSocket {
    fd: OwnedFd,
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// `SocketAddr` to the C form the kernel takes.
fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, valid zeroed, and large and aligned enough for
    // both sockaddr_in and sockaddr_in6.
    unsafe {
        let mut storage: libc::sockaddr_storage = zeroed();
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                // As std does: flowinfo is passed through unswapped.
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, len as libc::socklen_t)
    }
}

/// The kernel's C address back to a `SocketAddr`; `None` for a family UDP never reports.
fn from_sockaddr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and `len` that it is whole.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn interface_cname(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(invalid("interface name must be 1 to 15 bytes"));
    }
    CString::new(name).map_err(|_| invalid("interface name contains a NUL byte"))
}

/// Index of the network interface `name` in the calling thread's network namespace.
pub fn interface_index(name: &str) -> io::Result<u32> {
    let cname = interface_cname(name)?;
    // SAFETY: `cname` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

/// First IPv4 address of interface `name` (its primary one, the source a kernel master binds).
pub fn interface_ipv4(name: &str) -> io::Result<Ipv4Addr> {
    let cname = interface_cname(name)?;
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we only read and then free exactly once;
    // each ifa_addr, when not null, points to a sockaddr of the family it names.
    unsafe {
        check(libc::getifaddrs(&mut list))?;
        let mut found = None;
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || std::ffi::CStr::from_ptr(ifa.ifa_name) != cname.as_c_str() {
                continue;
            }
            if libc::c_int::from((*ifa.ifa_addr).sa_family) == libc::AF_INET {
                let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                found = Some(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()));
                break;
            }
        }
        libc::freeifaddrs(list);
        found.ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "interface has no IPv4 address"))
    }
}

impl SyncSocket {
    fn new(family: libc::c_int) -> io::Result<SyncSocket> {
        // SAFETY: socket() returns a fresh descriptor that nothing else owns.
        let fd = unsafe { check(libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::IPPROTO_UDP))? };
        // SAFETY: as above.
        Ok(SyncSocket { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn for_addr(ip: &IpAddr) -> io::Result<SyncSocket> {
        SyncSocket::new(if ip.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 })
    }

    fn setopt<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` is valid for size_of::<T>() bytes; the kernel checks the length.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        })?;
        Ok(())
    }

    fn getopt_int(&self, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are locals of the sizes the kernel is told.
        check(unsafe {
            libc::getsockopt(self.fd.as_raw_fd(), level, name, (&mut value as *mut libc::c_int).cast(), &mut len)
        })?;
        Ok(value)
    }

    fn bind(&self, addr: &SocketAddr) -> io::Result<()> {
        let (storage, len) = to_sockaddr(addr);
        // SAFETY: `storage` holds a valid address of `len` bytes.
        check(unsafe { libc::bind(self.fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) })?;
        Ok(())
    }

    fn bind_device(&self, ifname: &str) -> io::Result<()> {
        let cname = interface_cname(ifname)?;
        let name = cname.as_bytes();
        // SAFETY: `name` is valid for its length; the kernel copies at most IFNAMSIZ bytes.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                name.len() as libc::socklen_t,
            )
        })?;
        Ok(())
    }

    /// A backup's receiver: address reuse, bound to `group`:`port` and to device `ifname`, and
    /// joined to `group` on that device (`make_receive_sock`).
    pub fn multicast_receiver(group: IpAddr, port: u16, ifname: &str) -> io::Result<SyncSocket> {
        if !group.is_multicast() {
            return Err(invalid("not a multicast group"));
        }
        let ifindex = interface_index(ifname)?;
        let sock = SyncSocket::for_addr(&group)?;
        sock.setopt(libc::SOL_SOCKET, libc::SO_REUSEADDR, &1 as &libc::c_int)?;
        sock.bind_device(ifname)?;
        match group {
            IpAddr::V4(g) => {
                sock.bind(&SocketAddr::V4(SocketAddrV4::new(g, port)))?;
                let mreq = libc::ip_mreqn {
                    imr_multiaddr: libc::in_addr { s_addr: u32::from_ne_bytes(g.octets()) },
                    imr_address: libc::in_addr { s_addr: libc::INADDR_ANY },
                    imr_ifindex: ifindex as libc::c_int,
                };
                sock.setopt(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)?;
            }
            IpAddr::V6(g) => {
                // A link-local group (ff02::) can only be bound with its interface.
                sock.bind(&SocketAddr::V6(SocketAddrV6::new(g, port, 0, ifindex)))?;
                let mreq = libc::ipv6_mreq {
                    ipv6mr_multiaddr: libc::in6_addr { s6_addr: g.octets() },
                    ipv6mr_interface: ifindex as libc::c_uint,
                };
                sock.setopt(libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &mreq)?;
            }
        }
        Ok(sock)
    }

    /// A master's sender: multicast out of `ifname` with `options`, fragmenting rather than
    /// setting DF (PMTU discovery off), connected to `group` (`make_send_sock`).
    pub fn multicast_sender(group: SocketAddr, ifname: &str, options: &MulticastOptions) -> io::Result<SyncSocket> {
        if !group.ip().is_multicast() {
            return Err(invalid("not a multicast group"));
        }
        let ifindex = interface_index(ifname)?;
        let sock = SyncSocket::for_addr(&group.ip())?;
        let looped = libc::c_int::from(options.loopback);
        let ttl = libc::c_int::from(options.ttl);
        let source = match (options.source, group) {
            (Source::Addr(ip), _) => Some(ip),
            (Source::Interface, SocketAddr::V4(_)) => Some(IpAddr::V4(interface_ipv4(ifname)?)),
            (Source::Interface | Source::Routed, _) => None,
        };
        let group = match group {
            SocketAddr::V4(g) => {
                let mreq = libc::ip_mreqn {
                    imr_multiaddr: libc::in_addr { s_addr: libc::INADDR_ANY },
                    imr_address: libc::in_addr { s_addr: libc::INADDR_ANY },
                    imr_ifindex: ifindex as libc::c_int,
                };
                sock.setopt(libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq)?;
                sock.setopt(libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &looped)?;
                sock.setopt(libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &ttl)?;
                sock.setopt(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, &libc::IP_PMTUDISC_DONT)?;
                SocketAddr::V4(g)
            }
            SocketAddr::V6(g) => {
                sock.setopt(libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &(ifindex as libc::c_int))?;
                sock.setopt(libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &looped)?;
                sock.setopt(libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &ttl)?;
                sock.setopt(libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, &libc::IPV6_PMTUDISC_DONT)?;
                SocketAddr::V6(SocketAddrV6::new(*g.ip(), g.port(), g.flowinfo(), ifindex))
            }
        };
        if let Some(ip) = source {
            // A link-local source address means nothing without its interface.
            let scope = if matches!(ip, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80) { ifindex } else { 0 };
            let addr = match ip {
                IpAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(a, 0)),
                IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, 0, 0, scope)),
            };
            sock.bind(&addr)?;
        }
        sock.connect(group)?;
        Ok(sock)
    }

    /// A broadcast socket on device `ifname`: bound to the IPv4 wildcard at `port` (address
    /// reuse, so several listeners may share it), sends to 255.255.255.255 leave by `ifname`.
    pub fn broadcast(port: u16, ifname: &str) -> io::Result<SyncSocket> {
        let sock = SyncSocket::new(libc::AF_INET)?;
        sock.setopt(libc::SOL_SOCKET, libc::SO_REUSEADDR, &1 as &libc::c_int)?;
        sock.setopt(libc::SOL_SOCKET, libc::SO_BROADCAST, &1 as &libc::c_int)?;
        sock.bind_device(ifname)?;
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)))?;
        Ok(sock)
    }

    /// Also receive what is sent to `group` on `ifname` (a relay backup whose
    /// primary multicasts: the socket is bound to the wildcard address and port).
    pub fn join_multicast(&self, group: IpAddr, ifname: &str) -> io::Result<()> {
        if !group.is_multicast() {
            return Err(invalid("not a multicast group"));
        }
        let ifindex = interface_index(ifname)?;
        match group {
            IpAddr::V4(g) => {
                let mreq = libc::ip_mreqn {
                    imr_multiaddr: libc::in_addr { s_addr: u32::from_ne_bytes(g.octets()) },
                    imr_address: libc::in_addr { s_addr: libc::INADDR_ANY },
                    imr_ifindex: ifindex as libc::c_int,
                };
                self.setopt(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)
            }
            IpAddr::V6(g) => {
                let mreq = libc::ipv6_mreq {
                    ipv6mr_multiaddr: libc::in6_addr { s6_addr: g.octets() },
                    ipv6mr_interface: ifindex as libc::c_uint,
                };
                self.setopt(libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &mreq)
            }
        }
    }

    /// Send multicast out of `ifname` with `options.ttl` and `options.loopback`, from
    /// this (unconnected) socket: a relay primary keeps receiving its backups' replies on it.
    pub fn set_multicast_out(&self, ipv6: bool, ifname: &str, options: &MulticastOptions) -> io::Result<()> {
        let ifindex = interface_index(ifname)?;
        let (looped, ttl) = (libc::c_int::from(options.loopback), libc::c_int::from(options.ttl));
        if ipv6 {
            self.setopt(libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &(ifindex as libc::c_int))?;
            self.setopt(libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &looped)?;
            self.setopt(libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &ttl)
        } else {
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: libc::INADDR_ANY },
                imr_address: libc::in_addr { s_addr: libc::INADDR_ANY },
                imr_ifindex: ifindex as libc::c_int,
            };
            self.setopt(libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq)?;
            self.setopt(libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &looped)?;
            self.setopt(libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &ttl)
        }
    }

    /// A unicast socket bound to `bind` (port 0: any), and to `device` if given.
    pub fn unicast(bind: SocketAddr, device: Option<&str>) -> io::Result<SyncSocket> {
        let sock = SyncSocket::for_addr(&bind.ip())?;
        if let Some(ifname) = device {
            sock.bind_device(ifname)?;
        }
        sock.bind(&bind)?;
        Ok(sock)
    }

    /// Send to and receive from `peer` only; [`SyncSocket::send_batch`] may then omit the destination.
    pub fn connect(&self, peer: SocketAddr) -> io::Result<()> {
        let (storage, len) = to_sockaddr(&peer);
        loop {
            // SAFETY: `storage` holds a valid address of `len` bytes.
            let ret =
                unsafe { libc::connect(self.fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) };
            match check(ret) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map(drop),
            }
        }
    }

    /// Make sends fail with `WouldBlock` instead of waiting for buffer space (as asyncio wants).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
        unsafe {
            let flags = check(libc::fcntl(fd, libc::F_GETFL))?;
            let flags = if nonblocking { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
            check(libc::fcntl(fd, libc::F_SETFL, flags))?;
        }
        Ok(())
    }

    fn set_buffer(&self, force: libc::c_int, plain: libc::c_int, bytes: usize) -> io::Result<usize> {
        // The kernel doubles the value for its bookkeeping; ask for half of i32::MAX at most.
        let value = bytes.min(i32::MAX as usize / 2) as libc::c_int;
        // Like the kernel's `sync_sock_size`, go past net.core.[rw]mem_max when privileged
        // (CAP_NET_ADMIN): a backup must absorb a master's bursts.
        if let Err(e) = self.setopt(libc::SOL_SOCKET, force, &value) {
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(e);
            }
            self.setopt(libc::SOL_SOCKET, plain, &value)?;
        }
        Ok(self.getopt_int(libc::SOL_SOCKET, plain)? as usize)
    }

    /// Set SO_RCVBUF (forced past the sysctl limit when privileged); returns the size the kernel
    /// reports, which counts its overhead (about twice `bytes`).
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<usize> {
        self.set_buffer(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, bytes)
    }

    /// Set SO_SNDBUF, as [`SyncSocket::set_recv_buffer`] does SO_RCVBUF.
    pub fn set_send_buffer(&self, bytes: usize) -> io::Result<usize> {
        self.set_buffer(libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes)
    }

    /// The address the socket is bound to (with the port the kernel chose).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        // SAFETY: sockaddr_storage is valid zeroed; the kernel writes at most `len` bytes.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: as above.
        check(unsafe {
            libc::getsockname(self.fd.as_raw_fd(), (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len)
        })?;
        from_sockaddr(&storage, len).ok_or_else(|| io::Error::other("unexpected address family"))
    }

    /// Wait until a datagram can be received, or `timeout` passes (`None`: forever).
    /// Returns whether the socket is readable.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let ms = match deadline {
                None => -1,
                // Round up so a short timeout does not turn into a busy poll of 0 ms.
                Some(d) => d.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000).min(i32::MAX as u128)
                    as libc::c_int,
            };
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one pollfd, a local.
            match check(unsafe { libc::poll(&mut pfd, 1, ms) }) {
                Ok(n) => return Ok(n > 0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Receive every datagram queued, up to the batch's capacity, with one `recvmmsg` call.
    /// Returns how many; `WouldBlock` when none is queued.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.filled = 0;
        let count = batch.slots.len();
        let slot_len = batch.slot_len;
        let data = batch.data.as_mut_ptr();
        let scratch = &mut batch.scratch;
        // Pointers are set afresh on each call from `&mut batch`, so none outlives a borrow.
        for (i, iov) in scratch.iovs.iter_mut().enumerate() {
            *iov = libc::iovec { iov_base: data.wrapping_add(i * slot_len).cast(), iov_len: slot_len };
        }
        let iovs = scratch.iovs.as_mut_ptr();
        let names = scratch.names.as_mut_ptr();
        for (i, h) in scratch.hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = names.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iovs.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let got = loop {
            // SAFETY: `count` headers, each pointing to one iovec of `slot_len` bytes inside
            // `batch.data` and to one sockaddr_storage, all owned by `batch` and exclusively
            // borrowed for the call. MSG_TRUNC makes msg_len the datagram's full length.
            let ret = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    scratch.hdrs.as_mut_ptr(),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    std::ptr::null_mut(),
                )
            };
            match check(ret) {
                Ok(n) => break n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        for (slot, (h, name)) in batch.slots.iter_mut().zip(scratch.hdrs.iter().zip(&scratch.names)).take(got) {
            *slot = Slot {
                len: h.msg_len as usize,
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                source: from_sockaddr(name, h.msg_hdr.msg_namelen).unwrap_or(UNKNOWN_SOURCE),
            };
        }
        batch.filled = got;
        Ok(got)
    }

    /// Receive one datagram into `buf` (one syscall per datagram: the baseline that
    /// [`SyncSocket::recv_batch`] beats). `WouldBlock` when none is queued.
    pub fn recv_from<'b>(&self, buf: &'b mut [u8]) -> io::Result<Datagram<'b>> {
        // SAFETY: sockaddr_storage is valid zeroed.
        let mut name: libc::sockaddr_storage = unsafe { zeroed() };
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: msghdr is valid zeroed (no control data).
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        let len = loop {
            // SAFETY: `msg` points to `iov` (covering `buf`) and `name`, locals that outlive the call.
            let ret = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
            if ret >= 0 {
                break ret as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let truncated = msg.msg_flags & libc::MSG_TRUNC != 0;
        let source = from_sockaddr(&name, msg.msg_namelen).unwrap_or(UNKNOWN_SOURCE);
        let kept = len.min(buf.len());
        Ok(Datagram { bytes: &buf[..kept], len, source, truncated })
    }

    /// Send one datagram on a connected socket.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.send_one(buf, None)
    }

    /// Send one datagram to `dest`.
    pub fn send_to(&self, buf: &[u8], dest: SocketAddr) -> io::Result<usize> {
        self.send_one(buf, Some(dest))
    }

    fn send_one(&self, buf: &[u8], dest: Option<SocketAddr>) -> io::Result<usize> {
        let name = dest.as_ref().map(to_sockaddr);
        let (ptr, len) = match &name {
            Some((storage, len)) => ((storage as *const libc::sockaddr_storage).cast(), *len),
            None => (std::ptr::null(), 0),
        };
        loop {
            // SAFETY: `buf` is valid for its length; `ptr` is null or a valid address of `len` bytes.
            let ret = unsafe { libc::sendto(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0, ptr, len) };
            if ret >= 0 {
                return Ok(ret as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Send `datagrams` with `sendmmsg`, in calls of up to 64, to `dest` (or the connected peer
    /// when `None`). Returns how many went out, which is all of them unless an error is
    /// returned; the error tells how many were sent before it (`WouldBlock` on a non-blocking
    /// socket whose buffer is full). Allocates nothing.
    pub fn send_batch(&self, datagrams: &[&[u8]], dest: Option<SocketAddr>) -> Result<usize, SendError> {
        let name = dest.as_ref().map(to_sockaddr);
        let mut sent = 0;
        while sent < datagrams.len() {
            let chunk = &datagrams[sent..datagrams.len().min(sent + SEND_CHUNK)];
            // SAFETY: both are plain C structs, valid zeroed.
            let mut iovs: [libc::iovec; SEND_CHUNK] = unsafe { zeroed() };
            // SAFETY: as above.
            let mut hdrs: [libc::mmsghdr; SEND_CHUNK] = unsafe { zeroed() };
            for (i, d) in chunk.iter().enumerate() {
                // The kernel only reads through iov_base when sending.
                iovs[i] = libc::iovec { iov_base: d.as_ptr() as *mut libc::c_void, iov_len: d.len() };
                let h = &mut hdrs[i].msg_hdr;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
                if let Some((storage, len)) = &name {
                    h.msg_name = (storage as *const libc::sockaddr_storage as *mut libc::sockaddr_storage).cast();
                    h.msg_namelen = *len;
                }
            }
            // SAFETY: `chunk.len()` headers, each pointing to one iovec over a live datagram and
            // to `name` (or null); all outlive the call, and the kernel writes only msg_len.
            let ret = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), hdrs.as_mut_ptr(), chunk.len() as libc::c_uint, 0) };
            match check(ret) {
                Ok(0) => return Err(SendError { sent, error: io::ErrorKind::WriteZero.into() }),
                Ok(n) => sent += n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(SendError { sent, error }),
            }
        }
        Ok(sent)
    }
}

/// Reported as the source of a datagram whose address the kernel did not give (never seen for UDP).
const UNKNOWN_SOURCE: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

impl AsRawFd for SyncSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for SyncSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<SyncSocket> for OwnedFd {
    fn from(sock: SyncSocket) -> OwnedFd {
        sock.fd
    }
}

/// The `recvmmsg` headers of a [`RecvBatch`], with the addresses they point to.
pub(super) struct Scratch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
}

impl Scratch {
    pub(super) fn new(count: usize) -> Scratch {
        // SAFETY: plain C structs, valid zeroed.
        let (hdr, iov, name) = unsafe { (zeroed(), zeroed(), zeroed()) };
        Scratch { hdrs: vec![hdr; count], iovs: vec![iov; count], names: vec![name; count] }
    }
}

// SAFETY: the raw pointers in `hdrs` and `iovs` are only written, from `&mut RecvBatch`, just
// before the `recvmmsg` call that uses them, and never read by Rust code; between calls they are
// inert data, so moving or sharing a batch across threads is sound.
unsafe impl Send for Scratch {}
// SAFETY: see `Send`; a shared reference never reaches the pointers.
unsafe impl Sync for Scratch {}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").field("count", &self.hdrs.len()).finish()
    }
}
