//! Front-end tests over real sockets: the happy path through the nvme
//! crate's host library, and bad input through a small raw-PDU client
//! that builds PDUs with the nvme crate's encoder.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pollux_nvme::fabrics::{ConnectCmd, ConnectData, Nqn, DISCOVERY_NQN};
use pollux_nvme::host::{self, HostConfig, HostError};
use pollux_nvme::identify::cntrltype;
use pollux_nvme::io::{DsmRange, DSM_ATTR_DEALLOCATE};
use pollux_nvme::log_page::{DiscoveryLogEntry, DiscoveryLogHeader, GetLogPageCmd};
use pollux_nvme::opcode::{AdminOpcode, IoOpcode};
use pollux_nvme::tcp::{
    decode_common_header, decode_header, DataHdr, Fes, IcReq, Limits, Pdu, Role, TxParams,
    DGST_DATA, DGST_HEADER,
};
use pollux_nvme::{Cqe, Sgl, Sqe, Status};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::request::ReqState;
use super::NvmfTarget;
use crate::config::{NvmfConfig, NvmfSubsystemConfig};
use crate::testing::{loopback_subsystem, Reactors, RAM_BLOCK_SIZE};

const NQN: &str = "nqn.2024-11.dev.pollux:test";
const HOST: &str = "nqn.2024-11.dev.pollux:allowed-host";
/// 8 MiB of [`RAM_BLOCK_SIZE`] blocks.
const BLOCKS: u64 = 16384;
const TIMEOUT: Duration = Duration::from_secs(10);
/// Connect's CNTLID asking for a new (dynamic) controller, as an admin
/// queue does.
const NEW_CONTROLLER: u16 = 0xFFFF;

struct Fixture {
    // Stopped by `Drop::drop`, before `reactors` shuts the graph down.
    tgt: Option<NvmfTarget>,
    addr: SocketAddr,
    /// Held for its drop: the graph and reactors under the target.
    _reactors: Reactors,
}

impl Fixture {
    fn new(allow_any_host: bool) -> Fixture {
        Fixture::with_cores(allow_any_host, vec![0])
    }

    fn with_cores(allow_any_host: bool, cores: Vec<usize>) -> Fixture {
        Fixture::build(allow_any_host, cores, super::BUFFER_BUDGET_PER_REACTOR)
    }

    fn build(allow_any_host: bool, cores: Vec<usize>, budget: u64) -> Fixture {
        let reactors = Reactors::adaptive(cores);
        reactors.add_ram("ram0", BLOCKS * u64::from(RAM_BLOCK_SIZE));
        let cfg = NvmfConfig {
            subsystems: vec![NvmfSubsystemConfig {
                allow_any_host,
                hosts: vec![HOST.into()],
                ..loopback_subsystem(NQN, "ram0")
            }],
        };
        let tgt = NvmfTarget::start_with_budget(&cfg, &reactors.graph, budget).unwrap();
        let addr = tgt.local_addrs()[0];
        Fixture {
            tgt: Some(tgt),
            addr,
            _reactors: reactors,
        }
    }

    fn host(&self) -> HostConfig {
        let mut c = HostConfig::new(self.addr, NQN);
        c.hostnqn = HOST.into();
        c.timeout = TIMEOUT;
        c
    }

    fn controllers(&self) -> usize {
        self.tgt.as_ref().unwrap().shared.controllers().len()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(t) = self.tgt.take() {
            t.stop();
        }
    }
}

/// A raw NVMe/TCP client for building bad input.
struct Raw {
    s: TcpStream,
    tx: TxParams,
    rx: Limits,
}

impl Raw {
    fn open(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Raw {
            s,
            tx: TxParams::default(),
            rx: Limits::new(Role::Host),
        }
    }

    /// Opens and completes ICReq/ICResp with the given digests.
    fn ready(addr: SocketAddr, dgst: u8) -> Raw {
        let mut r = Raw::open(addr);
        r.send(&Raw::icreq(dgst), &[]);
        let (pdu, _) = r.recv().expect("ICResp");
        let Pdu::IcResp(resp) = pdu else {
            panic!("expected ICResp, got {pdu:?}")
        };
        assert_eq!(resp.dgst, dgst);
        let (hd, dd) = (dgst & DGST_HEADER != 0, dgst & DGST_DATA != 0);
        r.tx = TxParams {
            hdgst: hd,
            ddgst: dd,
            pda: resp.cpda,
        };
        r.rx = Limits::established(Role::Host, hd, dd, 0, 0, 1 << 20);
        r
    }

    /// ICReq asking for the `dgst` digests.
    fn icreq(dgst: u8) -> Pdu {
        Pdu::IcReq(IcReq {
            pfv: 0,
            hpda: 0,
            dgst,
            maxr2t: 0,
        })
    }

    /// Opens, completes ICReq/ICResp with `dgst` and connects I/O queue
    /// `qid` to controller `cntlid`, which must succeed.
    fn io_queue(addr: SocketAddr, dgst: u8, qid: u16, cntlid: u16) -> Raw {
        let mut r = Raw::ready(addr, dgst);
        let cqe = r.connect(qid, 31, &Raw::connect_data(NQN, HOST, cntlid));
        assert_status(cqe.status(), Status::SUCCESS);
        r
    }

    fn encode(&self, pdu: &Pdu, data: &[u8]) -> Vec<u8> {
        let mut hdr = [0u8; 256];
        let frame = pdu.encode(&self.tx, data.len() as u32, &mut hdr).unwrap();
        let hl = if data.is_empty() {
            frame.header_len()
        } else {
            frame.data_offset as usize
        };
        let mut out = hdr[..hl].to_vec();
        out.extend_from_slice(data);
        if frame.ddgst {
            out.extend_from_slice(&pollux_nvme::tcp::data_digest(&[data]));
        }
        out
    }

    fn send(&mut self, pdu: &Pdu, data: &[u8]) {
        let b = self.encode(pdu, data);
        self.s.write_all(&b).unwrap();
    }

    fn recv(&mut self) -> std::io::Result<(Pdu, Vec<u8>)> {
        let mut ch = [0u8; 8];
        self.s.read_exact(&mut ch)?;
        let frame = decode_common_header(&ch, &self.rx).unwrap();
        let mut rest = vec![0u8; frame.plen as usize];
        rest[..8].copy_from_slice(&ch);
        self.s.read_exact(&mut rest[8..])?;
        let (frame, pdu) = decode_header(&rest, &self.rx).unwrap();
        let start = frame.data_offset as usize;
        let data = rest[start..start + frame.data_len as usize].to_vec();
        Ok((pdu, data))
    }

    /// Expects a C2HTermReq with `fes`, then the connection closing.
    fn expect_term(&mut self, fes: Fes) {
        let (pdu, _) = self.recv().expect("C2HTermReq");
        match pdu {
            Pdu::C2HTermReq(t) => assert_eq!(t.fes, fes, "{t:?}"),
            other => panic!("expected C2HTermReq, got {other:?}"),
        }
        let mut b = [0u8; 1];
        assert!(
            matches!(self.s.read(&mut b), Ok(0) | Err(_)),
            "connection stayed open after the TermReq"
        );
    }

    fn connect_sqe(qid: u16, sqsize: u16) -> Sqe {
        ConnectCmd {
            cid: 1,
            recfmt: 0,
            qid,
            sqsize,
            cattr: 0,
            kato: 0,
            dptr: Sgl::in_capsule(0, ConnectData::SIZE as u32),
        }
        .to_sqe()
    }

    /// Sends Connect for queue `qid` (0-based `sqsize`) with `data` and
    /// returns its response.
    fn connect(&mut self, qid: u16, sqsize: u16, data: &[u8; ConnectData::SIZE]) -> Cqe {
        self.send(&Pdu::CapsuleCmd(Raw::connect_sqe(qid, sqsize)), data);
        self.response()
    }

    fn connect_data(subnqn: &str, hostnqn: &str, cntlid: u16) -> [u8; ConnectData::SIZE] {
        Raw::connect_data_raw(subnqn, *Nqn::field(hostnqn).unwrap().raw(), cntlid)
    }

