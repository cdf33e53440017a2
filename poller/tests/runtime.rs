//! Reactor runtime behaviour: messaging, broadcasts, timers, idle sleep,
//! full inboxes, grace periods and per-reactor state.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use pollux_poller::{IdlePolicy, PerReactor, PollStatus, Reactor, Runtime, RuntimeConfig};

fn cores(n: usize) -> Vec<usize> {
    let online: Vec<usize> = pollux_poller::cpu::online_cpus().unwrap().iter().collect();
    (0..n).map(|i| online[i % online.len()]).collect()
}

fn adaptive() -> IdlePolicy {
    IdlePolicy::Adaptive {
        idle_after: Duration::from_micros(100),
    }
}

#[test]
fn send_runs_on_the_target_reactor() {
    let rt = Runtime::start(RuntimeConfig::new(cores(2), adaptive())).unwrap();
    for target in 0..2 {
        let idx = rt.handle().call(target, |r: &Reactor| r.index());
        assert_eq!(idx, target);
    }
}

#[test]
fn sleeping_reactor_wakes_for_messages() {
    let rt = Runtime::start(RuntimeConfig::new(cores(1), adaptive())).unwrap();
    for _ in 0..200 {
        // Give the reactor time to fall asleep, then make sure it answers.
        std::thread::sleep(Duration::from_micros(300));
        let t = Instant::now();
        rt.handle().call(0, |_| ());
        assert!(t.elapsed() < Duration::from_millis(500), "lost wakeup");
    }
    // Counters are updated after the batch that answered the last call.
    std::thread::sleep(Duration::from_millis(5));
    let s = rt.handle().stats(0);
    assert!(s.messages >= 200, "{s:?}");
    assert!(s.polls > 0);
    assert!(s.idle_ns > 0);
}

#[test]
fn for_each_reactor_runs_then_on_the_sender_after_all() {
    let rt = Runtime::start(RuntimeConfig::new(cores(2), adaptive())).unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let h = hits.clone();
    rt.handle()
        .send(1, move |r: &Reactor| {
            let h2 = h.clone();
            r.for_each_reactor(
                move |_| {
                    h2.fetch_add(1, Ordering::SeqCst);
                },
                move |r: &Reactor| {
                    tx.send((r.index(), h.load(Ordering::SeqCst))).unwrap();
                },
            );
        })
        .unwrap();
    let (origin, seen) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(origin, 1, "then must run on the sender");
    assert_eq!(seen, 2, "then must run after every reactor ran f");
}

#[test]
fn timers_fire_in_deadline_order_and_cancel() {
    let rt = Runtime::start(RuntimeConfig::new(cores(1), adaptive())).unwrap();
    let (tx, rx) = mpsc::channel();
    rt.handle()
        .send(0, move |r: &Reactor| {
            for (delay, tag) in [(30u64, 3), (10, 1), (20, 2), (15, 99)] {
                let tx = tx.clone();
                let id = r.add_timer(Duration::from_millis(delay), move |_| {
                    tx.send(tag).unwrap();
                });
                if tag == 99 {
                    assert!(r.cancel_timer(id));
                }
            }
            let mut n = 0;
            r.add_periodic(Duration::from_millis(5), move |_| {
                n += 1;
                if n == 3 {
                    tx.send(100).unwrap();
                }
                n < 3
            });
        })
        .unwrap();
    let got: Vec<i32> = (0..4)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    let mut ordered: Vec<i32> = got.iter().copied().filter(|t| *t != 100).collect();
    assert_eq!(ordered, vec![1, 2, 3]);
    ordered.sort();
    assert!(got.contains(&100), "periodic timer ran 3 times");
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "cancelled timer fired"
    );
}

/// A periodic timer that cancels itself from its callback does not run
/// again, although the callback returns true. Checked by ordering, not by
/// waiting: a one-shot timer armed for five periods later, on the same
/// reactor, fires after any re-armed run would have (timers fire in
/// deadline order).
#[test]
fn periodic_timer_cancels_itself_from_its_callback() {
    use std::cell::Cell;
    use std::rc::Rc;

    const PERIOD: Duration = Duration::from_millis(2);
    let rt = Runtime::start(RuntimeConfig::new(cores(1), adaptive())).unwrap();
    let (tx, rx) = mpsc::channel();
    rt.handle()
        .send(0, move |r: &Reactor| {
            let me = Rc::new(Cell::new(None));
            let runs = Rc::new(Cell::new(0u32));
            let (me2, runs2) = (me.clone(), runs.clone());
            let id = r.add_periodic(PERIOD, move |r| {
                runs2.set(runs2.get() + 1);
                if runs2.get() == 2 {
                    let cancelled = r.cancel_timer(me2.get().expect("id set before the first run"));
                    let (tx, runs) = (tx.clone(), runs2.clone());
                    r.add_timer(PERIOD * 5, move |_| {
                        tx.send((cancelled, runs.get())).unwrap();
                    });
                }
                true
            });
            me.set(Some(id));
        })
        .unwrap();
    let (cancelled, runs) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        cancelled,
        "cancel_timer from the callback reported nothing to cancel"
    );
    assert_eq!(runs, 2, "the timer ran again after cancelling itself");
}

