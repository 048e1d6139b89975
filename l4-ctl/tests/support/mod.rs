//! Shared by l4-ctl's integration tests: a balancer loaded with its own pin directory (so
//! tests never touch a running front's /sys/fs/bpf/dl7) that is removed again on drop, a
//! helper that runs one frame through the program with BPF_PROG_TEST_RUN, the frame builder
//! ([`frames`]) and the small test programs ([`objects`]), network-namespace testbeds
//! ([`netns`]) and the daemon tests' harness ([`daemon`]).
#![allow(dead_code)]

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use common::GlobalCounter;
use l4_ctl::{Balancer, Mac, RealSpec, Vip};

use frames::FRONT_MAC;

// Not every test binary that includes this module uses every action.
#[allow(unused_imports)]
pub use frames::action::*;

pub mod daemon;
pub mod frames;
pub mod netns;
pub mod objects;

/// A loaded balancer whose pinned maps live in a directory of its own.
pub struct TestBalancer {
    pub bal: Balancer,
    pin_dir: PathBuf,
}

impl TestBalancer {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        require_root("these tests load an XDP program");
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/dl7-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&pin_dir);
        let bal = Balancer::load(&pin_dir).expect("load the XDP program");
        TestBalancer { bal, pin_dir }
    }

    /// Runs `frame` through the program once: the action and the frame as it left.
    pub fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        test_run(self.bal.program().expect("program"), frame)
    }

    pub fn counter(&self, c: GlobalCounter) -> u64 {
        self.bal.global_counters().expect("read counters")[c as usize]
    }

    pub fn add_real(&mut self, vip: &Vip, addr: &str, n: u8, weight: u32) -> l4_ctl::Real {
        self.bal
            .add_real(
                vip,
                &real_spec(addr.parse().expect("real address"), n, weight),
            )
            .expect("add real")
    }
}

impl Drop for TestBalancer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// Fails the test unless it runs as root; `why` says what needs it.
pub fn require_root(why: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(euid == 0, "{why}: run them as root (cargo xtask test does)");
}

/// Runs `frame` through `program` once with BPF_PROG_TEST_RUN: the action and the frame as
/// it left.
pub fn test_run(program: &Xdp, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

/// The MAC given to test real number `n`.
pub fn real_mac(n: u8) -> Mac {
    Mac([0x02, 0, 0, 0, 0x01, n])
}

pub fn real_spec(addr: IpAddr, n: u8, weight: u32) -> RealSpec {
    RealSpec {
        addr,
        mac: real_mac(n),
        src_mac: FRONT_MAC,
        egress_ifindex: None,
        weight,
    }
}

/// `frame` as the program should send it to real `n`: only the MAC addresses differ.
pub fn rewritten(frame: &[u8], n: u8) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[..6].copy_from_slice(&real_mac(n).0);
    out[6..12].copy_from_slice(&FRONT_MAC.0);
    out
}
