//! The front's Prometheus metrics: every name in one place.
//!
//! Traffic counters are read from the program's per-CPU maps at each scrape (a [`Snapshot`])
//! and exported as counters; configuration and health state as gauges; health-check events,
//! which only the daemon sees, as counters it keeps.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `dl7_l4_frames_total` | `outcome` | frames by final outcome (`tx`, `redirect`, `pass_*`, `drop_*`) |
//! | `dl7_l4_events_total` | `event` | `new_flows`, `conn_hits`, `conn_misses`, `ipv4_options`, `conn_insert_failed` |
//! | `dl7_l4_vip_packets_total`, `dl7_l4_vip_bytes_total` | `vip` | frames to the VIP that were forwarded or dropped for want of a real |
//! | `dl7_l4_real_packets_total`, `dl7_l4_real_bytes_total` | `vip`, `real` | frames forwarded to the real |
//! | `dl7_l4_real_weight` | `vip`, `real` | configured weight |
//! | `dl7_l4_real_up` | `vip`, `real` | 1 unless the health check took it down |
//! | `dl7_l4_real_table_share` | `vip`, `real` | fraction of the VIP's Maglev table (new flows' share) |
//! | `dl7_l4_vip_active_reals` | `vip` | reals that get new flows (weight > 0 and up) |
//! | `dl7_l4_health_checks_total` | `vip`, `real`, `result` | probes, `ok` or `fail` |
//! | `dl7_l4_health_transitions_total` | `vip`, `real`, `to` | state changes, `up` or `down` |
//! | `dl7_l4_front_drained` | | 1 after `l4-ctl front drain` (with `--announce`) |
//! | `dl7_l4_announced_addresses` | | VIP addresses announced now (with `--announce`) |
//! | `dl7_l4_vip_announced` | `address` | 1 while the address is announced, 0 once withdrawn |
//! | `dl7_l4_bird_up` | | 1 when BIRD's control socket answered the last query |
//! | `dl7_l4_bgp_session_up` | `protocol` | 1 while BIRD's BGP protocol is established |

use prometheus::{
    Encoder, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    core::Collector,
};

use crate::stats::{RealState, Snapshot};

/// What only the daemon sees, kept across scrapes: health checks, and with `--announce` the
/// announcements and BIRD's BGP sessions.
pub struct DaemonMetrics {
    registry: Registry,
    checks: IntCounterVec,
    transitions: IntCounterVec,
    /// With `--announce`.
    pub announce: Option<AnnounceMetrics>,
}

/// The announcement gauges.
pub struct AnnounceMetrics {
    pub drained: IntGauge,
    pub announced: IntGauge,
    pub vip_announced: IntGaugeVec,
    pub bird_up: IntGauge,
    pub bgp_session_up: IntGaugeVec,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn register(registry: &Registry, c: impl Collector + 'static) {
    registry
        .register(Box::new(c))
        .expect("metric names are unique");
}

impl DaemonMetrics {
    /// The daemon's metrics; the announcement gauges only when it announces.
    pub fn new(announce: bool) -> Self {
        let registry = Registry::new();
        let checks = counter_vec(
            "dl7_l4_health_checks_total",
            "Health-check probes of reals, by result.",
            &["vip", "real", "result"],
        );
        let transitions = counter_vec(
            "dl7_l4_health_transitions_total",
            "Health state changes of reals (to = up or down).",
            &["vip", "real", "to"],
        );
        register(&registry, checks.clone());
        register(&registry, transitions.clone());
        let announce = announce.then(|| {
            let gauge = |name: &str, help: &str| {
                let g = IntGauge::new(name, help).expect("valid metric definition");
                register(&registry, g.clone());
                g
            };
            let gauge_vec = |name: &str, help: &str, label: &str| {
                let g = IntGaugeVec::new(Opts::new(name, help), &[label])
                    .expect("valid metric definition");
                register(&registry, g.clone());
                g
            };
            AnnounceMetrics {
                drained: gauge(
                    "dl7_l4_front_drained",
                    "1 when the front is drained (`l4-ctl front drain`): its VIPs are withdrawn.",
                ),
                announced: gauge(
                    "dl7_l4_announced_addresses",
                    "VIP addresses this front announces now.",
                ),
                vip_announced: gauge_vec(
                    "dl7_l4_vip_announced",
                    "1 while the VIP address is announced, 0 once withdrawn.",
                    "address",
                ),
                bird_up: gauge(
                    "dl7_l4_bird_up",
                    "1 when BIRD's control socket answered the daemon's last query.",
                ),
                bgp_session_up: gauge_vec(
                    "dl7_l4_bgp_session_up",
                    "1 while the BGP protocol of BIRD is established.",
                    "protocol",
                ),
            }
        });
        DaemonMetrics {
            registry,
            checks,
            transitions,
            announce,
        }
    }

