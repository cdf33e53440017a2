//! Issue 8 §2: SPDK's rpc.py from every `spdk` release on PyPI
//! (`support::SPDK_RELEASES`, each in its own venv from
//! scripts/test-deps.sh) drives Pollux the way users call it, through its
//! CLI: startup, bdev_*, nvmf_* (with a host connected by Pollux's own
//! initiator while `nvmf_subsystem_get_controllers` lists it), vhost_*,
//! save_config, and documented params at values Pollux cannot honour.
//!
//! Orchestrators pin the SPDK release they were built with, and releases
//! differ in what they send unasked (25.05 to 26.05 add
//! `"hide_metadata": false` to every namespace, 25.09 on send
//! `ana_reporting`, `passthrough` and `enable_nssr` as false, 26.01 on send
//! `nowait` with every aio bdev, 26.05 replaced `bdev_get_iostat -b` by
//! `--names`): each release gets its own test, which fails, never skips,
//! when its venv is missing.

mod support;

use std::time::{Duration, Instant};

use pollux_nvme::host::{rw_sqe, Controller, HostConfig, QueuePair};
use serde_json::{json, Value};
use support::{free_port, tcp_listener, Daemon, Ready, SpdkRpc, SpdkRpcServer};

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";
/// A subsystem with a closed host list.
const NQN2: &str = "nqn.2016-06.io.spdk:cnode2";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40";
const SERIAL: &str = "SPDK00000000000001";
const NGUID: &str = "0123456789ABCDEF0123456789ABCDEF";
const DISCOVERY: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// I/O queues the initiator opens: `num_io_qpairs` is this plus the admin
/// queue, as SPDK counts it.
const PERF_QUEUES: u64 = 2;
/// The host ID our initiator connects with, and as a UUID.
const HOSTID_BYTES: [u8; 16] = [
    0x5f, 0x7c, 0x2a, 0x7e, 0x7d, 0x3a, 0x4e, 0x1b, 0x9a, 0x53, 0x6f, 0x0c, 0x1d, 0x2e, 0x3f, 0x40,
];
const HOSTID: &str = "5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40";

/// Pollux with no bdevs: one reactor, metrics on a free port, vhost
/// controller sockets in its private directory.
fn start() -> Daemon {
    Daemon::builder()
        .empty_target("[0]")
        .ready(Ready::RpcSocket)
        .timeout(Duration::from_secs(20))
        .start()
}

/// Whether `version` ("25.5.1") is `major.minor` or later.
fn at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut p = version.split('.').map(|x| x.parse::<u32>().unwrap());
    (p.next().unwrap(), p.next().unwrap()) >= (major, minor)
}

