//! Which CPU runs what. All namespaces share one kernel, and the kernel keeps no per-namespace
//! account of softirq time, so the bench gives the front a CPU of its own (CPU 1) and puts
//! everything else on the other (CPU 0): then what CPU 1 does under load is the front's work.
//!
//! - Processes: every thread of every process in the testbed's namespaces, the load
//!   generator and xtask itself run on CPU 0 (`sched_setaffinity`); HAProxy on CPU 1.
//! - The front's receive path: threaded NAPI on the front's `eth0` (a veth has NAPI while an
//!   XDP program is attached or GRO is on), its kthread `napi/eth0-<id>` pinned to CPU 1. The
//!   bridge-side peer `vfront` (the switch, not the front) gets a threaded NAPI kthread on
//!   CPU 0, so that what the front transmits is handed back to CPU 0 at once. Both kthreads
//!   run at SCHED_FIFO (see `make_realtime`).
//! - The other hosts' veths have no NAPI (their frames go through `netif_rx`): RPS on their
//!   `eth0` sends that receive work to CPU 0, whichever CPU transmitted the frame.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::bench::process;
use dl7_testbed::process as cmd;

/// The front's CPU, and the CPU of everything else (clients, switch, servers, origin).
pub const FRONT_CPU: usize = 1;
pub const REST_CPU: usize = 0;

/// The real-time priority of the NAPI kthreads: that of the kernel's threaded interrupt
/// handlers.
const NAPI_PRIORITY: i32 = 50;

/// How long a NAPI kthread may take to appear after its device changed.
const NAPI_APPEAR_LIMIT: Duration = Duration::from_secs(3);

/// Restricts task `tid` (a thread id; 0 is the calling thread) to `cpu`.
pub fn pin_task(tid: i32, cpu: usize) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET only writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `cpu` is below CPU_SETSIZE (the bench uses CPUs 0 and 1).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: a valid set of the size we pass.
    let rc = unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Pins every thread of process `pid` to `cpu`; threads that exit meanwhile are skipped.
/// Returns how many threads were pinned.
pub fn pin_process(pid: i32, cpu: usize) -> Result<usize> {
    let dir = format!("/proc/{pid}/task");
    let Ok(entries) = fs::read_dir(&dir) else {
        // The process is gone: nothing left to pin.
        return Ok(0);
    };
    let mut pinned = 0;
    for tid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        match pin_task(tid, cpu) {
            Ok(()) => pinned += 1,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => bail!("pinning thread {tid} of process {pid} to CPU {cpu}: {e}"),
        }
    }
    Ok(pinned)
}

/// The namespaces of testbed `name` (`<name>-*` under /run/netns).
fn testbed_namespaces(name: &str) -> Result<Vec<String>> {
    let prefix = format!("{name}-");
    let entries = fs::read_dir("/run/netns").context("listing /run/netns")?;
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect())
}

/// The processes in namespace `ns`.
fn namespace_pids(ns: &str) -> Result<Vec<i32>> {
    let out = cmd::output(Command::new("ip").args(["netns", "pids", ns]))?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Pins every thread of every process in testbed `name`'s namespaces to `cpu`; returns the
/// number of threads pinned. Threads started later inherit the affinity of the thread that
/// starts them, so one pass holds for the testbed's life.
pub fn pin_testbed(name: &str, cpu: usize) -> Result<usize> {
    let mut pinned = 0;
    for ns in testbed_namespaces(name)? {
        for pid in namespace_pids(&ns)? {
            pinned += pin_process(pid, cpu)?;
        }
    }
    ensure!(pinned > 0, "testbed {name} has no processes to pin");
    Ok(pinned)
}

/// xtask's own thread pinned to CPU 0 while the bench runs (threads it starts inherit it);
/// the previous affinity comes back when dropped.
pub struct OwnCpu {
    previous: libc::cpu_set_t,
}

impl OwnCpu {
    pub fn pin(cpu: usize) -> Result<Self> {
        // SAFETY: an all-zero cpu_set_t is valid; sched_getaffinity writes at most its size.
        let mut previous: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut previous) };
        ensure!(
            rc == 0,
            "reading xtask's CPU affinity: {}",
            io::Error::last_os_error()
        );
        pin_task(0, cpu).with_context(|| format!("pinning xtask to CPU {cpu}"))?;
        Ok(Self { previous })
    }
}

impl Drop for OwnCpu {
    fn drop(&mut self) {
        // SAFETY: restores the set sched_getaffinity returned.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.previous) };
    }
}

/// Writes `value` to `/sys/class/net/<dev>/<file>` of namespace `ns` (`ip netns exec` mounts
/// the namespace's own sysfs, where its devices are).
fn write_netdev_sysfs(ns: &str, dev: &str, file: &str, value: &str) -> Result<()> {
    let path = format!("/sys/class/net/{dev}/{file}");
    cmd::output(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                "echo \"$1\" > \"$2\"",
                "sh",
            ])
            .args([value, &path]),
    )
    .with_context(|| format!("writing {value} to {path} in {ns}"))?;
    Ok(())
}

