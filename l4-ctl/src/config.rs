//! The front's declarative configuration (`l4-ctl apply -f dl7.toml`, `l4-ctl dump`).
//!
//! ```toml
//! new_flow_limit = 32768                 # optional: new flows recorded per second and CPU
//!                                        # (0: no limit; default: see below)
//!
//! [[vip]]
//! address = "10.0.0.100:80/tcp"          # ADDR:PORT/tcp|udp, IPv6 as [ADDR]:PORT/tcp
//!
//! [vip.health]                           # optional; without it reals are always up
//! check = "http"                         # tcp (connect) or http (GET, 2xx/3xx is healthy)
//! port = 80                              # default: the VIP's port
//! path = "/healthz"                      # http only; default "/"
//! interval_ms = 2000                     # defaults: 2000, 1000, 2, 3
//! timeout_ms = 1000
//! rise = 2
//! fall = 3
//!
//! [[vip.real]]
//! address = "10.0.0.11"
//! mac = "02:00:00:00:00:11"              # optional: resolved from the neighbour table
//! weight = 1                             # default 1; 0 adds it drained
//!
//! [[vip.real]]
//! address = "10.1.0.21"                  # a real behind a router
//! encap = "gue"                          # l2 (default), ipip or gue
//! ```
//!
//! `new_flow_limit` is the connection table's guard against floods of new flows: beyond it, a
//! new flow is forwarded by the Maglev table but not recorded, so established flows are never
//! evicted by a flood. Without the field, `apply` sets the default: a quarter of a CPU's share
//! of the table per second ([`crate::balancer::default_new_flow_limit`]).
//!
//! [`Config::validate`] checks the whole file before anything is touched and names the field
//! of every error (`vip[2].real[1].weight: ...`). [`plan`] compares a validated config with the
//! maps and lists the changes (resolving new reals' MACs first, so that an unreachable real
//! fails the whole apply before any change); [`execute`] makes them. A second `apply` of the
//! same file plans no change.

use std::{collections::BTreeSet, fmt, net::IpAddr, path::Path};

use common::{FrontSettings, HEALTH_PATH_MAX, HealthSpec};
use serde::{Deserialize, Serialize};

use crate::{
    Balancer, BalancerError, Encap, Mac, RealSpec, Vip,
    balancer::default_new_flow_limit,
    front::{self, FrontError},
    neighbour::{self, NeighbourError},
};

/// Largest weight a real may have (as IPVS).
pub const MAX_WEIGHT: u32 = 65535;

/// The file as written (see the module documentation).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_flow_limit: Option<u32>,
    #[serde(default, rename = "vip")]
    pub vips: Vec<VipConfig>,
}

/// One `[[vip]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
    #[serde(default, rename = "real")]
    pub reals: Vec<RealConfig>,
}

/// A VIP's `[vip.health]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    pub check: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default = "default_interval")]
    pub interval_ms: u32,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u32,
    #[serde(default = "default_rise")]
    pub rise: u8,
    #[serde(default = "default_fall")]
    pub fall: u8,
}

fn default_interval() -> u32 {
    2000
}
fn default_timeout() -> u32 {
    1000
}
fn default_rise() -> u8 {
    2
}
fn default_fall() -> u8 {
    3
}

/// One `[[vip.real]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealConfig {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encap: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// A config error: the field and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", .path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {}", .path.display(), .message.trim_end())]
    Syntax {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

fn field_err(field: impl Into<String>, message: impl fmt::Display) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.to_string(),
    }
}

/// A configuration checked against every rule: what [`plan`] converges the maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The new-flow guard's limit as the program stores it ([`Desired::UNLIMITED`] for none);
    /// `None`: the default for this host's CPUs.
    pub new_flow_limit: Option<u32>,
    pub vips: Vec<DesiredVip>,
}

impl Desired {
    /// `new_flow_limit = 0` as stored: the program records every flow.
    pub const UNLIMITED: u32 = u32::MAX;
}

/// One VIP of a [`Desired`] configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVip {
    pub vip: Vip,
    pub health: HealthSpec,
    pub reals: Vec<DesiredReal>,
}

