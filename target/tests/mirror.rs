//! The mirror job through SPDK's rpc.py (`pollux_mirror_start`,
//! `pollux_job_list`, `pollux_job_complete`, `pollux_job_cancel`), and a
//! mirror plus pivot under a Linux guest's fio verify: over NVMe/TCP (the
//! kernel initiator) and over virtio-blk (QEMU's vhost-user-blk), in one
//! guest started by `../shared/vm/vm-client`. The sources are RAM disks,
//! the targets files; after the pivot the sources are deleted while fio
//! goes on, and at the end the files hold what the guest reads.
//!
//! The VM test never skips: if the VM cannot run it fails and says why.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{free_port, md5_of, sparse_file, Daemon, SpdkRpc, VmClient};

const NQN: &str = "nqn.2024-11.dev.pollux:mirror";
const MIB: u64 = 1 << 20;
const DISK_MB: u64 = 16;

fn config(dir: &std::path::Path, port: u16) -> String {
    let mut c = String::from(
        "[reactors]\ncores = [0, 1]\nidle = \"adaptive\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n",
    );
    for i in 0..2 {
        let path = dir.join(format!("dst{i}.img"));
        sparse_file(&path, DISK_MB * MIB);
        c += &format!(
            "[[bdev]]\nname = \"src{i}\"\nkind = \"ram\"\nsize = \"{DISK_MB}MiB\"\nblock_size = 512\n\n\
             [[bdev]]\nname = \"dst{i}\"\nkind = \"file\"\npath = \"{}\"\nblock_size = 512\n\n",
            path.display()
        );
    }
    c += &format!(
        "[[bdev]]\nname = \"sig\"\nkind = \"null\"\nsize = \"1MiB\"\nblock_size = 512\n\n\
         [[nvmf.subsystem]]\nnqn = \"{NQN}\"\nnamespaces = [\"src0\", \"sig\"]\nallow_any_host = true\n\
         listen = [\"127.0.0.1:{port}\"]\n\n[[vhost.blk]]\nsocket = \"{}\"\nbdev = \"src1\"\n",
        dir.join("vhost.sock").display()
    );
    c
}

fn job<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {list}"))
}

