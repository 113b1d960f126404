//! TCP connect prober: thousands of health checks a second, each a
//! non-blocking connect closed with RST, on a schedule the prober owns.
//!
//! Design: one thread of its own (epoll + a one-shot timerfd), like the
//! heartbeat engine, rather than a sans-thread core driven from asyncio. The
//! caller submits each check once (target, interval, phase, timeout,
//! retries); the thread fires runs on their grid from a heap, watches the
//! connects, expires them, retries, and queues one [`Outcome`] per run. Python
//! never schedules a check: it is woken through an eventfd at most once per
//! [`BATCH_NS`] and drains the whole batch, so its cost per check is one tuple
//! and the rise/fall bookkeeping. Lateness does not depend on how busy the
//! asyncio loop is, only on this thread.

mod engine;

pub use engine::{Outcome, Prober, Spec, Stats, BATCH_NS, TICK_NS};