/// Hands the receive work of `eth0` in namespace `ns` (frames delivered by `netif_rx`, as on
/// every veth without NAPI) to `cpu` with RPS.
pub fn steer_receive(ns: &str, cpu: usize) -> Result<()> {
    write_netdev_sysfs(ns, "eth0", "queues/rx-0/rps_cpus", &cpu_mask(cpu))
}

/// RPS's hexadecimal CPU mask for one CPU.
fn cpu_mask(cpu: usize) -> String {
    format!("{:x}", 1u64 << cpu)
}

/// Turns an offload (`ethtool -K` feature, e.g. `gro`) of `dev` in `ns` on or off.
pub fn set_offload(ns: &str, dev: &str, feature: &str, on: bool) -> Result<()> {
    let state = if on { "on" } else { "off" };
    cmd::output(
        Command::new("ip").args(["netns", "exec", ns, "ethtool", "-K", dev, feature, state]),
    )
    .with_context(|| format!("ethtool -K {dev} {feature} {state} in {ns}"))?;
    Ok(())
}

/// The NAPI kthreads of the devices the bench makes threaded. Kthreads are named
/// `napi/<device>-<napi id>`, and every namespace calls its device `eth0`, so the threads
/// that existed before the bench touched anything (another testbed's) are remembered and
/// never counted as the front's.
pub struct NapiThreads {
    foreign: BTreeSet<i32>,
}

impl NapiThreads {
    /// Remembers the NAPI kthreads that exist now.
    pub fn before_changes() -> Self {
        Self {
            foreign: all_napi_threads().into_iter().map(|(pid, _)| pid).collect(),
        }
    }

    /// Makes `dev` in namespace `ns` threaded and pins its NAPI kthreads to `cpu` at real-time
    /// priority; returns their pids. Call it again after every change that re-creates the device's NAPI (an XDP
    /// program attached or removed, GRO switched): the new kthreads get new pids.
    pub fn thread_and_pin(&self, ns: &str, dev: &str, cpu: usize) -> Result<Vec<i32>> {
        write_netdev_sysfs(ns, dev, "threaded", "1")?;
        let deadline = Instant::now() + NAPI_APPEAR_LIMIT;
        let pids = loop {
            let pids = self.threads_of(dev);
            if !pids.is_empty() {
                break pids;
            }
            if Instant::now() > deadline {
                bail!(
                    "{dev} in {ns} has no NAPI kthread (napi/{dev}-*) {NAPI_APPEAR_LIMIT:?} after \
                     it was made threaded: no XDP program and no GRO on it?"
                );
            }
            process::sleep(Duration::from_millis(50))?;
        };
        for &pid in &pids {
            pin_task(pid, cpu)
                .with_context(|| format!("pinning NAPI kthread {pid} of {dev} to CPU {cpu}"))?;
            make_realtime(pid)
                .with_context(|| format!("giving NAPI kthread {pid} of {dev} SCHED_FIFO"))?;
        }
        Ok(pids)
    }

    /// The NAPI kthreads of devices named `dev` that the bench's changes created.
    fn threads_of(&self, dev: &str) -> Vec<i32> {
        all_napi_threads()
            .into_iter()
            .filter(|(pid, comm)| !self.foreign.contains(pid) && napi_device(comm) == Some(dev))
            .map(|(pid, _)| pid)
            .collect()
    }
}

/// Gives kthread `pid` SCHED_FIFO at `NAPI_PRIORITY`. Threaded NAPI kthreads start as
/// ordinary tasks, so on the busy CPU 0 the switch port's kthread waits behind the servers'
/// threads, its 256-frame ring overflows under the reply bursts of the NAT and proxy fronts,
/// and TCP waits for its 200 ms retransmission timeout (measured: 18,000 frames dropped in a
/// 4 s run, p99 211 ms; none with SCHED_FIFO). As softirq processing, which threaded NAPI
/// replaces, would, the kthreads now run before any task.
fn make_realtime(pid: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: NAPI_PRIORITY,
    };
    // SAFETY: a valid sched_param for the call's duration.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Every NAPI kthread: (pid, comm).
fn all_napi_threads() -> Vec<(i32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim_end();
            napi_device(comm).map(|_| (pid, comm.to_owned()))
        })
        .collect()
}

/// The device of a NAPI kthread's name (`napi/eth0-363` -> `eth0`). The kernel truncates
/// comm to 15 characters, which can cut the id but never the `-` before it for the bench's
/// device names.
fn napi_device(comm: &str) -> Option<&str> {
    let rest = comm.strip_prefix("napi/")?;
    Some(rest.rsplit_once('-')?.0)
}

#[cfg(test)]
mod tests {
    use super::{cpu_mask, napi_device};

    #[test]
    fn napi_kthread_names_give_the_device() {
        assert_eq!(napi_device("napi/eth0-363"), Some("eth0"));
        assert_eq!(napi_device("napi/vfront-1234"), Some("vfront"));
        assert_eq!(napi_device("napi/vfront-12"), Some("vfront"));
        assert_eq!(napi_device("kworker/1:1"), None);
        assert_eq!(napi_device("napi/eth0"), None);
    }

    #[test]
    fn rps_masks_are_hexadecimal_bits() {
        assert_eq!(cpu_mask(0), "1");
        assert_eq!(cpu_mask(1), "2");
        assert_eq!(cpu_mask(4), "10");
    }
}
