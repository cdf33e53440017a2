//! A software NVMe device for the queue logic's tests and the driver
//! benchmark: the real `QueuePair` (splitting, PRP lists, CIDs, phase tags,
//! doorbells, completion checks) over rings in plain memory, with the test
//! playing the controller: it fetches what the doorbell published and
//! posts completions in any order, hostile ones included.

use std::sync::Arc;

use pollux_graph::{Io, IoResult};
use pollux_nvme::cqe::Cqe;
use pollux_nvme::sqe::Sqe;
use pollux_nvme::status::Status;

use crate::ctrl::{Controller, CtrlInfo, Namespace};
use crate::dma::DmaMem;
use crate::qpair::QueuePair;
use crate::regs::{Cap, PAGE};
use crate::vfio::PciFunction;

/// BAR0 of the software device: registers and a few doorbells.
const SIM_BAR: usize = 4 * PAGE;

/// The driver's queue pair and the device side of its rings.
pub struct Sim {
    qp: QueuePair,
    ctrl: Arc<Controller>,
    ns: Namespace,
    cap: Cap,
    depth: u16,
    /// Device: next SQ entry to fetch.
    sq_head: u16,
    /// Device: next CQ slot to post into, and its phase.
    cq_tail: u16,
    cq_phase: bool,
}

/// Options of the software device.
#[derive(Clone, Copy, Debug)]
pub struct SimOpts {
    /// Entries per queue.
    pub depth: u16,
    /// Largest transfer per command in bytes.
    pub max_xfer: usize,
    /// ONCS bits (write zeroes, DSM).
    pub oncs: u16,
    /// SGL support (SGLS bits 1:0).
    pub sgl: u32,
}

impl Default for SimOpts {
    fn default() -> Self {
        SimOpts {
            depth: 64,
            max_xfer: 128 << 10,
            oncs: pollux_nvme::identify::oncs::WRITE_ZEROES | pollux_nvme::identify::oncs::DSM,
            sgl: 0,
        }
    }
}

impl Sim {
    /// A controller with one 512-byte-block namespace of 1 GiB, and its
    /// queue pair 1.
    pub fn new(o: SimOpts) -> Sim {
        let pci = PciFunction::simulated(SIM_BAR).expect("mapping the software BAR");
        let ns = Namespace {
            nsid: 1,
            block_size: 512,
            blocks: 1 << 21,
            dealloc_reads_zeroes: true,
        };
        let info = CtrlInfo {
            serial: "sim".into(),
            model: "software NVMe device".into(),
            firmware: "0".into(),
            version: 0x10400,
            max_xfer: o.max_xfer,
            sgl: o.sgl,
            oncs: o.oncs,
            vwc: false,
            io_queues: 1,
            io_queue_depth: o.depth,
            numa_node: None,
        };
        let ctrl = Controller::simulated(pci, vec![ns], info, 1).expect("software controller");
        let qp = QueuePair::create(&ctrl, 0).expect("software queue pair");
        Sim {
            cap: *ctrl.cap(),
            qp,
            ctrl,
            ns,
            depth: o.depth,
            sq_head: 0,
            cq_tail: 0,
            cq_phase: true,
        }
    }

    /// The controller (failed or not, counters).
    pub fn controller(&self) -> &Arc<Controller> {
        &self.ctrl
    }

    /// Driver: submits `io` to the namespace. Never inlined, so profiles
    /// show the driver's share on its own.
    #[inline(never)]
    pub fn submit(&mut self, io: Io) {
        self.qp.submit(&self.ns, io);
    }

    /// Driver: one poll (reap, issue waiting commands, doorbells).
    #[inline(never)]
    pub fn poll(&mut self, done: &mut Vec<(Io, IoResult)>) -> usize {
        self.qp.poll(done)
    }

    /// Requests the driver holds.
    pub fn outstanding(&self) -> usize {
        self.qp.outstanding()
    }

    /// Device: the SQ tail doorbell's current value.
    pub fn sq_doorbell(&self) -> u32 {
        self.ctrl.bar().read32(self.cap.sq_doorbell(1))
    }

