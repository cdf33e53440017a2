//! Starting, addressing and stopping the reactors.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

use crate::cpu;
use crate::qsbr::{GracePeriod, QsCounter};
use crate::reactor::Reactor;
use crate::stats::{ReactorStats, StatsSnapshot};
use crate::wakeup::{EventFd, Wakeup};

/// A message: a closure run on the target reactor.
pub(crate) type Message = Box<dyn FnOnce(&Reactor) + Send>;

/// Inbox capacity per reactor. Messages are control-plane traffic (setup,
/// teardown, broadcasts); 4096 absorbs bursts such as a broadcast to every
/// queue pair without letting a stuck reactor grow memory without bound.
pub const DEFAULT_INBOX_CAPACITY: usize = 4096;

/// How a reactor behaves when it finds no work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Always spin: lowest latency, one core at 100%.
    Poll,
    /// Spin while busy; after `idle_after` without work, sleep in epoll until
    /// a message, a timer or a registered fd wakes the reactor.
    Adaptive {
        /// How long to keep spinning after the last work.
        idle_after: Duration,
    },
}

/// What to start.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// CPU ids, one reactor per entry, in reactor-index order.
    pub cores: Vec<usize>,
    /// Idle behaviour of every reactor.
    pub idle: IdlePolicy,
    /// Messages each inbox holds before senders see "full".
    pub inbox_capacity: usize,
}

impl RuntimeConfig {
    /// Reactors on `cores` with the given idle policy and default capacity.
    pub fn new(cores: Vec<usize>, idle: IdlePolicy) -> Self {
        RuntimeConfig {
            cores,
            idle,
            inbox_capacity: DEFAULT_INBOX_CAPACITY,
        }
    }
}

/// Where a reactor runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReactorInfo {
    /// Index in the runtime.
    pub index: usize,
    /// CPU the thread is pinned to.
    pub core: usize,
    /// NUMA node of that CPU, when the machine reports one.
    pub numa_node: Option<u32>,
}

/// Errors starting a runtime.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The core list is invalid for this machine.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    /// A reactor thread could not be set up.
    #[error("reactor on core {core}: {source}")]
    Reactor {
        /// The core.
        core: usize,
        /// Why.
        source: std::io::Error,
    },
    /// The thread could not be pinned to its core.
    #[error(
        "reactor on core {0}: cannot pin the thread to this core (is it in the allowed CPU set?)"
    )]
    Pin(usize),
}

/// A message could not be queued because the inbox is full.
#[derive(Debug, thiserror::Error)]
#[error("inbox of reactor {0} is full")]
pub struct InboxFull(pub usize);

/// The state of one reactor shared with other threads. Each part sits on
/// its own cache line: the inbox is written by senders, the wakeup flag is
/// read by senders and written by the owner, the counters only by the owner.
pub(crate) struct ReactorShared {
    pub(crate) info: ReactorInfo,
    pub(crate) inbox: CachePadded<ArrayQueue<Message>>,
    pub(crate) wakeup: CachePadded<Wakeup<EventFd>>,
    pub(crate) stats: CachePadded<ReactorStats>,
    pub(crate) qs: CachePadded<QsCounter>,
}

pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) reactors: Vec<ReactorShared>,
    pub(crate) stop: AtomicBool,
    pub(crate) idle: IdlePolicy,
}

impl Shared {
    /// Queues `msg` for `target` and wakes it if it sleeps.
    pub(crate) fn try_send(&self, target: usize, msg: Message) -> Result<(), Message> {
        let r = &self.reactors[target];
        r.inbox.push(msg)?;
        r.wakeup.notify();
        Ok(())
    }
}

/// Distinguishes runtimes so per-reactor state cannot be used across them.
static NEXT_RUNTIME_ID: AtomicU64 = AtomicU64::new(1);

