//! The bench's hold on what it starts and measures: a temp directory and child process groups
//! that are removed and killed when dropped (also on errors and Ctrl-C, which only sets a flag
//! while the bench runs), bounded waits, and per-process CPU time and RSS from /proc.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Prefix of a bench's temp directory; the creating xtask's pid follows.
const TEMP_PREFIX: &str = "dl7-bench-";

/// How long a process group may take to exit after SIGTERM before it gets SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(3);

/// How long a polling loop sleeps between looks.
const POLL: Duration = Duration::from_millis(50);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// While alive, SIGINT and SIGTERM only set a flag that the bench's waits check, so that
/// errors unwind through the guards below instead of killing xtask with children left behind.
pub struct CatchInterrupts {
    previous: Vec<(libc::c_int, libc::sighandler_t)>,
}

impl CatchInterrupts {
    pub fn install() -> Self {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        let previous = [libc::SIGINT, libc::SIGTERM]
            .into_iter()
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            .map(|sig| (sig, unsafe { libc::signal(sig, handler) }))
            .collect();
        Self { previous }
    }
}

impl Drop for CatchInterrupts {
    fn drop(&mut self) {
        for &(sig, old) in &self.previous {
            // SAFETY: restores the disposition that was in place before `install`.
            unsafe { libc::signal(sig, old) };
        }
    }
}

/// An error once Ctrl-C or SIGTERM has arrived.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, waking early with an error on Ctrl-C.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep(POLL.min(end - now));
    }
}

/// A bench's temp directory, removed with everything in it when dropped. Its name carries
/// the creating process's pid and every child runs with it as its working directory, which is
/// how a later run recognises the leftovers of a run that was killed outright.
pub struct BenchDir(tempfile::TempDir);

impl BenchDir {
    /// Removes the leftovers of killed runs, then creates this run's directory.
    pub fn create() -> Result<Self> {
        remove_leftovers();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
            .tempdir()
            .context("creating the bench's temp directory")?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Kills the processes of earlier runs whose xtask is gone (recognised by their working
/// directory) and removes those runs' directories.
fn remove_leftovers() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for dir in entries.filter_map(|e| Some(e.ok()?.path())) {
        let Some(owner) = dir.file_name().and_then(|n| {
            let rest = n.to_str()?.strip_prefix(TEMP_PREFIX)?;
            rest.split('-').next()?.parse::<u32>().ok()
        }) else {
            continue;
        };
        let owner_alive = fs::read_to_string(format!("/proc/{owner}/stat"))
            .is_ok_and(|stat| stat.contains("(xtask)") && !stat.contains("(xtask) Z"));
        if owner_alive {
            continue;
        }
        for pid in proc_pids() {
            if fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir)) {
                eprintln!("bench: killing process {pid} left by a killed run");
                // SAFETY: kill has no memory-safety preconditions; pid runs in our old dir.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        eprintln!("bench: removing leftover {}", dir.display());
        let _ = fs::remove_dir_all(&dir);
    }
}

fn proc_pids() -> impl Iterator<Item = i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
}

/// A child started in its own process group (so that Ctrl-C reaches only xtask and nginx's
/// workers can be killed with their master); the whole group is killed when dropped.
pub struct Group {
    name: String,
    dir: PathBuf,
    child: Child,
    reaped: bool,
}

impl Group {
    /// Starts `cmd` pinned to `cpu` (with `taskset`), in `dir`, with stdin closed and stdout
    /// and stderr written to `dir/<name>.stdout` and `dir/<name>.stderr`.
    pub fn spawn(name: &str, cpu: usize, cmd: &Command, dir: &Path) -> Result<Self> {
        let stdout = fs::File::create(dir.join(format!("{name}.stdout")))?;
        let stderr = fs::File::create(dir.join(format!("{name}.stderr")))?;
        let mut pinned = Command::new("taskset");
        pinned
            .args(["-c", &cpu.to_string()])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let child = pinned
            .spawn()
            .with_context(|| format!("cannot start {name}: {pinned:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            child,
            reaped: false,
        })
    }