    /// Device: the CQ head doorbell's current value.
    pub fn cq_doorbell(&self) -> u32 {
        self.ctrl.bar().read32(self.cap.cq_doorbell(1))
    }

    /// Device: fetches every entry the SQ doorbell published.
    pub fn fetch(&mut self) -> Vec<Sqe> {
        let tail = self.sq_doorbell() as u16;
        let mut out = Vec::new();
        while self.sq_head != tail {
            let raw = self
                .qp
                .sq_mem()
                .read::<64>(self.sq_head as usize * Sqe::SIZE);
            out.push(Sqe::from_array(raw));
            self.sq_head = (self.sq_head + 1) % self.depth;
        }
        out
    }

    /// Device: posts a completion for `cid` with the SQ head it has
    /// fetched up to.
    pub fn complete(&mut self, cid: u16, status: Status) {
        let sqhd = self.sq_head;
        self.post(cid, sqhd, status);
    }

    /// Device: posts any completion entry (hostile ones too).
    pub fn post(&mut self, cid: u16, sqhd: u16, status: Status) {
        let mut c = Cqe::new(cid, status);
        c.set_sqhd(sqhd);
        c.set_sqid(1);
        c.set_phase(self.cq_phase);
        self.qp
            .cq_mem()
            .write(self.cq_tail as usize * Cqe::SIZE, c.as_bytes());
        self.cq_tail += 1;
        if self.cq_tail == self.depth {
            self.cq_tail = 0;
            self.cq_phase = !self.cq_phase;
        }
    }

    /// Device: reads 8-byte entry `i` of a PRP list at bus address `list`.
    pub fn prp_entry(&self, list: u64, i: usize) -> u64 {
        let lists: &DmaMem = self.qp.list_mem();
        let off = (list - lists.iova()) as usize + i * 8;
        u64::from_le_bytes(lists.read::<8>(off))
    }
}