    /// Counts a probe.
    pub fn check(&self, vip: &str, real: &str, ok: bool) {
        let result = if ok { "ok" } else { "fail" };
        self.checks.with_label_values(&[vip, real, result]).inc();
    }

    /// Counts a state change.
    pub fn transition(&self, vip: &str, real: &str, up: bool) {
        let to = if up { "up" } else { "down" };
        self.transitions.with_label_values(&[vip, real, to]).inc();
    }
}

/// The text exposition of a snapshot plus the daemon's health counters.
pub fn render(snapshot: &Snapshot, health: Option<&DaemonMetrics>) -> String {
    let registry = Registry::new();
    let frames = counter_vec(
        "dl7_l4_frames_total",
        "Frames seen by the XDP program, by final outcome.",
        &["outcome"],
    );
    let events = counter_vec(
        "dl7_l4_events_total",
        "Events on the XDP program's way (flow-table hits and misses, new flows, ...).",
        &["event"],
    );
    for counter in common::GlobalCounter::ALL {
        let value = snapshot.global.get(counter.name()).copied().unwrap_or(0);
        let vec = if counter.is_outcome() {
            &frames
        } else {
            &events
        };
        vec.with_label_values(&[counter.name()]).inc_by(value);
    }
    let vip_packets = counter_vec(
        "dl7_l4_vip_packets_total",
        "Frames to the VIP (forwarded, or dropped for want of a real).",
        &["vip"],
    );
    let vip_bytes = counter_vec(
        "dl7_l4_vip_bytes_total",
        "Bytes of frames to the VIP.",
        &["vip"],
    );
    let real_packets = counter_vec(
        "dl7_l4_real_packets_total",
        "Frames forwarded to the real.",
        &["vip", "real"],
    );
    let real_bytes = counter_vec(
        "dl7_l4_real_bytes_total",
        "Bytes of frames forwarded to the real.",
        &["vip", "real"],
    );
    let gauge = |name: &str, help: &str, labels: &[&str]| {
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
    };
    let weight = gauge(
        "dl7_l4_real_weight",
        "Configured Maglev weight of the real (0 = drained).",
        &["vip", "real"],
    );
    let up = gauge(
        "dl7_l4_real_up",
        "1 unless the real's health check took it down.",
        &["vip", "real"],
    );
    let active = gauge(
        "dl7_l4_vip_active_reals",
        "Reals of the VIP that get new flows (weight > 0 and up).",
        &["vip"],
    );
    let share = GaugeVec::new(
        Opts::new(
            "dl7_l4_real_table_share",
            "Fraction of the VIP's Maglev table that names the real.",
        ),
        &["vip", "real"],
    )
    .expect("valid metric definition");
    for v in &snapshot.vips {
        let vip = v.vip.to_string();
        vip_packets.with_label_values(&[&vip]).inc_by(v.packets);
        vip_bytes.with_label_values(&[&vip]).inc_by(v.bytes);
        let mut n_active = 0;
        for r in &v.reals {
            let real = r.address.to_string();
            let labels = [vip.as_str(), real.as_str()];
            real_packets.with_label_values(&labels).inc_by(r.packets);
            real_bytes.with_label_values(&labels).inc_by(r.bytes);
            weight.with_label_values(&labels).set(i64::from(r.weight));
            up.with_label_values(&labels)
                .set(i64::from(r.state != RealState::Down));
            share.with_label_values(&labels).set(r.table_share);
            n_active += i64::from(r.state == RealState::Active);
        }
        active.with_label_values(&[&vip]).set(n_active);
    }
    register(&registry, frames);
    register(&registry, events);
    register(&registry, vip_packets);
    register(&registry, vip_bytes);
    register(&registry, real_packets);
    register(&registry, real_bytes);
    register(&registry, weight);
    register(&registry, up);
    register(&registry, active);
    register(&registry, share);
    let mut families = registry.gather();
    if let Some(health) = health {
        families.extend(health.registry.gather());
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .expect("encoding into a Vec cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}
