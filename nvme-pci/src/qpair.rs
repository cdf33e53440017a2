//! One I/O queue pair, owned by one reactor: requests are cut into
//! commands (MDTS, per-command block limits), data goes through DMA bounce
//! buffers with PRP lists or SGLs, completions are checked and matched by
//! CID, doorbells are written once per poll.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pollux_graph::{Io, IoError, IoOp, IoResult};
use pollux_nvme::cqe::Cqe;
use pollux_nvme::identify::oncs;
use pollux_nvme::opcode::IoOpcode;
use pollux_nvme::sqe::{Psdt, Sqe};

use crate::ctrl::{set_prp, Controller, Namespace, QpStats};
use crate::dma::DmaMem;
use crate::prp::{build_prp, build_sgl, Seg};
use crate::queue::{CidTable, CompQueue, SubQueue};
use crate::regs::PAGE;

/// Most blocks one Write Zeroes command covers (NLB is 16 bits, 0's based).
const MAX_ZEROES_BLOCKS: u64 = 1 << 16;
/// Most blocks one Dataset Management range covers (32-bit NLB).
const MAX_DSM_BLOCKS: u64 = u32::MAX as u64;
/// Size classes of bounce buffers: 4 KiB << n up to `prp::MAX_XFER`.
const BOUNCE_CLASSES: usize = 10;
/// Write Zeroes CDW12.DEAC: deallocate the blocks if the device can.
const WZ_DEAC: u32 = 1 << 25;
/// DSM attribute: deallocate.
const DSM_AD: u32 = 1 << 2;
/// errno for a command the device failed (NVMe error status).
const EIO: i32 = libc::EIO;

/// A request in flight, and how many of its commands are outstanding.
struct Req {
    io: Io,
    nsid: u32,
    /// Block size of the namespace.
    bs: u32,
    /// A discard goes out as Write Zeroes with DEAC: the namespace does
    /// not promise that deallocated blocks read as zeroes, and the graph
    /// does.
    discard_as_zeroes: bool,
    remaining: u32,
    result: IoResult,
}

/// One command's share of a request.
#[derive(Clone, Copy)]
struct Chunk {
    req: u32,
    /// Byte offset within the request.
    at: u64,
    /// Bytes.
    len: u64,
}

/// An outstanding command.
struct Cmd {
    chunk: Chunk,
    bounce: Option<DmaMem>,
}

/// Reusable DMA bounce buffers by size class.
struct BouncePool {
    classes: Vec<Vec<DmaMem>>,
}

impl BouncePool {
    fn class(len: usize) -> usize {
        let pages = len.div_ceil(PAGE).next_power_of_two();
        (pages.trailing_zeros() as usize).min(BOUNCE_CLASSES - 1)
    }

    fn get(&mut self, ctrl: &Controller, len: usize) -> std::io::Result<DmaMem> {
        let c = Self::class(len);
        if let Some(m) = self.classes[c].pop() {
            return Ok(m);
        }
        let size = (PAGE << c).max(len);
        DmaMem::new(ctrl.iommu(), size, ctrl.info().numa_node)
    }

    fn put(&mut self, m: DmaMem) {
        let c = Self::class(m.len());
        if (PAGE << c) == m.len() {
            self.classes[c].push(m);
        }
    }
}

/// The queue pair.
pub struct QueuePair {
    ctrl: Arc<Controller>,
    qid: u16,
    sq: SubQueue,
    cq: CompQueue,
    cmds: CidTable<Cmd>,
    /// One PRP/SGL list page (or DSM range page) per CID.
    lists: DmaMem,
    reqs: Vec<Option<Req>>,
    free_reqs: Vec<u32>,
    /// Commands waiting for a free CID.
    pending: VecDeque<Chunk>,
    pool: BouncePool,
    stats: Arc<QpStats>,
    sq_db: usize,
    cq_db: usize,
    commands: u64,
    errors: u64,
    /// Requests that failed while being issued, handed out at the next poll.
    early: Vec<(Io, IoResult)>,
}

impl QueuePair {
    /// Creates I/O queue pair on the controller for `reactor` (called on
    /// that reactor, so its memory is allocated there).
    pub fn create(ctrl: &Arc<Controller>, reactor: usize) -> Result<QueuePair, String> {
        let qid = ctrl
            .take_qid()
            .ok_or_else(|| "the controller has no I/O queue left for this reactor".to_string())?;
        match Self::create_with(ctrl, reactor, qid) {
            Ok(q) => Ok(q),
            Err(e) => {
                ctrl.delete_io_queues(qid);
                Err(e)
            }
        }
    }