    /// Connect data with the HOSTNQN field exactly as given.
    fn connect_data_raw(subnqn: &str, hostnqn: [u8; 256], cntlid: u16) -> [u8; ConnectData::SIZE] {
        ConnectData {
            hostid: [7; 16],
            cntlid,
            subnqn: Nqn::new(subnqn).unwrap(),
            hostnqn: Nqn::from_raw(hostnqn),
        }
        .to_bytes()
    }

    /// An admin queue connected with `cattr` and enabled (CC.EN): the
    /// Connect response and the raw client.
    fn admin(addr: SocketAddr, cattr: u8) -> (Cqe, Raw) {
        let mut r = Raw::ready(addr, 0);
        let mut sqe = Raw::connect_sqe(0, 31);
        sqe.as_bytes_mut()[46] = cattr;
        r.send(
            &Pdu::CapsuleCmd(sqe),
            &Raw::connect_data(NQN, HOST, NEW_CONTROLLER),
        );
        let connected = r.response();
        assert_status(connected.status(), Status::SUCCESS);
        let cc = pollux_nvme::fabrics::PropertySet {
            cid: 2,
            size: pollux_nvme::fabrics::PropertySize::Four,
            offset: pollux_nvme::fabrics::property::CC,
            value: 1 | (6 << 16) | (4 << 20),
        };
        r.send(&Pdu::CapsuleCmd(cc.to_sqe()), &[]);
        assert_status(r.response().status(), Status::SUCCESS);
        (connected, r)
    }

    fn response(&mut self) -> Cqe {
        loop {
            match self.recv().expect("response").0 {
                Pdu::CapsuleResp(c) => return c,
                Pdu::C2HTermReq(t) => panic!("unexpected TermReq {t:?}"),
                _ => {}
            }
        }
    }
}

