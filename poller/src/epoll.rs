//! One safe epoll type for the whole daemon: the reactor's idle sleep, the
//! NVMe/TCP poll group and its connections all go through it, so the only
//! `unsafe` epoll code is here. Modelled on vmm-sys-util's `Epoll`: typed
//! events, a caller-chosen `u64` token per fd, and waits that fill a
//! buffer the caller keeps (no allocation per wait, which matters to a
//! poll group that waits with timeout 0 on every pass).

use std::io;
use std::ops::BitOr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A set of epoll event bits: the interest given to `add`/`modify`, and
/// what a wait reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events(u32);

impl Events {
    /// No events (a registration that only reports errors and hangups).
    pub const EMPTY: Events = Events(0);
    /// Data to read (EPOLLIN).
    pub const READABLE: Events = Events(libc::EPOLLIN as u32);
    /// Room to write (EPOLLOUT).
    pub const WRITABLE: Events = Events(libc::EPOLLOUT as u32);
    /// The peer shut its write side down (EPOLLRDHUP).
    pub const READ_HANGUP: Events = Events(libc::EPOLLRDHUP as u32);
    /// Edge-triggered instead of level-triggered (EPOLLET).
    pub const EDGE_TRIGGERED: Events = Events(libc::EPOLLET as u32);
    /// Both sides hung up (EPOLLHUP); always reported, never requested.
    pub const HANGUP: Events = Events(libc::EPOLLHUP as u32);
    /// An error is pending on the fd (EPOLLERR); always reported.
    pub const ERROR: Events = Events(libc::EPOLLERR as u32);

    /// The raw bits, as epoll_ctl takes them.
    #[inline]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set.
    #[inline]
    pub const fn contains(self, other: Events) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set.
    #[inline]
    pub const fn intersects(self, other: Events) -> bool {
        self.0 & other.0 != 0
    }

    /// The bits of both (`|`, usable in constants).
    #[inline]
    pub const fn union(self, other: Events) -> Events {
        Events(self.0 | other.0)
    }

    /// `self` without the bits of `other`.
    #[inline]
    pub const fn without(self, other: Events) -> Events {
        Events(self.0 & !other.0)
    }

    /// Whether a read would not block: data, end of stream, or an error
    /// (which the read then reports).
    #[inline]
    pub const fn is_readable(self) -> bool {
        self.intersects(Events(
            Events::READABLE.0 | Events::READ_HANGUP.0 | Events::HANGUP.0 | Events::ERROR.0,
        ))
    }

    /// Whether a write would not block (or would report an error).
    #[inline]
    pub const fn is_writable(self) -> bool {
        self.intersects(Events(
            Events::WRITABLE.0 | Events::HANGUP.0 | Events::ERROR.0,
        ))
    }
}

impl BitOr for Events {
    type Output = Events;

    #[inline]
    fn bitor(self, rhs: Events) -> Events {
        self.union(rhs)
    }
}

/// One reported event: the token the fd was registered with and what is
/// ready.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Event(libc::epoll_event);

impl Event {
    const ZERO: Event = Event(libc::epoll_event { events: 0, u64: 0 });

    /// The token given to `add`/`modify` for this fd.
    #[inline]
    pub fn token(&self) -> u64 {
        // A copy, not a reference: epoll_event is packed on x86-64.
        self.0.u64
    }

    /// What is ready.
    #[inline]
    pub fn events(&self) -> Events {
        Events(self.0.events)
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("token", &self.token())
            .field("events", &self.events())
            .finish()
    }
}

/// A reusable buffer for `Epoll::wait`, sized once.
pub struct EventBuf {
    events: Box<[Event]>,
}

impl EventBuf {
    /// A buffer taking up to `capacity` events per wait (at least one:
    /// epoll_wait refuses a zero-length buffer).
    pub fn new(capacity: usize) -> EventBuf {
        // epoll_wait takes the length as a c_int.
        let capacity = capacity.clamp(1, libc::c_int::MAX as usize);
        EventBuf {
            events: vec![Event::ZERO; capacity].into_boxed_slice(),
        }
    }

    /// Events taken per wait.
    pub fn capacity(&self) -> usize {
        self.events.len()
    }
}

