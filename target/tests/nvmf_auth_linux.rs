//! In-band authentication (DH-HMAC-CHAP) with a real client: the Linux
//! 6.1 kernel NVMe/TCP initiator and nvme-cli in a throw-away guest
//! (`../shared/vm/vm-client`), the target set up with rpc.py from PyPI
//! (keyring, hosts with keys, `nvmf_set_config` DH-HMAC-CHAP lists).
//!
//! One guest boot runs every case: a host with its secret connects
//! (unidirectional) and runs fio verify; a second host also checks the
//! controller (`--dhchap-ctrl-secret`, bidirectional) and runs fio
//! verify; then a wrong secret, no secret at all, and a wrong controller
//! secret are each refused.
//!
//! Debian bookworm's 6.1 kernel (vm-client's default) is built without
//! `CONFIG_NVME_AUTH`, so this test boots bookworm-backports' 6.12 kernel
//! (`CONFIG_NVME_HOST_AUTH=y`) from its own vm-client cache
//! (`$POLLUX_AUTH_VM_CACHE`, default `~/.cache/vm-client-nvme-auth`; the
//! first run downloads the kernel and builds the initramfs, about two
//! minutes). `POLLUX_AUTH_KERNEL_PKG` names another kernel package.
//!
//! This test never skips: if the VM cannot run it fails and says why.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pollux_nvme::auth::secret::Secret;
use pollux_nvme::auth::HashId;
use rand::RngCore;
use support::nvmf_guest::guest_wait_dev;
use support::{free_port, Daemon, VmClient};

const NQN: &str = "nqn.2024-11.dev.pollux:auth";
const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:a0a0a0a0-0000-4000-8000-000000000001";
const HOSTID_A: &str = "a0a0a0a0-0000-4000-8000-000000000001";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:b0b0b0b0-0000-4000-8000-000000000002";
const HOSTID_B: &str = "b0b0b0b0-0000-4000-8000-000000000002";
/// The backports kernel series with NVMe in-band authentication.
const KERNEL_META: &str = "linux-image-6.12-amd64";
/// Used when no package list can resolve [`KERNEL_META`] yet.
const KERNEL_FALLBACK: &str = "linux-image-6.12.100+deb12-amd64";

/// Points vm-client (a child of this one-test process) at a cache of its
/// own with a kernel that can authenticate.
fn use_auth_kernel() {
    let cache = std::env::var("POLLUX_AUTH_VM_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/vm-client-nvme-auth",
            std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())
        )
    });
    let pkg = std::env::var("POLLUX_AUTH_KERNEL_PKG").unwrap_or_else(|_| {
        // The newest 6.12 package the cache's (or the default cache's)
        // package lists know, as vm-client resolves its own 6.1 kernel.
        let default = format!(
            "{}/.cache/vm-client",
            std::env::var("HOME").unwrap_or_default()
        );
        [cache.clone(), default]
            .iter()
            .find_map(|c| resolve_kernel(Path::new(c)))
            .unwrap_or_else(|| KERNEL_FALLBACK.to_owned())
    });
    // Set before vm-client starts; this test binary has this one test,
    // so no other thread reads the environment meanwhile.
    std::env::set_var("VM_CLIENT_CACHE", &cache);
    std::env::set_var("VM_CLIENT_KERNEL_PKG", &pkg);
}

fn resolve_kernel(cache: &Path) -> Option<String> {
    let apt = cache.join("apt");
    let out = std::process::Command::new("apt-cache")
        .arg("-o")
        .arg(format!(
            "Dir::Etc::sourcelist={}",
            apt.join("sources.list").display()
        ))
        .args(["-o", "Dir::Etc::sourceparts=-"])
        .arg("-o")
        .arg(format!("Dir::State::lists={}", apt.join("lists").display()))
        .args(["-q", "depends", KERNEL_META])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|d| d.starts_with("linux-image-6.12.") && d.ends_with("-amd64"))
        .map(str::to_owned)
}

fn secret(transform: Option<HashId>, len: usize) -> String {
    let mut key = vec![0u8; len];
    rand::rng().fill_bytes(&mut key);
    Secret::new(transform, &key).unwrap().to_text()
}

/// A key file as the keyring wants it: owned by us, mode 0600.
fn key_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

