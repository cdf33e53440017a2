//! The namespace as a graph leaf. Each reactor that submits to a namespace
//! of a controller gets that controller's queue pair, created on the
//! reactor the first time; one poller per reactor reaps all of its pairs.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use pollux_graph::{BlockNode, Geometry, Io, IoError, IoResult};
use pollux_poller::{PollStatus, Reactor};

use crate::ctrl::{Controller, Namespace};
use crate::qpair::QueuePair;

/// I/O size at which SSDs do best: their page size, at least the block.
const OPTIMAL_ALIGN: u32 = 4096;

/// A namespace of an attached controller.
pub struct NvmeNamespace {
    ctrl: Arc<Controller>,
    ns: Namespace,
}

impl NvmeNamespace {
    /// The namespace `ns` of `ctrl`.
    pub fn new(ctrl: Arc<Controller>, ns: Namespace) -> NvmeNamespace {
        ctrl.namespace_opened();
        NvmeNamespace { ctrl, ns }
    }

    /// Its controller.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.ctrl
    }

    /// Namespace ID.
    pub fn nsid(&self) -> u32 {
        self.ns.nsid
    }
}

/// A reactor's link to its queue pair for the namespace's controller;
/// `false` if the pair could not be created (the I/O then fails).
#[derive(Debug)]
pub struct NvmeChannel {
    ok: bool,
}

type Qp = Rc<RefCell<QueuePair>>;

/// The queue pairs of one reactor, for every controller it uses.
struct Local {
    qps: RefCell<Vec<Qp>>,
    done: RefCell<Vec<(Io, IoResult)>>,
}

fn local(r: &Reactor) -> Rc<Local> {
    r.local(|r| {
        r.register_poller(poll);
        Local {
            qps: RefCell::default(),
            done: RefCell::default(),
        }
    })
}

fn find(l: &Local, ctrl: &Arc<Controller>) -> Option<Qp> {
    l.qps
        .borrow()
        .iter()
        .find(|q| Arc::ptr_eq(q.borrow().controller(), ctrl))
        .cloned()
}

/// The reactor's NVMe poller: completions of every pair, then the
/// doorbells; pairs of detached controllers are dropped here, on the
/// reactor that owns them.
fn poll(r: &Reactor) -> PollStatus {
    let l = local(r);
    let mut done = l.done.take();
    let mut busy = false;
    {
        let mut qps = l.qps.borrow_mut();
        qps.retain(|q| !q.borrow().controller().is_detached());
        for q in qps.iter() {
            let mut q = q.borrow_mut();
            q.poll(&mut done);
            // No interrupts: keep spinning while the device owes us
            // completions.
            busy |= q.outstanding() > 0;
        }
    }
    busy |= !done.is_empty();
    for (io, res) in done.drain(..) {
        io.complete(r, res);
    }
    *l.done.borrow_mut() = done;
    if busy {
        PollStatus::Busy
    } else {
        PollStatus::Idle
    }
}

impl BlockNode for NvmeNamespace {
    type Channel = NvmeChannel;

    fn kind(&self) -> &'static str {
        "nvme"
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            block_size: self.ns.block_size,
            block_count: self.ns.blocks,
            required_align: 1,
            optimal_align: OPTIMAL_ALIGN.max(self.ns.block_size),
        }
    }

    fn create_channel(&self, r: &Reactor) -> NvmeChannel {
        let l = local(r);
        if find(&l, &self.ctrl).is_some() {
            return NvmeChannel { ok: true };
        }
        let dev_node = self.ctrl.info().numa_node;
        let reactor_node = pollux_poller::cpu::numa_node_of(r.core());
        if let (Some(d), Some(c)) = (dev_node, reactor_node) {
            if d != c {
                // Every command then crosses the interconnect twice.
                tracing::warn!(
                    name = self.ctrl.name(),
                    reactor = r.index(),
                    core = r.core(),
                    device_node = d,
                    reactor_node = c,
                    "NVMe queue pair on a reactor outside the device's NUMA node; \
                     pin a reactor of that node to use it"
                );
            }
        }
        match QueuePair::create(&self.ctrl, r.index()) {
            Ok(q) => {
                l.qps.borrow_mut().push(Rc::new(RefCell::new(q)));
                NvmeChannel { ok: true }
            }
            Err(e) => {
                tracing::error!(
                    name = self.ctrl.name(), reactor = r.index(), error = %e,
                    "cannot create an NVMe I/O queue pair; this reactor's I/O to it fails"
                );
                NvmeChannel { ok: false }
            }
        }
    }

    fn execute(&self, r: &Reactor, ch: &NvmeChannel, io: Io) {
        let qp = if ch.ok {
            find(&local(r), &self.ctrl)
        } else {
            None
        };
        let Some(qp) = qp else {
            io.complete_later(r, Err(IoError::Backend(libc::EIO)));
            return;
        };
        qp.borrow_mut().submit(&self.ns, io);
    }

    fn close(&self) {
        self.ctrl.namespace_closed();
    }
}