#[test]
fn pollers_run_until_unregistered() {
    let rt = Runtime::start(RuntimeConfig::new(cores(1), IdlePolicy::Poll)).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let id = rt.handle().call(0, move |r: &Reactor| {
        r.register_poller(move |_: &Reactor| {
            c.fetch_add(1, Ordering::Relaxed);
            PollStatus::Idle
        })
    });
    std::thread::sleep(Duration::from_millis(20));
    rt.handle()
        .call(0, move |r: &Reactor| r.unregister_poller(id));
    rt.handle().call(0, |_| ());
    let a = count.load(Ordering::Relaxed);
    assert!(a > 10, "poller ran {a} times");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(count.load(Ordering::Relaxed), a, "poller still running");
}

#[test]
fn full_inbox_is_reported_then_overflow_is_delivered_in_order() {
    let mut cfg = RuntimeConfig::new(cores(2), adaptive());
    cfg.inbox_capacity = 4;
    let rt = Runtime::start(cfg).unwrap();
    let h = rt.handle().clone();
    // Block reactor 1 so its inbox fills.
    let (block_tx, block_rx) = mpsc::channel::<()>();
    h.send(1, move |_| {
        block_rx.recv().unwrap();
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(10));
    let mut full = false;
    for _ in 0..10 {
        if h.send(1, |_| ()).is_err() {
            full = true;
        }
    }
    assert!(full, "a full inbox must be reported, not panic or grow");
    // A reactor sending into the full inbox keeps its messages, in order.
    let (tx, rx) = mpsc::channel();
    h.send_blocking(0, move |r: &Reactor| {
        for i in 0..50 {
            let tx = tx.clone();
            r.send(1, move |_| tx.send(i).unwrap());
        }
    });
    std::thread::sleep(Duration::from_millis(10));
    block_tx.send(()).unwrap();
    let got: Vec<i32> = (0..50)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
}

#[test]
fn synchronize_completes_with_sleeping_and_busy_reactors() {
    let rt = Runtime::start(RuntimeConfig::new(cores(2), adaptive())).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    for _ in 0..100 {
        let d = rt.handle().synchronize();
        assert!(d < Duration::from_secs(1));
    }
}

#[test]
fn nonexistent_core_is_a_clear_error() {
    let err = Runtime::start(RuntimeConfig::new(vec![0, 4095], adaptive()))
        .err()
        .expect("core 4095 should not exist here");
    assert!(err.to_string().contains("4095"), "{err}");
}

#[test]
fn reactors_report_their_numa_node_and_core() {
    let c = cores(2);
    let rt = Runtime::start(RuntimeConfig::new(c.clone(), adaptive())).unwrap();
    let infos = rt.handle().reactors();
    assert_eq!(infos.iter().map(|i| i.core).collect::<Vec<_>>(), c);
    let core = rt.handle().call(1, |r: &Reactor| r.core());
    assert_eq!(core, c[1]);
}

#[test]
fn per_reactor_slots_are_private_and_lazy() {
    let rt = Runtime::start(RuntimeConfig::new(cores(2), adaptive())).unwrap();
    let slots = Arc::new(PerReactor::<AtomicUsize>::new(rt.handle()));
    for i in 0..2 {
        let s = slots.clone();
        rt.handle().call(i, move |r: &Reactor| {
            assert!(s.get(r).is_none());
            s.get_or_init(r, || AtomicUsize::new(r.index() + 10));
        });
    }
    let mut slots = Arc::try_unwrap(slots).ok().unwrap();
    let mut vals: Vec<usize> = slots.iter_mut().map(|v| *v.get_mut()).collect();
    vals.sort();
    assert_eq!(vals, vec![10, 11]);
}

#[test]
fn reactor_locals_are_singletons() {
    let rt = Runtime::start(RuntimeConfig::new(cores(1), adaptive())).unwrap();
    let same = rt.handle().call(0, |r: &Reactor| {
        let a = r.local(|_| std::cell::Cell::new(5u32));
        a.set(7);
        let b = r.local(|_| std::cell::Cell::new(0u32));
        b.get()
    });
    assert_eq!(same, 7);
}

#[test]
fn poller_and_timer_counts_follow_registration() {
    let rt = Runtime::start(RuntimeConfig::new(cores(1), adaptive())).unwrap();
    let h = rt.handle();
    let counts = || h.call(0, |r: &Reactor| (r.num_pollers(), r.num_timers()));
    assert_eq!(counts(), (0, 0));
    let id = h.call(0, |r: &Reactor| {
        r.register_poller(|_: &Reactor| PollStatus::Idle)
    });
    // Counted at once, and still once it runs.
    assert_eq!(counts().0, 1);
    assert_eq!(counts().0, 1);
    let timer = h.call(0, |r: &Reactor| {
        r.add_timer(Duration::from_secs(60), |_| ())
    });
    h.call(0, |r: &Reactor| {
        r.add_periodic(Duration::from_secs(60), |_| true)
    });
    assert_eq!(counts(), (1, 2));
    h.call(0, move |r: &Reactor| {
        r.unregister_poller(id);
        r.cancel_timer(timer);
    });
    assert_eq!(counts(), (0, 1));
}
