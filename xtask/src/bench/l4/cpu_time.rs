//! CPU time around a run: how long each CPU was busy (from /proc/stat), how long the front's
//! own threads ran (from /proc/<pid>/task/<tid>/schedstat) and how long the machine's other
//! threads that may run on the front's CPU ran (to tell a disturbed run).
//!
//! A CPU's busy time is the wall time minus its idle, iowait and steal time. With NO_HZ the
//! kernel measures idle time exactly (`get_cpu_idle_time_us`; /proc/stat shows it in 10 ms
//! units), whereas the busy fields (user, system, irq, softirq) are sampled by the tick,
//! which misses much of the short bursts of a lightly loaded CPU woken per packet: in a 10 s
//! run of this bench the XDP front's NAPI kthread ran 1.28 s by its exact runtime and CPU 1
//! was busy 1.42 s by its idle time, but collected only 0.83 s of busy ticks (HAProxy, which
//! keeps CPU 1 busier: 5.53 s, 5.99 s, 5.26 s). The sampled figure stays in the report as
//! `busy_ticks_s`. Threads' runtimes are exact (the scheduler's clock, in ns).

use std::collections::BTreeMap;
use std::fs;
use std::time::Instant;

use anyhow::{Context, Result};

/// The slack between the front CPU's busy time and its threads' runtime: /proc/stat's 10 ms
/// unit, read twice.
const CLOCK_SLACK_S: f64 = 0.03;

/// The share of a CPU that other threads that may run on the front's CPU, or the hypervisor
/// (steal), may take in a run before the run counts as disturbed.
pub const DISTURBED: f64 = 0.05;

/// /proc/stat's unit (USER_HZ), the same on every Linux architecture the bench runs on.
fn user_hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// One CPU's line of /proc/stat, in USER_HZ ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// user + nice + system + irq + softirq: sampled by the tick.
    pub busy: u64,
    /// idle + iowait: exact under NO_HZ.
    pub idle: u64,
    pub steal: u64,
}

impl CpuStat {
    /// Parses the `cpuN` line of /proc/stat.
    fn parse(stat: &str, cpu: usize) -> Result<Self> {
        let v = crate::bench::process::proc_stat_cpu(stat, cpu)?;
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        Ok(Self {
            busy: v[0] + v[1] + v[2] + v[5] + v[6],
            idle: v[3] + v[4],
            steal: v[7],
        })
    }
}

/// A thread's exact runtime and whether it may run on the front's CPU.
#[derive(Debug, Clone, Copy)]
struct TaskTime {
    /// The process (thread group) it belongs to.
    tgid: i32,
    runtime_ns: u64,
    /// Allowed on the front's CPU and on at least one other: a thread that may have taken
    /// the front's CPU from it (threads bound to the front's CPU alone are the kernel's work
    /// there, part of what the front costs).
    roams_onto_front_cpu: bool,
}

/// One look at the clocks.
#[derive(Debug, Clone)]
pub struct Reading {
    at: Instant,
    /// Per CPU, by number.
    cpus: Vec<CpuStat>,
    tasks: BTreeMap<i32, TaskTime>,
}

impl Reading {
    /// Reads /proc/stat for `cpus` CPUs and every thread's runtime; `front_cpu` is the
    /// front's CPU.
    pub fn take(cpus: usize, front_cpu: usize) -> Result<Self> {
        let at = Instant::now();
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let cpus = (0..cpus)
            .map(|c| CpuStat::parse(&stat, c))
            .collect::<Result<_>>()?;
        Ok(Self {
            at,
            cpus,
            tasks: all_tasks(front_cpu),
        })
    }
}

/// What happened between two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Interval {
    pub wall_s: f64,
    /// Busy seconds of CPU 0 and CPU 1: wall time minus idle, iowait and steal.
    pub busy_s: [f64; 2],
    /// The same from the tick-sampled busy fields (user + nice + system + irq + softirq).
    pub busy_ticks_s: [f64; 2],
    /// Time the hypervisor ran something else on CPU 0 and CPU 1.
    pub steal_s: [f64; 2],
    /// Runtime of the front's threads (its NAPI kthreads, its processes' threads).
    pub front_threads_s: f64,
    /// Runtime of the other threads that may run on the front's CPU (see `TaskTime`).
    pub others_s: f64,
}

