//! The reals' side of L3 direct server return: `l4-ctl decap attach|detach|status`.
//!
//! The decapsulator (built from `l4-ebpf`'s `decap` binary, embedded like the balancer)
//! strips IPIP and GUE headers addressed to the real itself and hands the inner packet to the
//! stack, so a real needs neither the `ipip`/`fou` modules nor a tunnel device. It attaches in
//! XDP (native or generic) or, where XDP cannot attach, at tc ingress.
//!
//! Everything lives under its own pin directory (default `/sys/fs/bpf/dl7-decap`), apart from
//! the front's: the two maps (the real's addresses and the counters) and one link pin whose
//! name records the mode (`link_native`, `link_generic` or `link_tc`), so that the program
//! stays attached after `l4-ctl` exits and `status` can say how. Attaching again on the same
//! interface and mode replaces the address set (and, in XDP, the program) in place.

use std::{
    collections::BTreeSet,
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType, Xdp,
        links::{FdLink, PinnedLink},
        tc,
        xdp::XdpLink,
    },
};
use common::{DECAP_PROGRAM_NAME, DECAP_TC_PROGRAM_NAME, DecapAddrKey, DecapCounter, map_names};
use serde::{Deserialize, Serialize};

use crate::{
    AttachMode,
    front::{self, FrontError},
    neighbour::{self, NeighbourError},
    service::{decode_addr, encode_addr},
};

/// Where `l4-ctl decap` pins its program's link and maps.
pub const DEFAULT_DECAP_PIN_DIR: &str = "/sys/fs/bpf/dl7-decap";

/// Where the decapsulator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecapMode {
    /// XDP in the driver: the cheapest.
    Native,
    /// XDP in the kernel's generic path: any interface.
    Generic,
    /// tc ingress (clsact): where XDP cannot attach at all.
    Tc,
}

impl DecapMode {
    const ALL: [DecapMode; 3] = [DecapMode::Native, DecapMode::Generic, DecapMode::Tc];

    fn pin_name(self) -> &'static str {
        match self {
            DecapMode::Native => "link_native",
            DecapMode::Generic => "link_generic",
            DecapMode::Tc => "link_tc",
        }
    }

    /// The name operators type.
    pub fn name(self) -> &'static str {
        match self {
            DecapMode::Native => "native",
            DecapMode::Generic => "generic",
            DecapMode::Tc => "tc",
        }
    }
}

