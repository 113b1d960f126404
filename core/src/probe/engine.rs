//! The prober thread and its handle.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::sys::{self, monotonic_ns, thread_cpu_ns, Epoll, EventFd};

/// Results are handed over at most this often (ns): one wake of the caller per batch.
pub const BATCH_NS: u64 = 5_000_000;

/// Runs are fired on ticks of this length (ns), every run due within one together: at
/// 10,000 checks a second a wake per run cost more CPU (a context switch each, on a
/// VM) than the connects themselves. Lateness stays under one tick.
pub const TICK_NS: u64 = 1_000_000;

const TOKEN_TIMER: u64 = u64::MAX;
const TOKEN_WAKE: u64 = u64::MAX - 1;

/// One check as submitted: where, and when (monotonic ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The server's address and port (IPv4 or IPv6).
    pub addr: SocketAddr,
    /// The first run's scheduled time; later runs are `interval_ns` apart.
    pub first_due_ns: u64,
    /// Time between scheduled runs (> 0).
    pub interval_ns: u64,
    /// Per attempt.
    pub timeout_ns: u64,
    /// Quick attempts after a failed one before the run counts as failed.
    pub retries: u32,
    /// Wait before each retry.
    pub retry_delay_ns: u64,
}

/// What one run found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The caller's id of the check.
    pub id: u64,
    /// 0 when the handshake completed, else the errno (ETIMEDOUT on timeout).
    pub errno: i32,
    /// Connect to verdict, last attempt (µs).
    pub latency_us: u64,
    /// How late the run started after its scheduled time (µs).
    pub late_us: u64,
    /// Retries this run used.
    pub retries: u32,
    /// Slots skipped because this run overran its own.
    pub skipped: u64,
}

/// Counters of the prober thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Checks scheduled.
    pub checks: u64,
    /// Connects started.
    pub connects: u64,
    /// Outcomes dropped because the caller did not drain (queue full).
    pub dropped: u64,
    /// CPU time of the thread (µs), as of its last wake.
    pub cpu_us: u64,
}

/// Outcomes kept while the caller does not drain; one per check covers a stalled second.
const MAX_QUEUED: usize = 1 << 20;

enum Command {
    Add(u64, Spec),
    Remove(u64),
}

#[derive(Default)]
struct State {
    commands: Vec<Command>,
    outcomes: Vec<Outcome>,
    stats: Stats,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    wake: EventFd,
    results: EventFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn command(&self, c: impl IntoIterator<Item = Command>) {
        self.lock().commands.extend(c);
        self.wake.notify();
    }
}

/// A running prober: its thread connects on schedule; outcomes queue behind [`Prober::event_fd`].
pub struct Prober {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    /// Start the thread (probes leave from the caller's network namespace).
    pub fn start() -> io::Result<Prober> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
            wake: EventFd::new()?,
            results: EventFd::new()?,
        });
        let epoll = Epoll::new()?;
        let timer = oneshot_timer()?;
        epoll.add(timer.as_raw_fd(), TOKEN_TIMER)?;
        epoll.add(shared.wake.as_raw_fd(), TOKEN_WAKE)?;
        let runner = Runner {
            shared: Arc::clone(&shared),
            epoll,
            timer,
            armed_ns: 0,
            checks: HashMap::new(),
            heap: BinaryHeap::new(),
            ready: Vec::new(),
            flush_ns: None,
            connects: 0,
        };
        let thread = std::thread::Builder::new().name("us-prober".into()).spawn(move || runner.run())?;
        Ok(Prober { shared, thread: Some(thread) })
    }

    /// Schedule checks (an id already present is replaced); ids `u64::MAX - 1` and up are refused.
    pub fn add(&self, checks: impl IntoIterator<Item = (u64, Spec)>) -> Result<(), u64> {
        let checks: Vec<(u64, Spec)> = checks.into_iter().collect();
        if let Some(&(id, _)) = checks.iter().find(|(id, s)| *id >= TOKEN_WAKE || s.interval_ns == 0) {
            return Err(id);
        }
        self.shared.command(checks.into_iter().map(|(id, s)| Command::Add(id, s)));
        Ok(())
    }

    /// Unschedule checks; an attempt in flight is abandoned and reports nothing.
    pub fn remove(&self, ids: impl IntoIterator<Item = u64>) {
        self.shared.command(ids.into_iter().map(Command::Remove));
    }

    /// Readable while outcomes are queued (an eventfd; [`Prober::drain`] clears it).
    pub fn event_fd(&self) -> RawFd {
        self.shared.results.as_raw_fd()
    }

    /// Take every queued outcome.
    pub fn drain(&self) -> Vec<Outcome> {
        self.shared.results.clear();
        mem::take(&mut self.shared.lock().outcomes)
    }

    /// The thread's counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats
    }

    /// Stop the thread, closing every connect in flight. Idempotent.
    pub fn stop(&mut self) {
        sys::stop_worker(&mut self.thread, &self.shared.stop, &self.shared.wake);
    }

    /// Whether the thread runs.
    pub fn running(&self) -> bool {
        sys::worker_running(&self.thread)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Fire,
    Retry,
    Expire,
}