    fn create_with(ctrl: &Arc<Controller>, reactor: usize, qid: u16) -> Result<QueuePair, String> {
        let info = ctrl.info();
        let depth = info.io_queue_depth;
        let node = info.numa_node;
        let mem =
            |len| DmaMem::new(ctrl.iommu(), len, node).map_err(|e| format!("DMA allocation: {e}"));
        let sqm = mem(depth as usize * Sqe::SIZE)?;
        let cqm = mem(depth as usize * Cqe::SIZE)?;
        let slots = depth - 1;
        let lists = mem(slots as usize * PAGE)?;
        let cq = CompQueue::new(cqm, depth);
        let sq = SubQueue::new(sqm, depth);
        ctrl.create_io_queues(qid, depth, cq.iova(), sq.iova())?;
        let stats = Arc::new(QpStats {
            reactor,
            qid,
            ..Default::default()
        });
        ctrl.register_stats(stats.clone());
        tracing::debug!(
            name = ctrl.name(),
            qid,
            reactor,
            depth,
            "I/O queue pair created"
        );
        Ok(QueuePair {
            sq_db: ctrl.cap().sq_doorbell(qid),
            cq_db: ctrl.cap().cq_doorbell(qid),
            ctrl: ctrl.clone(),
            qid,
            sq,
            cq,
            cmds: CidTable::new(slots),
            lists,
            reqs: Vec::new(),
            free_reqs: Vec::new(),
            pending: VecDeque::new(),
            pool: BouncePool {
                classes: (0..BOUNCE_CLASSES).map(|_| Vec::new()).collect(),
            },
            stats,
            commands: 0,
            errors: 0,
            early: Vec::new(),
        })
    }

