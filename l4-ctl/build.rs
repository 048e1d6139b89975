//! Embeds the XDP programs built by `cargo xtask build-ebpf`, so that `l4-ctl` is one file an
//! operator can copy to a front node.

use std::{path::PathBuf, time::SystemTime};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("l4-ctl sits in the workspace root");
    let dir = root.join("l4-ebpf/target/bpfel-unknown-none/release");
    let mut oldest = SystemTime::now();
    for (env, bin) in [
        ("DL7_OBJ_BALANCER", "l4-ebpf"),
        ("DL7_OBJ_PASS", "xdp_pass"),
        ("DL7_OBJ_MAC_SWAP", "xdp_mac_swap"),
        ("DL7_OBJ_DECAP", "decap"),
    ] {
        let object = dir.join(bin);
        println!("cargo:rerun-if-changed={}", object.display());
        let Ok(built) = object.metadata().and_then(|m| m.modified()) else {
            panic!(
                "the XDP program {} is missing: run `cargo xtask build-ebpf` (or any xtask \
                 command that needs it) before building l4-ctl",
                object.display()
            );
        };
        oldest = oldest.min(built);
        println!("cargo:rustc-env={env}={}", object.display());
    }
    let newest_source = ["l4-ebpf/src", "l4-ebpf/src/bin/decap", "common/src"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).into_iter().flatten())
        .filter_map(|entry| entry.ok()?.metadata().ok()?.modified().ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if newest_source > oldest {
        println!(
            "cargo:warning=the embedded XDP program is older than its sources: run `cargo xtask build-ebpf`"
        );
    }
}
