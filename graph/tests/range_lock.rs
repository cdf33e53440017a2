//! LBA range locks (`Graph::lock_range`) across two reactors: the grant
//! waits for writes already in flight on another reactor, overlapping
//! writes from any reactor wait for the unlock while the rest (and the
//! lock's own write) go on, and conflicting locks are granted in turn.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::filters::{release_parked, ParkFilter};
use common::{io, runtime, ChanSink};
use pollux_graph::nodes::ram::RamNode;
use pollux_graph::{AlignedBuf, Graph, Io, IoBuf, IoOp, IoResult, RangeLock, RootId};
use pollux_poller::Reactor;

const MIB: u64 = 1 << 20;
const WAIT: Duration = Duration::from_secs(10);
/// Long enough for a held write to have gone through if nothing held it.
const SETTLE: Duration = Duration::from_millis(100);

type Done = mpsc::Receiver<(IoResult, Vec<u8>)>;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// The lock reactor 0 holds, between callbacks.
#[derive(Default)]
struct Held(RefCell<Vec<RangeLock>>);

/// Writes `data` at `offset` through `root` on reactor `on`, under the
/// lock reactor 0 holds if `locked`.
fn start_write(
    g: &Arc<Graph>,
    on: usize,
    root: RootId,
    offset: u64,
    data: Vec<u8>,
    locked: bool,
) -> Done {
    let (tx, rx) = mpsc::channel();
    let g2 = g.clone();
    g.handle().send_blocking(on, move |r: &Reactor| {
        let mut b = AlignedBuf::zeroed(data.len());
        b.as_mut_slice().copy_from_slice(&data);
        let len = data.len() as u64;
        let mut io = Io::new(
            IoOp::Write,
            offset,
            len,
            IoBuf::Owned(b),
            Rc::new(ChanSink(tx)),
            0,
        );
        if locked {
            let held = r.local(|_| Held::default());
            io = io.under_range_lock(&held.0.borrow()[0]);
        }
        g2.snapshot(r).submit(r, root, io);
    });
    rx
}

/// Asks for a lock on reactor 0; the receiver says when it is granted.
fn start_lock(g: &Arc<Graph>, root: RootId, offset: u64, len: u64) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    let g2 = g.clone();
    g.handle().send_blocking(0, move |r: &Reactor| {
        g2.lock_range(
            r,
            root,
            offset,
            len,
            Box::new(move |r, lock| {
                r.local(|_| Held::default())
                    .0
                    .borrow_mut()
                    .push(lock.expect("lock granted"));
                let _ = tx.send(());
            }),
        );
    });
    rx
}

/// Unlocks the oldest lock reactor 0 holds.
fn unlock(g: &Arc<Graph>) {
    g.handle().call(0, move |r: &Reactor| {
        let lock = r.local(|_| Held::default()).0.borrow_mut().remove(0);
        lock.unlock(r);
    });
}

fn release(g: &Arc<Graph>, on: usize, parked: &Arc<AtomicUsize>) {
    let p = parked.clone();
    g.handle()
        .call(on, move |r: &Reactor| release_parked(r, &p));
}

fn wait_parked(parked: &AtomicUsize, n: usize) {
    for _ in 0..10_000 {
        if parked.load(Ordering::SeqCst) == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!(
        "{} writes parked, expected {n}",
        parked.load(Ordering::SeqCst)
    );
}

fn setup() -> (pollux_poller::Runtime, Arc<Graph>, RootId, Arc<AtomicUsize>) {
    let rt = runtime(2);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, 4096).unwrap(), &[])
        .unwrap();
    let root = g.add_root("r", "ram0").unwrap();
    let geometry = g.node_geometry("ram0").unwrap();
    let parked = Arc::new(AtomicUsize::new(0));
    // Writes stop here until the test lets them on: "in flight" for as
    // long as the test needs. The root now points at the filter, where
    // the locks are taken.
    g.insert_filter(
        "ram0",
        "park",
        ParkFilter {
            geometry,
            parked: parked.clone(),
        },
    )
    .unwrap();
    (rt, g, root, parked)
}

