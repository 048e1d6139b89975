//! What each `l4-ctl` command does, and how it prints its answer.

use std::{
    ffi::CString,
    fmt::Write as _,
    os::unix::ffi::OsStrExt,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use common::FrontSettings;
use l4_ctl::{
    Balancer,
    config::{self, Config},
    front::{self, Installed},
    lock::PinLock,
    stats::{self, RealState, Snapshot},
};

use crate::cli::{Cli, Command, DecapCommand, FrontCommand, RealCommand, VipCommand};
use crate::daemon;

pub fn run(cli: Cli) -> Result<()> {
    // The decapsulator (on a real) pins apart from the balancer (on the front).
    let pin_dir = match &cli.command {
        Command::Decap { decap_pin_dir, .. } => decap_pin_dir.clone(),
        _ => cli.pin_dir,
    };
    let pin_dir = pin_dir.as_path();
    check_environment(pin_dir)?;
    match cli.command {
        Command::Load { iface, mode } => load(pin_dir, &iface, mode),
        Command::Unload => {
            let _lock = lock(pin_dir)?;
            front::uninstall(pin_dir)?;
            println!("detached dl7 and removed {}", pin_dir.display());
            Ok(())
        }
        Command::Status { json } => status(pin_dir, json),
        Command::Vip { command } => vip(pin_dir, command),
        Command::Real { command } => real(pin_dir, command),
        Command::Lookup { vip, src } => {
            let balancer = Balancer::open(pin_dir)?;
            match balancer.lookup(&vip, src)? {
                Some(real) => {
                    println!("{}", real.addr());
                    Ok(())
                }
                None => bail!("VIP {vip} has no real that takes new flows: they are dropped"),
            }
        }
        Command::Apply { file, dry_run } => apply(pin_dir, &file, dry_run),
        Command::Dump => {
            let balancer = Balancer::open(pin_dir)?;
            let text = toml::to_string(&config::dump(&balancer)?)
                .context("formatting the configuration")?;
            print!("# dl7 front configuration, from `l4-ctl dump`\n\n{text}");
            Ok(())
        }
        Command::Stats {
            json,
            watch,
            interval,
            count,
        } => stats(pin_dir, json, watch, interval, count),
        Command::Daemon {
            config,
            metrics,
            announce,
            bird_socket,
        } => daemon::run(
            pin_dir,
            config.as_deref(),
            metrics,
            announce.then_some(bird_socket.as_path()),
        ),
        Command::Front { command } => front_drain(pin_dir, command),
        Command::Decap { command, .. } => decap(pin_dir, command),
    }
}

fn decap(pin_dir: &Path, command: DecapCommand) -> Result<()> {
    match command {
        DecapCommand::Attach { iface, mode, addrs } => {
            let addrs = l4_ctl::decap::attach(pin_dir, &iface, mode, &addrs)?;
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            println!(
                "decapsulating IPIP and GUE on {iface} ({} mode) for {}",
                mode.name(),
                list.join(", ")
            );
        }
        DecapCommand::Detach => {
            l4_ctl::decap::detach(pin_dir)?;
            println!(
                "detached the decapsulator and removed {}",
                pin_dir.display()
            );
        }
        DecapCommand::Status { json } => {
            let Some(status) = l4_ctl::decap::status(pin_dir)? else {
                bail!(
                    "the decapsulator is not attached (no link pinned in {}): run `l4-ctl decap attach --iface IFACE`",
                    pin_dir.display()
                );
            };
            if json {
                println!("{}", serde_json::to_string(&status)?);
                return Ok(());
            }
            let list: Vec<String> = status.addresses.iter().map(ToString::to_string).collect();
            println!("interface  {} ({} mode)", status.iface, status.mode.name());
            println!("program    id {}", status.program_id);
            println!("addresses  {}", list.join(", "));
            for (name, value) in &status.counters {
                println!("{name:<16} {value}");
            }
        }
    }
    Ok(())
}

/// Root, and a BPF filesystem where the pins go: checked first so that the error says what
/// to do instead of naming a failed syscall.
fn check_environment(pin_dir: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("l4-ctl must run as root (it loads eBPF programs and opens pinned maps)");
    }
    // The pin directory, or the nearest of its parents that exists (l4-ctl creates the rest).
    let fs_dir = pin_dir
        .ancestors()
        .find(|dir| dir.exists())
        .unwrap_or(Path::new("/"));
    let c_path = CString::new(fs_dir.as_os_str().as_bytes())
        .with_context(|| format!("{} is not a usable path", fs_dir.display()))?;
    // SAFETY: statfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut buf) };
    if rc != 0 || buf.f_type != libc::BPF_FS_MAGIC as libc::__fsword_t {
        bail!(
            "{} is not on a BPF filesystem: mount one with `mount -t bpf bpf /sys/fs/bpf` \
             (`cargo xtask setup` does)",
            fs_dir.display()
        );
    }
    Ok(())
}

