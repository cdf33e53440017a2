//! Issue 8 §1 and §6 against the daemon: a host that sends no HOSTNQN (as
//! SPDK's initiator does when its transport ID names none) connects and
//! does I/O where any host is allowed; and `nvmf_create_transport`, sent by
//! SPDK's rpc.py, sets the limits new connections get, accepts every
//! parameter rpc.py releases from 24.01 on send, and refuses values outside
//! Pollux's bounds naming the bound.
//!
//! The host is Pollux's own initiator (the `nvme` crate's `host` module),
//! configured as SPDK's perf runs without `hostnqn`: an all-zero HOSTNQN,
//! SQ flow control on, a 32-entry admin queue.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pollux_nvme::fabrics::DISCOVERY_NQN;
use pollux_nvme::host::{self, HostConfig, HostError};
use pollux_nvme::log_page::{DiscoveryLogEntry, DiscoveryLogHeader, GetLogPageCmd};
use pollux_nvme::tcp::{decode_common_header, decode_header, IcReq, Limits, Pdu, Role, TxParams};
use pollux_nvme::Status;
use serde_json::{json, Value};
use support::{free_port, Daemon, SpdkRpc};

const OPEN: &str = "nqn.2016-06.io.spdk:cnode1";
const CLOSED: &str = "nqn.2016-06.io.spdk:cnode2";
const TIMEOUT: Duration = Duration::from_secs(20);

/// An empty-config daemon (reactors and metrics only) with its client.
fn empty_daemon() -> (Daemon, SpdkRpc) {
    let d = Daemon::builder()
        .config("[reactors]\ncores = [0]\n[metrics]\nlisten = \"127.0.0.1:0\"\n")
        .start();
    let rpc = d.spdk();
    (d, rpc)
}

/// A host as SPDK's perf without `hostnqn`: no HOSTNQN at all.
fn anonymous_host(addr: SocketAddr, subnqn: &str) -> HostConfig {
    let mut cfg = HostConfig::new(addr, subnqn);
    cfg.hostnqn = String::new();
    cfg.timeout = TIMEOUT;
    cfg
}

/// Writes `blocks` 512-byte blocks in commands of `per_cmd` blocks, `qd`
/// at once, reads them back the same way and compares.
fn write_read_verify(q: &mut host::QueuePair, blocks: u64, per_cmd: u32, qd: usize) {
    let pattern = |lba: u64| -> Vec<u8> {
        (0..per_cmd as u64 * 512)
            .map(|i| ((lba * 512 + i) % 251) as u8)
            .collect()
    };
    for write in [true, false] {
        let mut next = 0u64;
        let mut in_flight = std::collections::HashMap::new();
        let deadline = Instant::now() + TIMEOUT;
        while next < blocks || !in_flight.is_empty() {
            while next < blocks && in_flight.len() < qd {
                let buf = if write {
                    pattern(next)
                } else {
                    vec![0; per_cmd as usize * 512]
                };
                let cid = q
                    .submit(host::rw_sqe(write, 1, next, per_cmd), buf, write)
                    .expect("free slot");
                in_flight.insert(cid, next);
                next += u64::from(per_cmd);
            }
            q.poll().unwrap();
            for c in q.take_completed().collect::<Vec<_>>() {
                let lba = in_flight.remove(&c.cqe.cid()).expect("known command");
                assert!(c.cqe.status().is_success(), "{:?} at {lba}", c.cqe.status());
                if !write {
                    assert!(
                        c.data == pattern(lba),
                        "data read back at LBA {lba} differs"
                    );
                }
            }
            assert!(Instant::now() < deadline, "I/O did not finish");
        }
    }
}