/// A cloneable, thread-safe handle to the reactors.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Handle { shared }
    }

    /// Identifies the runtime this belongs to.
    pub fn runtime_id(&self) -> u64 {
        self.shared.id
    }

    /// Number of reactors.
    pub fn num_reactors(&self) -> usize {
        self.shared.reactors.len()
    }

    /// Where each reactor runs.
    pub fn reactors(&self) -> Vec<ReactorInfo> {
        self.shared.reactors.iter().map(|r| r.info).collect()
    }

    /// Queues `f` to run on reactor `target`. A full inbox is reported, with
    /// nothing queued; `send_blocking` retries instead.
    ///
    /// # Panics
    /// If `target` is not a reactor index (a caller bug, not an input error).
    pub fn send(
        &self,
        target: usize,
        f: impl FnOnce(&Reactor) + Send + 'static,
    ) -> Result<(), InboxFull> {
        self.shared
            .try_send(target, Box::new(f))
            .map_err(|_| InboxFull(target))
    }

    /// Like `send`, but waits (backing off) while the inbox is full. For
    /// control threads only: a reactor uses `Reactor::send`.
    pub fn send_blocking(&self, target: usize, f: impl FnOnce(&Reactor) + Send + 'static) {
        let mut msg: Message = Box::new(f);
        let mut backoff = Duration::from_micros(10);
        loop {
            match self.shared.try_send(target, msg) {
                Ok(()) => return,
                Err(m) => msg = m,
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(10));
        }
    }

    /// Runs `f` on reactor `target` and returns its result. Control threads
    /// only: called from a reactor it would wait for itself.
    pub fn call<R: Send + 'static>(
        &self,
        target: usize,
        f: impl FnOnce(&Reactor) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send_blocking(target, move |r| {
            let _ = tx.send(f(r));
        });
        rx.recv().expect("reactor stopped before answering a call")
    }

    /// Runs `f` on every reactor and returns once all have (the control
    /// thread's form of `Reactor::for_each_reactor`).
    pub fn on_each_reactor(&self, f: impl Fn(&Reactor) + Send + Sync + 'static) {
        let f = Arc::new(f);
        let (tx, rx) = mpsc::channel();
        for i in 0..self.num_reactors() {
            let (f, tx) = (f.clone(), tx.clone());
            self.send_blocking(i, move |r| {
                f(r);
                let _ = tx.send(());
            });
        }
        drop(tx);
        for _ in 0..self.num_reactors() {
            rx.recv().expect("reactor stopped during a broadcast");
        }
    }

    /// Live statistics of reactor `index`.
    pub fn stats(&self, index: usize) -> StatsSnapshot {
        self.shared.reactors[index].stats.snapshot()
    }

    /// Waits for a grace period: returns once every running reactor has
    /// passed a quiescent point after this call began. Anything unpublished
    /// before the call is then unreachable from the reactors. Sleeping
    /// reactors are woken so the wait stays short. Control threads only.
    pub fn synchronize(&self) -> Duration {
        let start = Instant::now();
        let mut spins = 0u32;
        GracePeriod::wait(
            || self.shared.reactors.iter().map(|r| &*r.qs),
            |pending| {
                for &i in pending {
                    self.shared.reactors[i].wakeup.notify();
                }
                // Sleep rather than yield: on a machine where every core runs
                // a spinning reactor, sched_yield rarely gets this thread back
                // before the time slice ends (~4 ms per grace period measured
                // on 2 cores), while a short sleep earns a wakeup preemption.
                spins += 1;
                std::thread::sleep(Duration::from_micros(if spins < 16 { 5 } else { 50 }));
            },
        );
        start.elapsed()
    }

    /// True once `Runtime::shutdown` began.
    pub fn is_stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }
}

/// The running reactors. Dropping it stops and joins them.
pub struct Runtime {
    handle: Handle,
    threads: Vec<JoinHandle<()>>,
}

impl Runtime {
    /// Validates the cores, then starts one pinned reactor per core and
    /// returns once all are running.
    pub fn start(config: RuntimeConfig) -> Result<Runtime, StartError> {
        let online = cpu::online_cpus()?;
        cpu::validate_cores(&config.cores, &online)?;
        let mut reactors = Vec::with_capacity(config.cores.len());
        for (index, &core) in config.cores.iter().enumerate() {
            let doorbell = EventFd::new().map_err(|source| StartError::Reactor { core, source })?;
            reactors.push(ReactorShared {
                info: ReactorInfo {
                    index,
                    core,
                    numa_node: cpu::numa_node_of(core),
                },
                inbox: CachePadded::new(ArrayQueue::new(config.inbox_capacity.max(1))),
                wakeup: CachePadded::new(Wakeup::new(doorbell)),
                stats: CachePadded::new(ReactorStats::default()),
                qs: CachePadded::new(QsCounter::new()),
            });
        }
        let shared = Arc::new(Shared {
            id: NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed),
            reactors,
            stop: AtomicBool::new(false),
            idle: config.idle,
        });
        let mut rt = Runtime {
            handle: Handle::from_shared(shared.clone()),
            threads: Vec::new(),
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError>>();
        for index in 0..shared.reactors.len() {
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let core = shared.reactors[index].info.core;
            let t = std::thread::Builder::new()
                .name(format!("reactor-{core}"))
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        shared.reactors[index].qs.go_offline();
                        let _ = ready.send(Err(StartError::Pin(core)));
                        return;
                    }
                    let reactor = match Reactor::new(shared.clone(), index) {
                        Ok(r) => r,
                        Err(source) => {
                            shared.reactors[index].qs.go_offline();
                            let _ = ready.send(Err(StartError::Reactor { core, source }));
                            return;
                        }
                    };
                    let info = shared.reactors[index].info;
                    tracing::info!(
                        reactor = index,
                        core,
                        numa_node = ?info.numa_node,
                        "reactor started"
                    );
                    let _ = ready.send(Ok(()));
                    reactor.run();
                })
                .map_err(|source| StartError::Reactor { core, source })?;
            rt.threads.push(t);
        }
        drop(ready_tx);
        for _ in 0..rt.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e), // `rt` drops: stops the others
                Err(_) => {
                    return Err(StartError::Reactor {
                        core: 0,
                        source: std::io::Error::other("reactor thread died at start"),
                    })
                }
            }
        }
        Ok(rt)
    }

    /// A handle for sending work to the reactors.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stops every reactor after its current iteration and joins them.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let shared = &self.handle.shared;
        shared.stop.store(true, Ordering::Relaxed);
        for r in &shared.reactors {
            r.wakeup.notify();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
