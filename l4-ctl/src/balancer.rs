//! The loaded XDP balancer and the operations on its maps.
//!
//! The maps are the only state: every `l4-ctl` call is its own process, so each operation reads
//! what it needs from the (pinned) maps, computes, and writes back in an order that never lets
//! the program see a half-made change:
//! - a VIP's Maglev table is written into the VIP's spare table first, then the VIP entry is
//!   replaced by one that names it (one map update: the switch is atomic);
//! - a new VIP's (empty) table is written before the VIP entry that makes it reachable;
//! - a deleted real's slot gets a new generation, so connection-table entries that still name
//!   it are treated as misses instead of being sent to whatever reuses the slot.

use std::{
    collections::BTreeMap,
    fs, io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, DevMap, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{ProgramError, Xdp, XdpMode, xdp::XdpLinkId},
};
use common::{
    CONN_TABLE_SIZE, FlowKey, FlowKeyV4, FrontSettings, GlobalCounter, HealthSpec, MAX_REALS,
    MAX_TX_PORTS, MAX_VIPS, RING_SIZE, RealDef, TX_PORT_SAME_IFACE, TrafficCounters,
    VIP_PORT_SLOTS, VipAddrKey, VipKey, VipMeta, flow_hash, map_names,
};

use crate::{
    maglev::{self, MaglevError, MaglevReal},
    service::{Encap, Mac, Vip, decode_addr, encode_addr},
};

/// Where `l4-ctl` pins the program's maps (and, once loaded, the program's link).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/dl7";

/// One Maglev table as stored in the rings map.
type Ring = [u32; RING_SIZE as usize];

/// Compares the maps pinned under `pin_dir` (by an earlier load, perhaps of an older build)
/// with the object's definitions: the kernel would let the new program use a pinned map of
/// another size, and reads past its end would fail. Any difference but in the counters map
/// stops the load before anything changes. A counters map of another size is set aside
/// (unpinned, returned open) once every map passed, so that the load creates it anew (the
/// counters restart from zero); the caller drops it or [`restore`]s it.
fn check_pins(object: &[u8], pin_dir: &Path) -> Result<Vec<(PathBuf, MapData)>> {
    let parsed = aya_obj::Object::parse(object).map_err(|e| BalancerError::Object(Box::new(e)))?;
    let mut stale = Vec::new();
    for name in map_names::ALL {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let Some(def) = parsed.maps.get(name) else {
            continue;
        };
        let pinned = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .map_err(|source| BalancerError::OpenPin {
                path: path.clone(),
                source: Box::new(source),
            })?;
        let layout = |k: u32, v: u32, n: u32| format!("key {k} B, value {v} B, {n} entries");
        let found = layout(pinned.key_size(), pinned.value_size(), pinned.max_entries());
        let want = layout(def.key_size(), def.value_size(), def.max_entries());
        if found == want {
            continue;
        }
        if name == map_names::GLOBAL_STATS {
            stale.push(path);
            continue;
        }
        return Err(BalancerError::PinLayout { path, found, want });
    }
    // Only now, with every map checked: the stale counters' pins are removed (this process
    // holds the maps open), so that the load creates new ones; [`restore`] pins them again
    // if the load fails after all. (bpffs has no rename.)
    let mut aside = Vec::new();
    for path in stale {
        let map = MapData::from_pin(&path).map_err(|source| BalancerError::OpenPin {
            path: path.clone(),
            source: Box::new(source),
        })?;
        if let Err(source) = fs::remove_file(&path) {
            restore(&aside);
            return Err(BalancerError::PinDir { path, source });
        }
        aside.push((path, map));
    }
    Ok(aside)
}

/// Pins the maps [`check_pins`] set aside where they were (a load that failed after it).
fn restore(aside: &[(PathBuf, MapData)]) {
    for (path, map) in aside {
        let _ = fs::remove_file(path);
        let _ = map.pin(path);
    }
}

/// The new-flow guard's default: a quarter of a CPU's share of the connection table per
/// second and CPU (Katran's 125,000 per CPU is a quarter of a 16-CPU front's share of its
/// default table), so that even a flood at the full rate needs four seconds to write a CPU's
/// share of the table. (The kernel's LRU also evicts entries that were never looked up again
/// first, so a flood of single SYNs mostly evicts itself; a flood whose flows send a second
/// packet ages everything, which is what the guard bounds.)
pub fn default_new_flow_limit(nr_cpus: usize) -> u32 {
    (CONN_TABLE_SIZE / (nr_cpus.max(1) as u32) / 4).max(1)
}

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// In the driver (XDP_TX and redirects need the peer of a veth to run XDP too).
    Native,
    /// In the kernel's generic path: slower, works on any interface.
    Generic,
}

impl AttachMode {
    pub(crate) fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        }
    }
}