#[test]
fn host_without_hostnqn_connects_and_does_io_where_any_host_is_allowed() {
    let port = free_port();
    let d = Daemon::builder()
        .config(format!(
            "[reactors]\ncores = [0]\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [[bdev]]\nname = \"ram0\"\nkind = \"ram\"\nsize = \"32MiB\"\n\
             [[bdev]]\nname = \"ram1\"\nkind = \"ram\"\nsize = \"32MiB\"\n\
             [[nvmf.subsystem]]\nnqn = \"{OPEN}\"\nnamespaces = [\"ram0\"]\n\
             allow_any_host = true\nlisten = [\"127.0.0.1:{port}\"]\n\
             [[nvmf.subsystem]]\nnqn = \"{CLOSED}\"\nnamespaces = [\"ram1\"]\n\
             hosts = [\"nqn.2014-08.org.nvmexpress:uuid:1\"]\nlisten = [\"127.0.0.1:{port}\"]\n"
        ))
        .start();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Discovery answers a host without NQN, listing only what it may use.
    let mut disc = host::Controller::connect(anonymous_host(addr, DISCOVERY_NQN)).unwrap();
    let page = disc
        .admin_read(GetLogPageCmd::new(0x70, 0, 0, 3072).to_sqe(0), 3072)
        .unwrap();
    assert_eq!(DiscoveryLogHeader::parse(&page).unwrap().numrec, 1);
    assert!(DiscoveryLogEntry::parse(&page[1024..])
        .unwrap()
        .subnqn
        .eq_str(OPEN));
    drop(disc);

    // As SPDK's perf: admin queue, two I/O queues of 128, QD 32 each.
    let mut c = host::Controller::connect(anonymous_host(addr, OPEN))
        .unwrap_or_else(|e| panic!("Connect without HOSTNQN refused: {e}\n{}", d.log()));
    assert_eq!(c.set_num_queues(2).unwrap(), 2);
    let mut q1 = c.io_queue(1, 128).unwrap();
    let mut q2 = c.io_queue(2, 128).unwrap();
    // 4 KiB (in-capsule) and 64 KiB (R2T) writes, each read back.
    write_read_verify(&mut q1, 8192, 8, 32);
    write_read_verify(&mut q2, 16384, 128, 32);
    drop((q1, q2));
    c.shutdown().unwrap();

    // A host list can never match "no host".
    match host::Controller::connect(anonymous_host(addr, CLOSED)) {
        Err(HostError::Status(s)) => {
            assert!(s.same_code(&Status::CONNECT_INVALID_HOST), "{s:?}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a host without NQN passed a host list"),
    }
    let log = d.log();
    assert!(
        !log.contains("C2HTermReq") && !log.contains("panicked"),
        "{log}"
    );
}

/// ICResp's MAXH2CDATA on a fresh connection.
fn icresp_maxh2cdata(addr: SocketAddr) -> u32 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut hdr = [0u8; 128];
    let ic = Pdu::IcReq(IcReq {
        pfv: 0,
        hpda: 0,
        dgst: 0,
        maxr2t: 0,
    });
    let f = ic.encode(&TxParams::default(), 0, &mut hdr).unwrap();
    s.write_all(&hdr[..f.header_len()]).unwrap();
    let mut resp = [0u8; 128];
    s.read_exact(&mut resp[..8]).unwrap();
    let limits = Limits::new(Role::Host);
    let frame = decode_common_header(&resp[..8], &limits).unwrap();
    let len = frame.header_len();
    s.read_exact(&mut resp[8..len]).unwrap();
    match decode_header(&resp[..len], &limits).unwrap().1 {
        Pdu::IcResp(r) => r.maxh2cdata,
        other => panic!("expected ICResp, got {other:?}"),
    }
}

/// Bdev, subsystem open to any host, namespace and listener, over rpc.py.
fn export(rpc: &SpdkRpc, port: u16) {
    rpc.run(&["bdev_malloc_create", "-b", "Malloc0", "64", "512"]);
    rpc.export_tcp(OPEN, "Malloc0", port);
}