    /// Waits for the child to exit, at most `limit` (then it is killed and this is an error).
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not finish within {limit:?}", self.name);
            }
            sleep(POLL)?;
        }
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        self.reaped |= status.is_some();
        Ok(status)
    }

    /// What the child wrote to `stream` ("stdout" or "stderr") so far.
    pub fn output(&self, stream: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{}.{stream}", self.name))).unwrap_or_default()
    }

    /// Waits until `addr` accepts connections (at most `limit`); an error naming the child's
    /// stderr if it exits first.
    pub fn wait_listening(&mut self, addr: SocketAddr, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_running()?;
            if TcpStream::connect_timeout(&addr, POLL).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not listen on {addr} within {limit:?}", self.name);
            }
            sleep(POLL)?;
        }
    }

    /// An error (with the tail of the child's stderr) if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_wait()? {
            let log = self.output("stderr");
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(10)..].join(" | ");
            bail!("{} exited ({status}): {tail}", self.name);
        }
        Ok(())
    }

    /// Every live process of the group (nginx's master and worker; one for the others).
    pub fn pids(&self) -> Vec<i32> {
        let group = self.child.id() as i32;
        proc_pids()
            .filter(|pid| stat_fields(*pid).is_some_and(|f| f.get(2) == Some(&group.to_string())))
            .collect()
    }

    /// User + system CPU seconds used so far by the group's live processes.
    pub fn cpu_seconds(&self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.pids()
            .into_iter()
            .filter_map(stat_fields)
            .map(|f| {
                let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                (field(11) + field(12)) as f64 / ticks
            })
            .sum()
    }

    /// Resident memory of the group's live processes, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .filter_map(|status| {
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map(|kib| kib * 1024)
            .sum()
    }
}

impl Drop for Group {
    /// SIGTERM to the group (nginx's master then reaps its worker), SIGKILL to what is left
    /// after `STOP_LIMIT`.
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + STOP_LIMIT;
        while !self.gone() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Group {
    /// Whether the leader is reaped and no member is left. (Once the leader is reaped its
    /// number could in principle be reused, so the group is only signalled while it has
    /// members.)
    fn gone(&mut self) -> bool {
        let _ = self.try_wait();
        self.reaped && self.pids().is_empty()
    }

    fn signal(&mut self, signal: libc::c_int) {
        if !self.gone() {
            // SAFETY: kill has no memory-safety preconditions; the group is the one `spawn`
            // made and still has members.
            unsafe { libc::kill(-(self.child.id() as i32), signal) };
        }
    }
}

/// User + system CPU seconds of all children reaped so far (getrusage RUSAGE_CHILDREN): the
/// difference around a child's run is that child's CPU time.
pub fn reaped_children_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The fields of /proc/PID/stat after the command name: [0] state, [1] ppid, [2] pgrp, ...,
/// [11] utime, [12] stime.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Busy and total jiffies of one CPU, from /proc/stat.
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
    /// Time the hypervisor ran something else while this CPU had work (inside `busy`).
    steal: u64,
}

impl CpuTimes {
    pub fn read(cpu: usize) -> Result<Self> {
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let v = proc_stat_cpu(&stat, cpu)?;
        let total: u64 = v.iter().take(8).sum();
        let idle = v[3] + v[4];
        Ok(Self {
            busy: total - idle,
            total,
            steal: v[7],
        })
    }

    /// The fraction of time stolen by the hypervisor since `earlier`.
    pub fn steal_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.steal.saturating_sub(earlier.steal) as f64 / total as f64
    }

    /// The fraction of time the CPU was busy since `earlier`.
    pub fn busy_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// The numbers of /proc/stat's `cpuN` line (`stat` is the file's text), in USER_HZ ticks, at
/// least 8 of them: user nice system idle iowait irq softirq steal (guest time is inside
/// user).
pub fn proc_stat_cpu(stat: &str, cpu: usize) -> Result<Vec<u64>> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("no {name} line in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse::<u64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad /proc/stat line {line:?}"))?;
    anyhow::ensure!(
        v.len() >= 8,
        "/proc/stat line {line:?} has fewer than 8 fields"
    );
    Ok(v)
}
