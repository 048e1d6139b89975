//! Announcing the VIPs to the routers, through the BGP speaker operators already run (BIRD,
//! configured by deploy/bird/): `l4-ctl daemon --announce` puts every VIP address it wants
//! announced on a TUN device of its own, [`IFACE`], and BIRD's `direct` protocol on that
//! interface turns the addresses into routes that its BGP sessions export.
//!
//! The device is not persistent: the kernel deletes it, and with it every address, when the
//! daemon's file descriptor closes, so a daemon that exits for any reason (SIGTERM, a panic,
//! SIGKILL, the OOM killer) withdraws its VIPs without running any code. While it runs, the
//! daemon announces an address only when the front is healthy for it ([`wanted`]): the
//! program attached, the front not drained (`l4-ctl front drain`), and at least one real of
//! a VIP on that address taking new flows.
//!
//! Nothing reads from the device: the VIPs' traffic is taken by the XDP program before the
//! stack, and the front's own traffic to a local address never leaves through it.

use std::{
    collections::BTreeSet,
    fs::{File, OpenOptions},
    net::IpAddr,
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{Balancer, BalancerError};

/// The interface that carries the announced addresses (BIRD's `direct` protocol watches it).
pub const IFACE: &str = "dl7-vips";

/// The addresses to announce: those of VIPs with at least one real that takes new flows, or
/// none when the front is drained. (The caller checks the attachment.)
pub fn wanted(balancer: &Balancer) -> Result<BTreeSet<IpAddr>, BalancerError> {
    if balancer.settings()?.flags & common::FrontSettings::DRAINED != 0 {
        return Ok(BTreeSet::new());
    }
    // One pass over the reals array for all the VIPs: the daemon asks five times a second.
    let reals = balancer.all_reals()?;
    let mut addrs = BTreeSet::new();
    for (vip, meta) in balancer.vips()? {
        if reals
            .iter()
            .any(|r| r.def.vip_id == meta.vip_id && r.effective_weight() > 0)
        {
            addrs.insert(vip.addr.ip());
        }
    }
    Ok(addrs)
}

/// The announcement device and the addresses on it.
#[derive(Debug)]
pub struct Announcer {
    /// Holding it open keeps the device; closing it deletes the device.
    _tun: File,
    announced: BTreeSet<IpAddr>,
}

impl Announcer {
    /// Creates [`IFACE`] (up, no addresses) in the current network namespace. Fails when it
    /// exists already: another daemon announces from this namespace.
    pub fn create() -> Result<Self> {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .context("opening /dev/net/tun to create the announcement device")?;
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(IFACE.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_TUN_EXCL) as i16;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) || e.raw_os_error() == Some(libc::EEXIST) {
                bail!(
                    "{IFACE} exists already: another l4-ctl daemon announces from this network namespace"
                );
            }
            return Err(e).context(format!("creating the announcement device {IFACE}"));
        }
        // SAFETY: TUNSETPERSIST takes an integer argument.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 0 as libc::c_ulong) } != 0 {
            return Err(std::io::Error::last_os_error())
                .context(format!("making {IFACE} go away with the daemon"));
        }
        ip(&["link", "set", "dev", IFACE, "up"])?;
        Ok(Self {
            _tun: tun,
            announced: BTreeSet::new(),
        })
    }

    /// The addresses announced now.
    pub fn announced(&self) -> &BTreeSet<IpAddr> {
        &self.announced
    }

    /// Announces exactly `wanted`: withdrawals first, then announcements. Returns the
    /// addresses announced and withdrawn. On an error the addresses changed so far stay
    /// recorded, so the next call retries only the rest.
    pub fn set(&mut self, wanted: &BTreeSet<IpAddr>) -> Result<(Vec<IpAddr>, Vec<IpAddr>)> {
        let withdraw: Vec<IpAddr> = self.announced.difference(wanted).copied().collect();
        let announce: Vec<IpAddr> = wanted.difference(&self.announced).copied().collect();
        for addr in &withdraw {
            // Gone already (removed by hand): withdrawn all the same.
            ip(&["addr", "del", &prefix(*addr), "dev", IFACE])
                .or_else(|e| absent(e, "Cannot assign requested address"))?;
            self.announced.remove(addr);
        }
        for addr in &announce {
            let mut args = vec!["addr", "add", "dev", IFACE];
            let p = prefix(*addr);
            args.insert(2, &p);
            if addr.is_ipv6() {
                // No duplicate-address detection: the address is the front's to announce.
                args.push("nodad");
            }
            ip(&args).or_else(|e| absent(e, "File exists"))?;
            self.announced.insert(*addr);
        }
        Ok((announce, withdraw))
    }
}

fn prefix(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// Success when `e` is iproute2's `message` (the change is made already).
fn absent(e: anyhow::Error, message: &str) -> Result<()> {
    if e.to_string().contains(message) {
        Ok(())
    } else {
        Err(e)
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
