//! The DH-HMAC-CHAP control plane through rpc.py from PyPI: the file
//! keyring (`keyring_file_add_key`, `keyring_file_remove_key`,
//! `keyring_get_keys`), hosts with keys (`nvmf_subsystem_add_host
//! --dhchap-key/--dhchap-ctrlr-key`), `nvmf_set_config`'s DH-HMAC-CHAP
//! lists, SPDK's error codes for each refusal, and `save_config`
//! replaying it all into a fresh pollux (`--json`).

mod support;

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;
use support::Daemon;

const NQN: &str = "nqn.2024-11.dev.pollux:authrpc";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:c0c0c0c0-0000-4000-8000-000000000003";

fn methods<'a>(cfg: &'a Value, subsystem: &str) -> Vec<&'a Value> {
    cfg["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == subsystem)
        .and_then(|s| s["config"].as_array())
        .map(|c| c.iter().collect())
        .unwrap_or_default()
}

#[test]
fn keyring_hosts_with_keys_and_set_config_over_rpc_py() {
    let daemon = Daemon::builder().empty_target("[0]").start();
    let rpc = daemon.spdk();
    let dir = daemon.dir().to_owned();
    let key = dir.join("k0");
    std::fs::write(
        &key,
        "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8VHRgx:\n",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let open = dir.join("k1");
    std::fs::write(&open, "x").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key_s = key.display().to_string();

    rpc.run(&["keyring_file_add_key", "k0", &key_s]);
    rpc.run(&["keyring_file_add_key", "c0", &key_s]);
    // SPDK's codes: -EEXIST, -EPERM for loose permissions or a relative
    // path, -ENOKEY for a key that is not there.
    assert!(rpc
        .fails(&["keyring_file_add_key", "k0", &key_s])
        .contains("-17"));
    let e = rpc.fails(&["keyring_file_add_key", "k1", &open.display().to_string()]);
    assert!(e.contains("-1") && e.contains("permissions"), "{e}");
    assert!(rpc
        .fails(&["keyring_file_add_key", "k2", "rel/k"])
        .contains("-1"));
    assert!(rpc
        .fails(&["keyring_file_remove_key", "nope"])
        .contains("-126"));

    rpc.run(&["bdev_malloc_create", "-b", "m0", "8", "512"]);
    rpc.run(&["nvmf_create_transport", "-t", "TCP"]);
    rpc.run(&["nvmf_create_subsystem", NQN]);
    let e = rpc.fails(&["nvmf_subsystem_add_host", NQN, HOST, "--dhchap-key", "nope"]);
    assert!(e.contains("-32602") && e.contains("nope"), "{e}");
    let e = rpc.fails(&[
        "nvmf_subsystem_add_host",
        NQN,
        HOST,
        "--dhchap-ctrlr-key",
        "c0",
    ]);
    assert!(e.contains("-32602"), "{e}");
    rpc.run(&[
        "nvmf_subsystem_add_host",
        NQN,
        HOST,
        "--dhchap-key",
        "k0",
        "--dhchap-ctrlr-key",
        "c0",
    ]);
    let keys = rpc.run(&["keyring_get_keys"]);
    let k0 = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "k0")
        .unwrap();
    assert_eq!(k0["module"], "keyring_file");
    assert_eq!(k0["path"], key_s.as_str());
    assert_eq!(k0["refcnt"], 1, "{keys}");

    assert!(rpc
        .fails(&["nvmf_set_config", "--dhchap-digests", "md5"])
        .contains("-32602"));
    rpc.run(&[
        "nvmf_set_config",
        "--dhchap-digests",
        "sha384,sha512",
        "--dhchap-dhgroups",
        "ffdhe3072",
    ]);

    let cfg = rpc.run(&["save_config"]);
    let ring = methods(&cfg, "keyring");
    assert_eq!(ring.len(), 2, "{cfg}");
    assert_eq!(ring[0]["method"], "keyring_file_add_key");
    let nvmf = methods(&cfg, "nvmf");
    assert_eq!(nvmf[0]["method"], "nvmf_set_config", "{cfg}");
    assert_eq!(
        nvmf[0]["params"]["dhchap_digests"],
        serde_json::json!(["sha384", "sha512"])
    );
    let host = nvmf
        .iter()
        .find(|m| m["method"] == "nvmf_subsystem_add_host")
        .unwrap();
    assert_eq!(host["params"]["dhchap_key"], "k0");
    assert_eq!(host["params"]["dhchap_ctrlr_key"], "c0");

    // The saved config rebuilds the same keys, host and lists.
    let json = dir.join("saved.json");
    std::fs::write(&json, cfg.to_string()).unwrap();
    let again = Daemon::builder()
        .empty_target("[0]")
        .args(["--json".as_ref(), json.as_os_str()])
        .start();
    let cfg2 = again.spdk().run(&["save_config"]);
    assert_eq!(methods(&cfg2, "keyring"), ring);
    assert_eq!(methods(&cfg2, "nvmf")[0], nvmf[0]);

    // Key rotation: nvmf_subsystem_set_keys replaces both keys (an
    // absent one is dropped); an unknown host is -EINVAL as in SPDK.
    rpc.run(&["nvmf_subsystem_set_keys", NQN, HOST, "--dhchap-key", "c0"]);
    let subs = rpc.run(&["nvmf_get_subsystems"]);
    let h = &subs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["nqn"] == NQN)
        .unwrap()["hosts"][0];
    assert_eq!(h["dhchap_key"], "c0", "{subs}");
    assert!(h.get("dhchap_ctrlr_key").is_none(), "{subs}");
    let e = rpc.fails(&[
        "nvmf_subsystem_set_keys",
        NQN,
        "nqn.2014-08.org.nvmexpress:other",
    ]);
    assert!(e.contains("-22"), "{e}");
    rpc.run(&[
        "nvmf_subsystem_set_keys",
        NQN,
        HOST,
        "--dhchap-key",
        "k0",
        "--dhchap-ctrlr-key",
        "c0",
    ]);

    // Removing the host lets go of its keys; removing a key empties the
    // list.
    rpc.run(&["nvmf_subsystem_remove_host", NQN, HOST]);
    let keys = rpc.run(&["keyring_get_keys"]);
    assert!(
        keys.as_array().unwrap().iter().all(|k| k["refcnt"] == 0),
        "{keys}"
    );
    rpc.run(&["keyring_file_remove_key", "k0"]);
    rpc.run(&["keyring_file_remove_key", "c0"]);
    assert_eq!(rpc.run(&["keyring_get_keys"]), serde_json::json!([]));
}