#[test]
fn rpc_transport_options_apply_to_new_connections() {
    let (d, rpc) = empty_daemon();
    let port = free_port();
    // As rpc.py up to 26.05 sends `-q 64 -m 2 -c 4096 -i 65536 -u 8192
    // -a 32 -n 64` (26.09 dropped -u and -n from its command line), plus
    // 26.x's `--masked-oncs nvmdsmsv`.
    rpc.call(
        "nvmf_create_transport",
        json!({
            "trtype": "TCP", "max_queue_depth": 64, "max_io_qpairs_per_ctrlr": 2,
            "in_capsule_data_size": 4096, "max_io_size": 65536, "io_unit_size": 8192,
            "max_aq_depth": 32, "num_shared_buffers": 64, "c2h_success": true,
            "no_srq": false, "masked_oncs": ["nvmdsmsv"]
        }),
    );
    let tr = rpc.run(&["nvmf_get_transports", "--trtype", "TCP"]);
    let t = &tr[0];
    for (k, v) in [
        ("max_queue_depth", json!(64)),
        ("max_io_qpairs_per_ctrlr", json!(2)),
        ("in_capsule_data_size", json!(4096)),
        ("max_io_size", json!(65536)),
        ("io_unit_size", json!(8192)),
        ("max_aq_depth", json!(32)),
        ("num_shared_buffers", json!(64)),
        ("c2h_success", json!(true)),
    ] {
        assert_eq!(t[k], v, "{k} in {t}");
    }
    export(&rpc, port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(icresp_maxh2cdata(addr), 65536, "MAXH2CDATA is max_io_size");

    let mut cfg = HostConfig::new(addr, OPEN);
    cfg.timeout = TIMEOUT;
    let mut c = host::Controller::connect(cfg).unwrap();
    let id = c.identify;
    assert_eq!(id.mdts, 4, "MDTS: 64 KiB = 2^4 4 KiB pages");
    assert_eq!(id.ioccsz * 16 - 64, 4096, "IOCCSZ");
    assert_eq!(id.maxcmd, 64);
    assert_eq!(c.cap.mqes(), 63);
    assert_eq!(id.oncs & pollux_nvme::identify::oncs::DSM, 0, "DSM masked");
    assert_ne!(id.oncs & pollux_nvme::identify::oncs::WRITE_ZEROES, 0);
    assert_eq!(c.set_num_queues(16).unwrap(), 2);
    // A Connect with a larger SQSIZE than max_queue_depth is refused ...
    match c.io_queue(1, 65) {
        Err(HostError::Status(s)) => {
            assert!(s.same_code(&Status::CONNECT_INVALID_PARAMETERS), "{s:?}")
        }
        other => panic!("SQSIZE 64 accepted: {:?}", other.map(|_| ())),
    }
    // ... one within it works, up to max_io_size per command.
    let mut q = c.io_queue(1, 64).unwrap();
    write_read_verify(&mut q, 8192, 128, 32);
    let too_big = q
        .execute(
            host::rw_sqe(false, 1, 0, 256),
            vec![0; 131072],
            false,
            TIMEOUT,
        )
        .unwrap();
    assert!(too_big.cqe.status().same_code(&Status::INVALID_FIELD));
    drop(q);
    c.shutdown().unwrap();

    // Only one TCP transport; SPDK answers a second one with -32603.
    let e = rpc.fails(&["nvmf_create_transport", "-t", "TCP"]);
    assert!(e.contains("-32603") && e.contains("already exists"), "{e}");
    // save_config replays the options in force.
    let saved = rpc.run(&["save_config"]);
    let nvmf = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "nvmf")
        .unwrap();
    let create = nvmf["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == "nvmf_create_transport")
        .unwrap();
    assert_eq!(create["params"], *t, "{create}");
    let (_d2, rpc2) = empty_daemon();
    rpc2.call("nvmf_create_transport", create["params"].clone());
    assert_eq!(rpc2.run(&["nvmf_get_transports"])[0], *t);
    drop(d);
}

/// Every flag rpc.py's `nvmf_create_transport` has had since 24.01: at
/// SPDK's defaults where it takes a value, the store_true ones on.
const FLAGS: &[(&str, Option<&str>)] = &[
    ("--max-queue-depth", Some("128")),
    ("--max-io-qpairs-per-ctrlr", Some("127")),
    ("--in-capsule-data-size", Some("4096")),
    ("--max-io-size", Some("131072")),
    ("--io-unit-size", Some("131072")),
    ("--max-aq-depth", Some("128")),
    ("--num-shared-buffers", Some("511")),
    ("--buf-cache-size", Some("32")),
    ("--iobuf-small-cache-size", Some("128")),
    ("--iobuf-large-cache-size", Some("16")),
    ("--zcopy", None),
    ("--num-cqe", Some("4096")),
    ("--max-srq-depth", Some("4096")),
    ("--no-srq", None),
    ("--c2h-success", None),
    ("--dif-insert-or-strip", None),
    ("--sock-priority", Some("0")),
    ("--acceptor-backlog", Some("100")),
    ("--abort-timeout-sec", Some("1")),
    ("--no-wr-batching", None),
    ("--control-msg-num", Some("32")),
    ("--disable-mappable-bar0", None),
    ("--disable-adaptive-irq", None),
    ("--disable-shadow-doorbells", None),
    ("--acceptor-poll-rate", Some("10000")),
    ("--ack-timeout", Some("0")),
    ("--data-wr-pool-size", Some("0")),
    ("--disable-command-passthru", None),
    ("--kas", Some("100")),
    ("--min-kato", Some("10000")),
    ("--masked-oncs", Some("all")),
    ("--masked-fuses", Some("all")),
];

/// `nvmf_create_transport -t TCP` with each of [`FLAGS`] that this
/// release's rpc.py has (by its `--help`); the flags used.
fn create_with_every_flag(rpc: &SpdkRpc) -> Vec<&'static str> {
    let help = match rpc.try_run(&["nvmf_create_transport", "--help"]) {
        Ok(Value::String(s)) => s,
        other => panic!("nvmf_create_transport --help: {other:?}"),
    };
    let mut args = vec!["nvmf_create_transport", "-t", "TCP"];
    let mut used = Vec::new();
    for &(flag, value) in FLAGS {
        // Whole option names only: "--kas" is not "--kas-foo".
        let has = |f: &str| {
            help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
                .any(|w| w == f)
        };
        // Releases with both make -b and --iobuf-small-cache-size (its
        // successor) mutually exclusive.
        let superseded = flag == "--buf-cache-size" && has("--iobuf-small-cache-size");
        if has(flag) && !superseded {
            args.push(flag);
            args.extend(value);
            used.push(flag);
        }
    }
    rpc.run(&args);
    used
}