    /// The controller this pair belongs to.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.ctrl
    }

    /// Queues `io` for namespace `nsid` (blocks of `bs` bytes). An I/O that
    /// fails at once completes at the next poll, never inside this call
    /// (so a sink that resubmits cannot recurse).
    pub fn submit(&mut self, ns: &Namespace, io: Io) {
        if let Err((io, e)) = self.enqueue(ns, io) {
            self.early.push((io, Err(e)));
        }
    }

    #[allow(clippy::result_large_err)] // the I/O goes back with its error
    fn enqueue(&mut self, ns: &Namespace, io: Io) -> Result<(), (Io, IoError)> {
        if self.ctrl.is_failed() {
            return Err((io, IoError::Backend(EIO)));
        }
        let (nsid, bs) = (ns.nsid, ns.block_size);
        let info = self.ctrl.info();
        let zeroes = info.oncs & oncs::WRITE_ZEROES != 0;
        // The graph promises that a discarded range reads back as zeroes.
        // A DSM deallocate is only advisory (the device may keep the data,
        // as QEMU's does with discard=ignore while reporting DLFEAT 001b),
        // so a discard is Write Zeroes with DEAC, which zeroes for sure and
        // deallocates where the device can; DSM only for a device without
        // Write Zeroes that says deallocated blocks read as zeroes.
        let dsm = !zeroes && info.oncs & oncs::DSM != 0 && ns.dealloc_reads_zeroes;
        let bs64 = bs as u64;
        let max = match io.op {
            IoOp::Read | IoOp::Write => info.max_xfer as u64,
            IoOp::Flush => u64::MAX,
            IoOp::WriteZeroes if zeroes => MAX_ZEROES_BLOCKS * bs64,
            IoOp::Discard if dsm => MAX_DSM_BLOCKS * bs64,
            IoOp::Discard if zeroes => MAX_ZEROES_BLOCKS * bs64,
            op => return Err((io, IoError::Unsupported(op.name()))),
        };
        let len = io.len;
        let n = if io.op == IoOp::Flush {
            1
        } else {
            len.div_ceil(max).max(1)
        };
        let Ok(n32) = u32::try_from(n) else {
            return Err((io, IoError::Busy));
        };
        let req = Req {
            io,
            nsid,
            bs,
            discard_as_zeroes: !dsm,
            remaining: n32,
            result: Ok(()),
        };
        let idx = match self.free_reqs.pop() {
            Some(i) => {
                self.reqs[i as usize] = Some(req);
                i
            }
            None => {
                self.reqs.push(Some(req));
                (self.reqs.len() - 1) as u32
            }
        };
        let mut at = 0;
        for _ in 0..n {
            let l = (len - at).min(max);
            self.pending.push_back(Chunk {
                req: idx,
                at,
                len: l,
            });
            at += l;
        }
        self.pump();
        Ok(())
    }

    /// Issues waiting commands while CIDs are free.
    fn pump(&mut self) {
        // The SQ can be full with CIDs free when the device reports a head
        // that lags its completions: commands then wait for it to advance.
        while !self.cmds.is_full() && !self.sq.is_full() {
            let Some(chunk) = self.pending.pop_front() else {
                break;
            };
            if let Err(e) = self.issue(chunk) {
                let mut early = std::mem::take(&mut self.early);
                self.finish_chunk(chunk, Err(e), &mut early);
                self.early = early;
            }
        }
    }

    fn issue(&mut self, chunk: Chunk) -> Result<(), IoError> {
        let Some(req) = self.reqs[chunk.req as usize].as_mut() else {
            return Err(IoError::NoDevice);
        };
        let (nsid, bs) = (req.nsid, req.bs);
        let discard_as_zeroes = req.discard_as_zeroes;
        let op = req.io.op;
        let slba = (req.io.offset + chunk.at) / bs as u64;
        let nlb = chunk.len / bs as u64;
        let bounce = if op.has_data() {
            let m = self
                .pool
                .get(&self.ctrl, chunk.len as usize)
                .map_err(|_| IoError::Busy)?;
            if op == IoOp::Write {
                m.fill_from(&mut req.io.buf, chunk.at as usize, chunk.len as usize);
            }
            Some(m)
        } else {
            None
        };
        let dptr = bounce.as_ref().map(|m| Seg {
            iova: m.iova(),
            len: chunk.len as u32,
        });
        let cid = match self.cmds.insert(Cmd { chunk, bounce }) {
            Ok(c) => c,
            Err(cmd) => {
                if let Some(b) = cmd.bounce {
                    self.pool.put(b);
                }
                self.pending.push_front(chunk);
                return Ok(());
            }
        };
        let list_off = cid as usize * PAGE;
        let list_iova = self.lists.iova() + list_off as u64;
        let opcode = match op {
            IoOp::Read => IoOpcode::Read,
            IoOp::Write => IoOpcode::Write,
            IoOp::Flush => IoOpcode::Flush,
            IoOp::WriteZeroes => IoOpcode::WriteZeroes,
            IoOp::Discard if discard_as_zeroes => IoOpcode::WriteZeroes,
            IoOp::Discard => IoOpcode::DatasetManagement,
        };
        let mut sqe = Sqe::new(opcode as u8, cid);
        sqe.set_nsid(nsid);
        match op {
            IoOp::Read | IoOp::Write | IoOp::WriteZeroes => {
                sqe.set_cdw10(slba as u32);
                sqe.set_cdw11((slba >> 32) as u32);
                sqe.set_cdw12((nlb - 1) as u32 & 0xffff);
            }
            IoOp::Discard if discard_as_zeroes => {
                sqe.set_cdw10(slba as u32);
                sqe.set_cdw11((slba >> 32) as u32);
                sqe.set_cdw12(((nlb - 1) as u32 & 0xffff) | WZ_DEAC);
            }
            IoOp::Discard => {
                // One range: context attributes 0, NLB, SLBA.
                let mut r = [0u8; 16];
                r[4..8].copy_from_slice(&(nlb as u32).to_le_bytes());
                r[8..16].copy_from_slice(&slba.to_le_bytes());
                self.lists.write(list_off, &r);
                set_prp(&mut sqe, list_iova, 0);
                sqe.set_cdw10(0);
                sqe.set_cdw11(DSM_AD);
            }
            IoOp::Flush => {}
        }
        if let Some(seg) = dptr {
            self.set_data(&mut sqe, &[seg], list_off, list_iova);
        }
        // `pump` checked the SQ has room; should it not, the command waits.
        if !self.sq.push(&sqe) {
            if let Ok(cmd) = self.cmds.take(cid) {
                if let Some(b) = cmd.bounce {
                    self.pool.put(b);
                }
            }
            self.pending.push_front(chunk);
        }
        Ok(())
    }

    /// Describes the data: an SGL if the controller takes them and the
    /// buffer is scattered, PRPs otherwise.
    fn set_data(&mut self, sqe: &mut Sqe, segs: &[Seg], list_off: usize, list_iova: u64) {
        let lists = &self.lists;
        let sgl = self.ctrl.info().sgl;
        if segs.len() > 1 && sgl != 0 {
            if let Ok(d) = build_sgl(segs, list_iova, sgl == 2, |i, e| {
                lists.write(list_off + i * 16, &e)
            }) {
                sqe.set_psdt(Psdt::SglMptrAddress);
                sqe.set_sgl(&d);
                return;
            }
        }
        // A bounce buffer is one page-aligned piece: PRPs always fit.
        match build_prp(segs, list_iova, |i, e| {
            lists.write(list_off + i * 8, &e.to_le_bytes())
        }) {
            Ok((p1, p2)) => set_prp(sqe, p1, p2),
            Err(e) => unreachable!("bounce buffer not describable by PRPs: {e}"),
        }
    }

    /// Reaps completions, issues waiting commands and writes the doorbells
    /// (each at most once). Finished I/O goes to `done`. Returns the number
    /// of completions seen.
    pub fn poll(&mut self, done: &mut Vec<(Io, IoResult)>) -> usize {
        let mut n = 0;
        if self.ctrl.is_failed() {
            self.fail_all(done);
        }
        while let Some(cqe) = self.cq.pop() {
            n += 1;
            if let Err(e) = self.sq.set_head(cqe.sqhd()) {
                self.ctrl.fail(&e.to_string());
                break;
            }
            let cmd = match self.cmds.take(cqe.cid()) {
                Ok(c) => c,
                Err(e) => {
                    self.ctrl.fail(&e.to_string());
                    break;
                }
            };
            let st = cqe.status();
            let result = if st.is_success() {
                Ok(())
            } else {
                tracing::debug!(qid = self.qid, status = ?st, "NVMe command failed");
                Err(IoError::Backend(EIO))
            };
            self.complete_cmd(cmd, result, done);
        }
        if let Some(h) = self.cq.take_doorbell() {
            self.ctrl.bar().write32(self.cq_db, h);
        }
        if self.ctrl.is_failed() {
            self.fail_all(done);
        } else {
            self.pump();
        }
        self.ring();
        done.append(&mut self.early);
        n
    }

    /// Writes the SQ tail doorbell if entries were added since the last.
    pub fn ring(&mut self) {
        if let Some(t) = self.sq.take_doorbell() {
            self.ctrl.bar().write32(self.sq_db, t);
        }
        self.stats
            .in_use
            .store(self.cmds.in_use() as u64, Ordering::Relaxed);
        self.stats.commands.store(self.commands, Ordering::Relaxed);
        self.stats.errors.store(self.errors, Ordering::Relaxed);
    }

    fn complete_cmd(&mut self, cmd: Cmd, result: IoResult, done: &mut Vec<(Io, IoResult)>) {
        self.commands += 1;
        if result.is_err() {
            self.errors += 1;
        }
        let chunk = cmd.chunk;
        if let Some(b) = cmd.bounce {
            if result.is_ok() {
                if let Some(req) = self.reqs[chunk.req as usize].as_mut() {
                    if req.io.op == IoOp::Read {
                        b.drain_to(&mut req.io.buf, chunk.at as usize, chunk.len as usize);
                    }
                }
            }
            self.pool.put(b);
        }
        self.finish_chunk(chunk, result, done);
    }

    fn finish_chunk(&mut self, chunk: Chunk, result: IoResult, done: &mut Vec<(Io, IoResult)>) {
        let slot = &mut self.reqs[chunk.req as usize];
        let Some(req) = slot.as_mut() else {
            return;
        };
        if let Err(e) = result {
            if req.result.is_ok() {
                req.result = Err(e);
            }
        }
        req.remaining -= 1;
        if req.remaining == 0 {
            if let Some(req) = slot.take() {
                self.free_reqs.push(chunk.req);
                done.push((req.io, req.result));
            }
        }
    }

    /// The controller failed: everything outstanding or waiting fails.
    /// Bounce buffers of outstanding commands are dropped (unmapped from
    /// the IOMMU first), never reused: the device may still write them.
    fn fail_all(&mut self, done: &mut Vec<(Io, IoResult)>) {
        for cmd in self.cmds.drain() {
            self.commands += 1;
            self.errors += 1;
            drop(cmd.bounce);
            self.finish_chunk(cmd.chunk, Err(IoError::Backend(EIO)), done);
        }
        while let Some(c) = self.pending.pop_front() {
            self.finish_chunk(c, Err(IoError::Backend(EIO)), done);
        }
    }

    /// The SQ ring memory (for `sim`, which plays the device).
    pub(crate) fn sq_mem(&self) -> &DmaMem {
        self.sq.mem()
    }

    /// The CQ ring memory (for `sim`).
    pub(crate) fn cq_mem(&self) -> &DmaMem {
        self.cq.mem()
    }

    /// The per-CID list pages (for `sim`).
    pub(crate) fn list_mem(&self) -> &DmaMem {
        &self.lists
    }

    /// Requests in flight, waiting, or failed and not yet handed out.
    pub fn outstanding(&self) -> usize {
        self.reqs.len() - self.free_reqs.len() + self.early.len()
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        self.stats.in_use.store(0, Ordering::Relaxed);
        self.ctrl.delete_io_queues(self.qid);
    }
}
