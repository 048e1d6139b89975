//! Loading over maps an older build pinned: a counters map of another size is replaced (the
//! counters restart), any other map of another layout stops the load before anything
//! changes, and a failed load puts back what it set aside. The "older build" is made with
//! the bpf(2) syscall: maps of the old layouts pinned where the balancer pins its own.
//! Needs root.

mod support;

use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

use aya::maps::MapData;
use common::{GlobalCounter, map_names};
use l4_ctl::{Balancer, BalancerError};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;

/// `bpf(cmd, attr)` with a zeroed, then filled `union bpf_attr`.
fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> libc::c_long {
    // SAFETY: `attr` is large enough for both commands used; the pointers in it outlive the
    // call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size_of_val(attr)) }
}

/// Creates a map and pins it at `path`.
fn pin_map(path: &Path, kind: u32, key: u32, value: u32, entries: u32) {
    let mut attr = [0u64; 16];
    // map_type, key_size, value_size, max_entries (u32 each).
    attr[0] = u64::from(kind) | u64::from(key) << 32;
    attr[1] = u64::from(value) | u64::from(entries) << 32;
    let fd = bpf(BPF_MAP_CREATE, &mut attr);
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut attr = [0u64; 16];
    // pathname (u64), bpf_fd (u32).
    attr[0] = c_path.as_ptr() as u64;
    attr[1] = fd as u64;
    let rc = bpf(BPF_OBJ_PIN, &mut attr);
    // SAFETY: our own descriptor; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
    assert_eq!(rc, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
}

fn entries(path: &Path) -> u32 {
    MapData::from_pin(path)
        .and_then(|m| m.info())
        .map(|i| i.max_entries())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A pin directory of its own, removed on drop.
struct Pins(std::path::PathBuf);

impl Pins {
    fn new(name: &str) -> Self {
        support::require_root("these tests pin maps");
        let dir = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/dl7-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Pins(dir)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The counters map an older build pinned: 17 counters where this build has more.
fn old_counters(pins: &Pins) -> std::path::PathBuf {
    let path = pins.0.join(map_names::GLOBAL_STATS);
    pin_map(&path, BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 17);
    const { assert!(GlobalCounter::COUNT > 17) };
    path
}

#[test]
fn a_counters_map_of_another_size_is_replaced() {
    let pins = Pins::new("upgrade-counters");
    let counters = old_counters(&pins);
    let balancer = Balancer::load(&pins.0).expect("load over the old counters");
    assert_eq!(entries(&counters), GlobalCounter::COUNT);
    assert!(balancer.global_counters().is_ok());
}

#[test]
fn another_layout_stops_the_load_and_changes_nothing() {
    let pins = Pins::new("upgrade-refused");
    let counters = old_counters(&pins);
    // A port set of another size; it comes after the counters in the maps' order, so the
    // counters must not have been touched when it is found.
    let at = |name| map_names::ALL.iter().position(|n| *n == name);
    assert!(at(map_names::VIP_PORTS) > at(map_names::GLOBAL_STATS));
    let ports = pins.0.join(map_names::VIP_PORTS);
    pin_map(&ports, BPF_MAP_TYPE_ARRAY, 4, 4, 1024);
    match Balancer::load(&pins.0) {
        Err(BalancerError::PinLayout { path, found, want }) => {
            assert_eq!(path, ports);
            assert!(
                found.contains("1024 entries") && want.contains("65536 entries"),
                "{found} / {want}"
            );
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("the load went ahead over a port set of another layout"),
    }
    assert_eq!(entries(&counters), 17, "the old counters are untouched");
    let names: Vec<String> = std::fs::read_dir(&pins.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "nothing else was pinned: {names:?}");
}
