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
/// ends in exactly one of the `Pass*`, `Drop*`, `Tx` or `Redirect` counters (see
/// [`GlobalCounter::is_outcome`]); the others count events on the way.
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
    /// An encapsulated frame with no next hop: the kernel's FIB has no route to the real, or
    /// no neighbour entry for the gateway (`l4-ctl real add` resolves it; traffic keeps it).
    DropNoRoute = 17,
    /// An encapsulated frame larger than the egress interface's MTU that cannot be answered
    /// with an ICMP error (IPv4 without DF or with options, or an ICMP error itself).
    DropTooBig = 18,
    /// No headroom in front of the frame for the outer headers.
    DropNoHeadroom = 19,
    /// Frames sent to their real inside an outer IPIP or GUE header.
    Encapsulated = 20,
    /// ICMP errors about a VIP's flow (fragmentation needed, packet too big, unreachable)
    /// sent to the real that holds the flow.
    IcmpToReal = 21,
    /// SYNs whose connection entry already named the real the Maglev table picks: the
    /// entry is left as it is.
    SynUnchanged = 22,
    /// New flows beyond the guard's rate (`new_flow_limit`): forwarded through the Maglev
    /// table but not recorded, so that a flood cannot evict established flows.
    NewFlowsUnrecorded = 23,
    /// Client packets that their encapsulation would take past the egress MTU, answered with
    /// an ICMP "fragmentation needed" / ICMPv6 "packet too big" (the reply leaves as `tx`).
    IcmpTooBigSent = 24,
}

impl GlobalCounter {
    /// Number of global counters (the size of the global counters array).
    pub const COUNT: u32 = 25;

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
        Self::DropNoRoute,
        Self::DropTooBig,
        Self::DropNoHeadroom,
        Self::Encapsulated,
        Self::IcmpToReal,
        Self::SynUnchanged,
        Self::NewFlowsUnrecorded,
        Self::IcmpTooBigSent,
    ];

    /// Whether this counter is a frame's final outcome (pass, drop, tx or redirect) rather
    /// than an event on the way: the outcome counters sum to the frames the program saw.
    pub const fn is_outcome(self) -> bool {
        (self as u32) <= Self::Redirect as u32
            || matches!(
                self,
                Self::DropNoRoute | Self::DropTooBig | Self::DropNoHeadroom
            )
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
            Self::DropNoRoute => "drop_no_route",
            Self::DropTooBig => "drop_too_big",
            Self::DropNoHeadroom => "drop_no_headroom",
            Self::Encapsulated => "encapsulated",
            Self::IcmpToReal => "icmp_to_real",
            Self::SynUnchanged => "syn_unchanged",
            Self::NewFlowsUnrecorded => "new_flows_unrecorded",
            Self::IcmpTooBigSent => "icmp_too_big_sent",
        }
    }
}

/// Index of each counter of the reals' decapsulator (a per-CPU array). Every frame it sees
/// ends in exactly one of them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapCounter {
    /// IPIP or GUE addressed to this real: the outer headers were stripped and the inner
    /// packet handed to the stack.
    Decapsulated = 0,
    /// Not encapsulated, or not addressed to one of the real's own addresses: passed
    /// untouched.
    Passed = 1,
    /// Encapsulated and addressed to the real, but the outer or inner header is cut short or
    /// inconsistent (lengths, versions, a GUE control message or unknown inner protocol):
    /// dropped.
    Malformed = 2,
    /// An outer IP fragment addressed to the real: the inner packet cannot be rebuilt here,
    /// so it is passed to the stack like any fragment.
    PassedFragment = 3,
}

impl DecapCounter {
    /// Number of decapsulator counters.
    pub const COUNT: u32 = 4;

    /// Every counter, in index order.
    pub const ALL: [DecapCounter; Self::COUNT as usize] = [
        Self::Decapsulated,
        Self::Passed,
        Self::Malformed,
        Self::PassedFragment,
    ];

    /// Stable snake_case name, used in `l4-ctl decap status` and as a metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Decapsulated => "decapsulated",
            Self::Passed => "passed",
            Self::Malformed => "malformed",
            Self::PassedFragment => "passed_fragment",
        }
    }
}