fn names(list: &Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|b| b[key].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// A host connected with Pollux's own initiator (the `nvme` crate's
/// `host` module, what `pollux perf nvmf` uses): one controller of
/// subsystem `NQN` with `PERF_QUEUES` I/O queues, each of which has read
/// a block. It stays connected until `shutdown`.
struct Host {
    ctrl: Controller,
    queues: Vec<QueuePair>,
}

fn connect_host(port: u16) -> Host {
    let mut cfg = HostConfig::new(format!("127.0.0.1:{port}").parse().unwrap(), NQN);
    cfg.hostnqn = HOST.into();
    cfg.hostid = HOSTID_BYTES;
    let mut ctrl = Controller::connect(cfg).unwrap();
    assert_eq!(
        ctrl.set_num_queues(PERF_QUEUES as u16).unwrap(),
        PERF_QUEUES as u16
    );
    let queues: Vec<QueuePair> = (1..=PERF_QUEUES as u16)
        .map(|qid| {
            let mut q = ctrl.io_queue(qid, 8).unwrap();
            q.submit(rw_sqe(false, 1, 0, 1), vec![0; 512], false)
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while q.poll().unwrap() == 0 {
                assert!(Instant::now() < deadline, "no completion on queue {qid}");
                std::thread::sleep(Duration::from_millis(1));
            }
            for c in q.take_completed() {
                c.status().unwrap();
            }
            q
        })
        .collect();
    Host { ctrl, queues }
}

impl Host {
    fn shutdown(self) {
        drop(self.queues);
        self.ctrl.shutdown().unwrap();
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `secs`.
fn wait_for<T>(d: &Daemon, secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A documented SPDK param at a value Pollux cannot honour: -32602 naming
/// it, and the daemon keeps serving.
fn refused(cli: &mut SpdkRpcServer, args: &[&str], param: &str) {
    let e = cli.fails(args);
    assert!(e.contains("-32602"), "{args:?}: {e}");
    assert!(e.contains(param), "{args:?}: {e} does not name {param}");
}

fn drive(version: &str) {
    let t0 = Instant::now();
    let d = start();
    let rpc = SpdkRpc::release(d.rpc_socket(), version);
    // Most commands go through one rpc.py in --server mode: the same CLI
    // parsing and client per command, without a Python start each.
    let mut cli = rpc.server();

    // What clients ask first: the version, init, the method list (rpc.py's
    // load_config and spdkcli tell an initialised target by
    // framework_start_init missing from the current methods).
    let v = rpc.run(&["spdk_get_version"]);
    assert!(v["version"].as_str().unwrap().contains("Pollux"), "{v}");
    rpc.run(&["framework_wait_init"]);
    let all = rpc.run(&["rpc_get_methods"]);
    let current = rpc.run(&["rpc_get_methods", "-c"]);
    for m in [
        "bdev_malloc_create",
        "nvmf_subsystem_add_ns",
        "nvmf_subsystem_get_controllers",
        "vhost_create_blk_controller",
        "framework_get_config",
    ] {
        assert!(all.as_array().unwrap().contains(&json!(m)), "{m}: {all}");
        assert!(current.as_array().unwrap().contains(&json!(m)), "{m}");
    }
    assert!(all
        .as_array()
        .unwrap()
        .contains(&json!("framework_start_init")));
    assert!(!current
        .as_array()
        .unwrap()
        .contains(&json!("framework_start_init")));

    // Logs and threads, as orchestrators look at them (issue 13).
    assert_eq!(cli.run(&["log_get_print_level"]), json!("INFO"));
    cli.run(&["log_set_flag", "nvmf"]);
    assert_eq!(cli.run(&["log_get_flags"])["nvmf"], json!(true));
    cli.run(&["log_clear_flag", "nvmf"]);
    // (Not log_set_level: in 25.09 JSONRPCClient's own log_set_level,
    // its Python logger's, shadows the method, and the CLI fails.)
    cli.run(&["log_set_print_level", "NOTICE"]);
    assert_eq!(cli.run(&["log_get_print_level"]), json!("NOTICE"));
    let t = cli.run(&["thread_get_stats"]);
    assert_eq!(t["threads"][0]["name"], json!("reactor_0"), "{t}");

    // Bdevs, as rpc.py's CLI creates them (malloc and null sizes in MiB).
    assert_eq!(
        cli.run(&["bdev_malloc_create", "-b", "Malloc0", "16", "512"]),
        json!("Malloc0")
    );
    assert_eq!(
        cli.run(&["bdev_malloc_create", "-b", "Malloc1", "8", "4096"]),
        json!("Malloc1")
    );
    assert_eq!(
        cli.run(&["bdev_null_create", "Null0", "8", "512"]),
        json!("Null0")
    );
    let img = d.dir().join("disk.img");
    support::sparse_file(&img, 4 << 20);
    let img = img.to_str().unwrap();
    assert_eq!(
        cli.run(&["bdev_aio_create", img, "Aio0", "512"]),
        json!("Aio0")
    );
    cli.run(&["bdev_aio_delete", "Aio0"]);
    assert_eq!(
        cli.run(&["bdev_uring_create", img, "Uring0", "512"]),
        json!("Uring0")
    );
    assert_eq!(
        cli.run(&["bdev_passthru_create", "-b", "Null0", "-p", "PT0"]),
        json!("PT0")
    );
    assert_eq!(
        names(&cli.run(&["bdev_get_bdevs"]), "name"),
        ["Malloc0", "Malloc1", "Null0", "PT0", "Uring0"]
    );
    let m0 = cli.run(&["bdev_get_bdevs", "-b", "Malloc0"]);
    assert_eq!(m0[0]["num_blocks"], json!(16 * 2048));
    // 26.01 added --names (a list) beside -b; 26.05 dropped -b.
    let iostat_of = if at_least(version, 26, 1) {
        "--names"
    } else {
        "-b"
    };
    let st = cli.run(&["bdev_get_iostat", iostat_of, "Null0"]);
    assert_eq!(names(&st["bdevs"], "name"), ["Null0"]);
    refused(
        &mut cli,
        &["bdev_malloc_create", "-b", "MD", "8", "512", "-m", "8"],
        "md_size",
    );
    refused(
        &mut cli,
        &["bdev_get_iostat", iostat_of, "Null0", "-c"],
        "per_channel",
    );

    // NVMe-oF: a transport, an open subsystem with two namespaces (each
    // add_ns carries what this release sends unasked) and a listener, and
    // a closed subsystem with one allowed host.
    cli.run(&["nvmf_create_transport", "-t", "TCP"]);
    assert_eq!(cli.run(&["nvmf_get_transports"])[0]["trtype"], json!("TCP"));
    cli.run(&[
        "nvmf_create_subsystem",
        NQN,
        "-a",
        "-s",
        SERIAL,
        "-d",
        "Pollux test",
    ]);
    cli.run(&["nvmf_subsystem_add_ns", NQN, "Malloc0"]);
    cli.run(&["nvmf_subsystem_add_ns", NQN, "PT0", "-n", "5", "-g", NGUID]);
    let port = free_port();
    let port_s = port.to_string();
    let mut listen = tcp_listener(&port_s).to_vec();
    listen.extend(["-f", "ipv4"]);
    let mut add_listener = vec!["nvmf_subsystem_add_listener", NQN];
    add_listener.extend(&listen);
    cli.run(&add_listener);
    cli.run(&["nvmf_create_subsystem", NQN2, "-s", "SPDK2"]);
    cli.run(&["nvmf_subsystem_add_host", NQN2, HOST]);
    // 26.01 renamed -e/-d to --allow-any-host/--no-allow-any-host.
    let (allow, deny) = if at_least(version, 26, 1) {
        ("--allow-any-host", "--no-allow-any-host")
    } else {
        ("-e", "-d")
    };
    cli.run(&["nvmf_subsystem_allow_any_host", NQN2, allow]);
    assert_eq!(
        cli.run(&["nvmf_get_subsystems", NQN2])[0]["allow_any_host"],
        json!(true)
    );
    cli.run(&["nvmf_subsystem_allow_any_host", NQN2, deny]);
    let subs = cli.run(&["nvmf_get_subsystems"]);
    assert_eq!(names(&subs, "nqn"), [DISCOVERY, NQN, NQN2]);
    let s = &cli.run(&["nvmf_get_subsystems", NQN])[0];
    assert_eq!(s["serial_number"], json!(SERIAL));
    assert_eq!(s["model_number"], json!("Pollux test"));
    assert_eq!(s["listen_addresses"][0]["trsvcid"], json!(port_s));
    let ns: Vec<(u64, &str, &str)> = s["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["nsid"].as_u64().unwrap(),
                n["bdev_name"].as_str().unwrap(),
                n["nguid"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ns[0].0, 1);
    assert_eq!(ns[0].1, "Malloc0");
    assert_eq!(ns[1], (5, "PT0", NGUID));
    let s2 = &cli.run(&["nvmf_get_subsystems", NQN2])[0];
    assert_eq!(s2["allow_any_host"], json!(false));
    assert_eq!(s2["hosts"], json!([{ "nqn": HOST }]));
    // ANA reporting and a ptpl file, as every release sends them.
    let ana = "nqn.2016-06.io.spdk:ana";
    let ptpl = d.dir().join("ptpl.json");
    cli.run(&["nvmf_create_subsystem", ana, "-r"]);
    cli.run(&[
        "nvmf_subsystem_add_ns",
        ana,
        "Malloc1",
        "-p",
        ptpl.to_str().unwrap(),
    ]);
    let s3 = &cli.run(&["nvmf_get_subsystems", ana])[0];
    assert_eq!(s3["ana_reporting"], json!(true), "{s3}");
    assert_eq!(s3["namespaces"][0]["anagrpid"], json!(1), "{s3}");
    assert_eq!(
        s3["namespaces"][0]["ptpl_file"],
        json!(ptpl.display().to_string())
    );
    cli.run(&["nvmf_delete_subsystem", ana]);

    // Who is connected: nobody, then our initiator's one controller with
    // its admin and I/O queues, then nobody again.
    assert_eq!(cli.run(&["nvmf_subsystem_get_controllers", NQN]), json!([]));
    let host = connect_host(port);
    let c = cli.run(&["nvmf_subsystem_get_controllers", NQN]);
    assert_eq!(c.as_array().unwrap().len(), 1, "{c}");
    let keys: Vec<&str> = c[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["cntlid", "cntrltype", "hostid", "hostnqn", "num_io_qpairs"],
        "{c}"
    );
    assert_eq!(c[0]["cntlid"], json!(host.ctrl.cntlid()), "{c}");
    assert_eq!(c[0]["cntrltype"], json!("io"));
    assert_eq!(c[0]["hostnqn"], json!(HOST));
    assert_eq!(c[0]["hostid"], json!(HOSTID));
    assert_eq!(c[0]["num_io_qpairs"], json!(1 + PERF_QUEUES), "{c}");
    assert_eq!(
        cli.run(&["nvmf_subsystem_get_controllers", NQN2]),
        json!([])
    );
    // Its queue pairs and the subsystem's listener (issue 13).
    let q = cli.run(&["nvmf_subsystem_get_qpairs", NQN]);
    assert_eq!(q.as_array().unwrap().len(), 1 + PERF_QUEUES as usize, "{q}");
    assert_eq!(q[0]["hostnqn"], json!(HOST), "{q}");
    let l = cli.run(&["nvmf_subsystem_get_listeners", NQN]);
    assert_eq!(l[0]["address"]["trsvcid"], json!(port_s), "{l}");
    host.shutdown();
    wait_for(&d, 20, "the controller goes with its host", || {
        (cli.run(&["nvmf_subsystem_get_controllers", NQN]) == json!([])).then_some(())
    });
    let e = cli.fails(&["nvmf_subsystem_get_controllers", "nqn.2016-06.io.spdk:none"]);
    assert!(e.contains("-32602") && e.contains("nqn"), "{e}");

    // vhost-user-blk controllers.
    cli.run(&["vhost_create_blk_controller", "vhost.0", "Malloc1"]);
    assert!(d.dir().join("vhost.0").exists());
    let v = cli.run(&["vhost_get_controllers", "-n", "vhost.0"]);
    assert_eq!(v[0]["ctrlr"], json!("vhost.0"));
    assert_eq!(v[0]["backend_specific"]["block"]["bdev"], json!("Malloc1"));
    refused(
        &mut cli,
        &["vhost_create_blk_controller", "vhost.1", "Malloc1", "-p"],
        "packed_ring",
    );

    // save_config: rpc.py asks framework_get_subsystems, then each
    // subsystem's framework_get_config.
    let saved = cli.run(&["save_config"]);
    let methods: Vec<&str> = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["config"].as_array().into_iter().flatten())
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    for m in [
        "bdev_malloc_create",
        "nvmf_create_subsystem",
        "nvmf_subsystem_add_ns",
        "nvmf_subsystem_add_listener",
        "nvmf_subsystem_add_host",
        "vhost_create_blk_controller",
    ] {
        assert!(
            methods.contains(&m),
            "{m} missing from save_config: {saved}"
        );
    }

    // 26.09's batch mode: one JSON-RPC array for every line on stdin.
    if at_least(version, 26, 9) {
        let (ok, out) = rpc.run_stdin(
            &["-b"],
            "bdev_null_create Batch0 8 512\nbdev_get_bdevs -b Batch0\n",
        );
        assert!(ok, "batch mode failed: {out}");
        assert!(out.contains("Batch0"), "{out}");
        cli.run(&["bdev_null_delete", "Batch0"]);
    }

    // Tear down with the same client.
    cli.run(&["vhost_delete_controller", "vhost.0"]);
    assert_eq!(cli.run(&["vhost_get_controllers"]), json!([]));
    let mut remove_listener = vec!["nvmf_subsystem_remove_listener", NQN];
    remove_listener.extend(&listen);
    cli.run(&remove_listener);
    cli.run(&["nvmf_subsystem_remove_ns", NQN, "5"]);
    cli.run(&["nvmf_subsystem_remove_ns", NQN, "1"]);
    cli.run(&["nvmf_subsystem_remove_host", NQN2, HOST]);
    cli.run(&["nvmf_delete_subsystem", NQN2]);
    cli.run(&["nvmf_delete_subsystem", NQN]);
    cli.run(&["bdev_passthru_delete", "PT0"]);
    for (del, name) in [
        ("bdev_malloc_delete", "Malloc0"),
        ("bdev_malloc_delete", "Malloc1"),
        ("bdev_null_delete", "Null0"),
        ("bdev_uring_delete", "Uring0"),
    ] {
        cli.run(&[del, name]);
    }
    assert_eq!(cli.run(&["bdev_get_bdevs"]), json!([]));
    assert_eq!(
        names(&cli.run(&["nvmf_get_subsystems"]), "nqn"),
        [DISCOVERY]
    );

    // rpc.py's load_config replays the saved config into a fresh target
    // (rpc_get_methods, then each method while it is among the current
    // ones). The first daemon stays, for the disk image in its directory.
    let d2 = start();
    let rpc2 = SpdkRpc::release(d2.rpc_socket(), version);
    let (ok, out) = rpc2.run_stdin(&["load_config"], &saved.to_string());
    assert!(ok, "load_config failed: {out}\n{}", d2.log());
    assert_eq!(
        names(&rpc2.run(&["bdev_get_bdevs"]), "name"),
        ["Malloc0", "Malloc1", "Null0", "PT0", "Uring0"]
    );
    let s = &rpc2.run(&["nvmf_get_subsystems", NQN])[0];
    assert_eq!(s["serial_number"], json!(SERIAL));
    assert_eq!(s["namespaces"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(
        rpc2.run(&["vhost_get_controllers"])[0]["ctrlr"],
        json!("vhost.0")
    );
    eprintln!("rpc.py {version}: {:.1?}", t0.elapsed());
}

/// One test per release, so a failure names the release.
macro_rules! release_tests {
    ($($name:ident => $version:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                drive($version);
            }
        )*

        /// The tests above cover exactly the releases the harness (and
        /// scripts/test-deps.sh) know.
        #[test]
        fn every_release_has_a_test() {
            assert_eq!([$($version),*], support::SPDK_RELEASES);
        }
    };
}

release_tests! {
    rpc_py_25_5 => "25.5",
    rpc_py_25_5_1 => "25.5.1",
    rpc_py_25_9 => "25.9",
    rpc_py_26_1 => "26.1",
    rpc_py_26_5 => "26.5",
    rpc_py_26_9 => "26.9",
}

/// SPDK's other clients speak the same protocol: a request without the
/// `"jsonrpc"` member (SPDK's server accepts it) and a batch array.
#[test]
fn requests_are_framed_as_spdk_frames_them() {
    let d = start();
    let rpc = d.spdk();
    let out = rpc.python(
        "import socket\n\
         s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n\
         s.sendall(b'{\"id\": 1, \"method\": \"spdk_get_version\"}')\n\
         s.sendall(b'[{\"jsonrpc\": \"2.0\", \"id\": 2, \"method\": \"framework_wait_init\"},\
                      {\"jsonrpc\": \"2.0\", \"method\": \"framework_wait_init\"},\
                      {\"jsonrpc\": \"2.0\", \"id\": 3, \"method\": \"nope\"}, 7] []')\n\
         s.shutdown(socket.SHUT_WR)\n\
         data = b''\n\
         while True:\n\
         \x20   chunk = s.recv(65536)\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         print(data.decode())\n",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    assert_eq!(answers.len(), 3, "{text}");
    assert!(answers[0]["result"]["version"].is_string(), "{text}");
    // The notification gets no answer; the bad method and the non-object
    // get errors, in order.
    let batch = answers[1].as_array().unwrap();
    assert_eq!(batch.len(), 3, "{text}");
    assert_eq!(batch[0]["result"], json!(true));
    assert_eq!(batch[1]["error"]["code"], json!(-32601));
    assert_eq!(batch[2]["error"]["code"], json!(-32600));
    // An empty batch is an invalid request.
    assert_eq!(answers[2]["error"]["code"], json!(-32600));
}

/// `nvmf_subsystem_get_controllers` reports each controller with the host
/// NQN and host ID its Connect carried, an admin-only controller as one
/// queue, and the discovery subsystem's controllers as "discovery"; each
/// goes when its host disconnects.
#[test]
fn get_controllers_reports_what_each_host_connected_with() {
    let d = start();
    let rpc = d.spdk();
    rpc.run(&["bdev_null_create", "Null0", "8", "512"]);
    rpc.run(&["nvmf_create_transport", "-t", "TCP"]);
    let port = free_port();
    rpc.export_tcp(NQN, "Null0", port);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut io = HostConfig::new(addr, NQN);
    io.hostnqn = HOST.into();
    io.hostid = HOSTID_BYTES;
    let io = Controller::connect(io).unwrap();
    let mut disc = HostConfig::new(addr, DISCOVERY);
    disc.hostnqn = "nqn.2014-08.org.nvmexpress:uuid:discovery-host".into();
    let disc = Controller::connect(disc).unwrap();

    let c = rpc.run(&["nvmf_subsystem_get_controllers", NQN]);
    assert_eq!(c.as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c[0]["hostnqn"], json!(HOST));
    assert_eq!(
        c[0]["hostid"],
        json!("5f7c2a7e-7d3a-4e1b-9a53-6f0c1d2e3f40")
    );
    assert_eq!(c[0]["cntrltype"], json!("io"));
    assert_eq!(c[0]["num_io_qpairs"], json!(1), "the admin queue only: {c}");
    let dc = rpc.run(&["nvmf_subsystem_get_controllers", DISCOVERY]);
    assert_eq!(dc.as_array().unwrap().len(), 1, "{dc}");
    assert_eq!(dc[0]["cntrltype"], json!("discovery"));
    assert_eq!(
        dc[0]["hostnqn"],
        json!("nqn.2014-08.org.nvmexpress:uuid:discovery-host")
    );
    assert_ne!(dc[0]["cntlid"], c[0]["cntlid"]);

    io.shutdown().unwrap();
    disc.shutdown().unwrap();
    for nqn in [NQN, DISCOVERY] {
        wait_for(&d, 20, "the controllers go with their hosts", || {
            (rpc.run(&["nvmf_subsystem_get_controllers", nqn]) == json!([])).then_some(())
        });
    }
}