/// Fuzz body: a hostile device. `data` drives a queue pair of 8 entries:
/// each step submits a request (op, offset, length from the bytes), polls,
/// or posts a completion with any CID, SQ head and status. Whatever the
/// device does, the driver must not panic, must not lose a request, and
/// must fail them all once it stops trusting the device.
pub fn fuzz_completions(data: &[u8]) {
    use std::rc::Rc;

    use pollux_graph::{AlignedBuf, IoBuf, IoOp, IoSink};
    use pollux_poller::Reactor;

    struct NoSink;
    impl IoSink for NoSink {
        fn io_done(&self, _r: &Reactor, _io: Io, _res: IoResult) {}
    }
    let mut sim = Sim::new(SimOpts {
        depth: 8,
        max_xfer: 8192,
        ..SimOpts::default()
    });
    let sink: Rc<dyn IoSink> = Rc::new(NoSink);
    let mut done = Vec::new();
    let (mut submitted, mut completed) = (0u64, 0u64);
    for step in data.chunks(6) {
        let b = |i: usize| step.get(i).copied().unwrap_or(0);
        let w = |i: usize| u16::from_le_bytes([b(i), b(i + 1)]);
        match b(0) % 4 {
            0 => {
                let op = IoOp::ALL[b(1) as usize % IoOp::ALL.len()];
                let blocks = u64::from(b(2) % 64) + 1;
                let len = if op == IoOp::Flush { 0 } else { blocks * 512 };
                let buf = if op.has_data() {
                    IoBuf::Owned(AlignedBuf::zeroed(len as usize))
                } else {
                    IoBuf::None
                };
                let offset = u64::from(w(3)) * 512;
                sim.submit(Io::new(op, offset, len, buf, sink.clone(), submitted));
                submitted += 1;
            }
            1 => {
                let _ = sim.fetch();
                sim.complete(w(1) % 16, Status::SUCCESS);
            }
            2 => {
                let st = Status::from_field(w(3)).0;
                sim.post(w(1), w(4), st);
            }
            _ => {
                sim.poll(&mut done);
            }
        }
        completed += done.drain(..).count() as u64;
    }
    // Fail whatever is left, as a controller fault would: all of it comes back.
    sim.controller().fail("fuzz: end of input");
    sim.poll(&mut done);
    completed += done.drain(..).count() as u64;
    assert_eq!(completed, submitted, "a request was lost");
    assert_eq!(sim.outstanding(), 0);
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use pollux_graph::{AlignedBuf, IoBuf, IoError, IoOp, IoSink};
    use pollux_nvme::opcode::IoOpcode;
    use pollux_poller::Reactor;

    use super::*;

    /// Completions are collected from `poll`, never delivered to a sink.
    struct NoSink;
    impl IoSink for NoSink {
        fn io_done(&self, _r: &Reactor, _io: Io, _res: IoResult) {
            unreachable!("the tests take completions from poll")
        }
    }

    fn io(op: IoOp, offset: u64, len: u64, tag: u64) -> Io {
        let buf = if op.has_data() {
            IoBuf::Owned(AlignedBuf::zeroed(len as usize))
        } else {
            IoBuf::None
        };
        Io::new(op, offset, len, buf, Rc::new(NoSink), tag)
    }

    fn tags(done: &mut Vec<(Io, IoResult)>) -> Vec<(u64, IoResult)> {
        done.drain(..).map(|(io, r)| (io.tag, r)).collect()
    }

    fn prp1(s: &Sqe) -> u64 {
        s.prp1()
    }

    #[test]
    fn fuzz_body_on_fixed_inputs() {
        fuzz_completions(&[]);
        // Submit, fetch-and-complete, poll, repeated; then junk.
        let mut v = Vec::new();
        for i in 0..200u8 {
            v.extend_from_slice(&[i % 4, i, i.wrapping_mul(7), i, 0, i / 3]);
        }
        fuzz_completions(&v);
        let junk: Vec<u8> = (0..3000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        fuzz_completions(&junk);
    }

    #[test]
    fn doorbells_once_per_poll_and_completions_out_of_order() {
        let mut sim = Sim::new(SimOpts::default());
        let mut done = Vec::new();
        for t in 0..3 {
            sim.submit(io(IoOp::Read, t * 4096, 4096, t));
        }
        // Nothing rung yet: submissions are batched until the poll.
        assert_eq!(sim.sq_doorbell(), 0);
        assert_eq!(sim.poll(&mut done), 0);
        assert_eq!(
            sim.sq_doorbell(),
            3,
            "one doorbell write for three commands"
        );
        let sqes = sim.fetch();
        assert_eq!(sqes.len(), 3);
        for (t, s) in sqes.iter().enumerate() {
            assert_eq!(s.opcode(), IoOpcode::Read as u8);
            assert_eq!(s.nsid(), 1);
            assert_eq!(u64::from(s.cdw10()), t as u64 * 8, "SLBA");
            assert_eq!(s.cdw12(), 7, "NLB, 0's based");
            assert_eq!(prp1(s) % PAGE as u64, 0);
            assert_eq!(s.prp2(), 0, "one page: no PRP2");
        }
        // The device answers in its own order.
        for i in [2, 0, 1] {
            sim.complete(sqes[i].cid(), Status::SUCCESS);
        }
        assert_eq!(sim.poll(&mut done), 3);
        assert_eq!(tags(&mut done), vec![(2, Ok(())), (0, Ok(())), (1, Ok(()))]);
        assert_eq!(sim.cq_doorbell(), 3);
        assert_eq!(sim.outstanding(), 0);
    }

    #[test]
    fn large_io_is_cut_at_max_xfer_with_prp_lists() {
        let mut sim = Sim::new(SimOpts::default());
        let mut done = Vec::new();
        sim.submit(io(IoOp::Write, 1 << 20, 512 << 10, 7));
        sim.poll(&mut done);
        let sqes = sim.fetch();
        assert_eq!(sqes.len(), 4, "512 KiB in 128 KiB commands");
        for (i, s) in sqes.iter().enumerate() {
            assert_eq!(s.opcode(), IoOpcode::Write as u8);
            assert_eq!(u64::from(s.cdw10()), 2048 + i as u64 * 256);
            assert_eq!(s.cdw12(), 255);
            // 32 pages: PRP1 and a list of 31 consecutive pages.
            let list = s.prp2();
            for k in 0..31 {
                assert_eq!(
                    sim.prp_entry(list, k),
                    prp1(s) + (k as u64 + 1) * PAGE as u64
                );
            }
        }
        for s in &sqes[..3] {
            sim.complete(s.cid(), Status::SUCCESS);
        }
        sim.poll(&mut done);
        assert!(done.is_empty(), "the request waits for its last command");
        sim.complete(sqes[3].cid(), Status::SUCCESS);
        sim.poll(&mut done);
        assert_eq!(tags(&mut done), vec![(7, Ok(()))]);
    }

    #[test]
    fn commands_wait_for_free_cids() {
        let mut sim = Sim::new(SimOpts {
            depth: 4,
            ..SimOpts::default()
        });
        let mut done = Vec::new();
        for t in 0..5 {
            sim.submit(io(IoOp::Read, t * 512, 512, t));
        }
        sim.poll(&mut done);
        let first = sim.fetch();
        assert_eq!(first.len(), 3, "a ring of 4 holds 3 commands");
        sim.complete(first[1].cid(), Status::SUCCESS);
        sim.poll(&mut done);
        assert_eq!(tags(&mut done), vec![(1, Ok(()))]);
        let next = sim.fetch();
        assert_eq!(
            next.len(),
            1,
            "the freed CID went to the next waiting command"
        );
        assert_eq!(next[0].cid(), first[1].cid());
        assert_eq!(next[0].cdw10(), 3);
    }

    #[test]
    fn a_lagging_sq_head_makes_commands_wait_not_panic() {
        // Found by the fuzzer: CIDs free, SQ still full by the device's word.
        let mut sim = Sim::new(SimOpts {
            depth: 4,
            ..SimOpts::default()
        });
        let mut done = Vec::new();
        for t in 0..3 {
            sim.submit(io(IoOp::Read, t * 512, 512, t));
        }
        sim.poll(&mut done);
        let s = sim.fetch();
        sim.post(s[0].cid(), 0, Status::SUCCESS);
        sim.submit(io(IoOp::Read, 0, 512, 3));
        sim.poll(&mut done);
        assert_eq!(tags(&mut done), vec![(0, Ok(()))]);
        assert!(
            sim.fetch().is_empty(),
            "no SQ room by the device's head yet"
        );
        sim.post(s[1].cid(), 3, Status::SUCCESS);
        sim.poll(&mut done);
        assert_eq!(tags(&mut done), vec![(1, Ok(()))]);
        assert_eq!(sim.fetch().len(), 1, "the waiting command went out");
        assert!(!sim.controller().is_failed());
    }

    #[test]
    fn phase_tags_across_many_wraps() {
        let mut sim = Sim::new(SimOpts {
            depth: 4,
            ..SimOpts::default()
        });
        let mut done = Vec::new();
        for t in 0..25 {
            sim.submit(io(IoOp::Read, 0, 512, t));
            sim.poll(&mut done);
            let s = sim.fetch();
            assert_eq!(s.len(), 1);
            sim.complete(s[0].cid(), Status::SUCCESS);
            sim.poll(&mut done);
            assert_eq!(tags(&mut done), vec![(t, Ok(()))]);
        }
        assert!(!sim.controller().is_failed());
    }

    #[test]
    fn error_status_fails_only_that_io() {
        let mut sim = Sim::new(SimOpts::default());
        let mut done = Vec::new();
        sim.submit(io(IoOp::Write, 0, 4096, 1));
        sim.submit(io(IoOp::Write, 4096, 4096, 2));
        sim.poll(&mut done);
        let s = sim.fetch();
        let media = Status::new(pollux_nvme::status::Sct::MEDIA, 0x81);
        sim.complete(s[0].cid(), media);
        sim.complete(s[1].cid(), Status::SUCCESS);
        sim.poll(&mut done);
        assert_eq!(
            tags(&mut done),
            vec![(1, Err(IoError::Backend(libc::EIO))), (2, Ok(()))]
        );
        assert!(!sim.controller().is_failed());
    }

    #[test]
    fn a_hostile_cid_fails_the_controller_and_its_io() {
        let mut sim = Sim::new(SimOpts::default());
        let mut done = Vec::new();
        sim.submit(io(IoOp::Read, 0, 4096, 1));
        sim.submit(io(IoOp::Read, 4096, 4096, 2));
        sim.poll(&mut done);
        let s = sim.fetch();
        sim.post(999, 2, Status::SUCCESS);
        sim.poll(&mut done);
        assert!(sim.controller().is_failed());
        let eio = Err(IoError::Backend(libc::EIO));
        assert_eq!(tags(&mut done), vec![(1, eio.clone()), (2, eio.clone())]);
        // A late completion for a failed command is never used.
        sim.complete(s[0].cid(), Status::SUCCESS);
        sim.submit(io(IoOp::Read, 0, 4096, 3));
        sim.poll(&mut done);
        assert_eq!(tags(&mut done), vec![(3, eio)]);
        assert_eq!(sim.outstanding(), 0);
    }

    #[test]
    fn a_hostile_sq_head_fails_the_controller() {
        let mut sim = Sim::new(SimOpts::default());
        let mut done = Vec::new();
        sim.submit(io(IoOp::Read, 0, 4096, 1));
        sim.poll(&mut done);
        let s = sim.fetch();
        // Claims to have consumed entries never submitted.
        sim.post(s[0].cid(), 40, Status::SUCCESS);
        sim.poll(&mut done);
        assert!(sim.controller().is_failed());
        assert_eq!(tags(&mut done), vec![(1, Err(IoError::Backend(libc::EIO)))]);
    }

    #[test]
    fn zeroes_discard_and_flush_commands() {
        let mut sim = Sim::new(SimOpts::default());
        let mut done = Vec::new();
        // 64 MiB of 512-byte blocks: two Write Zeroes of 65536 blocks.
        sim.submit(io(IoOp::WriteZeroes, 0, 64 << 20, 1));
        sim.submit(io(IoOp::Discard, 64 << 20, 1 << 20, 2));
        sim.submit(io(IoOp::Flush, 0, 0, 3));
        sim.poll(&mut done);
        let s = sim.fetch();
        assert_eq!(s.len(), 4);
        let wz = IoOpcode::WriteZeroes as u8;
        assert_eq!((s[0].opcode(), s[0].cdw10(), s[0].cdw12()), (wz, 0, 0xffff));
        assert_eq!(
            (s[1].opcode(), s[1].cdw10(), s[1].cdw12()),
            (wz, 65536, 0xffff)
        );
        // A discard zeroes for sure and lets the device deallocate (DEAC).
        assert_eq!(s[2].opcode(), wz);
        assert_eq!(s[2].cdw10(), 131072);
        assert_eq!(s[2].cdw12(), 2047 | (1 << 25));
        assert_eq!(s[3].opcode(), IoOpcode::Flush as u8);
        for x in &s {
            sim.complete(x.cid(), Status::SUCCESS);
        }
        sim.poll(&mut done);
        assert_eq!(tags(&mut done), vec![(1, Ok(())), (2, Ok(())), (3, Ok(()))]);
    }

    #[test]
    fn discard_without_write_zeroes_is_dsm_deallocate() {
        let mut sim = Sim::new(SimOpts {
            oncs: pollux_nvme::identify::oncs::DSM,
            ..SimOpts::default()
        });
        let mut done = Vec::new();
        sim.submit(io(IoOp::Discard, 4096, 8192, 1));
        sim.submit(io(IoOp::WriteZeroes, 0, 512, 2));
        sim.poll(&mut done);
        assert_eq!(
            tags(&mut done),
            vec![(2, Err(IoError::Unsupported("write_zeroes")))]
        );
        let s = sim.fetch();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].opcode(), IoOpcode::DatasetManagement as u8);
        assert_eq!((s[0].cdw10(), s[0].cdw11()), (0, 1 << 2));
        // The range: NLB 16 at SLBA 8.
        let r = s[0].prp1();
        assert_eq!(sim.prp_entry(r, 0) >> 32, 16);
        assert_eq!(sim.prp_entry(r, 1), 8);
    }
}