/// Everything that can go wrong between l4-ctl and the kernel.
#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    #[error("dl7 is not loaded: {} does not exist (run `l4-ctl load --iface IFACE` first)", .path.display())]
    NotLoaded { path: PathBuf },
    #[error("opening the pinned map {}", .path.display())]
    OpenPin {
        path: PathBuf,
        #[source]
        source: Box<MapError>,
    },
    #[error("cannot create the pin directory {}", .path.display())]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("loading the eBPF object failed")]
    Load(#[source] Box<EbpfError>),
    #[error("the embedded eBPF object cannot be parsed")]
    Object(#[source] Box<aya_obj::ParseError>),
    #[error(
        "the pinned map {} has another layout than this build's ({found} where {want} is needed): \
         `l4-ctl unload` first (established flows then lose their reals), or load the build that pinned it",
        .path.display()
    )]
    PinLayout {
        path: PathBuf,
        found: String,
        want: String,
    },
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("program {}", common::PROGRAM_NAME)]
    Program(#[source] Box<ProgramError>),
    #[error("attaching to {iface} in {mode:?} mode failed")]
    Attach {
        iface: String,
        mode: AttachMode,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("cannot count the possible CPUs")]
    Cpus(#[source] io::Error),
    #[error("VIP {0} exists already")]
    VipExists(Vip),
    #[error("VIP {0} does not exist")]
    VipNotFound(Vip),
    #[error("all {MAX_VIPS} VIP slots are in use")]
    VipsFull,
    #[error("real {addr} exists already in VIP {vip}")]
    RealExists { vip: Vip, addr: IpAddr },
    #[error("real {addr} is not in VIP {vip}")]
    RealNotFound { vip: Vip, addr: IpAddr },
    #[error("real {addr} is IPv{} but VIP {vip} is IPv{}", if addr.is_ipv4() { 4 } else { 6 }, if vip.addr.is_ipv4() { 4 } else { 6 })]
    FamilyMismatch { vip: Vip, addr: IpAddr },
    #[error("all {} real slots are in use", MAX_REALS - 1)]
    RealsFull,
    #[error("cannot add the egress interface to {}", map_names::TX_PORTS)]
    TxPort(#[source] Box<aya::maps::xdp::XdpMapError>),
    #[error("all {} egress-interface slots are in use", MAX_TX_PORTS - 1)]
    TxPortsFull,
    #[error("{vip} and source {src} are not of the same address family")]
    LookupFamily { vip: Vip, src: SocketAddr },
    #[error("building the Maglev table of VIP {vip} failed")]
    Maglev {
        vip: Vip,
        #[source]
        source: MaglevError,
    },
}

type Result<T, E = BalancerError> = std::result::Result<T, E>;

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> BalancerError {
    move |source| BalancerError::Map {
        name,
        source: Box::new(source),
    }
}

/// A real server to add to a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealSpec {
    pub addr: IpAddr,
    /// The real's MAC on the segment it is reached through.
    pub mac: Mac,
    /// The front's MAC on that segment (the source of forwarded frames).
    pub src_mac: Mac,
    /// The interface the real is reached through when it is not the one the program is
    /// attached to (a devmap redirect); `None` for XDP_TX.
    pub egress_ifindex: Option<u32>,
    /// Maglev weight; 0 adds the real drained.
    pub weight: u32,
    /// How frames reach the real. With an encapsulation the MACs and egress interface are
    /// not used: the program asks the kernel's FIB for the next hop of every frame.
    pub encap: Encap,
}

/// A real as stored: its id (slot in the reals array) and its definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Real {
    pub id: u32,
    pub def: RealDef,
}

impl Real {
    /// The real's address.
    pub fn addr(&self) -> IpAddr {
        decode_addr(self.def.addr, self.def.family).unwrap_or(IpAddr::from([0u8; 4]))
    }

    /// The weight the Maglev table uses: the configured weight, or 0 while the real's health
    /// check fails.
    pub fn effective_weight(&self) -> u32 {
        if self.is_down() { 0 } else { self.def.weight }
    }

    /// How frames reach the real.
    pub fn encap(&self) -> Encap {
        Encap::from_number(self.def.encap)
    }

    /// Whether the real failed its health check (it keeps its flows, gets no new ones).
    pub fn is_down(&self) -> bool {
        self.def.flags & RealDef::FLAG_DOWN != 0
    }

