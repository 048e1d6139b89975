//! The addresses an operator types (`10.0.0.1:80/tcp`, `[2001:db8::1]:443/udp`) and their
//! encodings in the program's maps (see the conventions in `common`).

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use common::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, RealDef, VipAddrKey, VipKey};

/// Transport protocol of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
        }
    }

    /// The protocol for an IP protocol number, if dl7 balances it.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            PROTO_TCP => Some(Proto::Tcp),
            PROTO_UDP => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// A virtual service: address, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vip {
    pub addr: SocketAddr,
    pub proto: Proto,
}

/// Why a VIP string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VipParseError {
    #[error("VIP `{0}` has no protocol: write ADDR:PORT/tcp or ADDR:PORT/udp")]
    MissingProto(String),
    #[error("VIP `{0}` has an unknown protocol `{1}`: use tcp or udp")]
    UnknownProto(String, String),
    #[error("VIP `{0}` is not ADDR:PORT (IPv6 as [ADDR]:PORT)")]
    BadAddress(String),
    #[error("VIP `{0}` has port 0")]
    PortZero(String),
}

impl FromStr for Vip {
    type Err = VipParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, proto) = s
            .rsplit_once('/')
            .ok_or_else(|| VipParseError::MissingProto(s.to_owned()))?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => return Err(VipParseError::UnknownProto(s.to_owned(), other.to_owned())),
        };
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| VipParseError::BadAddress(s.to_owned()))?;
        if addr.port() == 0 {
            return Err(VipParseError::PortZero(s.to_owned()));
        }
        Ok(Vip { addr, proto })
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{}/{proto}", self.addr)
    }
}

impl Vip {
    /// The key of this VIP in the program's VIP table.
    pub fn key(&self) -> VipKey {
        let (addr, family) = encode_addr(self.addr.ip());
        VipKey {
            addr,
            port: self.addr.port().to_be(),
            proto: self.proto.number(),
            family,
        }
    }

    /// The key of this VIP's address in the VIP-address set.
    pub fn addr_key(&self) -> VipAddrKey {
        let (addr, family) = encode_addr(self.addr.ip());
        VipAddrKey {
            addr,
            family,
            _pad: [0; 3],
        }
    }

    /// The VIP a key stands for (`None` for a key no VIP could have produced).
    pub fn from_key(key: &VipKey) -> Option<Self> {
        let ip = decode_addr(key.addr, key.family)?;
        let proto = Proto::from_number(key.proto)?;
        Some(Vip {
            addr: SocketAddr::new(ip, u16::from_be(key.port)),
            proto,
        })
    }
}

/// An address as the program's maps store it: network-order bytes read as native words.
pub fn encode_addr(ip: IpAddr) -> ([u32; 4], u8) {
    let mut words = [0u32; 4];
    match ip {
        IpAddr::V4(v4) => {
            words[0] = u32::from_ne_bytes(v4.octets());
            (words, FAMILY_V4)
        }
        IpAddr::V6(v6) => {
            for (word, chunk) in words.iter_mut().zip(v6.octets().chunks_exact(4)) {
                *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
            (words, FAMILY_V6)
        }
    }
}

/// The inverse of [`encode_addr`].
pub fn decode_addr(words: [u32; 4], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::from(words[0].to_ne_bytes())),
        FAMILY_V6 => {
            let mut octets = [0u8; 16];
            for (chunk, word) in octets.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            Some(IpAddr::from(octets))
        }
        _ => None,
    }
}

/// How the front sends a real its frames (`--encap`, `encap = ".."`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Encap {
    /// MAC rewrite: the real shares a layer-2 segment with the front.
    #[default]
    L2,
    /// IPv4 in IPv4 or IPv6 in IPv6, to a real anywhere the front's routes reach.
    Ipip,
    /// IP in UDP (GUE variant 1, port 6080): like ipip, and the UDP source port spreads flows
    /// over the real's receive queues.
    Gue,
}

impl Encap {
    /// The value stored in `RealDef::encap`.
    pub fn number(self) -> u8 {
        match self {
            Encap::L2 => RealDef::ENCAP_L2,
            Encap::Ipip => RealDef::ENCAP_IPIP,
            Encap::Gue => RealDef::ENCAP_GUE,
        }
    }

    /// The method a stored `RealDef::encap` names (l4-ctl writes no other values; an unknown
    /// one reads as L2 here, while the program would encapsulate it as IPIP).
    pub fn from_number(n: u8) -> Self {
        match n {
            RealDef::ENCAP_IPIP => Encap::Ipip,
            RealDef::ENCAP_GUE => Encap::Gue,
            _ => Encap::L2,
        }
    }

    /// Whether frames to the real get an outer header (and a next hop from the FIB).
    pub fn is_tunnel(self) -> bool {
        self != Encap::L2
    }
}

impl fmt::Display for Encap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encap::L2 => "l2",
            Encap::Ipip => "ipip",
            Encap::Gue => "gue",
        })
    }
}

impl FromStr for Encap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "l2" => Ok(Encap::L2),
            "ipip" => Ok(Encap::Ipip),
            "gue" => Ok(Encap::Gue),
            other => Err(format!(
                "{other:?} is not a forwarding method: use l2, ipip or gue"
            )),
        }
    }
}

/// A MAC address, `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

/// Why a MAC string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("MAC address `{0}` is not six hex bytes separated by `:` (e.g. 02:00:00:00:00:01)")]
pub struct MacParseError(pub String);

impl FromStr for Mac {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_owned());
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_parses_v4_and_v6_and_round_trips_through_its_key() {
        for text in ["10.0.0.1:80/tcp", "[2001:db8::1]:443/udp"] {
            let vip: Vip = text.parse().unwrap();
            assert_eq!(vip.to_string(), text);
            assert_eq!(Vip::from_key(&vip.key()), Some(vip));
        }
        let vip: Vip = "10.0.0.1:80/TCP".parse().unwrap();
        assert_eq!(vip.key().port, 80u16.to_be());
        assert_eq!(vip.key().addr[0].to_ne_bytes(), [10, 0, 0, 1]);
    }

    #[test]
    fn vip_rejects_bad_input() {
        assert!(matches!(
            "10.0.0.1:80".parse::<Vip>(),
            Err(VipParseError::MissingProto(_))
        ));
        assert!(matches!(
            "10.0.0.1:80/sctp".parse::<Vip>(),
            Err(VipParseError::UnknownProto(..))
        ));
        assert!(matches!(
            "10.0.0.300:80/tcp".parse::<Vip>(),
            Err(VipParseError::BadAddress(_))
        ));
        assert!(matches!(
            "2001:db8::1:80/tcp".parse::<Vip>(),
            Err(VipParseError::BadAddress(_))
        ));
        assert!(matches!(
            "10.0.0.1:0/tcp".parse::<Vip>(),
            Err(VipParseError::PortZero(_))
        ));
    }

    #[test]
    fn mac_parses_and_rejects() {
        let mac: Mac = "02:00:0a:ff:00:01".parse().unwrap();
        assert_eq!(mac.0, [2, 0, 0x0a, 0xff, 0, 1]);
        assert_eq!(mac.to_string(), "02:00:0a:ff:00:01");
        for bad in [
            "",
            "02:00:0a:ff:00",
            "02:00:0a:ff:00:01:02",
            "02:00:0a:ff:00:zz",
            "020:0:0:0:0:0",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