fn lock(pin_dir: &Path) -> Result<PinLock> {
    if !pin_dir.exists() {
        bail!(
            "dl7 is not loaded: {} does not exist (run `l4-ctl load --iface IFACE` first)",
            pin_dir.display()
        );
    }
    Ok(PinLock::exclusive(pin_dir)?)
}

/// The maps, opened under the lock, and the interface index the program runs on.
fn open_for_change(pin_dir: &Path) -> Result<(PinLock, Balancer, u32)> {
    let lock = lock(pin_dir)?;
    let balancer = Balancer::open(pin_dir)?;
    let attached = front::require_attachment(pin_dir)?;
    Ok((lock, balancer, attached.ifindex))
}

fn load(pin_dir: &Path, iface: &str, mode: l4_ctl::AttachMode) -> Result<()> {
    front::ifindex(iface)?;
    let fresh = !pin_dir.exists();
    std::fs::create_dir_all(pin_dir).with_context(|| format!("creating {}", pin_dir.display()))?;
    let _lock = PinLock::exclusive(pin_dir)?;
    let before = front::attachment(pin_dir)?;
    // Refused before anything is loaded: a load over the pins may already change them.
    if let Some(att) = &before
        && (att.ifindex != front::ifindex(iface)? || att.mode != mode)
    {
        bail!(
            "dl7 is attached to {} in {} mode; run `l4-ctl unload` before loading it on {iface} or in another mode",
            att.iface,
            format!("{:?}", att.mode).to_lowercase()
        );
    }
    let result = Balancer::load(pin_dir)
        .map_err(anyhow::Error::from)
        .and_then(|mut balancer| Ok(front::install(&mut balancer, pin_dir, iface, mode)?));
    let installed = match result {
        Ok(installed) => installed,
        Err(e) => {
            if fresh {
                // Leave nothing behind from a first load that failed.
                let _ = front::remove_pins(pin_dir);
            }
            return Err(e);
        }
    };
    let now = front::attachment(pin_dir)?.context("the link pin vanished")?;
    let mode = format!("{:?}", now.mode).to_lowercase();
    match (installed, before) {
        (Installed::Upgraded, Some(old)) => println!(
            "upgraded dl7 on {} ({mode} mode): program id {} -> {}; maps and flows kept",
            now.iface, old.program_id, now.program_id
        ),
        _ => println!(
            "attached dl7 to {} ({mode} mode), program id {}, pinned in {}",
            now.iface,
            now.program_id,
            pin_dir.display()
        ),
    }
    Ok(())
}