impl Interval {
    /// From `before` to `after`; `front` are the pids of the front's kthreads and processes.
    pub fn between(before: &Reading, after: &Reading, front: &[i32]) -> Self {
        let wall_s = after.at.duration_since(before.at).as_secs_f64();
        let hz = user_hz();
        let cpu = |i: usize| {
            let (b, a) = (
                before.cpus.get(i).copied().unwrap_or_default(),
                after.cpus.get(i).copied().unwrap_or_default(),
            );
            let steal = a.steal.saturating_sub(b.steal) as f64 / hz;
            let idle = a.idle.saturating_sub(b.idle) as f64 / hz;
            let busy_ticks = a.busy.saturating_sub(b.busy) as f64 / hz;
            (
                (wall_s - idle - steal).clamp(0.0, wall_s),
                busy_ticks,
                steal,
            )
        };
        let (c0, c1) = (cpu(0), cpu(1));
        let mut front_ns = 0;
        let mut others_ns = 0;
        for (tid, t) in &after.tasks {
            // A thread that started during the interval ran only within it.
            let ran = t
                .runtime_ns
                .saturating_sub(before.tasks.get(tid).map_or(0, |b| b.runtime_ns));
            if front.contains(&t.tgid) {
                front_ns += ran;
            } else if t.roams_onto_front_cpu {
                others_ns += ran;
            }
        }
        Self {
            wall_s,
            busy_s: [c0.0, c1.0],
            busy_ticks_s: [c0.1, c1.1],
            steal_s: [c0.2, c1.2],
            front_threads_s: front_ns as f64 / 1e9,
            others_s: others_ns as f64 / 1e9,
        }
    }

    /// Why the interval's CPU figures cannot be trusted, if they cannot: threads outside the
    /// bench that may run on the front's CPU, or the hypervisor, took more than `DISTURBED` of
    /// a CPU, or the front's CPU was busy for less time than the front's threads ran on it
    /// (the VM was stalled: its clocks disagree).
    pub fn disturbance(&self, front_cpu: usize) -> Option<String> {
        let i = self;
        let limit = DISTURBED * i.wall_s;
        if i.others_s > limit {
            return Some(format!(
                "other threads took {:.0} % of a CPU",
                i.others_s / i.wall_s * 100.0
            ));
        }
        if let Some(cpu) = (0..i.steal_s.len()).find(|&c| i.steal_s[c] > limit) {
            return Some(format!(
                "the hypervisor took {:.0} % of CPU {cpu}",
                i.steal_s[cpu] / i.wall_s * 100.0
            ));
        }
        if i.busy_s[front_cpu] + CLOCK_SLACK_S < i.front_threads_s {
            return Some(format!(
                "CPU {front_cpu} was busy {:.2} s but the front's threads ran {:.2} s on it",
                i.busy_s[front_cpu], i.front_threads_s
            ));
        }
        None
    }

    /// The share of wall time CPU `cpu` was busy.
    pub fn busy_share(&self, cpu: usize) -> f64 {
        if self.wall_s > 0.0 {
            self.busy_s[cpu] / self.wall_s
        } else {
            0.0
        }
    }
}

/// The front's CPU seconds in `run`: the front CPU's busy time minus what the same CPU does
/// with no load (`background`, measured just before), never below zero.
pub fn front_cpu_s(run: &Interval, background: &Interval, front_cpu: usize) -> f64 {
    let rate = background.busy_share(front_cpu);
    (run.busy_s[front_cpu] - rate * run.wall_s).max(0.0)
}

/// Microseconds per request, when any request completed.
pub fn per_request_us(seconds: f64, requests: u64) -> Option<f64> {
    (requests > 0).then(|| seconds / requests as f64 * 1e6)
}

/// Every thread on the machine, by thread id.
fn all_tasks(front_cpu: usize) -> BTreeMap<i32, TaskTime> {
    let mut tasks = BTreeMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return tasks;
    };
    for tgid in procs.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(threads) = fs::read_dir(format!("/proc/{tgid}/task")) else {
            continue;
        };
        for tid in threads.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
            // Threads exit while they are read: whatever cannot be read is left out.
            let dir = format!("/proc/{tgid}/task/{tid}");
            let Some(runtime_ns) = fs::read_to_string(format!("{dir}/schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
            else {
                continue;
            };
            let allowed = fs::read_to_string(format!("{dir}/status"))
                .ok()
                .and_then(|s| allowed_cpus(&s));
            let roams_onto_front_cpu = allowed
                .is_some_and(|mask| mask & (1 << front_cpu) != 0 && mask & !(1 << front_cpu) != 0);
            tasks.insert(
                tid,
                TaskTime {
                    tgid,
                    runtime_ns,
                    roams_onto_front_cpu,
                },
            );
        }
    }
    tasks
}