/// One real of a [`DesiredVip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesiredReal {
    pub addr: IpAddr,
    pub mac: Option<Mac>,
    pub weight: u32,
    pub encap: Encap,
}

impl Config {
    /// Reads and parses a file (syntax and unknown fields; [`Config::validate`] does the rest).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().replace('\n', " "),
        })
    }

    /// Checks every field; the first error names its field.
    pub fn validate(&self) -> Result<Desired, ConfigError> {
        let mut vips = Vec::with_capacity(self.vips.len());
        let mut seen = BTreeSet::new();
        for (i, v) in self.vips.iter().enumerate() {
            let at = format!("vip[{}]", i + 1);
            let vip: Vip = v
                .address
                .parse()
                .map_err(|e| field_err(format!("{at}.address"), e))?;
            if !seen.insert(vip) {
                return Err(field_err(
                    format!("{at}.address"),
                    format!("VIP {vip} is listed twice"),
                ));
            }
            let health = match &v.health {
                None => HealthSpec::default(),
                Some(h) => h.validate(&format!("{at}.health"))?,
            };
            let mut reals = Vec::with_capacity(v.reals.len());
            let mut seen_reals = BTreeSet::new();
            for (j, r) in v.reals.iter().enumerate() {
                let at = format!("{at}.real[{}]", j + 1);
                let addr: IpAddr = r.address.parse().map_err(|_| {
                    field_err(
                        format!("{at}.address"),
                        format!("{:?} is not an IP address", r.address),
                    )
                })?;
                if addr.is_ipv4() != vip.addr.is_ipv4() {
                    return Err(field_err(
                        format!("{at}.address"),
                        format!("{addr} and VIP {vip} are not of the same address family"),
                    ));
                }
                if !seen_reals.insert(addr) {
                    return Err(field_err(
                        format!("{at}.address"),
                        format!("real {addr} is listed twice in VIP {vip}"),
                    ));
                }
                let mac = r
                    .mac
                    .as_deref()
                    .map(str::parse::<Mac>)
                    .transpose()
                    .map_err(|e| field_err(format!("{at}.mac"), e))?;
                check_weight(r.weight).map_err(|m| field_err(format!("{at}.weight"), m))?;
                let encap = r
                    .encap
                    .as_deref()
                    .map(str::parse::<Encap>)
                    .transpose()
                    .map_err(|e| field_err(format!("{at}.encap"), e))?
                    .unwrap_or_default();
                if encap.is_tunnel() && mac.is_some() {
                    return Err(field_err(
                        format!("{at}.mac"),
                        format!(
                            "a real with encap = \"{encap}\" is reached through the FIB's next hop; it takes no mac"
                        ),
                    ));
                }
                reals.push(DesiredReal {
                    addr,
                    mac,
                    weight: r.weight,
                    encap,
                });
            }
            vips.push(DesiredVip { vip, health, reals });
        }
        let new_flow_limit = self
            .new_flow_limit
            .map(|n| if n == 0 { Desired::UNLIMITED } else { n });
        Ok(Desired {
            new_flow_limit,
            vips,
        })
    }
}

/// Checks a weight from a file or a flag.
pub fn check_weight(weight: u32) -> Result<(), String> {
    if weight > MAX_WEIGHT {
        return Err(format!("weight {weight} is above the maximum {MAX_WEIGHT}"));
    }
    Ok(())
}