#[test]
fn a_lock_waits_for_writes_in_flight_and_holds_overlapping_ones() {
    let (_rt, g, root, parked) = setup();
    // A write in flight on reactor 1 when the lock is asked for.
    let w1 = start_write(&g, 1, root, 0, pattern(8192, 1), false);
    wait_parked(&parked, 1);
    let granted = start_lock(&g, root, 0, 8192);
    assert!(
        granted.recv_timeout(SETTLE).is_err(),
        "granted with a write in flight"
    );
    release(&g, 1, &parked);
    assert_eq!(w1.recv_timeout(WAIT).unwrap().0, Ok(()));
    granted.recv_timeout(WAIT).expect("lock never granted");

    // Locked: an overlapping write from reactor 1 waits before the node;
    // a write elsewhere and reads go on.
    let w2 = start_write(&g, 1, root, 4096, pattern(4096, 2), false);
    let w3 = start_write(&g, 1, root, 65536, pattern(4096, 3), false);
    wait_parked(&parked, 1);
    assert_eq!(io(&g, root, IoOp::Read, 0, 4096, None).0, Ok(()));
    // The lock's own write, from reactor 0, passes it.
    let w4 = start_write(&g, 0, root, 0, pattern(8192, 4), true);
    wait_parked(&parked, 2);
    release(&g, 1, &parked);
    release(&g, 0, &parked);
    assert_eq!(w3.recv_timeout(WAIT).unwrap().0, Ok(()));
    assert_eq!(w4.recv_timeout(WAIT).unwrap().0, Ok(()));
    assert!(
        w2.recv_timeout(SETTLE).is_err(),
        "overlapping write passed the lock"
    );
    assert_eq!(parked.load(Ordering::SeqCst), 0);

    unlock(&g);
    wait_parked(&parked, 1);
    release(&g, 1, &parked);
    assert_eq!(w2.recv_timeout(WAIT).unwrap().0, Ok(()));
    let (res, data) = io(&g, root, IoOp::Read, 0, 8192, None);
    assert_eq!(res, Ok(()));
    assert!(data[..4096] == pattern(8192, 4)[..4096], "the locked write");
    assert!(
        data[4096..] == pattern(4096, 2)[..],
        "the held write, after it"
    );
}

#[test]
fn overlapping_locks_are_granted_one_after_the_other() {
    let (_rt, g, root, parked) = setup();
    let first = start_lock(&g, root, 0, 8192);
    first.recv_timeout(WAIT).expect("first lock");
    let second = start_lock(&g, root, 4096, 8192);
    // Elsewhere: no conflict.
    let apart = start_lock(&g, root, 65536, 4096);
    apart
        .recv_timeout(WAIT)
        .expect("a lock elsewhere waits for nothing");
    assert!(
        second.recv_timeout(SETTLE).is_err(),
        "two locks on one range"
    );
    unlock(&g);
    second
        .recv_timeout(WAIT)
        .expect("second lock after the unlock");
    unlock(&g);
    unlock(&g);
    // Nothing is left held.
    let w = start_write(&g, 1, root, 4096, pattern(4096, 9), false);
    wait_parked(&parked, 1);
    release(&g, 1, &parked);
    assert_eq!(w.recv_timeout(WAIT).unwrap().0, Ok(()));
}

#[test]
fn the_last_locked_write_ends_the_lock_and_a_dropped_lock_unlocks() {
    let (_rt, g, root, parked) = setup();
    start_lock(&g, root, 0, 8192).recv_timeout(WAIT).unwrap();
    // The locked write takes the lock with it.
    let (tx, w) = mpsc::channel();
    let g2 = g.clone();
    g.handle().send_blocking(0, move |r: &Reactor| {
        let lock = r.local(|_| Held::default()).0.borrow_mut().remove(0);
        let mut b = AlignedBuf::zeroed(4096);
        b.as_mut_slice().fill(5);
        let io = Io::new(
            IoOp::Write,
            0,
            4096,
            IoBuf::Owned(b),
            Rc::new(ChanSink(tx)),
            0,
        )
        .finishing_range_lock(lock);
        g2.snapshot(r).submit(r, root, io);
    });
    wait_parked(&parked, 1);
    let next = start_lock(&g, root, 0, 4096);
    assert!(
        next.recv_timeout(SETTLE).is_err(),
        "the write still holds it"
    );
    release(&g, 0, &parked);
    assert_eq!(w.recv_timeout(WAIT).unwrap().0, Ok(()));
    next.recv_timeout(WAIT)
        .expect("granted once the write completed");
    // Dropped by its owner: unlocked all the same.
    g.handle().call(0, |r: &Reactor| {
        r.local(|_| Held::default()).0.borrow_mut().clear();
    });
    start_lock(&g, root, 0, 4096)
        .recv_timeout(WAIT)
        .expect("granted after the drop");
    unlock(&g);
}