/// The low 64 bits of `Cpus_allowed` in a /proc status file (hexadecimal, comma-separated
/// 32-bit words, most significant first).
fn allowed_cpus(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("Cpus_allowed:"))?;
    let hex: String = line
        .trim_start_matches("Cpus_allowed:")
        .trim()
        .chars()
        .filter(|c| *c != ',')
        .collect();
    let low = &hex[hex.len().saturating_sub(16)..];
    u64::from_str_radix(low, 16).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use super::{CpuStat, Interval, Reading, TaskTime, allowed_cpus, front_cpu_s, per_request_us};

    const STAT: &str = "cpu  10 0 10 100 0 0 0 0 0 0\n\
                        cpu0 729 1 145 721 6 2 30 6 0 0\n\
                        cpu1 3 0 4 500 1 1 2 3 0 0\n\
                        intr 1 2 3\n";

    #[test]
    fn proc_stat_lines_split_into_busy_idle_and_steal() {
        let c1 = CpuStat::parse(STAT, 1).unwrap();
        assert_eq!((c1.busy, c1.idle, c1.steal), (3 + 4 + 1 + 2, 501, 3));
        assert!(CpuStat::parse(STAT, 2).is_err());
        assert!(CpuStat::parse("cpu1 1 2 x 4 5 6 7 8", 1).is_err());
        assert!(CpuStat::parse("cpu1 1 2 3", 1).is_err());
    }

    #[test]
    fn allowed_cpu_masks_read_the_low_words() {
        assert_eq!(allowed_cpus("Name:\tx\nCpus_allowed:\t3\n"), Some(3));
        assert_eq!(
            allowed_cpus("Cpus_allowed:\t00000000,00000002\nCpus_allowed_list:\t1\n"),
            Some(2)
        );
        assert_eq!(allowed_cpus("Name:\tx\n"), None);
    }

    fn reading(at: Instant, cpu1: CpuStat, tasks: &[(i32, i32, u64, bool)]) -> Reading {
        Reading {
            at,
            cpus: vec![CpuStat::default(), cpu1],
            tasks: tasks
                .iter()
                .map(|&(tid, tgid, runtime_ns, roams)| {
                    (
                        tid,
                        TaskTime {
                            tgid,
                            runtime_ns,
                            roams_onto_front_cpu: roams,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn intervals_count_busy_time_front_threads_and_others() {
        let t0 = Instant::now();
        let before = reading(
            t0,
            CpuStat {
                busy: 0,
                idle: 1000,
                steal: 0,
            },
            &[(10, 10, 1_000_000_000, false), (20, 20, 0, true)],
        );
        // 2 s later: 1.5 s idle, 0.1 s stolen, so 0.4 s busy; the front thread ran 0.3 s, a
        // roaming thread 0.05 s, a new front thread 0.02 s.
        let after = reading(
            t0 + Duration::from_secs(2),
            CpuStat {
                busy: 30,
                idle: 1150,
                steal: 10,
            },
            &[
                (10, 10, 1_300_000_000, false),
                (11, 10, 20_000_000, false),
                (20, 20, 50_000_000, true),
            ],
        );
        let i = Interval::between(&before, &after, &[10]);
        assert!((i.wall_s - 2.0).abs() < 1e-9);
        assert!((i.busy_s[1] - 0.4).abs() < 1e-9);
        assert!((i.busy_ticks_s[1] - 0.3).abs() < 1e-9);
        assert!((i.steal_s[1] - 0.1).abs() < 1e-9);
        assert!((i.front_threads_s - 0.32).abs() < 1e-9);
        assert!((i.others_s - 0.05).abs() < 1e-9);
        assert!((i.busy_share(1) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn front_cpu_is_the_busy_time_above_the_background() {
        let background = Interval {
            wall_s: 1.0,
            busy_s: [0.0, 0.02],
            ..Interval::default()
        };
        let run = Interval {
            wall_s: 6.0,
            busy_s: [5.9, 0.72],
            ..Interval::default()
        };
        // 0.72 s busy, 6 s x 2 % background = 0.12 s: 0.6 s for the front.
        assert!((front_cpu_s(&run, &background, 1) - 0.6).abs() < 1e-9);
        let quiet = Interval {
            busy_s: [0.0, 0.05],
            ..run
        };
        assert_eq!(front_cpu_s(&quiet, &background, 1), 0.0);
        assert!(per_request_us(0.6, 60_000).is_some_and(|v| (v - 10.0).abs() < 1e-9));
        assert_eq!(per_request_us(0.6, 0), None);
    }

    #[test]
    fn other_threads_steal_and_stalls_disturb_a_run() {
        let clean = Interval {
            wall_s: 6.0,
            busy_s: [5.4, 0.72],
            front_threads_s: 0.36,
            ..Interval::default()
        };
        assert_eq!(clean.disturbance(1), None);
        let others = Interval {
            others_s: 0.5,
            ..clean
        };
        assert_eq!(
            others.disturbance(1).as_deref(),
            Some("other threads took 8 % of a CPU")
        );
        let steal = Interval {
            steal_s: [0.0, 0.4],
            ..clean
        };
        assert_eq!(
            steal.disturbance(1).as_deref(),
            Some("the hypervisor took 7 % of CPU 1")
        );
        // CPU 1 cannot be busy for less time than the front's threads ran on it.
        let stalled = Interval {
            busy_s: [5.0, 0.2],
            front_threads_s: 0.4,
            ..clean
        };
        assert!(
            stalled
                .disturbance(1)
                .is_some_and(|w| w.starts_with("CPU 1 was busy 0.20 s"))
        );
    }
}
