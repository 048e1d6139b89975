//! What the balancer and the reals' decapsulator both need to read and write headers: the
//! header sizes and numbers, bounds-checked access to the frame, and the IPv4 checksum.

use aya_ebpf::programs::XdpContext;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPV4_MIN_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const TCP_MIN_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
pub const IPPROTO_ICMP: u8 = 1;
/// IPv4 in IP (IPIP).
pub const IPPROTO_IPIP: u8 = 4;
/// IPv6 in IP.
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPV6_NEXTHDR_FRAGMENT: u8 = 44;
/// IPv4 "more fragments" flag and fragment offset bits.
pub const IPV4_FRAG_MASK: u16 = 0x3fff;
/// IPv4 "don't fragment" flag.
pub const IPV4_DF: u16 = 0x4000;

/// A pointer to `N` bytes at `offset`, or `None` when the frame is shorter.
#[inline(always)]
pub fn bytes_at<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<*mut [u8; N]> {
    let start = ctx.data();
    if start + offset + N > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut [u8; N])
}

#[inline(always)]
pub fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Four network-order bytes as the native word stored in keys (see `common`).
#[inline(always)]
pub fn word(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The checksum of an option-less IPv4 header whose checksum field (bytes 10-11) is zero.
#[inline(always)]
pub fn ipv4_checksum(header: &[u8; IPV4_MIN_HLEN]) -> u16 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < IPV4_MIN_HLEN {
        sum += be16(header, i) as u32;
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
