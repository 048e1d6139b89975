//! What to do with a frame on a real: strip an IPIP or GUE header addressed to one of the
//! real's own addresses, pass anything else. The same decision serves the XDP and the tc
//! program; each reads the frame its own way ([`Frame`]).

use common::{DecapAddrKey, DecapCounter, FAMILY_V4, FAMILY_V6, GUE_PORT, PROTO_UDP};
use l4_ebpf::headers::*;

use crate::DECAP_ADDRS;

/// Reads bytes of the frame at an offset (a copy, so that both hooks can implement it).
pub trait Frame {
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

/// The decision for one frame.
pub enum Verdict {
    /// Remove `strip` bytes after the Ethernet header; the inner packet is IPv6 when
    /// `inner_v6`.
    Decap { strip: usize, inner_v6: bool },
    /// Hand the frame to the stack as it is.
    Pass(DecapCounter),
    /// Drop it.
    Drop(DecapCounter),
}

/// GUE: the two version bits of the first byte after the UDP header. Variant 1 (`01`) is
/// an IP header directly (IPv4 starts `0100`, IPv6 `0110`); variant 0 (`00`) is a GUE header.
const GUE_VARIANT_MASK: u8 = 0xc0;
const GUE_VARIANT_0: u8 = 0x00;
const GUE_VARIANT_1: u8 = 0x40;
/// GUE variant 0: the control-message bit and the extension length (in 32-bit words).
const GUE_C_BIT: u8 = 0x20;
const GUE_HLEN_MASK: u8 = 0x1f;
const GUE_HEADER: usize = 4;

#[inline(always)]
fn ours(addr: [u32; 4], family: u8) -> bool {
    // The key as five words (the family in the low byte of the last, the padding zero): a
    // struct literal with its `[0; 3]` padding compiles to a call of a byte-wise memset.
    const _: () = assert!(core::mem::size_of::<DecapAddrKey>() == 20);
    let words = [addr[0], addr[1], addr[2], addr[3], u32::from(family)];
    // SAFETY: DecapAddrKey is 20 bytes of integers with no implicit padding, 4-aligned, laid
    // out as the address words, the family byte and three zero bytes (little-endian);
    // `words` is exactly that. Only tested for presence.
    unsafe { DECAP_ADDRS.get(&*(words.as_ptr() as *const DecapAddrKey)) }.is_some()
}

/// Decides for a frame whose EtherType is `ethertype`.
#[inline(always)]
pub fn classify<F: Frame>(frame: &F, ethertype: u16) -> Verdict {
    match ethertype {
        ETH_P_IPV4 => outer_v4(frame),
        ETH_P_IPV6 => outer_v6(frame),
        _ => Verdict::Pass(DecapCounter::Passed),
    }
}

#[inline(always)]
fn outer_v4<F: Frame>(frame: &F) -> Verdict {
    let Some(ip) = frame.read::<IPV4_MIN_HLEN>(ETH_HLEN) else {
        return Verdict::Pass(DecapCounter::Passed);
    };
    let proto = ip[9];
    if !(proto == IPPROTO_IPIP || proto == IPPROTO_IPV6 || proto == PROTO_UDP) {
        return Verdict::Pass(DecapCounter::Passed);
    }
    if ip[0] >> 4 != 4 || !ours([word(&ip, 16), 0, 0, 0], FAMILY_V4) {
        return Verdict::Pass(DecapCounter::Passed);
    }
    if be16(&ip, 6) & IPV4_FRAG_MASK != 0 {
        return Verdict::Pass(DecapCounter::PassedFragment);
    }
    let hlen = ((ip[0] & 0x0f) as usize) * 4;
    if hlen != IPV4_MIN_HLEN {
        // Options on an outer header: not something an encapsulating front sends; a UDP
        // packet with options is the stack's, an IPIP one cannot be stripped here.
        return if proto == PROTO_UDP {
            Verdict::Pass(DecapCounter::Passed)
        } else {
            Verdict::Drop(DecapCounter::Malformed)
        };
    }
    let Some(payload) = (be16(&ip, 2) as usize).checked_sub(IPV4_MIN_HLEN) else {
        return Verdict::Drop(DecapCounter::Malformed);
    };
    inner(frame, proto, IPV4_MIN_HLEN, payload)
}

#[inline(always)]
fn outer_v6<F: Frame>(frame: &F) -> Verdict {
    let Some(ip) = frame.read::<IPV6_HLEN>(ETH_HLEN) else {
        return Verdict::Pass(DecapCounter::Passed);
    };
    let next = ip[6];
    if !(next == IPPROTO_IPIP || next == IPPROTO_IPV6 || next == PROTO_UDP) {
        return Verdict::Pass(DecapCounter::Passed);
    }
    let dst = [word(&ip, 24), word(&ip, 28), word(&ip, 32), word(&ip, 36)];
    if ip[0] >> 4 != 6 || !ours(dst, FAMILY_V6) {
        return Verdict::Pass(DecapCounter::Passed);
    }
    inner(frame, next, IPV6_HLEN, be16(&ip, 4) as usize)
}

/// After an outer IP header of `outer` bytes whose payload is `payload` bytes long and of
/// protocol `proto`: IPIP directly, or UDP to the GUE port.
#[inline(always)]
fn inner<F: Frame>(frame: &F, proto: u8, outer: usize, payload: usize) -> Verdict {
    if proto != PROTO_UDP {
        let inner_v6 = proto == IPPROTO_IPV6;
        return checked(frame, outer, payload, inner_v6);
    }
    let Some(udp) = frame.read::<{ UDP_HLEN + GUE_HEADER }>(ETH_HLEN + outer) else {
        return Verdict::Pass(DecapCounter::Passed);
    };
    if be16(&udp, 2) != GUE_PORT {
        return Verdict::Pass(DecapCounter::Passed);
    }
    let udp_len = be16(&udp, 4) as usize;
    if udp_len < UDP_HLEN + GUE_HEADER || udp_len > payload {
        return Verdict::Drop(DecapCounter::Malformed);
    }
    let first = udp[UDP_HLEN];
    match first & GUE_VARIANT_MASK {
        GUE_VARIANT_1 => {
            let inner_v6 = first >> 4 == 6;
            checked(frame, outer + UDP_HLEN, udp_len - UDP_HLEN, inner_v6)
        }
        GUE_VARIANT_0 if first & GUE_C_BIT == 0 => {
            let extensions = ((first & GUE_HLEN_MASK) as usize) * 4;
            let header = GUE_HEADER + extensions;
            let inner_v6 = match udp[UDP_HLEN + 1] {
                IPPROTO_IPIP => false,
                IPPROTO_IPV6 => true,
                _ => return Verdict::Drop(DecapCounter::Malformed),
            };
            if udp_len < UDP_HLEN + header {
                return Verdict::Drop(DecapCounter::Malformed);
            }
            checked(
                frame,
                outer + UDP_HLEN + header,
                udp_len - UDP_HLEN - header,
                inner_v6,
            )
        }
        // A GUE control message, or a version this decapsulator does not know.
        _ => Verdict::Drop(DecapCounter::Malformed),
    }
}

/// The inner packet starts `strip` bytes after the Ethernet header and has `len` bytes: its
/// version must be the one announced and its own length must fit.
#[inline(always)]
fn checked<F: Frame>(frame: &F, strip: usize, len: usize, inner_v6: bool) -> Verdict {
    let Some(head) = frame.read::<6>(ETH_HLEN + strip) else {
        return Verdict::Drop(DecapCounter::Malformed);
    };
    let (version, inner_len) = if inner_v6 {
        (6, IPV6_HLEN + be16(&head, 4) as usize)
    } else {
        (4, be16(&head, 2) as usize)
    };
    let min = if inner_v6 { IPV6_HLEN } else { IPV4_MIN_HLEN };
    if head[0] >> 4 != version || inner_len < min || inner_len > len {
        return Verdict::Drop(DecapCounter::Malformed);
    }
    Verdict::Decap { strip, inner_v6 }
}