/// An epoll instance (closed on drop).
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// A new epoll instance, close-on-exec.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked
        // before it is used.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    /// Watches `fd` for `events`; waits report them with `token`.
    pub fn add(&self, fd: RawFd, events: Events, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Changes the interest (and token) of a watched `fd`.
    pub fn modify(&self, fd: RawFd, events: Events, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// Stops watching `fd`. Call before closing it: epoll watches the open
    /// file, not the number, so a dup'd descriptor would keep reporting.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, Events::EMPTY, 0)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: Events, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events.bits(),
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event that lives across the call
        // (kernels before 2.6.9 require it even for DEL); `self.fd` is an
        // open epoll descriptor. `fd` is only a number to the kernel, which
        // checks it (EBADF), so no memory is at stake if it is stale.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` (`None`: forever; zero: just looks) for events
    /// and returns those ready, at most `buf.capacity()`. A timeout is
    /// rounded up to whole milliseconds, so a wait for 0.3 ms does not turn
    /// into a spin of zero-timeout waits. A signal ending the wait early
    /// returns no events: callers loop and re-check their state anyway.
    pub fn wait<'a>(
        &self,
        buf: &'a mut EventBuf,
        timeout: Option<Duration>,
    ) -> io::Result<&'a [Event]> {
        let ms: libc::c_int = match timeout {
            None => -1,
            Some(t) => t
                .as_micros()
                .div_ceil(1000)
                .try_into()
                .unwrap_or(libc::c_int::MAX),
        };
        let cap = buf.events.len();
        // SAFETY: `buf.events` is a writable array of `cap` Events, and
        // Event is a transparent wrapper of epoll_event, so the kernel
        // writes at most `cap` valid epoll_events into it. `cap` fits a
        // c_int (EventBuf::new clamps it).
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                buf.events.as_mut_ptr().cast::<libc::epoll_event>(),
                cap as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(&[]);
            }
            return Err(e);
        }
        Ok(&buf.events[..(n as usize).min(cap)])
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn ready(ep: &Epoll, buf: &mut EventBuf) -> Vec<(u64, Events)> {
        ep.wait(buf, Some(Duration::ZERO))
            .unwrap()
            .iter()
            .map(|e| (e.token(), e.events()))
            .collect()
    }

    #[test]
    fn reports_readiness_with_the_token() {
        let ep = Epoll::new().unwrap();
        let (a, mut b) = pair();
        let token = 0xdead_beef_0000_0007;
        ep.add(a.as_raw_fd(), Events::READABLE, token).unwrap();
        let mut buf = EventBuf::new(4);
        assert!(ready(&ep, &mut buf).is_empty(), "nothing written yet");
        b.write_all(b"x").unwrap();
        let got = ready(&ep, &mut buf);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, token);
        assert!(got[0].1.is_readable());
        assert!(!got[0].1.contains(Events::WRITABLE));
        // Level-triggered: still ready while unread.
        assert_eq!(ready(&ep, &mut buf).len(), 1);
    }

    #[test]
    fn modify_changes_interest_and_token() {
        let ep = Epoll::new().unwrap();
        let (a, _b) = pair();
        ep.add(a.as_raw_fd(), Events::READABLE, 1).unwrap();
        let mut buf = EventBuf::new(4);
        assert!(ready(&ep, &mut buf).is_empty());
        // An empty socket buffer is writable at once.
        ep.modify(a.as_raw_fd(), Events::READABLE | Events::WRITABLE, 2)
            .unwrap();
        let got = ready(&ep, &mut buf);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 2);
        assert!(got[0].1.is_writable() && !got[0].1.contains(Events::READABLE));
        ep.modify(a.as_raw_fd(), Events::READABLE, 3).unwrap();
        assert!(ready(&ep, &mut buf).is_empty());
    }

    #[test]
    fn delete_stops_reports_and_errors_are_typed() {
        let ep = Epoll::new().unwrap();
        let (a, mut b) = pair();
        ep.add(a.as_raw_fd(), Events::READABLE, 9).unwrap();
        b.write_all(b"x").unwrap();
        let mut buf = EventBuf::new(4);
        assert_eq!(ready(&ep, &mut buf).len(), 1);
        ep.delete(a.as_raw_fd()).unwrap();
        assert!(ready(&ep, &mut buf).is_empty());
        // Not watched any more, and never watched twice.
        let e = ep.delete(a.as_raw_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        ep.add(a.as_raw_fd(), Events::READABLE, 9).unwrap();
        let e = ep.add(a.as_raw_fd(), Events::READABLE, 9).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let e = ep.modify(-1, Events::READABLE, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn hangup_reads_as_readable() {
        let ep = Epoll::new().unwrap();
        let (a, b) = pair();
        ep.add(a.as_raw_fd(), Events::READ_HANGUP, 5).unwrap();
        let mut buf = EventBuf::new(4);
        assert!(ready(&ep, &mut buf).is_empty());
        drop(b);
        let got = ready(&ep, &mut buf);
        assert_eq!(got.len(), 1);
        assert!(got[0].1.contains(Events::READ_HANGUP) && got[0].1.is_readable());
    }

    #[test]
    fn wait_honours_the_timeout_and_the_buffer_size() {
        let ep = Epoll::new().unwrap();
        let mut buf = EventBuf::new(2);
        let start = Instant::now();
        let got = ep.wait(&mut buf, Some(Duration::from_micros(300))).unwrap();
        assert!(got.is_empty());
        // Rounded up to 1 ms, not down to a zero-timeout look.
        assert!(start.elapsed() >= Duration::from_millis(1));
        assert!(start.elapsed() < Duration::from_secs(1));

        let socks: Vec<_> = (0..3).map(|_| pair()).collect();
        for (i, (a, b)) in socks.iter().enumerate() {
            ep.add(a.as_raw_fd(), Events::READABLE, i as u64).unwrap();
            (&*b).write_all(b"x").unwrap();
        }
        // Three ready, two fit; epoll rotates, so the third comes next.
        let first = ready(&ep, &mut buf);
        assert_eq!(first.len(), 2);
        let second = ready(&ep, &mut buf);
        assert!(!second.is_empty());
        let mut seen: Vec<u64> = first.iter().chain(&second).map(|e| e.0).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, vec![0, 1, 2]);
        assert_eq!(EventBuf::new(0).capacity(), 1);
    }
}