#[test]
fn every_spdk_release_on_pypi_creates_the_transport() {
    for &version in support::SPDK_RELEASES {
        let (d, _) = empty_daemon();
        let rpc = SpdkRpc::release(d.rpc_socket(), version);
        let used = create_with_every_flag(&rpc);
        // The common core, which every release has.
        for f in [
            "--max-queue-depth",
            "--c2h-success",
            "--sock-priority",
            "--kas",
        ] {
            assert!(used.contains(&f), "{version} has no {f}?");
        }
        let t = &rpc.run(&["nvmf_get_transports"])[0];
        assert_eq!(t["max_io_qpairs_per_ctrlr"], json!(127), "{version}");
        assert_eq!(t["c2h_success"], json!(false), "{version}: -o");
        if used.contains(&"--num-shared-buffers") {
            assert_eq!(t["num_shared_buffers"], json!(511), "{version}");
        }
        drop(d);
    }
}

#[test]
fn rpc_py_parameters_of_every_release_are_accepted_and_bounds_are_named() {
    // rpc.py's own command line with every flag it has had since 24.01,
    // at SPDK's default values, the store_true flags on.
    let (_d, rpc) = empty_daemon();
    // Out of bounds first: each refused with -32602 naming the bound, and
    // nothing is created.
    for (args, names) in [
        (
            vec!["-q", "4096"],
            "max_queue_depth: 4096 is outside 2..=1024",
        ),
        (vec!["-q", "1"], "max_queue_depth: 1 is outside"),
        (vec!["-a", "8192"], "max_aq_depth"),
        (
            vec!["-m", "0"],
            "max_io_qpairs_per_ctrlr: 0 is outside 1..=",
        ),
        (
            vec!["-i", "12288"],
            "max_io_size: 12288 is not a power of two",
        ),
        (
            vec!["-i", "4194304"],
            "max_io_size: 4194304 is outside 4096..=1048576",
        ),
        (
            vec!["-c", "100"],
            "in_capsule_data_size: 100 is not a multiple of 16",
        ),
        (
            vec!["-c", "131072"],
            "in_capsule_data_size: 131072 is outside 0..=65536",
        ),
        (vec!["-y", "17"], "sock_priority: 17 is outside 0..=16"),
        (
            vec!["--masked-oncs", "all", "--kas", "0"],
            "kas: 0 is outside",
        ),
    ] {
        let mut a = vec!["nvmf_create_transport", "-t", "TCP"];
        a.extend(args.iter().copied());
        let e = rpc.fails(&a);
        assert!(e.contains("-32602") && e.contains(names), "{a:?}: {e}");
    }
    // -u and -n as rpc.py up to 26.05 sends them.
    for (params, names) in [
        (json!({"io_unit_size": 256}), "io_unit_size: 256 is outside"),
        (
            json!({"io_unit_size": 8192, "num_shared_buffers": 4}),
            "num_shared_buffers: 4 is outside 16..=",
        ),
        (json!({"max_queue_depth": 1u64 << 40}), "max_queue_depth"),
        (json!({"bogus": 1}), "bogus"),
    ] {
        let mut p = params.clone();
        p["trtype"] = json!("TCP");
        let e = rpc.try_call("nvmf_create_transport", p).unwrap_err();
        assert!(e.contains("-32602") && e.contains(names), "{params}: {e}");
    }
    assert_eq!(rpc.run(&["nvmf_get_transports"]), json!([]));
    create_with_every_flag(&rpc);
    let t = &rpc.run(&["nvmf_get_transports"])[0];
    assert_eq!(t["max_io_qpairs_per_ctrlr"], json!(127));
    assert_eq!(t["num_shared_buffers"], json!(512), "the default 64 MiB");
    assert_eq!(t["c2h_success"], json!(false), "-o turns c2h_success off");
    assert_eq!(
        t["zcopy"],
        json!(false),
        "no zero-copy path: copies, as SPDK"
    );
    assert_eq!(t["kas"], json!(100));

    // What SPDK's save_config writes for its default TCP transport, 24.01
    // and 26.x layouts: replayable as is.
    let v24: Value = json!({
        "trtype": "TCP", "max_queue_depth": 128, "max_io_qpairs_per_ctrlr": 127,
        "in_capsule_data_size": 4096, "max_io_size": 131072, "io_unit_size": 131072,
        "max_aq_depth": 128, "num_shared_buffers": 511, "buf_cache_size": 4294967295u64,
        "dif_insert_or_strip": false, "zcopy": false, "abort_timeout_sec": 1,
        "c2h_success": true, "sock_priority": 0
    });
    let v26: Value = json!({
        "trtype": "TCP", "max_queue_depth": 128, "max_io_qpairs_per_ctrlr": 127,
        "in_capsule_data_size": 4096, "max_io_size": 131072, "max_aq_depth": 128,
        "iobuf_small_cache_size": 4294967295u64, "iobuf_large_cache_size": 4294967295u64,
        "dif_insert_or_strip": false, "zcopy": false, "c2h_success": true,
        "sock_priority": 0, "abort_timeout_sec": 1, "ack_timeout": 0,
        "data_wr_pool_size": 0, "disable_command_passthru": false, "kas": 100,
        "min_kato": 10000
    });
    for params in [v24, v26] {
        let (_d, rpc) = empty_daemon();
        assert_eq!(
            rpc.call("nvmf_create_transport", params.clone()),
            json!(true)
        );
        let t = &rpc.run(&["nvmf_get_transports"])[0];
        assert_eq!(t["max_queue_depth"], json!(128), "{params}");
        assert_eq!(t["max_aq_depth"], json!(128));
        assert_eq!(t["in_capsule_data_size"], json!(4096));
    }
}
