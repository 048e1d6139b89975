//! Shared by l4-ctl's integration tests: a balancer loaded with its own pin directory (so
//! tests never touch a running front's /sys/fs/bpf/dl7) that is removed again on drop, a
//! helper that runs one frame through the program with BPF_PROG_TEST_RUN, the frame builder
//! ([`frames`]) and the small test programs ([`objects`]), network-namespace testbeds
//! ([`netns`]) with the end-to-end tests' direct-server-return topology on them ([`dsr`]), and
//! the daemon tests' harness ([`daemon`]).
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
pub mod dsr;
pub mod fib;
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
        let bal = Balancer::load(&pin_dir).unwrap_or_else(|e| {
            // No TestBalancer to drop yet: remove what the failed load pinned.
            let _ = std::fs::remove_dir_all(&pin_dir);
            panic!("load the XDP program: {e:?}")
        });
        TestBalancer { bal, pin_dir }
    }

    /// Runs `frame` through the program once: the action and the frame as it left.
    pub fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        test_run(self.bal.program().expect("program"), frame)
    }

    /// Where the maps are pinned.
    pub fn pin_dir(&self) -> &std::path::Path {
        &self.pin_dir
    }

    /// Loads the program again over the same pinned maps (an in-place upgrade).
    pub fn reload(&self) -> Balancer {
        Balancer::load(&self.pin_dir).expect("load the XDP program again")
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
    run_with_ctx(program, frame, None)
}

fn run_with_ctx(program: &Xdp, frame: &[u8], ctx: Option<&[u8]>) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ctx,
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
        encap: l4_ctl::Encap::L2,
    }
}

/// `frame` as the program should send it to real `n`: only the MAC addresses differ.
pub fn rewritten(frame: &[u8], n: u8) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[..6].copy_from_slice(&real_mac(n).0);
    out[6..12].copy_from_slice(&FRONT_MAC.0);
    out
}

/// Runs `frame` through `program` once as if it had arrived on interface `ifindex` (of the
/// calling thread's network namespace), which is what the program's FIB lookups start from.
pub fn test_run_on(program: &Xdp, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex.
    let words = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let ctx: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    run_with_ctx(program, frame, Some(&ctx))
}

/// The reals' decapsulator loaded with a pin directory of its own (removed on drop), both its
/// programs ready to test-run.
pub struct TestDecap {
    ebpf: aya::Ebpf,
    pin_dir: PathBuf,
}

impl TestDecap {
    /// Loads it and makes `addrs` its set of own addresses.
    pub fn new(addrs: &[IpAddr]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        require_root("these tests load an XDP program");
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/dl7-test-decap-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&pin_dir);
        std::fs::create_dir_all(&pin_dir).expect("pin directory");
        let mut ebpf = aya::EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .load(l4_ctl::objects::DECAP)
            .expect("load the decapsulator");
        let xdp: &mut Xdp = ebpf
            .program_mut(common::DECAP_PROGRAM_NAME)
            .expect("XDP program")
            .try_into()
            .expect("an XDP program");
        xdp.load().expect("verify the XDP program");
        let tc: &mut aya::programs::SchedClassifier = ebpf
            .program_mut(common::DECAP_TC_PROGRAM_NAME)
            .expect("tc program")
            .try_into()
            .expect("a tc program");
        tc.load().expect("verify the tc program");
        let mut map = aya::maps::HashMap::<_, common::DecapAddrKey, u8>::try_from(
            ebpf.map_mut(common::map_names::DECAP_ADDRS)
                .expect("address map"),
        )
        .expect("a hash map");
        for addr in addrs {
            let (words, family) = l4_ctl::service::encode_addr(*addr);
            let key = common::DecapAddrKey {
                addr: words,
                family,
                _pad: [0; 3],
            };
            map.insert(key, 1, 0).expect("insert an address");
        }
        TestDecap { ebpf, pin_dir }
    }

    /// The XDP program (to test-run it).
    pub fn xdp(&self) -> &Xdp {
        self.ebpf
            .program(common::DECAP_PROGRAM_NAME)
            .expect("XDP program")
            .try_into()
            .expect("an XDP program")
    }

    /// Runs `frame` through the XDP program: the action and the frame as it left.
    pub fn run_xdp(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        test_run(self.xdp(), frame)
    }

    /// Runs `frame` through the tc program: the tc action and the frame as it left.
    pub fn run_tc(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let program: &aya::programs::SchedClassifier = self
            .ebpf
            .program(common::DECAP_TC_PROGRAM_NAME)
            .expect("tc program")
            .try_into()
            .expect("a tc program");
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

    /// A counter, summed over the CPUs.
    pub fn counter(&self, c: common::DecapCounter) -> u64 {
        let map = aya::maps::PerCpuArray::<_, u64>::try_from(
            self.ebpf
                .map(common::map_names::DECAP_STATS)
                .expect("counter map"),
        )
        .expect("a per-CPU array");
        map.get(&(c as u32), 0).expect("read").iter().sum()
    }
}

impl Drop for TestDecap {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}