struct Check {
    spec: Spec,
    due_ns: u64,
    late_us: u64,
    attempt: u32,
    // Bumped per attempt: heap items of an earlier one are stale.
    gen: u32,
    sock: Option<OwnedFd>,
    started_ns: u64,
}

type Item = Reverse<(u64, u64, u32, Action)>; // (when, id, gen, action)

struct Runner {
    shared: Arc<Shared>,
    epoll: Epoll,
    timer: OwnedFd,
    armed_ns: u64,
    checks: HashMap<u64, Check>,
    heap: BinaryHeap<Item>,
    ready: Vec<Outcome>,
    flush_ns: Option<u64>,
    connects: u64,
}

impl Runner {
    fn run(mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        while !self.shared.stop.load(Ordering::Acquire) {
            let Ok(n) = self.epoll.wait(&mut events, -1) else { break };
            let mut now = monotonic_ns();
            for ev in &events[..n] {
                match ev.u64 {
                    TOKEN_TIMER => drain_timer(&self.timer),
                    TOKEN_WAKE => {
                        self.shared.wake.clear();
                        let commands = mem::take(&mut self.shared.lock().commands);
                        for c in commands {
                            self.command(c);
                        }
                    }
                    id => self.writable(id, now),
                }
            }
            // Connects take microseconds each: a long batch of due runs reads the clock again.
            let mut served = 0u32;
            while let Some(&Reverse((when, id, gen, action))) = self.heap.peek() {
                if when > now {
                    break;
                }
                self.heap.pop();
                self.due(id, gen, action, now);
                served += 1;
                if served % 64 == 0 {
                    now = monotonic_ns();
                }
            }
            if !self.ready.is_empty() && self.flush_ns.is_none() {
                self.flush_ns = Some(now + BATCH_NS);
            }
            if self.flush_ns.is_some_and(|f| f <= now) {
                self.flush();
            }
            self.rearm();
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Add(id, spec) => {
                let check = Check {
                    spec,
                    due_ns: spec.first_due_ns,
                    late_us: 0,
                    attempt: 0,
                    gen: 0,
                    sock: None,
                    started_ns: 0,
                };
                // A replaced check's socket closes here; its heap items go stale (gen 0 is reused,
                // so its generation continues from the old one).
                let gen = self.checks.get(&id).map_or(0, |c| c.gen.wrapping_add(1));
                self.checks.insert(id, Check { gen, ..check });
                self.heap.push(Reverse((spec.first_due_ns, id, gen, Action::Fire)));
            }
            Command::Remove(id) => {
                self.checks.remove(&id);
            }
        }
    }

    fn due(&mut self, id: u64, gen: u32, action: Action, now: u64) {
        let Some(c) = self.checks.get_mut(&id) else { return };
        if c.gen != gen {
            return;
        }
        match action {
            Action::Fire => {
                c.late_us = now.saturating_sub(c.due_ns) / 1000;
                c.attempt = 0;
                self.attempt(id, now);
            }
            Action::Retry => self.attempt(id, now),
            Action::Expire => self.finish(id, libc::ETIMEDOUT, now),
        }
    }