#[test]
fn linux_host_authenticates_with_dhchap() {
    let vm = VmClient::find();
    use_auth_kernel();
    let port = free_port();
    let daemon = Daemon::builder()
        .empty_target("[0]")
        .log_filter("info,pollux_target::nvmf::auth=debug")
        .start();
    let rpc = daemon.spdk();
    let dir = daemon.dir().to_owned();

    let key_a = secret(Some(HashId::Sha256), 32);
    let key_b = secret(None, 48);
    let ckey_b = secret(Some(HashId::Sha512), 64);
    let wrong = secret(Some(HashId::Sha256), 32);
    for (name, text) in [("key_a", &key_a), ("key_b", &key_b), ("ckey_b", &ckey_b)] {
        let path = key_file(&dir, name, text);
        rpc.run(&["keyring_file_add_key", name, &path]);
    }
    let keys = rpc.run(&["keyring_get_keys"]);
    assert_eq!(keys.as_array().map(Vec::len), Some(3), "{keys}");

    rpc.run(&["bdev_malloc_create", "-b", "m0", "32", "512"]);
    rpc.run(&["nvmf_create_transport", "-t", "TCP"]);
    rpc.run(&["nvmf_create_subsystem", NQN]);
    rpc.run(&["nvmf_subsystem_add_ns", NQN, "m0"]);
    rpc.add_tcp_listener(NQN, port, &[]);
    rpc.run(&[
        "nvmf_subsystem_add_host",
        NQN,
        HOST_A,
        "--dhchap-key",
        "key_a",
    ]);
    rpc.run(&[
        "nvmf_subsystem_add_host",
        NQN,
        HOST_B,
        "--dhchap-key",
        "key_b",
        "--dhchap-ctrlr-key",
        "ckey_b",
    ]);
    // A TCG guest takes seconds per ffdhe8192 exchange (the default pick):
    // a smaller group keeps the test quick and still does DH.
    rpc.run(&[
        "nvmf_set_config",
        "--dhchap-digests",
        "sha256,sha384",
        "--dhchap-dhgroups",
        "null,ffdhe2048",
    ]);
    let subs = rpc.run(&["nvmf_get_subsystems"]);
    let hosts = &subs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["nqn"] == NQN)
        .unwrap()["hosts"];
    assert_eq!(hosts[1]["dhchap_key"], "key_b", "{subs}");
    assert_eq!(hosts[1]["dhchap_ctrlr_key"], "ckey_b", "{subs}");
    // The keys are in use: the keyring counts the hosts holding them.
    let keys = rpc.run(&["keyring_get_keys"]);
    assert!(
        keys.as_array().unwrap().iter().all(|k| k["refcnt"] == 1),
        "{keys}"
    );

    let connect = |host: &str, hostid: &str, extra: &str| {
        format!(
            "nvme connect -t tcp -a 10.0.2.2 -s {port} -n {NQN} --hostnqn={host} \
             --hostid={hostid} {extra}"
        )
    };
    let fio = |name: &str| {
        format!(
            "fio --name={name} --filename=/dev/nvme0n1 --rw=randwrite --bs=4k --size=4m \
             --iodepth=8 --ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 \
             --verify_fatal=1 --output-format=terse >/tmp/{name}.out 2>&1 \
             || {{ cat /tmp/{name}.out; echo FIO_FAILED {name}; exit 1; }}\n\
             echo FIO_OK {name}\n"
        )
    };
    let wait_dev = guest_wait_dev("nvme0n1", 100);
    let refused = |label: &str, cmd: String| {
        format!(
            "if {cmd} >/tmp/{label}.out 2>&1; then cat /tmp/{label}.out; echo {label}_ACCEPTED; \
             nvme disconnect-all; exit 1; fi\ncat /tmp/{label}.out; echo {label}_REFUSED\n"
        )
    };
    let script = format!(
        "{uni}\n{wait_dev}{fio_uni}nvme disconnect -n {NQN}\necho UNI_DONE\n\
         {bidi}\n{wait_dev}{fio_bidi}nvme disconnect -n {NQN}\necho BIDI_DONE\n\
         {wrong}{none}{badctrl}echo ALL_OK\n",
        uni = connect(HOST_A, HOSTID_A, &format!("--dhchap-secret={key_a}")),
        fio_uni = fio("uni"),
        bidi = connect(
            HOST_B,
            HOSTID_B,
            &format!("--dhchap-secret={key_b} --dhchap-ctrl-secret={ckey_b}")
        ),
        fio_bidi = fio("bidi"),
        wrong = refused(
            "WRONG",
            connect(HOST_A, HOSTID_A, &format!("--dhchap-secret={wrong}"))
        ),
        none = refused("NOKEY", connect(HOST_A, HOSTID_A, "")),
        badctrl = refused(
            "BADCTRL",
            connect(
                HOST_B,
                HOSTID_B,
                &format!("--dhchap-secret={key_b} --dhchap-ctrl-secret={wrong}")
            )
        ),
    );
    let out = vm.run(&[], 600, &format!("set -e\n{script}"));
    let report = || out.report(&daemon.log());
    assert!(out.status.success(), "guest script failed:\n{}", report());
    for m in [
        "FIO_OK uni",
        "UNI_DONE",
        "FIO_OK bidi",
        "BIDI_DONE",
        "WRONG_REFUSED",
        "NOKEY_REFUSED",
        "BADCTRL_REFUSED",
        "ALL_OK",
    ] {
        assert!(out.stdout.contains(m), "missing {m}:\n{}", report());
    }
    let log = daemon.log();
    // The target really checked both directions and refused the wrong
    // secret with AUTH_Failure1 (not a transport error).
    for needle in [
        "nvmf auth: host authenticated",
        "nvmf auth: bidirectional authentication done",
        "nvmf auth: wrong response (wrong secret)",
        "nvmf auth: the host refused the controller's response",
        // nvmf_set_config's lists decided the negotiation.
        "hash=\"sha384\" dhgroup=\"ffdhe2048\"",
    ] {
        assert!(log.contains(needle), "pollux log lacks {needle:?}:\n{log}");
    }
}