impl HealthConfig {
    fn validate(&self, at: &str) -> Result<HealthSpec, ConfigError> {
        let kind = match self.check.as_str() {
            "tcp" => HealthSpec::KIND_TCP,
            "http" => HealthSpec::KIND_HTTP,
            other => {
                return Err(field_err(
                    format!("{at}.check"),
                    format!("{other:?} is not a check: use \"tcp\" or \"http\""),
                ));
            }
        };
        let path = self.path.as_deref().unwrap_or("/");
        if kind == HealthSpec::KIND_TCP && self.path.is_some() {
            return Err(field_err(
                format!("{at}.path"),
                "a path is only meaningful for check = \"http\"",
            ));
        }
        if !path.starts_with('/')
            || path.len() > HEALTH_PATH_MAX
            || !path.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(field_err(
                format!("{at}.path"),
                format!(
                    "{path:?} must start with / and be at most {HEALTH_PATH_MAX} printable ASCII characters without spaces"
                ),
            ));
        }
        if self.port == Some(0) {
            return Err(field_err(format!("{at}.port"), "port 0 cannot be checked"));
        }
        if !(100..=3_600_000).contains(&self.interval_ms) {
            return Err(field_err(
                format!("{at}.interval_ms"),
                format!("{} is not between 100 and 3600000", self.interval_ms),
            ));
        }
        if self.timeout_ms < 10 || self.timeout_ms > self.interval_ms {
            return Err(field_err(
                format!("{at}.timeout_ms"),
                format!(
                    "{} must be at least 10 and at most interval_ms ({})",
                    self.timeout_ms, self.interval_ms
                ),
            ));
        }
        for (name, value) in [("rise", self.rise), ("fall", self.fall)] {
            if value == 0 {
                return Err(field_err(format!("{at}.{name}"), "must be at least 1"));
            }
        }
        let mut spec = HealthSpec {
            kind,
            rise: self.rise,
            fall: self.fall,
            path_len: 0,
            port: self.port.unwrap_or(0),
            _pad: 0,
            interval_ms: self.interval_ms,
            timeout_ms: self.timeout_ms,
            path: [0; HEALTH_PATH_MAX],
        };
        if kind == HealthSpec::KIND_HTTP {
            spec.path[..path.len()].copy_from_slice(path.as_bytes());
            spec.path_len = path.len() as u8;
        }
        Ok(spec)
    }

    /// The table that stands for a stored spec (`None` for no check).
    pub fn from_spec(spec: &HealthSpec) -> Option<Self> {
        let check = match spec.kind {
            HealthSpec::KIND_TCP => "tcp",
            HealthSpec::KIND_HTTP => "http",
            _ => return None,
        };
        Some(HealthConfig {
            check: check.to_owned(),
            port: (spec.port != 0).then_some(spec.port),
            path: (spec.kind == HealthSpec::KIND_HTTP).then(|| health_path(spec).to_owned()),
            interval_ms: spec.interval_ms,
            timeout_ms: spec.timeout_ms,
            rise: spec.rise,
            fall: spec.fall,
        })
    }
}

/// The HTTP path of a stored spec.
pub fn health_path(spec: &HealthSpec) -> &str {
    let len = usize::from(spec.path_len).min(HEALTH_PATH_MAX);
    std::str::from_utf8(&spec.path[..len]).unwrap_or("/")
}

/// The configuration the maps hold now, as a file `apply` accepts.
pub fn dump(balancer: &Balancer) -> Result<Config, BalancerError> {
    let mut vips = Vec::new();
    for (vip, _) in balancer.vips()? {
        let health = HealthConfig::from_spec(&balancer.health(&vip)?);
        let reals = balancer
            .reals(&vip)?
            .iter()
            .map(|r| RealConfig {
                address: r.addr().to_string(),
                mac: (!r.encap().is_tunnel()).then(|| Mac(r.def.mac).to_string()),
                weight: r.def.weight,
                encap: r.encap().is_tunnel().then(|| r.encap().to_string()),
            })
            .collect();
        vips.push(VipConfig {
            address: vip.to_string(),
            health,
            reals,
        });
    }
    let limit = balancer.settings()?.new_flow_limit;
    let new_flow_limit = match limit {
        0 | Desired::UNLIMITED => Some(0),
        n => Some(n),
    };
    Ok(Config {
        new_flow_limit,
        vips,
    })
}