    fn attempt(&mut self, id: u64, now: u64) {
        let epoll = self.epoll.as_raw_fd();
        let Some(c) = self.checks.get_mut(&id) else { return };
        self.connects += 1;
        c.gen = c.gen.wrapping_add(1);
        // The loop's `now` may be a few dozen connects old: latency wants the real start.
        c.started_ns = monotonic_ns();
        match connect(&c.spec.addr) {
            Ok(sock) => {
                // On loopback (and to a near server) the handshake is often done by now:
                // then no epoll registration, no wake. Elsewhere it costs one poll().
                if let Some(err) = connected_now(sock.as_raw_fd()) {
                    c.sock = Some(sock);
                    self.finish(id, err, monotonic_ns());
                    return;
                }
                let mut ev = libc::epoll_event { events: libc::EPOLLOUT as u32, u64: id };
                // SAFETY: `ev` is a valid local; `sock` is open.
                let r = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, sock.as_raw_fd(), &mut ev) };
                if r < 0 {
                    let e = errno();
                    self.finish(id, e, now);
                    return;
                }
                c.sock = Some(sock);
                self.heap.push(Reverse((now.saturating_add(c.spec.timeout_ns), id, c.gen, Action::Expire)));
            }
            Err(e) => self.finish(id, e, now),
        }
    }

    fn writable(&mut self, id: u64, now: u64) {
        let Some(c) = self.checks.get(&id) else { return };
        let Some(sock) = &c.sock else { return };
        let err = so_error(sock.as_raw_fd());
        self.finish(id, err, now);
    }

    /// An attempt ended (`err` 0 is success): retry, or report the run and schedule the next.
    fn finish(&mut self, id: u64, err: i32, now: u64) {
        let Some(c) = self.checks.get_mut(&id) else { return };
        c.sock = None; // closing drops it from the epoll set, with RST (SO_LINGER 0)
        c.gen = c.gen.wrapping_add(1);
        if err != 0 && c.attempt < c.spec.retries {
            c.attempt += 1;
            self.heap.push(Reverse((now.saturating_add(c.spec.retry_delay_ns), id, c.gen, Action::Retry)));
            return;
        }
        let interval = c.spec.interval_ns;
        // Saturating: times come from the caller, and a far-off one must not panic the thread.
        c.due_ns = c.due_ns.saturating_add(interval);
        let mut skipped = 0;
        if c.due_ns < now {
            // The run overran its slot: skip the missed ones, no burst.
            skipped = (now - c.due_ns).div_ceil(interval);
            c.due_ns = c.due_ns.saturating_add(skipped.saturating_mul(interval));
        }
        self.heap.push(Reverse((c.due_ns, id, c.gen, Action::Fire)));
        self.ready.push(Outcome {
            id,
            errno: err,
            latency_us: now.saturating_sub(c.started_ns) / 1000,
            late_us: c.late_us,
            retries: c.attempt,
            skipped,
        });
    }

    fn flush(&mut self) {
        self.flush_ns = None;
        let mut st = self.shared.lock();
        let room = MAX_QUEUED.saturating_sub(st.outcomes.len());
        let n = self.ready.len();
        st.stats.dropped += n.saturating_sub(room) as u64;
        st.outcomes.extend(self.ready.drain(..).take(room));
        st.stats.checks = self.checks.len() as u64;
        st.stats.connects = self.connects;
        st.stats.cpu_us = thread_cpu_ns() / 1000;
        drop(st);
        self.shared.results.notify();
    }

    fn rearm(&mut self) {
        let next = self.heap.peek().map(|Reverse((w, ..))| w.div_ceil(TICK_NS).saturating_mul(TICK_NS));
        let at = match (next, self.flush_ns) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(0),
        };
        if at != self.armed_ns {
            self.armed_ns = at;
            set_timer(&self.timer, at);
        }
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn check(ret: libc::c_int) -> Result<libc::c_int, i32> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// A non-blocking connect under way (or done), set to close with RST.
fn connect(addr: &SocketAddr) -> Result<OwnedFd, i32> {
    // SAFETY: sockaddr_storage is plain data; the family-specific view is written in full below.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let (family, len) = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            (libc::AF_INET, mem::size_of::<libc::sockaddr_in>())
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            (libc::AF_INET6, mem::size_of::<libc::sockaddr_in6>())
        }
    };
    // SAFETY: plain syscall.
    let fd = check(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a descriptor just returned by the kernel, owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // Close with RST, as HAProxy's checks do: thousands of checks a second would
    // otherwise leave as many TIME_WAIT sockets on the director.
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `linger` is a valid local of the size given.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })?;
    // SAFETY: `ss` holds an address of `len` bytes.
    let r = unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len as libc::socklen_t) };
    if r < 0 {
        let e = errno();
        if e != libc::EINPROGRESS {
            return Err(e);
        }
    }
    // Even a connect that completed at once is reported through epoll (writable at once).
    Ok(sock)
}

/// The connect's verdict if it already has one (writable or failed), without waiting.
fn connected_now(fd: RawFd) -> Option<i32> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    (n > 0 && pfd.revents != 0).then(|| so_error(fd))
}

fn so_error(fd: RawFd) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid locals of the sizes given.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut len)
    };
    if r < 0 {
        errno()
    } else {
        err
    }
}

fn oneshot_timer() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Fire once at `at_ns` (monotonic, absolute); 0 disarms.
fn set_timer(timer: &OwnedFd, at_ns: u64) {
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // An absolute time of 0 would disarm: a time already past is 1 ns.
    let value = if at_ns == 0 {
        zero
    } else {
        libc::timespec {
            tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
        }
    };
    let spec = libc::itimerspec { it_interval: zero, it_value: value };
    // SAFETY: `spec` is a valid local; the old value is not wanted.
    unsafe { libc::timerfd_settime(timer.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
}

fn drain_timer(timer: &OwnedFd) {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into a local u64; EAGAIN (nothing) is fine.
    unsafe { libc::read(timer.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
}