/// Why the decapsulator could not be attached, detached or read.
#[derive(Debug, thiserror::Error)]
pub enum DecapError {
    #[error(
        "the decapsulator is attached to {attached} in {mode} mode: `l4-ctl decap detach` first"
    )]
    AttachedElsewhere {
        attached: String,
        mode: &'static str,
    },
    #[error("the decapsulator is not attached: no link pinned in {}", .0.display())]
    NotAttached(PathBuf),
    #[error(
        "{iface} has no global address to decapsulate for (give one with --addr, or add the address first)"
    )]
    NoAddress { iface: String },
    #[error("more than {max} addresses to decapsulate for")]
    TooManyAddresses { max: u32 },
    #[error("--mode tc needs Linux 6.6 (tcx links): use --mode generic on this kernel")]
    TcNeedsTcx,
    #[error("loading the decapsulator failed")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the decapsulator object has no {0}")]
    Missing(&'static str),
    #[error("{what}")]
    Program {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what} {}", .path.display())]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Front(#[from] FrontError),
    #[error(transparent)]
    Addresses(#[from] NeighbourError),
}

type Result<T, E = DecapError> = std::result::Result<T, E>;

fn program_err(
    what: impl Into<String>,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> DecapError {
    let what = what.into();
    move |source| DecapError::Program { what, source }
}

/// What `l4-ctl decap status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct DecapStatus {
    pub iface: String,
    pub mode: DecapMode,
    pub program_id: u32,
    /// The addresses outer packets must be sent to, to be stripped.
    pub addresses: Vec<IpAddr>,
    /// Every counter of [`DecapCounter`], by name, summed over the CPUs (a JSON object in
    /// the counters' order).
    #[serde(serialize_with = "as_object")]
    pub counters: Vec<(&'static str, u64)>,
}

fn as_object<S: serde::Serializer>(pairs: &[(&'static str, u64)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (*k, *v)))
}

/// The link pinned under `pin_dir` and the mode its name records.
fn pinned(pin_dir: &Path) -> Option<(PathBuf, DecapMode)> {
    DecapMode::ALL
        .into_iter()
        .map(|mode| (pin_dir.join(mode.pin_name()), mode))
        .find(|(path, _)| path.exists())
}

#[derive(Deserialize)]
struct AddrEntry {
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    local: Option<String>,
    scope: Option<String>,
}

/// The global addresses of `iface` (what a front encapsulates to).
pub fn iface_addresses(iface: &str) -> Result<Vec<IpAddr>> {
    let entries: Vec<AddrEntry> = neighbour::ip_json(&["addr", "show", "dev", iface])?;
    Ok(entries
        .into_iter()
        .flat_map(|e| e.addr_info)
        .filter(|a| a.scope.as_deref() == Some("global"))
        .filter_map(|a| a.local?.parse().ok())
        .collect())
}

/// Attaches the decapsulator to `iface` (or, when it is attached there in the same mode
/// already, updates it in place) and makes its address set `iface`'s global addresses plus
/// `extra`. Returns the address set.
pub fn attach(
    pin_dir: &Path,
    iface: &str,
    mode: DecapMode,
    extra: &[IpAddr],
) -> Result<Vec<IpAddr>> {
    let ifindex = front::ifindex(iface)?;
    let mut addrs: BTreeSet<IpAddr> = iface_addresses(iface)?.into_iter().collect();
    addrs.extend(extra.iter().copied());
    if addrs.is_empty() {
        return Err(DecapError::NoAddress {
            iface: iface.to_owned(),
        });
    }
    if addrs.len() > common::MAX_DECAP_ADDRS as usize {
        return Err(DecapError::TooManyAddresses {
            max: common::MAX_DECAP_ADDRS,
        });
    }
    let existing = pinned(pin_dir);
    if let Some((path, pinned_mode)) = &existing {
        let current = front::link_info(path)?.ifindex;
        if current != ifindex || *pinned_mode != mode {
            return Err(DecapError::AttachedElsewhere {
                attached: front::ifname(current),
                mode: pinned_mode.name(),
            });
        }
    }
    fs::create_dir_all(pin_dir).map_err(|source| DecapError::Pin {
        what: "cannot create the pin directory",
        path: pin_dir.to_owned(),
        source,
    })?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(crate::objects::DECAP)
        .map_err(|e| DecapError::Load(Box::new(e)))?;
    write_addresses(&mut ebpf, &addrs)?;
    match existing {
        Some((path, _)) => upgrade(&mut ebpf, &path, mode)?,
        None => {
            let path = pin_dir.join(mode.pin_name());
            let link = attach_new(&mut ebpf, iface, mode)?;
            link.pin(&path)
                .map_err(|e| program_err(format!("pinning {}", path.display()))(Box::new(e)))?;
        }
    }
    Ok(addrs.into_iter().collect())
}

/// Replaces the address set with `addrs` (adds first, then removes the others, so an
/// address in both sets never misses a packet).
fn write_addresses(ebpf: &mut Ebpf, addrs: &BTreeSet<IpAddr>) -> Result<()> {
    let name = map_names::DECAP_ADDRS;
    let map = ebpf.map_mut(name).ok_or(DecapError::Missing(name))?;
    let mut map = HashMap::<_, DecapAddrKey, u8>::try_from(map)
        .map_err(|e| program_err(name)(Box::new(e)))?;
    let keys: Vec<DecapAddrKey> = addrs.iter().map(|a| addr_key(*a)).collect();
    for key in &keys {
        map.insert(key, 1, 0)
            .map_err(|e| program_err(name)(Box::new(e)))?;
    }
    let stale: Vec<DecapAddrKey> = map.keys().flatten().filter(|k| !keys.contains(k)).collect();
    for key in stale {
        map.remove(&key)
            .map_err(|e| program_err(name)(Box::new(e)))?;
    }
    Ok(())
}

fn addr_key(addr: IpAddr) -> DecapAddrKey {
    let (addr, family) = encode_addr(addr);
    DecapAddrKey {
        addr,
        family,
        _pad: [0; 3],
    }
}

fn attach_new(ebpf: &mut Ebpf, iface: &str, mode: DecapMode) -> Result<FdLink> {
    match mode {
        DecapMode::Native | DecapMode::Generic => {
            let program = xdp_program(ebpf)?;
            let xdp_mode = if mode == DecapMode::Native {
                AttachMode::Native
            } else {
                AttachMode::Generic
            };
            let id = program.attach(iface, xdp_mode.xdp_mode()).map_err(|e| {
                program_err(format!("attaching to {iface} in {} mode", mode.name()))(Box::new(e))
            })?;
            let link = program
                .take_link(id)
                .map_err(|e| program_err("taking the XDP link")(Box::new(e)))?;
            FdLink::try_from(link).map_err(|e| program_err("the XDP link")(Box::new(e)))
        }
        DecapMode::Tc => {
            // Before 6.6 aya attaches through netlink, with a link that cannot be pinned (and
            // that would stay behind, unseen by `status` and `detach`); before 6.3 the kernel
            // has no decapsulation flags for bpf_skb_adjust_room either.
            if !aya::util::KernelVersion::current()
                .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
            {
                return Err(DecapError::TcNeedsTcx);
            }
            // An existing clsact qdisc is fine (other programs may use it).
            if let Err(e) = tc::qdisc_add_clsact(iface) {
                let exists =
                    matches!(&e, tc::TcError::AlreadyAttached) || e.to_string().contains("exists");
                if !exists {
                    return Err(program_err(format!("adding the clsact qdisc to {iface}"))(
                        Box::new(e),
                    ));
                }
            }
            let program = tc_program(ebpf)?;
            let id = program.attach(iface, TcAttachType::Ingress).map_err(|e| {
                program_err(format!("attaching to {iface} at tc ingress"))(Box::new(e))
            })?;
            let link = program
                .take_link(id)
                .map_err(|e| program_err("taking the tc link")(Box::new(e)))?;
            FdLink::try_from(link)
                .map_err(|e| program_err("the tc link (needs tcx, kernel 6.6)")(Box::new(e)))
        }
    }
}

/// Swaps the new build of the program into the pinned link (one atomic step).
fn upgrade(ebpf: &mut Ebpf, path: &Path, mode: DecapMode) -> Result<()> {
    let pinned = PinnedLink::from_pin(path)
        .map_err(|e| program_err(format!("opening {}", path.display()))(Box::new(e)))?;
    let fd_link = FdLink::from(pinned);
    match mode {
        DecapMode::Native | DecapMode::Generic => {
            let link = XdpLink::try_from(fd_link)
                .map_err(|e| program_err("the pinned XDP link")(Box::new(e)))?;
            xdp_program(ebpf)?
                .attach_to_link(link)
                .map_err(|e| program_err("replacing the program in the XDP link")(Box::new(e)))?;
        }
        DecapMode::Tc => {
            let link = aya::programs::tc::SchedClassifierLink::try_from(fd_link)
                .map_err(|e| program_err("the pinned tc link")(Box::new(e)))?;
            tc_program(ebpf)?
                .attach_to_link(link)
                .map_err(|e| program_err("replacing the program in the tc link")(Box::new(e)))?;
        }
    }
    Ok(())
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let program: &mut Xdp = ebpf
        .program_mut(DECAP_PROGRAM_NAME)
        .ok_or(DecapError::Missing("XDP program"))?
        .try_into()
        .map_err(|e| program_err(DECAP_PROGRAM_NAME)(Box::new(e)))?;
    program
        .load()
        .map_err(|e| program_err(format!("loading {DECAP_PROGRAM_NAME}"))(Box::new(e)))?;
    Ok(program)
}

fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(DECAP_TC_PROGRAM_NAME)
        .ok_or(DecapError::Missing("tc program"))?
        .try_into()
        .map_err(|e| program_err(DECAP_TC_PROGRAM_NAME)(Box::new(e)))?;
    program
        .load()
        .map_err(|e| program_err(format!("loading {DECAP_TC_PROGRAM_NAME}"))(Box::new(e)))?;
    Ok(program)
}

/// Detaches the decapsulator and removes its pins: encapsulated packets then reach the
/// stack as they are (and are dropped there).
pub fn detach(pin_dir: &Path) -> Result<()> {
    let Some((path, _)) = pinned(pin_dir) else {
        return Err(DecapError::NotAttached(pin_dir.to_owned()));
    };
    Ok(front::detach_and_unpin(&path, pin_dir)?)
}

/// The decapsulator's attachment, addresses and counters, if it is attached.
pub fn status(pin_dir: &Path) -> Result<Option<DecapStatus>> {
    let Some((path, mode)) = pinned(pin_dir) else {
        return Ok(None);
    };
    let info = front::link_info(&path)?;
    let open = |name: &'static str| {
        let path = pin_dir.join(name);
        MapData::from_pin(&path)
            .map_err(|e| program_err(format!("opening {}", path.display()))(Box::new(e)))
    };
    let addrs_map = aya::maps::Map::HashMap(open(map_names::DECAP_ADDRS)?);
    let addrs_map = HashMap::<_, DecapAddrKey, u8>::try_from(&addrs_map)
        .map_err(|e| program_err(map_names::DECAP_ADDRS)(Box::new(e)))?;
    let mut addresses: Vec<IpAddr> = addrs_map
        .keys()
        .flatten()
        .filter_map(|k| decode_addr(k.addr, k.family))
        .collect();
    addresses.sort();
    let stats_map = aya::maps::Map::PerCpuArray(open(map_names::DECAP_STATS)?);
    let stats_map = PerCpuArray::<_, u64>::try_from(&stats_map)
        .map_err(|e| program_err(map_names::DECAP_STATS)(Box::new(e)))?;
    let mut counters = Vec::new();
    for counter in DecapCounter::ALL {
        let values = stats_map
            .get(&(counter as u32), 0)
            .map_err(|e| program_err(map_names::DECAP_STATS)(Box::new(e)))?;
        counters.push((counter.name(), values.iter().sum()));
    }
    Ok(Some(DecapStatus {
        iface: front::ifname(info.ifindex),
        mode,
        program_id: info.prog_id,
        addresses,
        counters,
    }))
}