/// Connects an admin queue of `sqsize` on `r`, expecting the target to
/// refuse it with Invalid Parameters pointing at SQSIZE.
fn expect_bad_sqsize(r: &mut Raw, sqsize: u16) {
    let cqe = r.connect(0, sqsize, &Raw::connect_data(NQN, HOST, NEW_CONTROLLER));
    assert_status(cqe.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(cqe.dw0() & 0xffff, u32::from(ConnectCmd::SQSIZE_OFFSET));
}

fn assert_status(got: Status, want: Status) {
    assert!(got.same_code(&want), "status {got:?}, expected {want:?}");
}

/// Expects `r` to have failed with a status like `want` (`what` names the
/// call for the failure message); returns the status.
fn expect_status<T>(r: Result<T, HostError>, want: Status, what: &str) -> Status {
    match r {
        Err(HostError::Status(s)) => {
            assert_status(s, want);
            s
        }
        Err(e) => panic!("{what}: {e}"),
        Ok(_) => panic!("{what}: succeeded, expected {want:?}"),
    }
}

/// An admin command `opcode` without data (a zero-length transport SGL).
fn dataless(opcode: AdminOpcode, cid: u16) -> Sqe {
    let mut sqe = Sqe::new(opcode.as_u8(), cid);
    sqe.set_sgl(&Sgl::transport(0));
    sqe
}

/// Writes `data` at `slba` of namespace 1, which must succeed.
fn write(q: &mut host::QueuePair, slba: u64, data: &[u8]) {
    let nlb = (data.len() / RAM_BLOCK_SIZE as usize) as u32;
    let w = q
        .execute(
            host::rw_sqe(true, 1, slba, nlb),
            data.to_vec(),
            true,
            TIMEOUT,
        )
        .unwrap();
    assert_status(w.cqe.status(), Status::SUCCESS);
}

/// Reads `len` bytes at `slba` of namespace 1, which must succeed.
fn read(q: &mut host::QueuePair, slba: u64, len: usize) -> Vec<u8> {
    let nlb = (len / RAM_BLOCK_SIZE as usize) as u32;
    let rd = q
        .execute(
            host::rw_sqe(false, 1, slba, nlb),
            vec![0; len],
            false,
            TIMEOUT,
        )
        .unwrap();
    assert_status(rd.cqe.status(), Status::SUCCESS);
    rd.data
}

/// Writes `data` at `slba` of namespace 1 and reads it back unchanged.
fn write_read_back(q: &mut host::QueuePair, slba: u64, data: &[u8]) {
    write(q, slba, data);
    assert!(read(q, slba, data.len()) == data, "read back differs");
}

/// Dataset Management deallocating `nlb` blocks at `slba` of namespace 1,
/// and its one-range list (NR 0: one range).
fn deallocate(slba: u64, nlb: u32) -> (Sqe, Vec<u8>) {
    let mut dsm = Sqe::new(IoOpcode::DatasetManagement.as_u8(), 0);
    dsm.set_nsid(1);
    dsm.set_cdw11(DSM_ATTR_DEALLOCATE);
    let mut ranges = vec![0u8; 16];
    DsmRange {
        cattr: 0,
        nlb,
        slba,
    }
    .write(&mut ranges)
    .unwrap();
    (dsm, ranges)
}

/// The one entry of discovery log `page`, which must be NQN's.
fn only_entry(page: &[u8]) -> DiscoveryLogEntry {
    assert_eq!(DiscoveryLogHeader::parse(page).unwrap().numrec, 1);
    let e = DiscoveryLogEntry::parse(&page[1024..]).unwrap();
    assert!(e.subnqn.eq_str(NQN));
    e
}

/// `len` bytes of the discovery log page, read on discovery controller `c`.
fn discovery_log(c: &mut host::Controller, len: usize) -> Vec<u8> {
    c.admin_read(GetLogPageCmd::new(0x70, 0, 0, len as u32).to_sqe(0), len)
        .unwrap()
}

/// A good host connects, identifies and does I/O: what every bad-input
/// test checks still works afterwards.
fn good_host_io(fx: &Fixture) {
    let mut c = host::Controller::connect(fx.host()).expect("connect");
    c.set_num_queues(1).unwrap();
    let mut q = c.io_queue(1, 32).unwrap();
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    write_read_back(&mut q, 8, &data);
    drop(q);
    c.shutdown().unwrap();
}

#[test]
fn identify_satisfies_linux_fabrics_checks() {
    let fx = Fixture::new(true);
    let mut c = host::Controller::connect(fx.host()).unwrap();
    let id = c.identify;
    assert_eq!(id.cntlid, c.cntlid());
    assert_ne!(id.kas, 0);
    assert!(id.ioccsz >= 4);
    assert_eq!(id.ioccsz * 16 - 64, super::IN_CAPSULE_DATA);
    assert!(id.iorcsz >= 1);
    assert_eq!(id.icdoff, 0);
    assert_ne!(id.sgls & 0b11, 0);
    assert_eq!(id.mdts, super::MDTS);
    assert_ne!(id.maxcmd, 0);
    assert_eq!(id.cntrltype, cntrltype::IO);
    assert!(id.subnqn.eq_str(NQN));
    assert_eq!(id.nn, 1);
    let ns = c.identify_namespace(1).unwrap();
    assert_eq!(ns.nsze, BLOCKS);
    assert_eq!(ns.active_lbaf().unwrap().lbads, 9);
    // Unknown namespace.
    expect_status(
        c.identify_namespace(9),
        Status::INVALID_NAMESPACE_OR_FORMAT,
        "Identify of namespace 9",
    );
    // The host library reports the 1-based count granted.
    assert_eq!(c.set_num_queues(1000).unwrap(), super::MAX_IO_QUEUES);
    c.keep_alive().unwrap();
    c.shutdown().unwrap();
}

#[test]
fn io_commands_and_r2t_path() {
    let fx = Fixture::new(true);
    let mut c = host::Controller::connect(fx.host()).unwrap();
    c.set_num_queues(2).unwrap();
    let mut q = c.io_queue(1, 64).unwrap();
    // 64 KiB: beyond in-capsule, so R2T + H2CData.
    let big: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    write_read_back(&mut q, 100, &big);

    // Past the end: LBA Out of Range, and the queue keeps working.
    let oor = q
        .execute(
            host::rw_sqe(false, 1, BLOCKS - 1, 2),
            vec![0; 1024],
            false,
            TIMEOUT,
        )
        .unwrap();
    assert_status(oor.cqe.status(), Status::LBA_OUT_OF_RANGE);
    // Larger than MDTS: Invalid Field.
    let mut huge = host::rw_sqe(false, 1, 0, 512);
    huge.set_sgl(&Sgl::transport(512 * 512));
    let r = q.execute(huge, vec![0; 512 * 512], false, TIMEOUT);
    match r {
        Ok(c) => assert_status(c.cqe.status(), Status::INVALID_FIELD),
        Err(e) => panic!("{e}"),
    }
    // SGL length disagreeing with NLB.
    let mut bad = host::rw_sqe(false, 1, 0, 8);
    bad.set_sgl(&Sgl::transport(512));
    let r = q.execute(bad, vec![0; 512], false, TIMEOUT).unwrap();
    assert_status(r.cqe.status(), Status::DATA_SGL_LENGTH_INVALID);
    // Unknown namespace.
    let r = q
        .execute(host::rw_sqe(false, 5, 0, 1), vec![0; 512], false, TIMEOUT)
        .unwrap();
    assert_status(r.cqe.status(), Status::INVALID_NAMESPACE_OR_FORMAT);

    // Flush.
    let r = q
        .execute(host::flush_sqe(1), Vec::new(), false, TIMEOUT)
        .unwrap();
    assert_status(r.cqe.status(), Status::SUCCESS);

    // Write Zeroes then Dataset Management (deallocate) read back zeroes.
    let mut wz = host::rw_sqe(false, 1, 100, 8);
    wz.set_opcode(0x08);
    wz.set_sgl(&Sgl::transport(0));
    let r = q.execute(wz, Vec::new(), false, TIMEOUT).unwrap();
    assert_status(r.cqe.status(), Status::SUCCESS);
    let (dsm, ranges) = deallocate(108, 120);
    let r = q.execute(dsm, ranges, true, TIMEOUT).unwrap();
    assert_status(r.cqe.status(), Status::SUCCESS);
    let rd = q
        .execute(
            host::rw_sqe(false, 1, 100, 128),
            vec![1; 65536],
            false,
            TIMEOUT,
        )
        .unwrap();
    assert!(rd.data.iter().all(|&b| b == 0), "not zeroed");
    drop(q);
    c.shutdown().unwrap();
}

#[test]
fn discovery_lists_the_subsystem() {
    let fx = Fixture::new(true);
    let mut cfg = fx.host();
    cfg.subnqn = DISCOVERY_NQN.into();
    let mut c = host::Controller::connect(cfg).unwrap();
    assert_eq!(c.identify.cntrltype, cntrltype::DISCOVERY);
    let e = only_entry(&discovery_log(&mut c, 2048));
    assert_eq!(e.trsvcid_str(), fx.addr.port().to_string().as_bytes());
    assert_eq!(e.traddr_str(), b"127.0.0.1");
}

#[test]
fn unknown_host_gets_connect_invalid_host() {
    let fx = Fixture::new(false);
    let mut cfg = fx.host();
    cfg.hostnqn = "nqn.2024-11.dev.pollux:stranger".into();
    let s = expect_status(
        host::Controller::connect(cfg),
        Status::CONNECT_INVALID_HOST,
        "a host off the allow list",
    );
    assert_eq!(s.code() >> 8, 1, "SCT must be command specific");
    // The allowed host still can, and discovery hides nothing it may use.
    good_host_io(&fx);
}

#[test]
fn connect_checks_queue_sizes_and_queue_ids() {
    let fx = Fixture::new(true);
    for sqsize in [0u16, 1000] {
        expect_bad_sqsize(&mut Raw::ready(fx.addr, 0), sqsize);
    }
    // I/O queue for a controller that does not exist.
    let cqe = Raw::ready(fx.addr, 0).connect(1, 31, &Raw::connect_data(NQN, HOST, 4242));
    assert_status(cqe.status(), Status::CONNECT_INVALID_PARAMETERS);
    // I/O queue beyond the granted number.
    let mut c = host::Controller::connect(fx.host()).unwrap();
    assert_eq!(c.set_num_queues(2).unwrap(), 2);
    expect_status(
        c.io_queue(3, 32),
        Status::CONNECT_INVALID_PARAMETERS,
        "I/O queue 3 of 2",
    );
    let _q1 = c.io_queue(1, 32).unwrap();
    // The same QID twice.
    assert!(c.io_queue(1, 32).is_err());
    // Unknown subsystem.
    let nope = Raw::connect_data("nqn.2024-11.dev.pollux:nope", HOST, NEW_CONTROLLER);
    let cqe = Raw::ready(fx.addr, 0).connect(0, 31, &nope);
    assert_status(cqe.status(), Status::CONNECT_INVALID_PARAMETERS);
}

#[test]
fn malformed_pdus_get_term_req_and_other_connections_keep_working() {
    let fx = Fixture::new(true);
    // A healthy queue pair open during all of this.
    let mut keeper = host::Controller::connect(fx.host()).unwrap();

    // Command before ICReq: PDU sequence error.
    let mut r = Raw::open(fx.addr);
    let b = r.encode(&Pdu::CapsuleCmd(Sqe::new(0x06, 1)), &[]);
    r.s.write_all(&b).unwrap();
    r.expect_term(Fes::PDU_SEQUENCE_ERROR);

    // Unknown PDU type.
    let mut r = Raw::ready(fx.addr, 0);
    r.s.write_all(&[0xEE, 0, 24, 0, 24, 0, 0, 0]).unwrap();
    r.s.write_all(&[0u8; 16]).unwrap();
    r.expect_term(Fes::INVALID_HEADER_FIELD);

    // Wrong HLEN for a CapsuleCmd.
    let mut r = Raw::ready(fx.addr, 0);
    r.s.write_all(&[0x04, 0, 24, 0, 24, 0, 0, 0]).unwrap();
    r.s.write_all(&[0u8; 16]).unwrap();
    r.expect_term(Fes::INVALID_HEADER_FIELD);

    // Oversized: in-capsule data beyond what we advertised (1 MiB
    // claimed; the target must not allocate or wait for it).
    let mut r = Raw::ready(fx.addr, 0);
    let plen: u32 = 72 + (1 << 20);
    let mut h = vec![0x04, 0, 72, 72];
    h.extend_from_slice(&plen.to_le_bytes());
    h.extend_from_slice(&[0u8; 64]);
    r.s.write_all(&h).unwrap();
    r.expect_term(Fes::DATA_LIMIT_EXCEEDED);

    // H2CData with no R2T outstanding.
    let mut r = Raw::ready(fx.addr, 0);
    let h2c = Pdu::H2CData {
        hdr: DataHdr {
            cccid: 1,
            ttag: 0,
            datao: 0,
            datal: 512,
        },
        last: true,
    };
    r.send(&h2c, &[0u8; 512]);
    r.expect_term(Fes::PDU_SEQUENCE_ERROR);

    // ICReq twice.
    let mut r = Raw::ready(fx.addr, 0);
    let b = Raw::open(fx.addr).encode(&Raw::icreq(0), &[]);
    r.s.write_all(&b).unwrap();
    r.expect_term(Fes::PDU_SEQUENCE_ERROR);

    // Bad header digest.
    let mut r = Raw::ready(fx.addr, DGST_HEADER | DGST_DATA);
    let mut b = r.encode(&Pdu::CapsuleCmd(Sqe::new(0x18, 3)), &[]);
    b[72] ^= 0xff;
    r.s.write_all(&b).unwrap();
    r.expect_term(Fes::HEADER_DIGEST_ERROR);

    // Header digest missing although negotiated (flags disagree).
    let mut r = Raw::ready(fx.addr, DGST_HEADER);
    r.tx.hdgst = false;
    r.send(&Pdu::CapsuleCmd(Sqe::new(0x18, 3)), &[]);
    r.expect_term(Fes::INVALID_HEADER_FIELD);

    // Bad data digest on in-capsule data: not fatal, the command completes
    // with Transient Transport Error and the connection stays usable.
    let mut r = Raw::ready(fx.addr, DGST_DATA);
    let data = Raw::connect_data(NQN, HOST, NEW_CONTROLLER);
    let mut b = r.encode(&Pdu::CapsuleCmd(Raw::connect_sqe(0, 31)), &data);
    let n = b.len();
    b[n - 1] ^= 0xff;
    r.s.write_all(&b).unwrap();
    assert_status(r.response().status(), Status::TRANSIENT_TRANSPORT_ERROR);
    assert_status(r.connect(0, 31, &data).status(), Status::SUCCESS);

    // Garbage bytes.
    let mut r = Raw::ready(fx.addr, 0);
    r.s.write_all(&[0xffu8; 300]).unwrap();
    r.expect_term(Fes::INVALID_HEADER_FIELD);

    // Everyone else is fine.
    keeper.keep_alive().unwrap();
    good_host_io(&fx);
    keeper.shutdown().unwrap();
}

#[test]
fn h2c_data_out_of_range_is_fatal() {
    let fx = Fixture::new(true);
    let mut c = host::Controller::connect(fx.host()).unwrap();
    c.set_num_queues(1).unwrap();
    let mut r = Raw::io_queue(fx.addr, 0, 1, c.cntlid());
    // 16 KiB write with a transport SGL: the target answers with an R2T.
    let mut w = host::rw_sqe(true, 1, 0, 32);
    w.set_cid(9);
    w.set_sgl(&Sgl::transport(16384));
    r.send(&Pdu::CapsuleCmd(w), &[]);
    let (pdu, _) = r.recv().unwrap();
    let Pdu::R2T(r2t) = pdu else {
        panic!("expected R2T, got {pdu:?}")
    };
    assert_eq!((r2t.cccid, r2t.r2to, r2t.r2tl), (9, 0, 16384));
    // Data beyond the R2T's range.
    let h2c = Pdu::H2CData {
        hdr: DataHdr {
            cccid: 9,
            ttag: r2t.ttag,
            datao: 12288,
            datal: 8192,
        },
        last: true,
    };
    r.send(&h2c, &[0u8; 8192]);
    r.expect_term(Fes::DATA_OUT_OF_RANGE);
    c.keep_alive().unwrap();
    c.shutdown().unwrap();
}

#[test]
fn idle_and_half_open_connections_do_not_block_new_hosts() {
    let fx = Fixture::new(true);
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(fx.addr).unwrap())
        .collect();
    // Some that only did ICReq.
    let half: Vec<Raw> = (0..50).map(|_| Raw::ready(fx.addr, 0)).collect();
    good_host_io(&fx);
    drop(idle);
    drop(half);
}