    fn maglev_key(&self) -> Vec<u8> {
        match self.addr() {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }
}

/// The program's maps, and the program itself when this process loaded it.
pub struct Balancer {
    /// Every map of [`map_names::ALL`], by name.
    maps: BTreeMap<&'static str, Map>,
    /// The loaded object (its maps taken out into `maps`); `None` when the maps were opened
    /// from their pins by [`Balancer::open`].
    ebpf: Option<Ebpf>,
    nr_cpus: usize,
}

impl Balancer {
    /// Opens the maps an earlier `l4-ctl load` pinned under `pin_dir`, without loading a
    /// program: what every l4-ctl command but `load` works on.
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let mut maps = BTreeMap::new();
        for name in map_names::ALL {
            let path = pin_dir.join(name);
            if !path.exists() {
                return Err(BalancerError::NotLoaded { path });
            }
            let map = MapData::from_pin(&path)
                .and_then(Map::from_map_data)
                .map_err(|source| BalancerError::OpenPin {
                    path,
                    source: Box::new(source),
                })?;
            maps.insert(name, map);
        }
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| BalancerError::Cpus(e))?;
        Ok(Balancer {
            maps,
            ebpf: None,
            nr_cpus,
        })
    }

    /// Loads the embedded program with its maps pinned under `pin_dir`: maps already pinned
    /// there (by an earlier load) are reused with their contents, the others are created.
    pub fn load(pin_dir: &Path) -> Result<Self> {
        Self::load_object(crate::objects::BALANCER, pin_dir)
    }

    /// [`Balancer::load`] for another build of the program (tests, benchmarks).
    pub fn load_object(object: &[u8], pin_dir: &Path) -> Result<Self> {
        fs::create_dir_all(pin_dir).map_err(|source| BalancerError::PinDir {
            path: pin_dir.to_owned(),
            source,
        })?;
        let aside = check_pins(object, pin_dir)?;
        let ebpf = Self::load_program(object, pin_dir);
        if ebpf.is_err() {
            restore(&aside);
        }
        let mut ebpf = ebpf?;
        let mut maps = BTreeMap::new();
        for name in map_names::ALL {
            maps.insert(
                name,
                ebpf.take_map(name).ok_or(BalancerError::Missing(name))?,
            );
        }
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| BalancerError::Cpus(e))?;
        let mut balancer = Balancer {
            maps,
            ebpf: Some(ebpf),
            nr_cpus,
        };
        balancer.complete_upgrade()?;
        Ok(balancer)
    }

    /// Fills what a build before this one did not keep, so that an in-place upgrade from it
    /// loses no flow: the VIP-port set (the program passes every port not in it) is counted
    /// again from the VIPs, and the settings get their defaults if they were never written.
    /// Both are idempotent, so every load runs them.
    fn complete_upgrade(&mut self) -> Result<()> {
        let mut ports = vec![0u32; VIP_PORT_SLOTS as usize];
        for (vip, _) in self.vips()? {
            ports[vip.addr.port() as usize] += 1;
        }
        let name = map_names::VIP_PORTS;
        let mut map = Array::<_, u32>::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        for (port, count) in ports.iter().enumerate() {
            if *count != 0 || map.get(&(port as u32), 0).map_err(map_err(name))? != 0 {
                map.set(port as u32, count, 0).map_err(map_err(name))?;
            }
        }
        if self.settings()? == FrontSettings::default() {
            self.set_settings(FrontSettings {
                new_flow_limit: default_new_flow_limit(self.nr_cpus),
                flags: 0,
            })?;
        }
        Ok(())
    }

    /// The settings the program reads.
    pub fn settings(&self) -> Result<FrontSettings> {
        let name = map_names::SETTINGS;
        Array::<_, FrontSettings>::try_from(self.map(name)?)
            .map_err(map_err(name))?
            .get(&0, 0)
            .map_err(map_err(name))
    }

    /// Replaces the settings the program reads (one map update).
    pub fn set_settings(&mut self, settings: FrontSettings) -> Result<()> {
        let name = map_names::SETTINGS;
        Array::<_, FrontSettings>::try_from(self.map_mut(name)?)
            .map_err(map_err(name))?
            .set(0, settings, 0)
            .map_err(map_err(name))
    }

    /// How many CPUs the per-CPU maps have.
    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus
    }

    /// The object loaded with its maps pinned under `pin_dir`, and its program verified.
    fn load_program(object: &[u8], pin_dir: &Path) -> Result<Ebpf> {
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(object)
            .map_err(|e| BalancerError::Load(Box::new(e)))?;
        let program: &mut Xdp = ebpf
            .program_mut(common::PROGRAM_NAME)
            .ok_or(BalancerError::Missing("XDP program"))?
            .try_into()
            .map_err(|e| BalancerError::Program(Box::new(e)))?;
        program
            .load()
            .map_err(|e| BalancerError::Program(Box::new(e)))?;
        Ok(ebpf)
    }

    /// The loaded program (to attach it elsewhere, or to test-run it).
    pub fn program(&self) -> Result<&Xdp> {
        self.ebpf
            .as_ref()
            .ok_or(BalancerError::Missing(
                "loaded program (the maps were opened from pins)",
            ))?
            .program(common::PROGRAM_NAME)
            .ok_or(BalancerError::Missing("XDP program"))?
            .try_into()
            .map_err(|e| BalancerError::Program(Box::new(e)))
    }

    /// The loaded program, to attach or pin it.
    pub fn program_mut(&mut self) -> Result<&mut Xdp> {
        self.ebpf
            .as_mut()
            .ok_or(BalancerError::Missing(
                "loaded program (the maps were opened from pins)",
            ))?
            .program_mut(common::PROGRAM_NAME)
            .ok_or(BalancerError::Missing("XDP program"))?
            .try_into()
            .map_err(|e| BalancerError::Program(Box::new(e)))
    }

    /// Attaches the program to `iface`. It stays attached while this `Balancer` lives.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<XdpLinkId> {
        self.program_mut()?
            .attach(iface, mode.xdp_mode())
            .map_err(|source| BalancerError::Attach {
                iface: iface.to_owned(),
                mode,
                source: Box::new(source),
            })
    }

    fn map(&self, name: &'static str) -> Result<&Map> {
        self.maps.get(name).ok_or(BalancerError::Missing(name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map> {
        self.maps.get_mut(name).ok_or(BalancerError::Missing(name))
    }

    fn vips_map(&self) -> Result<HashMap<&MapData, VipKey, VipMeta>> {
        HashMap::try_from(self.map(map_names::VIPS)?).map_err(map_err(map_names::VIPS))
    }

    fn reals_map(&self) -> Result<Array<&MapData, RealDef>> {
        Array::try_from(self.map(map_names::REALS)?).map_err(map_err(map_names::REALS))
    }

    /// Every configured VIP with its map entry, in address order.
    pub fn vips(&self) -> Result<Vec<(Vip, VipMeta)>> {
        let map = self.vips_map()?;
        let mut vips = Vec::new();
        for entry in map.iter() {
            let (key, meta) = entry.map_err(map_err(map_names::VIPS))?;
            if let Some(vip) = Vip::from_key(&key) {
                vips.push((vip, meta));
            }
        }
        vips.sort_by_key(|(vip, _)| *vip);
        Ok(vips)
    }

    /// The map entry of `vip`.
    pub fn vip(&self, vip: &Vip) -> Result<VipMeta> {
        match self.vips_map()?.get(&vip.key(), 0) {
            Ok(meta) => Ok(meta),
            Err(MapError::KeyNotFound) => Err(BalancerError::VipNotFound(*vip)),
            Err(e) => Err(map_err(map_names::VIPS)(e)),
        }
    }

    /// Adds a VIP with no reals (its packets are dropped and counted until reals are added).
    pub fn add_vip(&mut self, vip: &Vip) -> Result<VipMeta> {
        let vips = self.vips()?;
        if vips.iter().any(|(v, _)| v == vip) {
            return Err(BalancerError::VipExists(*vip));
        }
        let vip_id = (0..MAX_VIPS)
            .find(|id| vips.iter().all(|(_, m)| m.vip_id != *id))
            .ok_or(BalancerError::VipsFull)?;
        let meta = VipMeta {
            vip_id,
            ring: vip_id * 2,
        };
        self.write_ring(meta.ring, &vec![common::NO_REAL; RING_SIZE as usize])?;
        self.reset_counters(map_names::VIP_STATS, vip_id)?;
        self.write_health(vip_id, HealthSpec::default())?;
        self.add_vip_addr(vip.addr_key())?;
        self.count_vip_port(vip.addr.port(), 1)?;
        let mut map = HashMap::<_, VipKey, VipMeta>::try_from(self.map_mut(map_names::VIPS)?)
            .map_err(map_err(map_names::VIPS))?;
        map.insert(vip.key(), meta, 0)
            .map_err(map_err(map_names::VIPS))?;
        Ok(meta)
    }

    /// Deletes a VIP and all its reals. Its flows' next packets are passed to the kernel.
    pub fn del_vip(&mut self, vip: &Vip) -> Result<()> {
        let meta = self.vip(vip)?;
        let mut map = HashMap::<_, VipKey, VipMeta>::try_from(self.map_mut(map_names::VIPS)?)
            .map_err(map_err(map_names::VIPS))?;
        map.remove(&vip.key()).map_err(map_err(map_names::VIPS))?;
        self.del_vip_addr(vip.addr_key())?;
        self.count_vip_port(vip.addr.port(), -1)?;
        for real in self.reals_of(meta.vip_id)? {
            self.free_real(real)?;
        }
        Ok(())
    }

    /// The health check configured for `vip`.
    pub fn health(&self, vip: &Vip) -> Result<HealthSpec> {
        let vip_id = self.vip(vip)?.vip_id;
        let name = map_names::HEALTH;
        Array::<_, HealthSpec>::try_from(self.map(name)?)
            .map_err(map_err(name))?
            .get(&vip_id, 0)
            .map_err(map_err(name))
    }

    /// Sets the health check of `vip` ([`HealthSpec::default`] for none).
    pub fn set_health(&mut self, vip: &Vip, spec: HealthSpec) -> Result<()> {
        let vip_id = self.vip(vip)?.vip_id;
        self.write_health(vip_id, spec)
    }

    fn write_health(&mut self, vip_id: u32, spec: HealthSpec) -> Result<()> {
        let name = map_names::HEALTH;
        Array::<_, HealthSpec>::try_from(self.map_mut(name)?)
            .map_err(map_err(name))?
            .set(vip_id, spec, 0)
            .map_err(map_err(name))
    }

    fn add_vip_addr(&mut self, key: VipAddrKey) -> Result<()> {
        let mut map = HashMap::<_, VipAddrKey, u32>::try_from(self.map_mut(map_names::VIP_ADDRS)?)
            .map_err(map_err(map_names::VIP_ADDRS))?;
        let count = match map.get(&key, 0) {
            Ok(n) => n,
            Err(MapError::KeyNotFound) => 0,
            Err(e) => return Err(map_err(map_names::VIP_ADDRS)(e)),
        };
        map.insert(key, count + 1, 0)
            .map_err(map_err(map_names::VIP_ADDRS))
    }

    /// Adds `delta` to the number of VIPs on `port` (the program's port set).
    fn count_vip_port(&mut self, port: u16, delta: i32) -> Result<()> {
        let name = map_names::VIP_PORTS;
        let mut map = Array::<_, u32>::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let count = map.get(&u32::from(port), 0).map_err(map_err(name))?;
        map.set(u32::from(port), count.saturating_add_signed(delta), 0)
            .map_err(map_err(name))
    }

    fn del_vip_addr(&mut self, key: VipAddrKey) -> Result<()> {
        let mut map = HashMap::<_, VipAddrKey, u32>::try_from(self.map_mut(map_names::VIP_ADDRS)?)
            .map_err(map_err(map_names::VIP_ADDRS))?;
        match map.get(&key, 0) {
            Ok(n) if n > 1 => map.insert(key, n - 1, 0),
            Ok(_) => map.remove(&key),
            Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(map_err(map_names::VIP_ADDRS))
    }

    /// All slots of the reals array that hold a real.
    pub fn all_reals(&self) -> Result<Vec<Real>> {
        let map = self.reals_map()?;
        let mut reals = Vec::new();
        for (id, def) in map.iter().enumerate() {
            let def = def.map_err(map_err(map_names::REALS))?;
            if def.flags & RealDef::FLAG_ACTIVE != 0 {
                reals.push(Real { id: id as u32, def });
            }
        }
        Ok(reals)
    }

    fn reals_of(&self, vip_id: u32) -> Result<Vec<Real>> {
        let mut reals = self.all_reals()?;
        reals.retain(|r| r.def.vip_id == vip_id);
        reals.sort_by_key(|r| r.addr());
        Ok(reals)
    }

    /// The reals of `vip`, in address order.
    pub fn reals(&self, vip: &Vip) -> Result<Vec<Real>> {
        self.reals_of(self.vip(vip)?.vip_id)
    }

    /// The real with address `addr` in `vip`.
    pub fn real(&self, vip: &Vip, addr: IpAddr) -> Result<Real> {
        self.reals(vip)?
            .into_iter()
            .find(|r| r.addr() == addr)
            .ok_or(BalancerError::RealNotFound { vip: *vip, addr })
    }

    /// Adds a real to a VIP and switches the VIP to the new Maglev table.
    pub fn add_real(&mut self, vip: &Vip, spec: &RealSpec) -> Result<Real> {
        let meta = self.vip(vip)?;
        if spec.addr.is_ipv4() != vip.addr.is_ipv4() {
            return Err(BalancerError::FamilyMismatch {
                vip: *vip,
                addr: spec.addr,
            });
        }
        let all = self.all_reals()?;
        if all
            .iter()
            .any(|r| r.def.vip_id == meta.vip_id && r.addr() == spec.addr)
        {
            return Err(BalancerError::RealExists {
                vip: *vip,
                addr: spec.addr,
            });
        }
        let id = (1..MAX_REALS)
            .find(|id| all.iter().all(|r| r.id != *id))
            .ok_or(BalancerError::RealsFull)?;
        let tx_port = match spec.egress_ifindex {
            None => TX_PORT_SAME_IFACE,
            Some(ifindex) => self.tx_port_for(ifindex)?,
        };
        let previous = self
            .reals_map()?
            .get(&id, 0)
            .map_err(map_err(map_names::REALS))?;
        let (addr, family) = encode_addr(spec.addr);
        let def = RealDef {
            addr,
            mac: spec.mac.0,
            src_mac: spec.src_mac.0,
            tx_port,
            generation: previous.generation.wrapping_add(1),
            flags: RealDef::FLAG_ACTIVE,
            vip_id: meta.vip_id,
            weight: spec.weight,
            family,
            encap: spec.encap.number(),
            _pad: [0; 2],
        };
        self.reset_counters(map_names::REAL_STATS, id)?;
        self.write_real(id, def)?;
        let real = Real { id, def };
        if let Err(e) = self.publish_table(vip, meta) {
            // Leave nothing half-applied: the real was never in a published table.
            self.write_real(id, RealDef { flags: 0, ..def })?;
            return Err(e);
        }
        Ok(real)
    }

    /// Changes a real's weight (0 drains it: established flows stay, new flows avoid it).
    pub fn set_weight(&mut self, vip: &Vip, addr: IpAddr, weight: u32) -> Result<Real> {
        self.update_real(vip, addr, |def| RealDef { weight, ..def })
    }

    /// Changes how frames reach a real (its established flows stay with it).
    pub fn set_encap(&mut self, vip: &Vip, addr: IpAddr, spec: &RealSpec) -> Result<Real> {
        let tx_port = match spec.egress_ifindex {
            None => TX_PORT_SAME_IFACE,
            Some(ifindex) => self.tx_port_for(ifindex)?,
        };
        self.update_real(vip, addr, |def| RealDef {
            encap: spec.encap.number(),
            mac: spec.mac.0,
            src_mac: spec.src_mac.0,
            tx_port,
            ..def
        })
    }

    /// Changes the MAC forwarded frames to a real are sent to (the real's NIC was replaced).
    pub fn set_mac(&mut self, vip: &Vip, addr: IpAddr, mac: Mac) -> Result<Real> {
        self.update_real(vip, addr, |def| RealDef { mac: mac.0, ..def })
    }

    /// Marks a real down (its health check failed: drained, its weight kept) or up again.
    pub fn set_down(&mut self, vip: &Vip, addr: IpAddr, down: bool) -> Result<Real> {
        self.update_real(vip, addr, |def| RealDef {
            flags: if down {
                def.flags | RealDef::FLAG_DOWN
            } else {
                def.flags & !RealDef::FLAG_DOWN
            },
            ..def
        })
    }

    /// Rewrites a real's definition and publishes the VIP's new table; on failure the old
    /// definition is restored.
    fn update_real(
        &mut self,
        vip: &Vip,
        addr: IpAddr,
        change: impl FnOnce(RealDef) -> RealDef,
    ) -> Result<Real> {
        let meta = self.vip(vip)?;
        let real = self.real(vip, addr)?;
        let def = change(real.def);
        if def == real.def {
            return Ok(real);
        }
        // The new table is built and written to the spare ring before the real's definition
        // changes, so readers of both (real list, /metrics) see them disagree only for the
        // two map updates in between, not for the time the table takes to build.
        let mut reals = self.reals_of(meta.vip_id)?;
        for r in reals.iter_mut().filter(|r| r.id == real.id) {
            r.def = def;
        }
        let table = Self::build_table(vip, &reals)?;
        let spare = self.write_spare_ring(meta, &table)?;
        self.write_real(real.id, def)?;
        if let Err(e) = self.switch_ring(vip, meta, spare) {
            self.write_real(real.id, real.def)?;
            return Err(e);
        }
        Ok(Real { id: real.id, def })
    }

    /// Removes a real from a VIP: the VIP switches to a table without it, and its flows'
    /// next packets are placed anew.
    pub fn del_real(&mut self, vip: &Vip, addr: IpAddr) -> Result<()> {
        let meta = self.vip(vip)?;
        let real = self.real(vip, addr)?;
        let def = RealDef {
            flags: 0,
            ..real.def
        };
        self.write_real(real.id, def)?;
        if let Err(e) = self.publish_table(vip, meta) {
            self.write_real(real.id, real.def)?;
            return Err(e);
        }
        self.free_real(Real { id: real.id, def })
    }

    /// Marks a slot free with a new generation, so that stale flow entries miss.
    fn free_real(&mut self, real: Real) -> Result<()> {
        let def = RealDef {
            flags: 0,
            generation: real.def.generation.wrapping_add(1),
            ..real.def
        };
        self.write_real(real.id, def)
    }

    fn write_real(&mut self, id: u32, def: RealDef) -> Result<()> {
        let mut map = Array::<_, RealDef>::try_from(self.map_mut(map_names::REALS)?)
            .map_err(map_err(map_names::REALS))?;
        map.set(id, def, 0).map_err(map_err(map_names::REALS))
    }

    /// The devmap slot that redirects to `ifindex`, adding one when needed.
    fn tx_port_for(&mut self, ifindex: u32) -> Result<u32> {
        let mut map = DevMap::try_from(self.map_mut(map_names::TX_PORTS)?)
            .map_err(map_err(map_names::TX_PORTS))?;
        let mut free = None;
        for slot in 1..MAX_TX_PORTS {
            match map.get(slot, 0) {
                Ok(v) if v.if_index == ifindex => return Ok(slot),
                Ok(v) if v.if_index == 0 => free = free.or(Some(slot)),
                Ok(_) => {}
                Err(MapError::KeyNotFound) => free = free.or(Some(slot)),
                Err(e) => return Err(map_err(map_names::TX_PORTS)(e)),
            }
        }
        let slot = free.ok_or(BalancerError::TxPortsFull)?;
        map.set(slot, ifindex, None, 0).map_err(|e| match e {
            aya::maps::xdp::XdpMapError::MapError(e) => map_err(map_names::TX_PORTS)(e),
            other => BalancerError::TxPort(Box::new(other)),
        })?;
        Ok(slot)
    }

    /// The Maglev table `vip` should have now, computed from its reals.
    pub fn maglev_table(&self, vip: &Vip) -> Result<Vec<u32>> {
        let reals = self.reals(vip)?;
        Self::build_table(vip, &reals)
    }

    /// The Maglev table the program uses for `vip` right now, read from the map.
    pub fn active_table(&self, vip: &Vip) -> Result<Vec<u32>> {
        let meta = self.vip(vip)?;
        let name = map_names::RINGS;
        let ring = Array::<_, Ring>::try_from(self.map(name)?)
            .map_err(map_err(name))?
            .get(&meta.ring, 0)
            .map_err(map_err(name))?;
        Ok(ring.to_vec())
    }

    /// A digest of the table the program uses for `vip`, over the address of each slot's
    /// real (ids are local to a front, addresses are not): two fronts with the same digest
    /// send every new flow of the VIP to the same real. xxh64, as 16 hex digits.
    pub fn table_digest(&self, vip: &Vip) -> Result<String> {
        let addrs: std::collections::HashMap<u32, [u8; 16]> = self
            .reals(vip)?
            .iter()
            .map(|r| {
                let octets = match r.addr() {
                    IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                    IpAddr::V6(a) => a.octets(),
                };
                (r.id, octets)
            })
            .collect();
        let mut hasher = xxhash_rust::xxh64::Xxh64::new(0);
        for id in self.active_table(vip)? {
            hasher.update(addrs.get(&id).unwrap_or(&[0; 16]));
        }
        Ok(format!("{:016x}", hasher.digest()))
    }

    /// The table for `reals`: reals with weight 0 or down get no slot. When every real with
    /// a weight is down, the down ones keep their slots (fail open, like Envoy's panic mode):
    /// a VIP whose health checks all fail at once more likely has a broken check than no
    /// working server, and dropping all its new flows would make that certain.
    fn build_table(vip: &Vip, reals: &[Real]) -> Result<Vec<u32>> {
        let keys: Vec<Vec<u8>> = reals.iter().map(Real::maglev_key).collect();
        let fail_open = reals.iter().all(|r| r.effective_weight() == 0);
        let members: Vec<MaglevReal<'_>> = reals
            .iter()
            .zip(&keys)
            .map(|(r, key)| MaglevReal {
                key,
                id: r.id,
                weight: if fail_open {
                    r.def.weight
                } else {
                    r.effective_weight()
                },
            })
            .collect();
        maglev::build_table(&members, RING_SIZE)
            .map_err(|source| BalancerError::Maglev { vip: *vip, source })
    }

    /// Writes the VIP's table into its spare ring, then points the VIP at it.
    fn publish_table(&mut self, vip: &Vip, meta: VipMeta) -> Result<()> {
        let table = Self::build_table(vip, &self.reals_of(meta.vip_id)?)?;
        let spare = self.write_spare_ring(meta, &table)?;
        self.switch_ring(vip, meta, spare)
    }

    /// Writes `table` into the VIP's ring that the program does not use; returns its index.
    fn write_spare_ring(&mut self, meta: VipMeta, table: &[u32]) -> Result<u32> {
        let spare = meta.vip_id * 2 + (1 - meta.ring % 2);
        self.write_ring(spare, table)?;
        Ok(spare)
    }

    /// Points the VIP at ring `ring`: one map update.
    fn switch_ring(&mut self, vip: &Vip, meta: VipMeta, ring: u32) -> Result<()> {
        let mut map = HashMap::<_, VipKey, VipMeta>::try_from(self.map_mut(map_names::VIPS)?)
            .map_err(map_err(map_names::VIPS))?;
        map.insert(
            vip.key(),
            VipMeta {
                vip_id: meta.vip_id,
                ring,
            },
            0,
        )
        .map_err(map_err(map_names::VIPS))
    }

    fn write_ring(&mut self, index: u32, table: &[u32]) -> Result<()> {
        let ring: Box<Ring> = table
            .to_vec()
            .into_boxed_slice()
            .try_into()
            .map_err(|_| BalancerError::Missing("Maglev table of the right size"))?;
        let mut map = Array::<_, Ring>::try_from(self.map_mut(map_names::RINGS)?)
            .map_err(map_err(map_names::RINGS))?;
        map.set(index, ring, 0).map_err(map_err(map_names::RINGS))
    }

    /// The real a new flow from `src` to `vip` gets, by the same hash and table as the program
    /// (`None` when the VIP has no real with a weight).
    pub fn lookup(&self, vip: &Vip, src: SocketAddr) -> Result<Option<Real>> {
        if src.is_ipv4() != vip.addr.is_ipv4() {
            return Err(BalancerError::LookupFamily { vip: *vip, src });
        }
        let reals = self.reals(vip)?;
        let table = Self::build_table(vip, &reals)?;
        let key = flow_key(src, vip);
        let id = table[(flow_hash(&key) % RING_SIZE) as usize];
        Ok(reals.into_iter().find(|r| r.id == id))
    }

    fn reset_counters(&mut self, name: &'static str, index: u32) -> Result<()> {
        let zeros = PerCpuValues::try_from(vec![TrafficCounters::default(); self.nr_cpus])
            .map_err(BalancerError::Cpus)?;
        let mut map = PerCpuArray::<_, TrafficCounters>::try_from(self.map_mut(name)?)
            .map_err(map_err(name))?;
        map.set(index, zeros, 0).map_err(map_err(name))
    }

    fn traffic(&self, name: &'static str, index: u32) -> Result<TrafficCounters> {
        let map =
            PerCpuArray::<_, TrafficCounters>::try_from(self.map(name)?).map_err(map_err(name))?;
        let values = map.get(&index, 0).map_err(map_err(name))?;
        Ok(values
            .iter()
            .fold(TrafficCounters::default(), |sum, c| TrafficCounters {
                packets: sum.packets + c.packets,
                bytes: sum.bytes + c.bytes,
            }))
    }

    /// Packets and bytes sent to a VIP (summed over CPUs).
    pub fn vip_traffic(&self, vip_id: u32) -> Result<TrafficCounters> {
        self.traffic(map_names::VIP_STATS, vip_id)
    }

    /// Packets and bytes forwarded to a real (summed over CPUs).
    pub fn real_traffic(&self, real_id: u32) -> Result<TrafficCounters> {
        self.traffic(map_names::REAL_STATS, real_id)
    }

    /// The global counters (summed over CPUs), indexed by [`GlobalCounter`].
    pub fn global_counters(&self) -> Result<[u64; GlobalCounter::COUNT as usize]> {
        let name = map_names::GLOBAL_STATS;
        let map = PerCpuArray::<_, u64>::try_from(self.map(name)?).map_err(map_err(name))?;
        let mut out = [0u64; GlobalCounter::COUNT as usize];
        for (slot, counter) in out.iter_mut().zip(GlobalCounter::ALL) {
            let values = map.get(&(counter as u32), 0).map_err(map_err(name))?;
            *slot = values.iter().sum();
        }
        Ok(out)
    }

    /// Flows in the connection tables (IPv4 and IPv6).
    pub fn conn_count(&self) -> Result<usize> {
        let count = |name: &'static str| -> Result<usize> {
            let map = self.map(name)?;
            Ok(match name {
                map_names::CONN_TABLE_V4 => {
                    HashMap::<_, FlowKeyV4, common::ConnValue>::try_from(map)
                        .map_err(map_err(name))?
                        .keys()
                        .filter(|k| k.is_ok())
                        .count()
                }
                _ => HashMap::<_, FlowKey, common::ConnValue>::try_from(map)
                    .map_err(map_err(name))?
                    .keys()
                    .filter(|k| k.is_ok())
                    .count(),
            })
        };
        Ok(count(map_names::CONN_TABLE)? + count(map_names::CONN_TABLE_V4)?)
    }

    /// The real recorded for a flow in its family's connection table, if any.
    pub fn conn(&self, key: &FlowKey) -> Result<Option<common::ConnValue>> {
        let found = if key.family == common::FAMILY_V4 {
            let name = map_names::CONN_TABLE_V4;
            HashMap::<_, FlowKeyV4, common::ConnValue>::try_from(self.map(name)?)
                .map_err(map_err(name))?
                .get(&key.v4(), 0)
                .map_err(|e| (name, e))
        } else {
            let name = map_names::CONN_TABLE;
            HashMap::<_, FlowKey, common::ConnValue>::try_from(self.map(name)?)
                .map_err(map_err(name))?
                .get(key, 0)
                .map_err(|e| (name, e))
        };
        match found {
            Ok(v) => Ok(Some(v)),
            Err((_, MapError::KeyNotFound)) => Ok(None),
            Err((name, e)) => Err(map_err(name)(e)),
        }
    }
}

/// The connection-table key of a flow from `src` to `vip`.
pub fn flow_key(src: SocketAddr, vip: &Vip) -> FlowKey {
    let (src_words, family) = encode_addr(src.ip());
    let (dst_words, _) = encode_addr(vip.addr.ip());
    FlowKey {
        src: src_words,
        dst: dst_words,
        src_port: src.port().to_be(),
        dst_port: vip.addr.port().to_be(),
        proto: vip.proto.number(),
        family,
        _pad: [0; 2],
    }
}