fn wait_state(rpc: &SpdkRpc, name: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = rpc.call("pollux_job_list", json!({}));
        let j = job(&list, name).clone();
        if j["state"] == state {
            return j;
        }
        assert!(Instant::now() < deadline, "job {name} never {state}: {j}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mirror_rpcs_states_and_refusals() {
    let d = Daemon::builder()
        .config(
            "[reactors]\ncores = [0]\nidle = \"adaptive\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        )
        .start();
    let rpc = d.spdk();
    for n in ["a", "b", "c"] {
        rpc.run(&["bdev_malloc_create", "-b", n, "8", "512"]);
    }
    rpc.run(&["bdev_malloc_create", "-b", "small", "4", "512"]);
    let e = rpc
        .try_call(
            "pollux_mirror_start",
            json!({"job": "j", "source": "a", "target": "small"}),
        )
        .unwrap_err();
    assert!(e.contains("-32602"), "{e}");
    let e = rpc
        .try_call(
            "pollux_mirror_start",
            json!({"job": "j", "source": "a", "target": "b", "granularity": 1000}),
        )
        .unwrap_err();
    assert!(e.contains("granularity"), "{e}");

    rpc.call(
        "pollux_mirror_start",
        json!({"job": "j", "source": "a", "target": "b", "granularity": 65536}),
    );
    // The filter is in the graph, above the source, with the target.
    let g = rpc.call("pollux_graph_get", json!({})).to_string();
    assert!(g.contains("mirror:j"), "{g}");
    // One active job per name, and a node in one job at a time.
    let e = rpc
        .try_call(
            "pollux_mirror_start",
            json!({"job": "j", "source": "c", "target": "small"}),
        )
        .unwrap_err();
    assert!(e.contains("active"), "{e}");
    let e = rpc
        .try_call(
            "pollux_mirror_start",
            json!({"job": "k", "source": "c", "target": "b"}),
        )
        .unwrap_err();
    assert!(e.contains("another job"), "{e}");
    // The target cannot be deleted under the job, nor a null source resized.
    assert!(rpc.try_run(&["bdev_malloc_delete", "b"]).is_err());
    rpc.run(&["bdev_null_create", "n0", "8", "512"]);
    rpc.run(&["bdev_null_create", "n1", "8", "512"]);
    rpc.call(
        "pollux_mirror_start",
        json!({"job": "n", "source": "n0", "target": "n1"}),
    );
    let e = rpc.fails(&["bdev_null_resize", "n0", "16"]);
    // rpc.py prints the message JSON-quoted.
    assert!(e.contains(r#"is the source of mirror job \"n\""#), "{e}");
    let e = rpc.fails(&["bdev_null_resize", "n1", "16"]);
    assert!(e.contains(r#"is the target of mirror job \"n\""#), "{e}");
    rpc.call("pollux_job_cancel", json!({"job": "n"}));
    rpc.run(&["bdev_null_resize", "n0", "16"]);
    // Nor a node below the source: the mirror filter refuses its child's
    // new size, naming the job's filter (the bitmap covers the old size).
    rpc.run(&["bdev_null_create", "n2", "8", "512"]);
    rpc.run(&["bdev_passthru_create", "-b", "n2", "-p", "pt2"]);
    rpc.run(&["bdev_null_create", "n3", "8", "512"]);
    rpc.call(
        "pollux_mirror_start",
        json!({"job": "deep", "source": "pt2", "target": "n3"}),
    );
    let e = rpc.fails(&["bdev_null_resize", "n2", "16"]);
    assert!(e.contains(r#"under \"mirror:deep\""#), "{e}");
    assert!(e.contains("source of a running mirror job"), "{e}");
    assert_eq!(
        rpc.run(&["bdev_get_bdevs", "-b", "n2"])[0]["num_blocks"],
        json!(8 * MIB / 512)
    );
    rpc.call("pollux_job_cancel", json!({"job": "deep"}));
    wait_state(&rpc, "deep", "cancelled");
    rpc.run(&["bdev_null_resize", "n2", "16"]);
    assert_eq!(
        rpc.run(&["bdev_get_bdevs", "-b", "pt2"])[0]["num_blocks"],
        json!(16 * MIB / 512)
    );

    let j = wait_state(&rpc, "j", "ready");
    assert_eq!(j["bytes_done"], json!(8 * MIB), "{j}");
    assert_eq!(j["bytes_total"], json!(8 * MIB), "{j}");
    rpc.call("pollux_job_cancel", json!({"job": "j"}));
    let j = wait_state(&rpc, "j", "cancelled");
    assert_eq!(j["type"], "mirror");
    let e = rpc
        .try_call("pollux_job_complete", json!({"job": "j"}))
        .unwrap_err();
    assert!(e.contains("cancelled"), "{e}");
    let g = rpc.call("pollux_graph_get", json!({})).to_string();
    assert!(!g.contains("mirror:j"), "{g}");
    // The name is free again; this time it completes.
    rpc.call(
        "pollux_mirror_start",
        json!({"job": "j", "source": "a", "target": "c"}),
    );
    wait_state(&rpc, "j", "ready");
    rpc.call("pollux_job_complete", json!({"job": "j"}));
    wait_state(&rpc, "j", "completed");
    let e = rpc
        .try_call("pollux_job_cancel", json!({"job": "nope"}))
        .unwrap_err();
    assert!(e.contains("no job"), "{e}");
    // The source is free after the pivot.
    rpc.run(&["bdev_malloc_delete", "a"]);
}

#[test]
fn mirror_and_pivot_under_linux_fio_verify() {
    let vm = VmClient::find();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port);
    let sock = dir.path().join("vhost.sock");
    let dst: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("dst{i}.img")))
        .collect();
    let mut d = Daemon::builder().in_dir(dir).config(cfg).start();

    // fio rounds (write with verify backlog, then verify) run on both
    // disks until the host signals that the pivots are done: it resizes
    // the `sig` namespace, which the guest sees through the Namespace
    // Attribute Changed AEN.
    let fio = |name: &str, dev: &str| {
        format!(
            "fio --name={name} --filename={dev} --rw=randwrite --bs=4k --size={DISK_MB}m \
             --iodepth=8 --ioengine=libaio --direct=1 --verify=crc32c --verify_backlog=512 \
             --verify_fatal=1 --do_verify=1 --time_based --runtime=4 --randrepeat=0 \
             --output-format=terse >/tmp/{name}.out 2>&1 && echo FIO_OK {name} || \
             {{ cat /tmp/{name}.out; echo FIO_FAILED {name}; touch /tmp/failed; }}"
        )
    };
    let script = format!(
        "set -e\n\
         nvme connect -t tcp -a 10.0.2.2 -s {port} -n {NQN}\n\
         for dev in nvme0n1 nvme0n2; do i=0; while [ ! -b /dev/$dev ]; do i=$((i+1)); \
           [ $i -gt 100 ] && exit 1; sleep 0.1; done; done\n\
         sig=$(cat /sys/block/nvme0n2/size); rounds=0\n\
         while [ $(cat /sys/block/nvme0n2/size) -eq $sig ]; do\n\
           ( {f1} ) &\n\
           ( {f2} ) &\n\
           wait\n\
           [ -e /tmp/failed ] && exit 1\n\
           rounds=$((rounds+1)); [ $rounds -gt 60 ] && {{ echo NO_SIGNAL; exit 1; }}\n\
         done\n\
         echo ROUNDS $rounds\n\
         echo NVME_MD5 $(dd if=/dev/nvme0n1 bs=1M iflag=direct 2>/dev/null | md5sum)\n\
         echo VDA_MD5 $(dd if=/dev/vda bs=1M iflag=direct 2>/dev/null | md5sum)\n\
         nvme disconnect -n {NQN}\n\
         echo ALL_OK\n",
        f1 = fio("nvme", "/dev/nvme0n1"),
        f2 = fio("vda", "/dev/vda"),
    );

    let rpc_sock = d.rpc_socket().to_owned();
    let driver = std::thread::spawn(move || {
        let rpc = SpdkRpc::new(&rpc_sock);
        // Start once fio writes both sources.
        let deadline = Instant::now() + Duration::from_secs(300);
        for src in ["src0", "src1"] {
            loop {
                let st = rpc.call("bdev_get_iostat", json!({"name": src}));
                if st["bdevs"][0]["num_write_ops"].as_u64().unwrap_or(0) > 1000 {
                    break;
                }
                assert!(Instant::now() < deadline, "no writes on {src}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let started = Instant::now();
        let mut log = Vec::new();
        for i in 0..2 {
            rpc.call(
                "pollux_mirror_start",
                json!({"job": format!("m{i}"), "source": format!("src{i}"),
                       "target": format!("dst{i}"), "granularity": 65536}),
            );
        }
        for i in 0..2 {
            let j = wait_state(&rpc, &format!("m{i}"), "ready");
            log.push(j.to_string());
            rpc.call("pollux_job_complete", json!({"job": format!("m{i}")}));
            let j = wait_state(&rpc, &format!("m{i}"), "completed");
            log.push(j.to_string());
        }
        // The exports now name the targets (what save_config replays).
        let subs = rpc.run(&["nvmf_get_subsystems"]).to_string();
        assert!(subs.contains("\"bdev_name\":\"dst0\""), "{subs}");
        let ctrls = rpc.run(&["vhost_get_controllers"]).to_string();
        assert!(ctrls.contains("dst1") && !ctrls.contains("src1"), "{ctrls}");
        // The sources go while fio still runs: the guest is on the targets.
        rpc.run(&["bdev_malloc_delete", "src0"]);
        rpc.run(&["bdev_malloc_delete", "src1"]);
        let writes = |b: &str| {
            rpc.call("bdev_get_iostat", json!({"name": b}))["bdevs"][0]["num_write_ops"]
                .as_u64()
                .unwrap_or(0)
        };
        let before = (writes("dst0"), writes("dst1"));
        std::thread::sleep(Duration::from_secs(1));
        let after = (writes("dst0"), writes("dst1"));
        log.push(format!("target writes {before:?} -> {after:?}"));
        log.push(format!("pivots done {:?} after start", started.elapsed()));
        // Let the guest's current round finish on the targets, then stop it.
        rpc.run(&["bdev_null_resize", "sig", "2"]);
        assert!(
            after.0 > before.0 && after.1 > before.1,
            "the guest does not write the targets: {log:?}"
        );
        log
    });
    let out = vm.run(
        &["--cpus", "1", "--vhost-user-blk", sock.to_str().unwrap()],
        600,
        &script,
    );
    let plog = d.log();
    let report = || out.report(&plog);
    assert!(
        driver.is_finished(),
        "the guest ended before the pivots:\n{}",
        report()
    );
    let log = match driver.join() {
        Ok(l) => l,
        Err(_) => panic!("the job driver failed:\n{}", report()),
    };
    assert!(out.status.success(), "guest script failed:\n{}", report());
    eprintln!(
        "job driver: {log:?}; guest fio rounds: {:?}",
        out.marker("ROUNDS")
    );
    assert!(!out.stdout.contains("FIO_FAILED"), "{}", report());
    for m in ["FIO_OK nvme", "FIO_OK vda", "ROUNDS", "ALL_OK"] {
        assert!(
            out.stdout.contains(m),
            "missing {m} ({log:?}):\n{}",
            report()
        );
    }
    // No I/O failed at the target, and the files hold what the guest read.
    let status = d.stop();
    assert!(status.success(), "pollux exit: {status:?}");
    for (key, path) in [("NVME_MD5", &dst[0]), ("VDA_MD5", &dst[1])] {
        let data = std::fs::read(path).unwrap();
        let host = md5_of(&data);
        let guest = out.marker(key).and_then(|s| s.split_whitespace().next());
        assert_eq!(guest, Some(host.as_str()), "{key} ({log:?}):\n{}", report());
    }
}

/// The `pollux_jobs` part of `save_config`.
fn saved_jobs(rpc: &SpdkRpc) -> Value {
    let saved = rpc.run(&["save_config"]);
    saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "pollux_jobs")
        .unwrap_or_else(|| panic!("no pollux_jobs in {saved}"))["config"]
        .clone()
}

/// Issue 12's TOML form of the mirror job: `[[mirror]]` starts it with the
/// daemon; `save_config` emits a job still copying or ready as its
/// `pollux_mirror_start`, which a daemon given that JSON (`--json`) runs
/// again; completing stays `pollux_job_complete`, and a completed job is no
/// longer saved. A `[[mirror]]` that cannot start stops the start-up,
/// naming the job.
#[test]
fn mirror_jobs_from_the_toml_config() {
    let port = free_port();
    let head =
        "[reactors]\ncores = [0]\nidle = \"adaptive\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
    let cfg = format!(
        "{head}[[bdev]]\nname = \"src\"\nkind = \"ram\"\nsize = \"8MiB\"\nblock_size = 512\n\
         [[bdev]]\nname = \"dst\"\nkind = \"ram\"\nsize = \"8MiB\"\nblock_size = 512\n\
         [[nvmf.subsystem]]\nnqn = \"{NQN}\"\nnamespaces = [\"src\"]\nallow_any_host = true\n\
         listen = [\"127.0.0.1:{port}\"]\n\
         [[mirror]]\njob = \"toml\"\nsource = \"src\"\ntarget = \"dst\"\ngranularity = 131072\n"
    );
    let mut d = Daemon::builder().config(cfg).start();
    let rpc = d.spdk();
    let j = wait_state(&rpc, "toml", "ready");
    assert_eq!(
        (&j["source"], &j["target"], &j["granularity"]),
        (&json!("src"), &json!("dst"), &json!(131072)),
        "{j}"
    );
    let saved = rpc.run(&["save_config"]);
    let jobs = saved_jobs(&rpc);
    assert_eq!(
        jobs,
        json!([{"method": "pollux_mirror_start", "params":
            {"job": "toml", "source": "src", "target": "dst", "granularity": 131072}}])
    );
    rpc.call("pollux_job_complete", json!({"job": "toml"}));
    wait_state(&rpc, "toml", "completed");
    let subs = rpc.run(&["nvmf_get_subsystems", NQN]).to_string();
    assert!(subs.contains("\"bdev_name\":\"dst\""), "{subs}");
    assert_eq!(saved_jobs(&rpc), json!([]));
    assert!(d.stop().success(), "{}", d.log());

    // The saved JSON restarts the job (its source exported again).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("saved.json");
    std::fs::write(&path, saved.to_string()).unwrap();
    let mut d2 = Daemon::builder()
        .in_dir(dir)
        .config(head)
        .args(["--json", path.to_str().unwrap()])
        .start();
    let rpc2 = d2.spdk();
    wait_state(&rpc2, "toml", "ready");
    rpc2.call("pollux_job_complete", json!({"job": "toml"}));
    wait_state(&rpc2, "toml", "completed");
    let subs = rpc2.run(&["nvmf_get_subsystems", NQN]).to_string();
    assert!(subs.contains("\"bdev_name\":\"dst\""), "{subs}");
    assert!(d2.stop().success(), "{}", d2.log());

    // A target smaller than its source: the job refuses, so does pollux.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "{head}[[bdev]]\nname = \"a\"\nkind = \"ram\"\nsize = \"8MiB\"\n\
             [[bdev]]\nname = \"b\"\nkind = \"ram\"\nsize = \"4MiB\"\n\
             [[mirror]]\njob = \"small\"\nsource = \"a\"\ntarget = \"b\"\n"
        ),
    )
    .unwrap();
    let mut child = support::pollux()
        .arg("--config")
        .arg(&bad)
        .arg("--rpc-socket")
        .arg(dir.path().join("rpc.sock"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pollux started with a mirror whose target is too small");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("[[mirror]] small"), "{err}");
}