/// Why a plan could not be made or carried out.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("VIP {vip}, real {addr}")]
    Resolve {
        vip: Vip,
        addr: IpAddr,
        #[source]
        source: NeighbourError,
    },
    #[error(transparent)]
    Front(#[from] FrontError),
    #[error(transparent)]
    Balancer(#[from] BalancerError),
}

/// One step that brings the maps closer to a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddVip(Vip),
    SetHealth(Vip, HealthSpec),
    AddReal(Vip, RealSpec),
    SetWeight {
        vip: Vip,
        addr: IpAddr,
        from: u32,
        to: u32,
    },
    SetMac {
        vip: Vip,
        addr: IpAddr,
        from: Mac,
        to: Mac,
    },
    SetEncap {
        vip: Vip,
        from: Encap,
        to: RealSpec,
    },
    SetNewFlowLimit {
        from: u32,
        to: u32,
    },
    DelReal(Vip, IpAddr),
    DelVip(Vip),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddVip(vip) => write!(f, "+ vip {vip}"),
            Change::SetHealth(vip, spec) => match HealthConfig::from_spec(spec) {
                None => write!(f, "~ vip {vip} health: none"),
                Some(h) => write!(
                    f,
                    "~ vip {vip} health: {} port {} {}interval {}ms timeout {}ms rise {} fall {}",
                    h.check,
                    h.port
                        .map_or_else(|| vip.addr.port().to_string(), |p| p.to_string()),
                    h.path.map(|p| format!("path {p} ")).unwrap_or_default(),
                    h.interval_ms,
                    h.timeout_ms,
                    h.rise,
                    h.fall
                ),
            },
            Change::AddReal(vip, spec) if spec.encap.is_tunnel() => write!(
                f,
                "+ real {} in {vip} (encap {}, weight {})",
                spec.addr, spec.encap, spec.weight
            ),
            Change::AddReal(vip, spec) => write!(
                f,
                "+ real {} in {vip} (mac {}, weight {})",
                spec.addr, spec.mac, spec.weight
            ),
            Change::SetEncap { vip, from, to } => write!(
                f,
                "~ real {} in {vip}: encap {from} -> {}",
                to.addr, to.encap
            ),
            Change::SetNewFlowLimit { from, to } => {
                let show = |n: u32| match n {
                    0 | Desired::UNLIMITED => "unlimited".to_owned(),
                    n => format!("{n}/s per CPU"),
                };
                write!(f, "~ new_flow_limit: {} -> {}", show(*from), show(*to))
            }
            Change::SetWeight {
                vip,
                addr,
                from,
                to,
            } => write!(f, "~ real {addr} in {vip}: weight {from} -> {to}"),
            Change::SetMac {
                vip,
                addr,
                from,
                to,
            } => write!(f, "~ real {addr} in {vip}: mac {from} -> {to}"),
            Change::DelReal(vip, addr) => write!(f, "- real {addr} in {vip}"),
            Change::DelVip(vip) => write!(f, "- vip {vip}"),
        }
    }
}

/// Finds how the front reaches a real and builds its spec. At layer 2 the program sends
/// frames out of the interface it runs on (XDP_TX) or, for a real behind another interface,
/// redirects them; with an encapsulation it finds the next hop in the FIB for every frame, so
/// only the route is checked (and its next hop's neighbour entry made) here.
pub fn real_spec(
    attached_ifindex: u32,
    addr: IpAddr,
    mac: Option<Mac>,
    weight: u32,
    encap: Encap,
) -> Result<RealSpec, NeighbourError> {
    if encap == Encap::Gue
        && !aya::util::KernelVersion::current()
            .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 7, 0))
    {
        return Err(NeighbourError::GueNeedsKernel);
    }
    if encap.is_tunnel() {
        neighbour::resolve_routed(addr, &front::ifname(attached_ifindex))?;
        return Ok(RealSpec {
            addr,
            mac: Mac([0; 6]),
            src_mac: Mac([0; 6]),
            egress_ifindex: None,
            weight,
            encap,
        });
    }
    let path = neighbour::resolve(addr, mac)?;
    let egress = front::ifindex(&path.dev)
        .ok()
        .filter(|&i| i != attached_ifindex);
    Ok(RealSpec {
        addr,
        mac: path.mac,
        src_mac: path.src_mac,
        egress_ifindex: egress,
        weight,
        encap,
    })
}

