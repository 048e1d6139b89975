//! The testbed's cgroups: one per sidecar, each limited to the same CPU quota, in the cgroup
//! v2 hierarchy when it offers the cpu controller, else in cgroup v1's cpu hierarchy (as on
//! this project's machines, where /sys/fs/cgroup holds the v1 hierarchies).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

const CGROUP_V2: &str = "/sys/fs/cgroup";
const CGROUP_V1_CPU: &str = "/sys/fs/cgroup/cpu";
/// The CFS period of every quota.
const PERIOD_US: u64 = 100_000;

/// Where the cgroups of testbed `name` live in each hierarchy (one of them is used).
pub(crate) fn dirs(name: &str) -> [PathBuf; 2] {
    [
        Path::new(CGROUP_V2).join(name),
        Path::new(CGROUP_V1_CPU).join(name),
    ]
}

/// The cgroups of one testbed, each role's limited to `quota` CPUs.
pub(crate) struct CpuCgroups {
    root: PathBuf,
    v2: bool,
    quota: f64,
}

impl CpuCgroups {
    /// The parent cgroup of testbed `name`, created.
    pub(crate) fn create(name: &str, quota: f64) -> Result<Self> {
        let v2_root = Path::new(CGROUP_V2);
        let v2 = fs::read_to_string(v2_root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"));
        let root = if v2 {
            enable_cpu_controller(v2_root)?;
            v2_root.join(name)
        } else if Path::new(CGROUP_V1_CPU).join("cpu.cfs_quota_us").exists() {
            Path::new(CGROUP_V1_CPU).join(name)
        } else {
            bail!(
                "--cpu-quota needs the cgroup cpu controller: neither {CGROUP_V2} (v2) nor \
                 {CGROUP_V1_CPU} (v1) offers it"
            );
        };
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        if v2 {
            enable_cpu_controller(&root)?;
        }
        Ok(CpuCgroups { root, v2, quota })
    }

    /// Limits `pid` (and its threads) to the quota, in a cgroup named after `role`.
    pub(crate) fn add(&self, role: &str, pid: u32) -> Result<()> {
        let quota_us = (self.quota * PERIOD_US as f64).round() as u64;
        let dir = self.root.join(role);
        fs::create_dir_all(&dir)?;
        let limits = if self.v2 {
            vec![("cpu.max", format!("{quota_us} {PERIOD_US}"))]
        } else {
            vec![
                ("cpu.cfs_period_us", PERIOD_US.to_string()),
                ("cpu.cfs_quota_us", quota_us.to_string()),
            ]
        };
        for (file, value) in limits {
            fs::write(dir.join(file), value)
                .with_context(|| format!("setting {}/{file}", dir.display()))?;
        }
        fs::write(dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", dir.display()))
    }
}

fn enable_cpu_controller(dir: &Path) -> Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&control).unwrap_or_default();
    if !current.split_whitespace().any(|c| c == "cpu") {
        fs::write(&control, "+cpu")
            .with_context(|| format!("enabling the cpu controller in {}", control.display()))?;
    }
    Ok(())
}

/// Puts `pid` back in `role`'s existing cgroup of testbed `name` (after a restart).
pub(crate) fn rejoin(name: &str, role: &str, pid: u32) -> Result<()> {
    let procs = dirs(name)
        .into_iter()
        .map(|d| d.join(role).join("cgroup.procs"))
        .find(|p| p.exists())
        .with_context(|| format!("the cgroup of {role} is gone"))?;
    fs::write(&procs, pid.to_string())
        .with_context(|| format!("moving {pid} into {}", procs.display()))
}

/// CPU periods and throttled periods so far of `role`'s cgroup, from its cpu.stat.
pub(crate) fn periods(name: &str, role: &str) -> Option<(u64, u64)> {
    let stat = dirs(name)
        .into_iter()
        .find_map(|d| fs::read_to_string(d.join(role).join("cpu.stat")).ok())?;
    let field = |name: &str| {
        stat.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some((field("nr_periods ")?, field("nr_throttled ")?))
}

/// Removes the cgroups of testbed `name` (they must be empty of processes).
pub(crate) fn remove(name: &str) {
    for cg in dirs(name) {
        if let Ok(entries) = fs::read_dir(&cg) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = fs::remove_dir(e.path());
                }
            }
            let _ = fs::remove_dir(&cg);
        }
    }
}
