//! Embeds the XDP program built by `cargo xtask build-ebpf`, so that `l4-ctl` is one file an
//! operator can copy to a front node.

use std::{path::PathBuf, time::SystemTime};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("l4-ctl sits in the workspace root");
    let object = root.join("l4-ebpf/target/bpfel-unknown-none/release/l4-ebpf");
    println!("cargo:rerun-if-changed={}", object.display());
    let Ok(built) = object.metadata().and_then(|m| m.modified()) else {
        panic!(
            "the XDP program {} is missing: run `cargo xtask build-ebpf` (or any xtask command \
             that needs it) before building l4-ctl",
            object.display()
        );
    };
    let newest_source = ["l4-ebpf/src", "common/src"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).into_iter().flatten())
        .filter_map(|entry| entry.ok()?.metadata().ok()?.modified().ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if newest_source > built {
        println!(
            "cargo:warning=the embedded XDP program is older than its sources: run `cargo xtask build-ebpf`"
        );
    }
    println!("cargo:rustc-env=DL7_L4_EBPF_OBJECT={}", object.display());
}