/// The changes that make the maps hold `desired`. MACs of new reals are resolved here, so a
/// plan either covers every change or fails before any is made.
pub fn plan(
    balancer: &Balancer,
    attached_ifindex: u32,
    desired: &Desired,
) -> Result<Vec<Change>, ApplyError> {
    let spec = |vip: Vip, want: &DesiredReal| {
        real_spec(
            attached_ifindex,
            want.addr,
            want.mac,
            want.weight,
            want.encap,
        )
        .map_err(|source| ApplyError::Resolve {
            vip,
            addr: want.addr,
            source,
        })
    };
    let current = balancer.vips()?;
    let mut changes = Vec::new();
    let mut removals = Vec::new();
    let have_limit = balancer.settings()?.new_flow_limit;
    let want_limit = desired
        .new_flow_limit
        .unwrap_or_else(|| default_new_flow_limit(balancer.nr_cpus()));
    if have_limit != want_limit {
        changes.push(Change::SetNewFlowLimit {
            from: have_limit,
            to: want_limit,
        });
    }
    for d in &desired.vips {
        let exists = current.iter().any(|(v, _)| *v == d.vip);
        let (reals, health) = if exists {
            (balancer.reals(&d.vip)?, balancer.health(&d.vip)?)
        } else {
            changes.push(Change::AddVip(d.vip));
            (Vec::new(), HealthSpec::default())
        };
        if health != d.health {
            changes.push(Change::SetHealth(d.vip, d.health));
        }
        for want in &d.reals {
            match reals.iter().find(|r| r.addr() == want.addr) {
                None => changes.push(Change::AddReal(d.vip, spec(d.vip, want)?)),
                Some(have) => {
                    if have.def.weight != want.weight {
                        changes.push(Change::SetWeight {
                            vip: d.vip,
                            addr: want.addr,
                            from: have.def.weight,
                            to: want.weight,
                        });
                    }
                    if have.encap() != want.encap {
                        changes.push(Change::SetEncap {
                            vip: d.vip,
                            from: have.encap(),
                            to: spec(d.vip, want)?,
                        });
                    } else if let Some(mac) = want.mac
                        && mac.0 != have.def.mac
                    {
                        changes.push(Change::SetMac {
                            vip: d.vip,
                            addr: want.addr,
                            from: Mac(have.def.mac),
                            to: mac,
                        });
                    }
                }
            }
        }
        for have in &reals {
            if !d.reals.iter().any(|w| w.addr == have.addr()) {
                removals.push(Change::DelReal(d.vip, have.addr()));
            }
        }
    }
    for (vip, _) in &current {
        if !desired.vips.iter().any(|d| d.vip == *vip) {
            removals.push(Change::DelVip(*vip));
        }
    }
    changes.extend(removals);
    Ok(changes)
}

