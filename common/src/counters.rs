//! The program's counters. All are per-CPU (no atomics on the packet path); user space sums
//! the CPUs when it reads them.

/// Packets and bytes (whole frames, as received) for one VIP or one real.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    /// Frames.
    pub packets: u64,
    /// Bytes of those frames, Ethernet header included.
    pub bytes: u64,
}

/// Index of each global counter in the global per-CPU array. Every packet the program sees
/// ends in exactly one of the `Pass*`, `Drop*`, `Tx` or `Redirect` counters; `NewFlows`,
/// `ConnHits`, `ConnMisses`, `Ipv4Options` and `ConnInsertFailed` count events on the way.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalCounter {
    /// IP traffic not aimed at a VIP (address, port, protocol): passed to the kernel.
    PassNotVip = 0,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed to the kernel.
    PassNonIp = 1,
    /// 802.1Q/802.1ad tagged frames: passed to the kernel (dl7 balances untagged traffic).
    PassVlan = 2,
    /// ICMP or ICMPv6 (echo to a VIP address is answered by the front's kernel).
    PassIcmp = 3,
    /// Another L4 protocol, or IPv6 extension headers before TCP/UDP: passed to the kernel.
    PassOtherL4 = 4,
    /// Frame too short for the headers it announces.
    DropTruncated = 5,
    /// Bad IPv4 header length or total length, IPv6 payload length beyond the frame.
    DropMalformed = 6,
    /// An IP fragment aimed at a VIP address: no ports to balance on.
    DropFragment = 7,
    /// A VIP with no real to send to (none configured, or all drained and no flow entry).
    DropNoReal = 8,
    /// The devmap redirect to the real's egress interface failed.
    DropRedirectFailed = 9,
    /// Forwarded with XDP_TX out of the receiving interface.
    Tx = 10,
    /// Forwarded with a devmap redirect.
    Redirect = 11,
    /// New flows assigned a real through the Maglev table (SYNs and table misses).
    NewFlows = 12,
    /// Connection-table hits (non-SYN packets of known flows).
    ConnHits = 13,
    /// Connection-table misses (non-SYN packets of flows not in the table, or whose real is gone).
    ConnMisses = 14,
    /// IPv4 packets with options, forwarded normally.
    Ipv4Options = 15,
    /// Connection-table inserts that failed (the flow is still forwarded).
    ConnInsertFailed = 16,
}

impl GlobalCounter {
    /// Number of global counters (the size of the global counters array).
    pub const COUNT: u32 = 17;

    /// Every counter, in index order.
    pub const ALL: [GlobalCounter; Self::COUNT as usize] = [
        Self::PassNotVip,
        Self::PassNonIp,
        Self::PassVlan,
        Self::PassIcmp,
        Self::PassOtherL4,
        Self::DropTruncated,
        Self::DropMalformed,
        Self::DropFragment,
        Self::DropNoReal,
        Self::DropRedirectFailed,
        Self::Tx,
        Self::Redirect,
        Self::NewFlows,
        Self::ConnHits,
        Self::ConnMisses,
        Self::Ipv4Options,
        Self::ConnInsertFailed,
    ];

    /// Whether this counter is a frame's final outcome (pass, drop, tx or redirect) rather
    /// than an event on the way: the outcome counters sum to the frames the program saw.
    pub const fn is_outcome(self) -> bool {
        (self as u32) <= Self::Redirect as u32
    }

    /// Stable snake_case name, used in `l4-ctl stats` and as a metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PassNotVip => "pass_not_vip",
            Self::PassNonIp => "pass_non_ip",
            Self::PassVlan => "pass_vlan",
            Self::PassIcmp => "pass_icmp",
            Self::PassOtherL4 => "pass_other_l4",
            Self::DropTruncated => "drop_truncated",
            Self::DropMalformed => "drop_malformed",
            Self::DropFragment => "drop_fragment",
            Self::DropNoReal => "drop_no_real",
            Self::DropRedirectFailed => "drop_redirect_failed",
            Self::Tx => "tx",
            Self::Redirect => "redirect",
            Self::NewFlows => "new_flows",
            Self::ConnHits => "conn_hits",
            Self::ConnMisses => "conn_misses",
            Self::Ipv4Options => "ipv4_options",
            Self::ConnInsertFailed => "conn_insert_failed",
        }
    }
}
