//! The flow key and the flow hash. The program hashes every new flow with [`flow_hash`] to pick
//! its Maglev slot, and `l4-ctl lookup` calls the same function to predict that choice.

/// A flow's 5-tuple, as the key of the connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address: network-order bytes as native words (IPv4 in word 0).
    pub src: [u32; 4],
    /// Destination address (the VIP), same encoding.
    pub dst: [u32; 4],
    /// Source port, network byte order.
    pub src_port: u16,
    /// Destination port, network byte order.
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
    /// Always zero.
    pub _pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

/// An IPv4 flow's key in the IPv4 connection table: the same 5-tuple in 16 bytes. The kernel
/// hashes and compares map keys word by word, so a key less than half as long makes every
/// lookup cheaper (about a tenth of an established packet's cost, measured).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyV4 {
    /// Source address: the network-order bytes read as a native word.
    pub src: u32,
    /// Destination address (the VIP), same encoding.
    pub dst: u32,
    /// The source port's then the destination port's network-order bytes (the first four
    /// bytes of the TCP or UDP header), read as a native word.
    pub ports: u32,
    /// IP protocol number (the upper bytes zero).
    pub proto: u32,
}

const _: () = assert!(core::mem::size_of::<FlowKeyV4>() == 16);

impl FlowKey {
    /// The key of an IPv4 flow in the IPv4 connection table.
    #[inline(always)]
    pub fn v4(&self) -> FlowKeyV4 {
        let [s0, s1] = self.src_port.to_ne_bytes();
        let [d0, d1] = self.dst_port.to_ne_bytes();
        FlowKeyV4 {
            src: self.src[0],
            dst: self.dst[0],
            ports: u32::from_ne_bytes([s0, s1, d0, d1]),
            proto: self.proto as u32,
        }
    }
}

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;
/// Fixed seed: the hash must be the same in every process and on every front node.
const SEED: u32 = 0x646c_3721;

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// MurmurHash3 (x86, 32-bit) over the key's ten 32-bit words: cheap, loop-free after
/// unrolling (so the verifier sees straight-line code), and well mixed in the low bits that
/// `% RING_SIZE` uses.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    let mut h = SEED;
    h = mix(h, key.src[0]);
    h = mix(h, key.src[1]);
    h = mix(h, key.src[2]);
    h = mix(h, key.src[3]);
    h = mix(h, key.dst[0]);
    h = mix(h, key.dst[1]);
    h = mix(h, key.dst[2]);
    h = mix(h, key.dst[3]);
    h = mix(h, (key.src_port as u32) << 16 | key.dst_port as u32);
    h = mix(h, (key.proto as u32) << 8 | key.family as u32);
    h ^= 40;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}