/// Makes the changes in order: additions and updates first, removals last.
pub fn execute(balancer: &mut Balancer, changes: &[Change]) -> Result<(), BalancerError> {
    for change in changes {
        match change {
            Change::AddVip(vip) => {
                balancer.add_vip(vip)?;
            }
            Change::SetHealth(vip, spec) => balancer.set_health(vip, *spec)?,
            Change::AddReal(vip, spec) => {
                balancer.add_real(vip, spec)?;
            }
            Change::SetWeight { vip, addr, to, .. } => {
                balancer.set_weight(vip, *addr, *to)?;
            }
            Change::SetMac { vip, addr, to, .. } => {
                balancer.set_mac(vip, *addr, *to)?;
            }
            Change::SetEncap { vip, to, .. } => {
                balancer.set_encap(vip, to.addr, to)?;
            }
            Change::SetNewFlowLimit { to, .. } => {
                let settings = balancer.settings()?;
                balancer.set_settings(FrontSettings {
                    new_flow_limit: *to,
                    ..settings
                })?;
            }
            Change::DelReal(vip, addr) => balancer.del_real(vip, *addr)?,
            Change::DelVip(vip) => balancer.del_vip(vip)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Desired, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn full_example_validates_with_defaults() {
        let d = parse(
            r#"
            [[vip]]
            address = "10.0.0.100:80/tcp"
            [vip.health]
            check = "http"
            path = "/healthz"
            [[vip.real]]
            address = "10.0.0.11"
            [[vip.real]]
            address = "10.0.0.12"
            mac = "02:00:00:00:00:12"
            weight = 3
            [[vip]]
            address = "[fd00::100]:53/udp"
            "#,
        )
        .unwrap();
        assert_eq!(d.vips.len(), 2);
        let h = d.vips[0].health;
        assert_eq!(
            (h.kind, h.interval_ms, h.timeout_ms, h.rise, h.fall),
            (2, 2000, 1000, 2, 3)
        );
        assert_eq!(health_path(&h), "/healthz");
        assert_eq!(d.vips[0].reals[0].weight, 1);
        assert_eq!(d.vips[0].reals[1].mac, Some(Mac([2, 0, 0, 0, 0, 0x12])));
        assert_eq!(d.vips[1].health, HealthSpec::default());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[[vip]]\naddress = \"10.0.0.1:80\"", "vip[1].address"),
            (
                "[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[[vip]]\naddress = \"10.0.0.1:80/tcp\"",
                "vip[2].address: VIP 10.0.0.1:80/tcp is listed twice",
            ),
            (
                "[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[[vip.real]]\naddress = \"fd00::1\"",
                "vip[1].real[1].address",
            ),
            (
                "[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[[vip.real]]\naddress = \"10.0.0.2\"\nmac = \"zz\"",
                "vip[1].real[1].mac",
            ),
            (
                "[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[[vip.real]]\naddress = \"10.0.0.2\"\nweight = 70000",
                "vip[1].real[1].weight",
            ),
            (
                "[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[[vip.real]]\naddress = \"10.0.0.2\"\n[[vip.real]]\naddress = \"10.0.0.2\"",
                "vip[1].real[2].address: real 10.0.0.2 is listed twice",
            ),
            (
                "[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[vip.health]\ncheck = \"icmp\"",
                "vip[1].health.check",
            ),
            (
                "[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[vip.health]\ncheck = \"http\"\npath = \"no-slash\"",
                "vip[1].health.path",
            ),
            (
                "[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[vip.health]\ncheck = \"tcp\"\ntimeout_ms = 5000",
                "vip[1].health.timeout_ms",
            ),
            (
                "[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[vip.health]\ncheck = \"tcp\"\nfall = 0",
                "vip[1].health.fall",
            ),
            (
                "[[vip]]\naddres = \"10.0.0.1:80/tcp\"",
                "unknown field `addres`",
            ),
            (
                "[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[[vip.real]]\naddress = \"10.0.0.2\"\nencap = \"vxlan\"",
                "vip[1].real[1].encap: \"vxlan\" is not a forwarding method",
            ),
            (
                "[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[[vip.real]]\naddress = \"10.0.0.2\"\nencap = \"gue\"\nmac = \"02:00:00:00:00:02\"",
                "vip[1].real[1].mac: a real with encap = \"gue\"",
            ),
            ("new_flow_limit = -1", "new_flow_limit"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn encap_and_new_flow_limit_are_read() {
        let d = parse(
            "new_flow_limit = 0\n[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[[vip.real]]\naddress = \"10.1.0.2\"\nencap = \"ipip\"\n[[vip.real]]\naddress = \"10.0.0.3\"",
        )
        .unwrap();
        assert_eq!(d.new_flow_limit, Some(Desired::UNLIMITED));
        assert_eq!(d.vips[0].reals[0].encap, Encap::Ipip);
        assert_eq!(d.vips[0].reals[1].encap, Encap::L2);
        let d = parse("new_flow_limit = 5000").unwrap();
        assert_eq!(d.new_flow_limit, Some(5000));
        assert_eq!(parse("").unwrap().new_flow_limit, None);
    }

    #[test]
    fn health_round_trips_through_its_spec() {
        let d = parse(
            "[[vip]]\naddress = \"10.0.0.1:80/tcp\"\n[vip.health]\ncheck = \"http\"\nport = 8080\npath = \"/h\"\ninterval_ms = 500\ntimeout_ms = 200\nrise = 1\nfall = 2",
        )
        .unwrap();
        let back = HealthConfig::from_spec(&d.vips[0].health).unwrap();
        assert_eq!(back.port, Some(8080));
        assert_eq!(back.path.as_deref(), Some("/h"));
        assert_eq!(
            (back.interval_ms, back.timeout_ms, back.rise, back.fall),
            (500, 200, 1, 2)
        );
        let again = back.validate("x").unwrap();
        assert_eq!(again, d.vips[0].health);
    }
}