#[test]
fn keep_alive_timeout_tears_the_controller_down() {
    let fx = Fixture::new(true);
    let mut cfg = fx.host();
    // Generous against a loaded CI host: keep alives go every 200 ms.
    let cfg_kato = Duration::from_millis(1500);
    cfg.kato = cfg_kato;
    let mut c = host::Controller::connect(cfg).unwrap();
    c.set_num_queues(1).unwrap();
    let mut q = c.io_queue(1, 8).unwrap();
    assert_eq!(fx.controllers(), 1);
    // Keep alives keep it.
    let mut last_sent = Instant::now();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(200));
        // Taken before sending: the target's clock starts later, so a
        // teardown seen less than KATO after this came too early.
        last_sent = Instant::now();
        c.keep_alive().unwrap();
    }
    assert_eq!(fx.controllers(), 1);
    // Silence: torn down, queue pairs closed. The deadline only bounds a
    // hung test; what is checked is that teardown came, and not before
    // KATO.
    let deadline = last_sent + cfg_kato + Duration::from_secs(30);
    while fx.controllers() > 0 {
        assert!(Instant::now() < deadline, "controller survived KATO");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = last_sent.elapsed();
    assert!(
        seen >= cfg_kato,
        "torn down {seen:?} after the last keep alive, before KATO {cfg_kato:?}"
    );
    // Both queue pairs close (each on its poll group's next pass).
    let shared = fx.tgt.as_ref().unwrap().shared.clone();
    while shared.conns.load(std::sync::atomic::Ordering::Acquire) > 0 {
        assert!(
            Instant::now() < deadline,
            "queue pairs outlived their controller"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = q.execute(host::rw_sqe(false, 1, 0, 1), vec![0; 512], false, TIMEOUT);
    assert!(r.is_err(), "I/O queue still served after KATO expiry");
}

/// The `pollux_nvmf_requests` states that hold requests now.
fn requests_in(tgt: &NvmfTarget) -> Vec<(&'static str, u64)> {
    let all = tgt.request_states();
    assert_eq!(all.len(), ReqState::COUNT - 1, "every state but free");
    all.into_iter().filter(|&(_, n)| n != 0).collect()
}

#[test]
fn async_event_request_is_held_until_an_event() {
    let fx = Fixture::new(true);
    // Enabled (CC.EN) so admin commands are accepted.
    let (connected, mut r) = Raw::admin(fx.addr, 0);
    let cntlid = connected.dw0() as u16;
    r.send(
        &Pdu::CapsuleCmd(dataless(AdminOpcode::AsyncEventRequest, 7)),
        &[],
    );
    // Nothing yet: a keep alive is answered first.
    r.send(&Pdu::CapsuleCmd(dataless(AdminOpcode::KeepAlive, 8)), &[]);
    assert_eq!(r.response().cid(), 8);
    let tgt = fx.tgt.as_ref().unwrap();
    // The held AER is the one request in flight, and it is Executing.
    assert_eq!(requests_in(tgt), vec![("executing", 1)]);
    let ctrl = tgt.shared.controllers().get(cntlid).unwrap();
    ctrl.push_event(pollux_nvme::features::AsyncEvent::DISCOVERY_CHANGED);
    let cqe = r.response();
    assert_eq!(cqe.cid(), 7);
    assert_eq!(requests_in(tgt), vec![]);
    assert_eq!(
        cqe.dw0(),
        pollux_nvme::features::AsyncEvent::DISCOVERY_CHANGED.to_dw0()
    );

    // Namespace changes: only once the host enabled the notice.
    let mut aec = dataless(AdminOpcode::SetFeatures, 9);
    aec.set_cdw10(0x0B);
    aec.set_cdw11(pollux_nvme::features::aec::NS_ATTR);
    r.send(&Pdu::CapsuleCmd(aec), &[]);
    assert_status(r.response().status(), Status::SUCCESS);
    r.send(
        &Pdu::CapsuleCmd(dataless(AdminOpcode::AsyncEventRequest, 10)),
        &[],
    );
    tgt.notify_namespace_changed(NQN, 1);
    let cqe = r.response();
    assert_eq!(cqe.cid(), 10);
    assert_eq!(
        cqe.dw0(),
        pollux_nvme::features::AsyncEvent::NS_ATTR_CHANGED.to_dw0()
    );
    // The Changed Namespace List names it; reading it re-arms the notice.
    let mut log = GetLogPageCmd::new(0x04, 0, 0, 4096).to_sqe(11);
    log.set_sgl(&Sgl::transport(4096));
    r.send(&Pdu::CapsuleCmd(log), &[]);
    let (pdu, data) = r.recv().unwrap();
    match pdu {
        // SQ flow control is on: the CapsuleResp carries SQHD.
        Pdu::C2HData { success, .. } => assert!(!success),
        other => panic!("expected C2HData, got {other:?}"),
    }
    assert_eq!(&data[..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(r.response().cid(), 11);
    r.send(
        &Pdu::CapsuleCmd(dataless(AdminOpcode::AsyncEventRequest, 12)),
        &[],
    );
    tgt.notify_namespace_changed(NQN, 1);
    assert_eq!(r.response().cid(), 12);
}

#[test]
fn queues_spread_over_reactors_share_one_controller() {
    let cores = pollux_poller::cpu::online_cpus().unwrap();
    let cores: Vec<usize> = cores.iter().take(2).collect();
    let fx = Fixture::with_cores(true, cores);
    let mut c = host::Controller::connect(fx.host()).unwrap();
    c.set_num_queues(3).unwrap();
    let mut queues: Vec<_> = (1..=3).map(|q| c.io_queue(q, 32).unwrap()).collect();
    for (i, q) in queues.iter_mut().enumerate() {
        write_read_back(q, 1000 + 32 * i as u64, &[i as u8 + 1; 16384]);
    }
    drop(queues);
    c.shutdown().unwrap();
}

#[test]
fn bad_data_digest_on_h2c_data_fails_only_that_command() {
    let fx = Fixture::new(true);
    let mut c = host::Controller::connect(fx.host()).unwrap();
    c.set_num_queues(1).unwrap();
    let mut r = Raw::io_queue(fx.addr, DGST_HEADER | DGST_DATA, 1, c.cntlid());
    for corrupt in [true, false] {
        let mut w = host::rw_sqe(true, 1, 64, 32);
        w.set_cid(5);
        w.set_sgl(&Sgl::transport(16384));
        r.send(&Pdu::CapsuleCmd(w), &[]);
        let Pdu::R2T(r2t) = r.recv().unwrap().0 else {
            panic!("expected R2T")
        };
        let h2c = Pdu::H2CData {
            hdr: DataHdr {
                cccid: 5,
                ttag: r2t.ttag,
                datao: 0,
                datal: 16384,
            },
            last: true,
        };
        let mut b = r.encode(&h2c, &[0x5a; 16384]);
        if corrupt {
            let n = b.len();
            b[n - 2] ^= 0x01;
        }
        r.s.write_all(&b).unwrap();
        let want = if corrupt {
            Status::TRANSIENT_TRANSPORT_ERROR
        } else {
            Status::SUCCESS
        };
        assert_status(r.response().status(), want);
    }
    c.shutdown().unwrap();
}

#[test]
fn mutated_pdu_streams_never_break_the_target() {
    let fx = Fixture::new(true);
    let mut keeper = host::Controller::connect(fx.host()).unwrap();
    // A valid opening: ICReq (with digests), Connect, Identify, a stray
    // H2CData. Mutations of it reach every decoder and handler path.
    let proto = Raw::open(fx.addr);
    let mut stream = proto.encode(&Raw::icreq(0), &[]);
    stream.extend(proto.encode(
        &Pdu::CapsuleCmd(Raw::connect_sqe(0, 31)),
        &Raw::connect_data(NQN, HOST, NEW_CONTROLLER),
    ));
    let mut id = Sqe::new(0x06, 2);
    id.set_cdw10(1);
    id.set_sgl(&Sgl::transport(4096));
    stream.extend(proto.encode(&Pdu::CapsuleCmd(id), &[]));
    stream.extend(proto.encode(
        &Pdu::H2CData {
            hdr: DataHdr {
                cccid: 2,
                ttag: 0,
                datao: 0,
                datal: 64,
            },
            last: true,
        },
        &[0u8; 64],
    ));
    drop(proto);
    // Seeded, so a failing mutation can be replayed.
    let mut rng = SmallRng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
    for _ in 0..200 {
        let mut b = stream.clone();
        for _ in 0..rng.random_range(1..=4) {
            let i = rng.random_range(0..b.len());
            b[i] = rng.random();
        }
        b.truncate(b.len() - rng.random_range(0..64));
        let mut s = TcpStream::connect(fx.addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let _ = s.write_all(&b);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Whatever it answers, it must end the connection (EOF from us).
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    keeper.keep_alive().unwrap();
    good_host_io(&fx);
    keeper.shutdown().unwrap();
}

#[test]
fn abrupt_disconnect_mid_io_leaks_nothing() {
    let fx = Fixture::with_cores(true, vec![0]);
    let shared = fx.tgt.as_ref().unwrap().shared.clone();
    for _ in 0..3 {
        let mut c = host::Controller::connect(fx.host()).unwrap();
        c.set_num_queues(1).unwrap();
        let mut q = c.io_queue(1, 64).unwrap();
        for i in 0..32u64 {
            let write = i % 2 == 0;
            q.submit(host::rw_sqe(write, 1, i * 128, 128), vec![7; 65536], write)
                .unwrap();
        }
        // Vanish with commands (and R2T data) in flight.
        drop(q);
        drop(c);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while fx.controllers() > 0 || shared.conns.load(std::sync::atomic::Ordering::Acquire) > 0 {
        assert!(
            Instant::now() < deadline,
            "controllers or connections leaked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    good_host_io(&fx);
}

/// Bytes of each command of [`large_writes_then_reads`]: the largest a
/// command may move (MDTS, 128 KiB), far beyond in-capsule data, so
/// writes go through R2T.
const LARGE: usize = super::MDTS_BYTES as usize;

/// 16 commands of [`LARGE`] bytes, 8 at once on each of I/O queues 1 and
/// 2: writes of 16 patterns, then reads of the same blocks. Every command
/// succeeds within TIMEOUT and every read returns one of the patterns.
fn large_writes_then_reads(fx: &Fixture) {
    let mut c = host::Controller::connect(fx.host()).unwrap();
    c.set_num_queues(2).unwrap();
    let mut queues = [c.io_queue(1, 32).unwrap(), c.io_queue(2, 32).unwrap()];
    let nlb = (LARGE / RAM_BLOCK_SIZE as usize) as u32;
    // Byte 0 of pattern `i` is `i`: a read tells which one it returns.
    let pattern = |i: u64| -> Vec<u8> { (0..LARGE as u64).map(|b| (b * 31 + i) as u8).collect() };
    for write in [true, false] {
        for (qi, q) in queues.iter_mut().enumerate() {
            for k in 0..8u64 {
                let i = qi as u64 * 8 + k;
                let buf = if write { pattern(i) } else { vec![0; LARGE] };
                q.submit(host::rw_sqe(write, 1, i * u64::from(nlb), nlb), buf, write)
                    .unwrap();
            }
        }
        let what = if write { "writes" } else { "reads" };
        for q in queues.iter_mut() {
            let deadline = Instant::now() + TIMEOUT;
            let mut got = Vec::new();
            while got.len() < 8 {
                q.poll().unwrap();
                got.extend(q.take_completed());
                assert!(
                    Instant::now() < deadline,
                    "{what} stuck waiting for buffers"
                );
            }
            for cpl in got {
                assert_status(cpl.cqe.status(), Status::SUCCESS);
                if !write {
                    let i = u64::from(cpl.data[0]);
                    assert!(i < 16 && cpl.data == pattern(i), "read data mismatch");
                }
            }
        }
    }
    drop(queues);
    c.shutdown().unwrap();
}

#[test]
fn requests_wait_in_need_buffer_when_the_budget_is_spent() {
    // Room for one MDTS-sized buffer: everything else queues for it.
    let fx = Fixture::build(true, vec![0], u64::from(super::MDTS_BYTES));
    large_writes_then_reads(&fx);
}

/// HOSTNQN fields of the Connect data, as sent on the wire.
fn hostnqn_field(fill: &[u8]) -> [u8; 256] {
    let mut f = [0u8; 256];
    f[..fill.len()].copy_from_slice(fill);
    f
}

#[test]
fn empty_hostnqn_connects_where_any_host_is_allowed() {
    // SPDK's initiator without `hostnqn` sends an all-zero HOSTNQN.
    let fx = Fixture::new(true);
    let mut cfg = fx.host();
    cfg.hostnqn = String::new();
    let mut c = host::Controller::connect(cfg.clone()).expect("empty HOSTNQN refused");
    let cntlid = c.cntlid();
    {
        let ctrl = fx.tgt.as_ref().unwrap().shared.controllers().get(cntlid);
        assert_eq!(ctrl.unwrap().hostnqn, "");
    }
    c.set_num_queues(2).unwrap();
    // The I/O queue's (empty) HOSTNQN matches the admin queue's.
    let mut q = c.io_queue(1, 32).unwrap();
    write_read_back(&mut q, 64, &[0x5a; 8192]);
    // An I/O queue naming a host where the admin queue named none.
    let cqe = Raw::ready(fx.addr, 0).connect(2, 31, &Raw::connect_data(NQN, HOST, cntlid));
    assert_status(cqe.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(
        cqe.dw0(),
        pollux_nvme::fabrics::connect_invalid_param_dw0(ConnectData::HOSTNQN_OFFSET, true)
    );
    // ... and the reverse: a named admin queue, an I/O queue naming none.
    let mut named = host::Controller::connect(fx.host()).unwrap();
    named.set_num_queues(1).unwrap();
    let cqe = Raw::ready(fx.addr, 0).connect(1, 31, &Raw::connect_data(NQN, "", named.cntlid()));
    assert_status(cqe.status(), Status::CONNECT_INVALID_PARAMETERS);
    drop(q);
    c.shutdown().unwrap();
    named.shutdown().unwrap();
}

#[test]
fn empty_hostnqn_never_matches_a_host_list() {
    let fx = Fixture::new(false);
    let mut cfg = fx.host();
    cfg.hostnqn = String::new();
    expect_status(
        host::Controller::connect(cfg.clone()),
        Status::CONNECT_INVALID_HOST,
        "an empty HOSTNQN against a host list",
    );
    // Discovery answers it, listing only what any host may use: nothing.
    cfg.subnqn = DISCOVERY_NQN.into();
    let mut d = host::Controller::connect(cfg).unwrap();
    let page = discovery_log(&mut d, 1024);
    assert_eq!(DiscoveryLogHeader::parse(&page).unwrap().numrec, 0);
    good_host_io(&fx);
}

#[test]
fn empty_hostnqn_discovery_lists_open_subsystems() {
    let fx = Fixture::new(true);
    let mut cfg = fx.host();
    cfg.hostnqn = String::new();
    cfg.subnqn = DISCOVERY_NQN.into();
    let mut d = host::Controller::connect(cfg).unwrap();
    only_entry(&discovery_log(&mut d, 2048));
}

#[test]
fn unterminated_and_oversized_hostnqn_are_invalid_parameters() {
    let fx = Fixture::new(true);
    let ipo = pollux_nvme::fabrics::connect_invalid_param_dw0(ConnectData::HOSTNQN_OFFSET, true);
    let no_nul = [b'n'; 256];
    // 224 bytes before the NUL: one past the 223-byte limit.
    let oversized = hostnqn_field(&[b'n'; 224]);
    for field in [no_nul, oversized] {
        let data = Raw::connect_data_raw(NQN, field, NEW_CONTROLLER);
        let cqe = Raw::ready(fx.addr, 0).connect(0, 31, &data);
        assert_status(cqe.status(), Status::CONNECT_INVALID_PARAMETERS);
        assert_eq!(cqe.dw0(), ipo);
    }
    // At the limit it is a (long) name like any other.
    let data = Raw::connect_data_raw(NQN, hostnqn_field(&[b'n'; 223]), NEW_CONTROLLER);
    let cqe = Raw::ready(fx.addr, 0).connect(0, 31, &data);
    assert_status(cqe.status(), Status::SUCCESS);
    assert_eq!(fx.controllers(), 1);
}

/// Sends Identify Controller on a raw admin queue and returns the C2HData
/// SUCCESS flag and whether a CapsuleResp for it followed.
fn raw_identify(r: &mut Raw, cid: u16) -> (bool, Option<Cqe>) {
    let mut id = pollux_nvme::identify::IdentifyCmd {
        cns: 1,
        ..Default::default()
    }
    .to_sqe(cid);
    id.set_sgl(&Sgl::transport(4096));
    r.send(&Pdu::CapsuleCmd(id), &[]);
    let success = match r.recv().unwrap().0 {
        Pdu::C2HData { hdr, success, last } => {
            assert_eq!(hdr.cccid, cid);
            assert!(last);
            success
        }
        other => panic!("expected C2HData, got {other:?}"),
    };
    // A Keep Alive behind it: its response comes next, unless the
    // Identify's CapsuleResp does first.
    r.send(
        &Pdu::CapsuleCmd(dataless(AdminOpcode::KeepAlive, cid + 1)),
        &[],
    );
    let first = r.response();
    if first.cid() == cid {
        assert_eq!(r.response().cid(), cid + 1);
        (success, Some(first))
    } else {
        assert_eq!(first.cid(), cid + 1);
        (success, None)
    }
}

#[test]
fn c2h_success_only_without_sq_flow_control() {
    let fx = Fixture::new(true);
    // Flow control on (what Linux does by default): no SUCCESS, and the
    // CapsuleResp with SQHD follows the data.
    let (connected, mut r) = Raw::admin(fx.addr, 0);
    assert_ne!(connected.sqhd(), 0xFFFF);
    let (success, resp) = raw_identify(&mut r, 5);
    assert!(!success, "SUCCESS while SQ flow control is on");
    let resp = resp.expect("no CapsuleResp: the host never learns SQHD");
    assert_status(resp.status(), Status::SUCCESS);
    // Connect, Property Set and this Identify were consumed: SQHD moved.
    assert_eq!(resp.sqhd(), 3);
    // Flow control disabled (CATTR bit 2): SUCCESS, no CapsuleResp, and
    // Connect's SQHD is FFFFh.
    let (connected, mut r) = Raw::admin(fx.addr, ConnectCmd::CATTR_SQ_FLOW_DISABLE);
    assert_eq!(connected.sqhd(), 0xFFFF);
    let (success, resp) = raw_identify(&mut r, 5);
    assert!(success);
    assert!(resp.is_none(), "CapsuleResp after a SUCCESS C2HData");

    // The host library on I/O queues, which errors on SUCCESS under flow
    // control: reads complete both ways.
    let read_back = |cfg: HostConfig| -> u64 {
        let mut c = host::Controller::connect(cfg).unwrap();
        c.set_num_queues(1).unwrap();
        let mut q = c.io_queue(1, 32).unwrap();
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 253) as u8).collect();
        write(&mut q, 0, &data);
        for _ in 0..4 {
            assert!(read(&mut q, 0, data.len()) == data);
        }
        let n = q.c2h_success_count();
        drop(q);
        c.shutdown().unwrap();
        n
    };
    assert_eq!(read_back(fx.host()), 0);
    let mut cfg = fx.host();
    cfg.disable_sqflow = true;
    assert_eq!(read_back(cfg.clone()), 4);

    // c2h_success off (`nvmf_create_transport -o`): never SUCCESS.
    let tgt = fx.tgt.as_ref().unwrap();
    tgt.create_transport(super::TransportOpts {
        c2h_success: false,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(read_back(cfg), 0);
    let (_, mut r) = Raw::admin(fx.addr, ConnectCmd::CATTR_SQ_FLOW_DISABLE);
    let (success, resp) = raw_identify(&mut r, 5);
    assert!(!success);
    assert!(resp.is_some());
}

#[test]
fn transport_options_apply_to_new_connections() {
    let fx = Fixture::new(true);
    let tgt = fx.tgt.as_ref().unwrap();
    // A controller from before keeps the defaults.
    let mut before = host::Controller::connect(fx.host()).unwrap();
    let opts = super::TransportOpts {
        max_queue_depth: 64,
        max_aq_depth: 32,
        max_io_qpairs_per_ctrlr: 3,
        in_capsule_data_size: 4096,
        max_io_size: 32768,
        ..Default::default()
    };
    tgt.create_transport(opts.clone()).unwrap();
    // Only once.
    assert!(matches!(
        tgt.create_transport(opts),
        Err(super::NvmfError::TransportExists)
    ));
    assert_eq!(before.identify.mdts, super::MDTS);
    assert_eq!(before.set_num_queues(1000).unwrap(), super::MAX_IO_QUEUES);
    let _old_deep = before.io_queue(1, 256).unwrap();

    let mut c = host::Controller::connect(fx.host()).unwrap();
    let id = c.identify;
    assert_eq!(id.mdts, 3, "32 KiB = 2^3 4 KiB pages");
    assert_eq!(id.ioccsz * 16 - 64, 4096);
    assert_eq!(id.maxcmd, 64);
    assert_eq!(c.cap.mqes(), 63);
    assert_eq!(c.set_num_queues(1000).unwrap(), 3);
    // SQSIZE beyond max_queue_depth.
    expect_status(
        c.io_queue(1, 65),
        Status::CONNECT_INVALID_PARAMETERS,
        "SQSIZE 65 of 64",
    );
    let mut q = c.io_queue(1, 64).unwrap();
    // Past max_io_size: Invalid Field; at it: fine.
    let r = q
        .execute(
            host::rw_sqe(false, 1, 0, 128),
            vec![0; 65536],
            false,
            TIMEOUT,
        )
        .unwrap();
    assert_status(r.cqe.status(), Status::INVALID_FIELD);
    write_read_back(&mut q, 0, &[0xc3; 32768]);
    // In-capsule data beyond in_capsule_data_size on the I/O queue is a
    // fatal PDU error (the host library stays within IOCCSZ, so go raw).
    let mut r = Raw::io_queue(fx.addr, 0, 2, c.cntlid());
    let mut w = host::rw_sqe(true, 1, 0, 16);
    w.set_sgl(&Sgl::in_capsule(0, 8192));
    r.send(&Pdu::CapsuleCmd(w), &[0u8; 8192]);
    let (pdu, _) = r.recv().unwrap();
    assert!(matches!(pdu, Pdu::C2HTermReq(_)), "{pdu:?}");
    // ICResp's MAXH2CDATA is max_io_size, as SPDK.
    let mut raw = Raw::open(fx.addr);
    raw.send(&Raw::icreq(0), &[]);
    match raw.recv().unwrap().0 {
        Pdu::IcResp(resp) => assert_eq!(resp.maxh2cdata, 32768),
        other => panic!("{other:?}"),
    }
    // Admin queue deeper than max_aq_depth.
    expect_bad_sqsize(&mut Raw::ready(fx.addr, 0), 32);
    drop(q);
    c.shutdown().unwrap();
}

#[test]
fn num_shared_buffers_bounds_the_data_in_flight() {
    // 16 concurrent 128 KiB writes and reads over two queues, once with
    // the default budget (512 units) and once with room for one command.
    let run = |num_shared_buffers: Option<u32>| -> u64 {
        let fx = Fixture::new(true);
        let tgt = fx.tgt.as_ref().unwrap();
        if let Some(n) = num_shared_buffers {
            tgt.create_transport(super::TransportOpts {
                num_shared_buffers: n,
                io_unit_size: 8192,
                ..Default::default()
            })
            .unwrap();
        }
        large_writes_then_reads(&fx);
        tgt.shared
            .buffer_waits
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(run(None), 0, "the default budget holds 16 commands");
    // 16 units of 8 KiB: exactly one 128 KiB command at a time.
    assert!(run(Some(16)) > 0, "num_shared_buffers was not enforced");
}

#[test]
fn masked_oncs_hides_and_refuses_the_command() {
    let fx = Fixture::new(true);
    fx.tgt
        .as_ref()
        .unwrap()
        .create_transport(super::TransportOpts {
            masked_oncs: pollux_nvme::identify::oncs::DSM,
            ..Default::default()
        })
        .unwrap();
    let mut c = host::Controller::connect(fx.host()).unwrap();
    assert_eq!(c.identify.oncs & pollux_nvme::identify::oncs::DSM, 0);
    assert_ne!(
        c.identify.oncs & pollux_nvme::identify::oncs::WRITE_ZEROES,
        0
    );
    c.set_num_queues(1).unwrap();
    let mut q = c.io_queue(1, 8).unwrap();
    let (dsm, ranges) = deallocate(0, 8);
    let r = q.execute(dsm, ranges, true, TIMEOUT).unwrap();
    assert_status(r.cqe.status(), Status::INVALID_OPCODE);
    good_host_io(&fx);
}

/// Compare of `data` against namespace 1 at `slba`: its status.
fn compare(q: &mut host::QueuePair, slba: u64, data: &[u8]) -> Status {
    let nlb = (data.len() / RAM_BLOCK_SIZE as usize) as u32;
    let mut sqe = host::rw_sqe(true, 1, slba, nlb);
    sqe.set_opcode(IoOpcode::Compare.as_u8());
    q.execute(sqe, data.to_vec(), true, TIMEOUT)
        .unwrap()
        .cqe
        .status()
}

#[test]
fn compare_matches_written_data_and_reports_a_miscompare() {
    use pollux_nvme::identify::{fuses, oncs};
    let fx = Fixture::new(true);
    let mut c = host::Controller::connect(fx.host()).unwrap();
    assert_ne!(c.identify.oncs & oncs::COMPARE, 0, "ONCS offers Compare");
    assert_ne!(
        c.identify.fuses & fuses::COMPARE_AND_WRITE,
        0,
        "FUSES offers C&W"
    );
    c.set_num_queues(1).unwrap();
    let mut q = c.io_queue(1, 32).unwrap();
    let data: Vec<u8> = (0..16384u32).map(|i| (i * 13 + 5) as u8).collect();
    write(&mut q, 64, &data);
    // Equal: in-capsule (4 KiB) and through R2T (16 KiB).
    assert_status(compare(&mut q, 64, &data[..4096]), Status::SUCCESS);
    assert_status(compare(&mut q, 64, &data), Status::SUCCESS);
    // One byte off in the last block: Compare Failure, DNR.
    let mut off = data.clone();
    off[16383] ^= 1;
    let st = compare(&mut q, 64, &off);
    assert_status(st, Status::COMPARE_FAILURE);
    assert!(st.dnr, "{st:?}");
    // The data is unchanged by either.
    assert!(read(&mut q, 64, data.len()) == data);
    // Out of range is refused before any I/O.
    assert_status(
        compare(&mut q, BLOCKS - 1, &data[..1024]),
        Status::LBA_OUT_OF_RANGE,
    );
    drop(q);
    c.shutdown().unwrap();
}

/// A fused half: Compare (`first`) or Write of namespace 1.
fn fused_sqe(op: IoOpcode, fuse: pollux_nvme::Fuse, slba: u64, len: usize) -> Sqe {
    let nlb = (len / RAM_BLOCK_SIZE as usize) as u32;
    let mut sqe = host::rw_sqe(true, 1, slba, nlb);
    sqe.set_opcode(op.as_u8());
    sqe.set_fuse(fuse);
    sqe
}

/// Sends `cmds` (command, data, host-to-controller) back to back on `q`
/// and waits for all: their statuses, in the order given.
fn run_together(q: &mut host::QueuePair, cmds: Vec<(Sqe, Vec<u8>, bool)>) -> Vec<Status> {
    let cids: Vec<u16> = cmds
        .into_iter()
        .map(|(sqe, data, h2c)| q.submit(sqe, data, h2c).expect("a free slot"))
        .collect();
    let mut done = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while done.len() < cids.len() {
        q.poll().unwrap();
        done.extend(q.take_completed().map(|c| c.cqe));
        assert!(Instant::now() < deadline, "fused commands never completed");
        std::thread::sleep(Duration::from_micros(50));
    }
    cids.iter()
        .map(|cid| done.iter().find(|c| c.cid() == *cid).unwrap().status())
        .collect()
}

/// A compare-and-write pair: compare `old`, write `new`, at `slba`.
fn cw_pair(slba: u64, old: &[u8], new: &[u8]) -> Vec<(Sqe, Vec<u8>, bool)> {
    use pollux_nvme::Fuse;
    vec![
        (
            fused_sqe(IoOpcode::Compare, Fuse::First, slba, old.len()),
            old.to_vec(),
            true,
        ),
        (
            fused_sqe(IoOpcode::Write, Fuse::Second, slba, new.len()),
            new.to_vec(),
            true,
        ),
    ]
}

#[test]
fn compare_and_write_writes_on_a_match_only() {
    let fx = Fixture::new(true);
    let mut c = host::Controller::connect(fx.host()).unwrap();
    c.set_num_queues(1).unwrap();
    let mut q = c.io_queue(1, 32).unwrap();
    // In-capsule (4 KiB) and through R2T (16 KiB).
    for len in [4096usize, 16384] {
        let a: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
        let b: Vec<u8> = (0..len).map(|i| (i * 11 + 3) as u8).collect();
        let z: Vec<u8> = vec![0x5a; len];
        write(&mut q, 256, &a);
        let st = run_together(&mut q, cw_pair(256, &a, &b));
        assert_status(st[0], Status::SUCCESS);
        assert_status(st[1], Status::SUCCESS);
        assert!(read(&mut q, 256, len) == b, "the write was not done");
        // `a` is gone: Compare Failure, and the write is aborted.
        let st = run_together(&mut q, cw_pair(256, &a, &z));
        assert_status(st[0], Status::COMPARE_FAILURE);
        assert_status(st[1], Status::ABORTED_FAILED_FUSED);
        assert!(read(&mut q, 256, len) == b, "a miscompare wrote");
    }
    drop(q);
    c.shutdown().unwrap();
}

#[test]
fn broken_fused_pairs_fail_with_the_spec_statuses() {
    use pollux_nvme::Fuse;
    let fx = Fixture::new(true);
    let mut c = host::Controller::connect(fx.host()).unwrap();
    c.set_num_queues(1).unwrap();
    let mut q = c.io_queue(1, 32).unwrap();
    let a = vec![1u8; 4096];
    let b = vec![2u8; 4096];
    write(&mut q, 512, &a);
    // A first followed by an ordinary command: the first misses its
    // second; the other command runs.
    let st = run_together(
        &mut q,
        vec![
            (
                fused_sqe(IoOpcode::Compare, Fuse::First, 512, 4096),
                a.clone(),
                true,
            ),
            (host::rw_sqe(false, 1, 512, 8), vec![0; 4096], false),
        ],
    );
    assert_status(st[0], Status::ABORTED_MISSING_FUSED);
    assert_status(st[1], Status::SUCCESS);
    // A second without a first.
    let st = run_together(
        &mut q,
        vec![(
            fused_sqe(IoOpcode::Write, Fuse::Second, 512, 4096),
            b.clone(),
            true,
        )],
    );
    assert_status(st[0], Status::ABORTED_MISSING_FUSED);
    // The halves on different blocks: Invalid Field, the write aborted.
    let mut pair = cw_pair(512, &a, &b);
    pair[1].0 = fused_sqe(IoOpcode::Write, Fuse::Second, 520, 4096);
    let st = run_together(&mut q, pair);
    assert_status(st[0], Status::INVALID_FIELD);
    assert_status(st[1], Status::ABORTED_FAILED_FUSED);
    // A second that is no Write, and a first that is no Compare.
    let mut pair = cw_pair(512, &a, &b);
    pair[1].0.set_opcode(IoOpcode::Compare.as_u8());
    let st = run_together(&mut q, pair);
    assert_status(st[0], Status::ABORTED_MISSING_FUSED);
    assert_status(st[1], Status::INVALID_OPCODE);
    let mut pair = cw_pair(512, &a, &b);
    pair[0].0.set_opcode(IoOpcode::Write.as_u8());
    let st = run_together(&mut q, pair);
    assert_status(st[0], Status::INVALID_OPCODE);
    assert_status(st[1], Status::ABORTED_MISSING_FUSED);
    // Out of range: the first says so, the write is aborted.
    let st = run_together(&mut q, cw_pair(BLOCKS - 4, &a, &b));
    assert_status(st[0], Status::LBA_OUT_OF_RANGE);
    assert_status(st[1], Status::ABORTED_FAILED_FUSED);
    // Nothing of it wrote, and the queue still pairs correctly.
    assert!(read(&mut q, 512, 4096) == a);
    let st = run_together(&mut q, cw_pair(512, &a, &b));
    assert_eq!((st[0].is_success(), st[1].is_success()), (true, true));
    drop(q);
    c.shutdown().unwrap();
}

/// 16 KiB whose every byte says who wrote it and when: a torn mix of two
/// writes never equals one of these.
fn stamp(round: u32, writer: u8) -> Vec<u8> {
    (0..16384u32)
        .map(|i| (round.wrapping_mul(131) ^ i.wrapping_mul(7)) as u8 ^ writer)
        .collect()
}

#[test]
fn compare_and_write_is_atomic_against_writes_from_another_queue() {
    let cores = pollux_poller::cpu::online_cpus().unwrap();
    let cores: Vec<usize> = cores.iter().take(2).collect();
    let fx = Fixture::with_cores(true, cores);
    let mut c = host::Controller::connect(fx.host()).unwrap();
    c.set_num_queues(2).unwrap();
    let mut cw = c.io_queue(1, 32).unwrap();
    let mut plain = c.io_queue(2, 32).unwrap();
    const SLBA: u64 = 2048;
    let mut current = stamp(0, 0);
    write(&mut cw, SLBA, &current);
    let (mut matched, mut missed) = (0, 0);
    for round in 1..=300u32 {
        // One compare-and-write of what is there and one plain write of
        // the same range from another queue (on the other reactor), in
        // flight together.
        let mine = stamp(round, 0xA5);
        let theirs = stamp(round, 0x3C);
        let pair = cw_pair(SLBA, &current, &mine);
        let mut cids = Vec::new();
        for (sqe, data, h2c) in pair {
            cids.push(cw.submit(sqe, data, h2c).unwrap());
        }
        let pcid = plain
            .submit(host::rw_sqe(true, 1, SLBA, 32), theirs.clone(), true)
            .unwrap();
        let mut cqes = Vec::new();
        let mut plain_done = None;
        let deadline = Instant::now() + TIMEOUT;
        while cqes.len() < 2 || plain_done.is_none() {
            plain.poll().unwrap();
            cw.poll().unwrap();
            cqes.extend(cw.take_completed().map(|c| c.cqe));
            if let Some(c) = plain.take_completed().find(|c| c.cqe.cid() == pcid) {
                plain_done = Some(c.cqe.status());
            }
            assert!(Instant::now() < deadline, "round {round} never completed");
        }
        assert!(plain_done.unwrap().is_success());
        let st = |cid: u16| cqes.iter().find(|c| c.cid() == cid).unwrap().status();
        let (first, second) = (st(cids[0]), st(cids[1]));
        // The plain write lands either before the compare (which then
        // fails and nothing else is written) or after the pair's write:
        // either way it is what stays, whole. Had it slipped between the
        // compare and the write, ours would stay after a match; had the
        // two writes overlapped, a torn mix.
        let now = read(&mut cw, SLBA, 16384);
        if first.is_success() {
            assert_status(second, Status::SUCCESS);
            matched += 1;
        } else {
            assert_status(first, Status::COMPARE_FAILURE);
            assert_status(second, Status::ABORTED_FAILED_FUSED);
            missed += 1;
        }
        assert!(
            now == theirs,
            "round {round}: after {first:?}/{second:?} the range holds {}",
            if now == mine {
                "the pair's write"
            } else if now == current {
                "the old data"
            } else {
                "a torn mix"
            }
        );
        current = now;
    }
    eprintln!("compare-and-write rounds: {matched} matched, {missed} missed");
    drop((cw, plain));
    c.shutdown().unwrap();
}

#[test]
fn masked_fuses_hides_and_refuses_compare_and_write() {
    use pollux_nvme::identify::fuses;
    let fx = Fixture::new(true);
    fx.tgt
        .as_ref()
        .unwrap()
        .create_transport(super::TransportOpts {
            masked_fuses: fuses::COMPARE_AND_WRITE,
            ..Default::default()
        })
        .unwrap();
    let mut c = host::Controller::connect(fx.host()).unwrap();
    assert_eq!(c.identify.fuses & fuses::COMPARE_AND_WRITE, 0);
    c.set_num_queues(1).unwrap();
    let mut q = c.io_queue(1, 8).unwrap();
    let a = vec![0u8; 4096];
    let st = run_together(&mut q, cw_pair(0, &a, &[9u8; 4096]));
    assert_status(st[0], Status::INVALID_FIELD);
    assert_status(st[1], Status::ABORTED_FAILED_FUSED);
    assert!(read(&mut q, 0, 4096) == a, "a refused pair wrote");
    drop(q);
    c.shutdown().unwrap();
}