fn status(pin_dir: &Path, json: bool) -> Result<()> {
    let Some(att) = front::attachment(pin_dir)? else {
        bail!(
            "dl7 is not loaded (no link pinned in {})",
            pin_dir.display()
        );
    };
    let balancer = Balancer::open(pin_dir)?;
    let vips = balancer.vips()?;
    let reals = balancer.all_reals()?;
    let count = |state| reals.iter().filter(|r| RealState::of(r) == state).count();
    let (active, drained, down) = (
        count(RealState::Active),
        count(RealState::Drained),
        count(RealState::Down),
    );
    let flows = balancer.conn_count()?;
    // 0 (never written) and u32::MAX (`new_flow_limit = 0`) both mean no limit.
    let limit = match balancer.settings()?.new_flow_limit {
        0 | u32::MAX => None,
        n => Some(n),
    };
    let drained_front = balancer.settings()?.flags & FrontSettings::DRAINED != 0;
    let tables = vips
        .iter()
        .map(|(vip, _)| Ok((vip.to_string(), balancer.table_digest(vip)?)))
        .collect::<Result<Vec<(String, String)>>>()?;
    let mode = format!("{:?}", att.mode).to_lowercase();
    if json {
        let value = serde_json::json!({
            "iface": att.iface,
            "ifindex": att.ifindex,
            "mode": mode,
            "program_id": att.program_id,
            "link_id": att.link_id,
            "pin_dir": pin_dir,
            "vips": vips.len(),
            "reals": reals.len(),
            "reals_active": active,
            "reals_drained": drained,
            "reals_down": down,
            "flows": flows,
            "new_flow_limit": limit.unwrap_or(0),
            "drained": drained_front,
            "maglev_digests": tables.iter().map(|(v, d)| (v.clone(), serde_json::Value::from(d.as_str()))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{value}");
        return Ok(());
    }
    println!("interface: {} ({mode} mode)", att.iface);
    println!("program id: {} (link id {})", att.program_id, att.link_id);
    println!("pinned in: {}", pin_dir.display());
    println!("VIPs: {}", vips.len());
    println!(
        "reals: {} ({active} active, {drained} drained, {down} down)",
        reals.len()
    );
    println!("flows in the connection table: {flows}");
    match limit {
        Some(n) => println!("new flows recorded: at most {n} per second and CPU"),
        None => println!("new flows recorded: all (no new-flow limit)"),
    }
    if drained_front {
        println!("front: drained (`l4-ctl front undrain` announces the VIPs again)");
    }
    for (vip, digest) in &tables {
        println!("Maglev table of {vip}: {digest}");
    }
    Ok(())
}

/// `front drain|undrain`: sets or clears the drained flag the daemon reads.
fn front_drain(pin_dir: &Path, command: FrontCommand) -> Result<()> {
    let drain = matches!(command, FrontCommand::Drain);
    let _lock = lock(pin_dir)?;
    let mut balancer = Balancer::open(pin_dir)?;
    let settings = balancer.settings()?;
    let flags = if drain {
        settings.flags | FrontSettings::DRAINED
    } else {
        settings.flags & !FrontSettings::DRAINED
    };
    if flags == settings.flags {
        println!(
            "the front is {} already",
            if drain { "drained" } else { "not drained" }
        );
        return Ok(());
    }
    balancer.set_settings(FrontSettings { flags, ..settings })?;
    if drain {
        println!("drained: the daemon withdraws this front's VIPs within a second");
    } else {
        println!("undrained: the daemon announces this front's VIPs again within a second");
    }
    Ok(())
}

fn vip(pin_dir: &Path, command: VipCommand) -> Result<()> {
    match command {
        VipCommand::Add { vip } => {
            let (_lock, mut balancer, _) = open_for_change(pin_dir)?;
            balancer.add_vip(&vip)?;
            println!("+ vip {vip}");
        }
        VipCommand::Del { vip } => {
            let (_lock, mut balancer, _) = open_for_change(pin_dir)?;
            balancer.del_vip(&vip)?;
            println!("- vip {vip}");
        }
        VipCommand::List { json } => {
            let balancer = Balancer::open(pin_dir)?;
            let snap = stats::snapshot(&balancer)?;
            if json {
                println!("{}", serde_json::to_string(&snap.vips)?);
                return Ok(());
            }
            let mut out = format!(
                "{:<28} {:>5} {:>6} {:>6} {:>12} {:>14}\n",
                "VIP", "REALS", "ACTIVE", "HEALTH", "PACKETS", "BYTES"
            );
            for v in &snap.vips {
                let health = config::HealthConfig::from_spec(&balancer.health(&v.vip)?)
                    .map_or_else(|| "-".to_owned(), |h| h.check);
                let active = v
                    .reals
                    .iter()
                    .filter(|r| r.state == RealState::Active)
                    .count();
                writeln!(
                    out,
                    "{:<28} {:>5} {:>6} {:>6} {:>12} {:>14}",
                    v.vip.to_string(),
                    v.reals.len(),
                    active,
                    health,
                    v.packets,
                    v.bytes
                )?;
            }
            print!("{out}");
        }
    }
    Ok(())
}

fn real(pin_dir: &Path, command: RealCommand) -> Result<()> {
    match command {
        RealCommand::Add {
            vip,
            addr,
            mac,
            weight,
            encap,
        } => {
            config::check_weight(weight).map_err(anyhow::Error::msg)?;
            if encap.is_tunnel() && mac.is_some() {
                bail!(
                    "--mac is for --encap l2: an encapsulated real is reached through the FIB's next hop"
                );
            }
            let (_lock, mut balancer, ifindex) = open_for_change(pin_dir)?;
            // Check the VIP and the family before asking the network.
            balancer.vip(&vip)?;
            if addr.is_ipv4() != vip.addr.is_ipv4() {
                bail!("real {addr} and VIP {vip} are not of the same address family");
            }
            if balancer.real(&vip, addr).is_ok() {
                bail!("real {addr} exists already in VIP {vip}");
            }
            let spec = config::real_spec(ifindex, addr, mac, weight, encap)?;
            balancer.add_real(&vip, &spec)?;
            if encap.is_tunnel() {
                println!("+ real {addr} in {vip} (encap {encap}, weight {weight})");
            } else {
                println!(
                    "+ real {addr} in {vip} (mac {}, weight {weight}{})",
                    spec.mac,
                    spec.egress_ifindex
                        .map(|i| format!(", via {}", front::ifname(i)))
                        .unwrap_or_default()
                );
            }
        }
        RealCommand::Del { vip, addr } => {
            let (_lock, mut balancer, _) = open_for_change(pin_dir)?;
            balancer.del_real(&vip, addr)?;
            println!("- real {addr} in {vip}");
        }
        RealCommand::Drain { vip, addr } => {
            let (_lock, mut balancer, _) = open_for_change(pin_dir)?;
            let old = balancer.real(&vip, addr)?.def.weight;
            balancer.set_weight(&vip, addr, 0)?;
            println!("~ real {addr} in {vip}: weight {old} -> 0 (drained)");
        }
        RealCommand::Weight { vip, addr, weight } => {
            config::check_weight(weight).map_err(anyhow::Error::msg)?;
            let (_lock, mut balancer, _) = open_for_change(pin_dir)?;
            let old = balancer.real(&vip, addr)?.def.weight;
            balancer.set_weight(&vip, addr, weight)?;
            println!("~ real {addr} in {vip}: weight {old} -> {weight}");
        }
        RealCommand::List { vip, json } => {
            let balancer = Balancer::open(pin_dir)?;
            let reals = stats::real_stats(&balancer, &vip)?;
            if json {
                println!("{}", serde_json::to_string(&reals)?);
                return Ok(());
            }
            let mut out = format!(
                "{:<26} {:<17} {:>6} {:<8} {:>7} {:>12} {:>14}\n",
                "REAL", "MAC/ENCAP", "WEIGHT", "STATE", "SHARE", "PACKETS", "BYTES"
            );
            for r in &reals {
                let via = if r.encap.is_tunnel() {
                    r.encap.to_string()
                } else {
                    r.mac.to_string()
                };
                writeln!(
                    out,
                    "{:<26} {:<17} {:>6} {:<8} {:>6.2}% {:>12} {:>14}",
                    r.address.to_string(),
                    via,
                    r.weight,
                    r.state.name(),
                    r.table_share * 100.0,
                    r.packets,
                    r.bytes
                )?;
            }
            print!("{out}");
        }
    }
    Ok(())
}

fn apply(pin_dir: &Path, file: &Path, dry_run: bool) -> Result<()> {
    let desired = Config::read(file)?.validate()?;
    let (_lock, mut balancer, ifindex) = open_for_change(pin_dir)?;
    let changes = config::plan(&balancer, ifindex, &desired)?;
    if changes.is_empty() {
        println!("no changes");
        return Ok(());
    }
    for change in &changes {
        println!("{change}");
    }
    if dry_run {
        println!("(dry run: nothing changed)");
        return Ok(());
    }
    config::execute(&mut balancer, &changes)?;
    Ok(())
}

fn stats(pin_dir: &Path, json: bool, watch: bool, interval: f64, count: Option<u64>) -> Result<()> {
    let balancer = Balancer::open(pin_dir)?;
    let readings = if watch { count.unwrap_or(u64::MAX) } else { 1 };
    let period = Duration::from_secs_f64(interval);
    let mut previous: Option<(Instant, Snapshot)> = None;
    for i in 0..readings {
        if i > 0 {
            thread::sleep(period);
        }
        let now = Instant::now();
        let snap = stats::snapshot(&balancer)?;
        let rates = previous
            .as_ref()
            .map(|(t, old)| (now.duration_since(*t).as_secs_f64(), old));
        if json {
            println!("{}", serde_json::to_string(&snap)?);
        } else {
            print!("{}", format_stats(&snap, rates));
        }
        previous = Some((now, snap));
    }
    Ok(())
}

/// The stats table; with an earlier reading, packets per second too.
fn format_stats(snap: &Snapshot, earlier: Option<(f64, &Snapshot)>) -> String {
    let rate = |now: u64, then: Option<u64>| match (earlier, then) {
        (Some((secs, _)), Some(then)) if secs > 0.0 => {
            format!("{:>10.0}/s", now.saturating_sub(then) as f64 / secs)
        }
        _ => String::new(),
    };
    let mut out = String::new();
    for v in &snap.vips {
        let old = earlier.and_then(|(_, s)| s.vips.iter().find(|o| o.vip == v.vip));
        let _ = writeln!(
            out,
            "vip {:<32} packets {:>12} bytes {:>14} {}",
            v.vip.to_string(),
            v.packets,
            v.bytes,
            rate(v.packets, old.map(|o| o.packets))
        );
        for r in &v.reals {
            let old_r = old.and_then(|o| o.reals.iter().find(|x| x.address == r.address));
            let _ = writeln!(
                out,
                "  real {:<30} packets {:>12} bytes {:>14} {:<8} {}",
                r.address.to_string(),
                r.packets,
                r.bytes,
                r.state.name(),
                rate(r.packets, old_r.map(|o| o.packets))
            );
        }
    }
    let _ = writeln!(out, "global:");
    for (name, value) in &snap.global {
        let old = earlier.and_then(|(_, s)| s.global.get(name).copied());
        let _ = writeln!(out, "  {name:<22} {value:>14} {}", rate(*value, old));
    }
    out
}
