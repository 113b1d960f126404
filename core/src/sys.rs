//! The few Linux calls the engine threads (heartbeat, TCP prober) need, wrapped:
//! eventfd, timerfd, epoll, real-time scheduling, a raw tty, and stopping a
//! worker thread. The only unsafe code of those engines.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A libc call's return value, or the errno it set.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(fd)?;
    // SAFETY: a descriptor just returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_u64(fd: RawFd) -> io::Result<u64> {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into a local u64.
    let n = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    if n == 8 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A non-blocking eventfd: a counter that makes its descriptor readable.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A fresh eventfd at 0.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall.
        owned(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }).map(EventFd)
    }

    /// Make it readable.
    pub fn notify(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a local. A full counter (EAGAIN) is still readable: ignored.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Reset to 0; returns whether it was set.
    pub fn clear(&self) -> bool {
        read_u64(self.0.as_raw_fd()).is_ok()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Monotonic clock, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time used by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: fills a local timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec { tv_sec: (ns / 1_000_000_000) as libc::time_t, tv_nsec: (ns % 1_000_000_000) as libc::c_long }
}

/// A periodic CLOCK_MONOTONIC timer whose first expiry is an absolute time.
#[derive(Debug)]
pub struct TimerFd(OwnedFd);

impl TimerFd {
    /// Expire at `first_ns` (monotonic), then every `interval`.
    pub fn periodic(first_ns: u64, interval: Duration) -> io::Result<TimerFd> {
        // SAFETY: plain syscall.
        let fd = owned(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) })?;
        let spec = libc::itimerspec { it_interval: timespec(interval.as_nanos() as u64), it_value: timespec(first_ns) };
        // SAFETY: `spec` is a valid local; the old value is not wanted.
        check(unsafe { libc::timerfd_settime(fd.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) })?;
        Ok(TimerFd(fd))
    }

    /// Expirations since the last read (0 if none).
    pub fn expirations(&self) -> u64 {
        read_u64(self.0.as_raw_fd()).unwrap_or(0)
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// An epoll set whose events carry a caller-chosen token.
#[derive(Debug)]
pub struct Epoll(OwnedFd);

impl Epoll {
    /// An empty set.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).map(Epoll)
    }

    /// Watch `fd` for input, reported as `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: `ev` is a valid local.
        check(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    /// Stop watching `fd`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is a valid local (ignored by the kernel for DEL).
        check(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) })?;
        Ok(())
    }

    /// Wait for events; fills `tokens`, returns how many. EINTR counts as none.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: `events` is valid for its length.
        let n = unsafe {
            libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), events.len() as libc::c_int, timeout_ms)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
        }
        Ok(n as usize)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Run the calling thread under SCHED_FIFO at `priority` (1–99).
pub fn set_fifo(priority: i32) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: `param` is a valid local; 0 is the calling thread.
    check(unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) })?;
    Ok(())
}

/// Open a tty in raw mode (8N1, no echo, no flow control) at `baud`, non-blocking.
pub fn open_serial(path: &Path, baud: u32) -> io::Result<OwnedFd> {
    let cpath = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let speed = match baud {
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        460800 => libc::B460800,
        921600 => libc::B921600,
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "unsupported baud rate")),
    };
    // SAFETY: `cpath` is NUL-terminated and outlives the call.
    let fd = owned(unsafe {
        libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
    })?;
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        check(libc::tcgetattr(fd.as_raw_fd(), &mut t))?;
        libc::cfmakeraw(&mut t);
        t.c_cflag |= libc::CLOCAL | libc::CREAD;
        t.c_cflag &= !(libc::CRTSCTS | libc::CSTOPB);
        t.c_iflag &= !(libc::IXON | libc::IXOFF);
        t.c_cc[libc::VMIN] = 0;
        t.c_cc[libc::VTIME] = 0;
        check(libc::cfsetspeed(&mut t, speed))?;
        check(libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t))?;
    }
    Ok(fd)
}

/// Read what is available (non-blocking): `Ok(0)` when nothing is.
pub fn read_some(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(0)
    } else {
        Err(e)
    }
}

/// Write all of `buf` or fail (a full tty buffer is `WouldBlock`: that heartbeat is lost).
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Stop a worker thread that watches `stop` and sleeps on `wake`: raise the
/// flag, wake it, wait for it to end. Idempotent (the handle is taken).
pub fn stop_worker(thread: &mut Option<JoinHandle<()>>, stop: &AtomicBool, wake: &EventFd) {
    if let Some(t) = thread.take() {
        stop.store(true, Ordering::Release);
        wake.notify();
        let _ = t.join();
    }
}

/// Whether a worker thread is still running.
pub fn worker_running(thread: &Option<JoinHandle<()>>) -> bool {
    thread.as_ref().is_some_and(|t| !t.is_finished())
}
