//! `l7-sidecar serve --members-from`: sidecars that follow the membership a front serves
//! (`support::front` stands in for `l4-ctl daemon`'s `GET /members`). What is checked: the
//! sidecars route by the front's reals with the scheme's owners; a real that joins gets its
//! keys within a few intervals with no failed request under load; a real the front reports
//! down loses its keys to the scheme's next candidate and gets them back; a front that stops
//! answering leaves the membership as it was while its age grows, and the next front listed
//! is followed; before any front answers a sidecar serves everything itself; SIGHUP changes
//! the scheme but the members keep coming from the front, until `members-from` is removed.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::client::{Client, get};
use support::front::{Front, Real, active};
use support::process::Sidecar;
use support::{
    Origin, SteadyLoad, TempDir, candidates, common_port, free_addrs, ip, owner, wait_for,
};

/// The VIP the sidecars follow, and another one the front also serves.
const VIP: &str = "10.214.0.100:80/tcp";
const OTHER_VIP: &str = "10.214.0.101:80/tcp";
/// How long a change may take to reach every sidecar (the interval is 200ms).
const SETTLE: Duration = Duration::from_secs(5);

/// Sidecars on `127.0.NET.11..` whose members come from fronts; every peer listener is on
/// the same port (the front lists addresses only).
struct Followers {
    sidecars: Vec<Sidecar>,
    /// Each sidecar's address as the front lists it (its member name).
    ips: Vec<String>,
    origin: Origin,
    fronts: Vec<String>,
    dir: TempDir,
}

impl Followers {
    fn start(net: u8, n: usize, fronts: &[&Front]) -> Followers {
        let dir = support::temp_dir("members-from");
        let origin = support::start_origin(ip(net, 1));
        let hosts: Vec<Ipv4Addr> = (0..n).map(|i| ip(net, 11 + i as u8)).collect();
        let port = common_port(&hosts);
        let fronts: Vec<String> = fronts.iter().map(|f| f.url()).collect();
        let mut followers = Followers {
            sidecars: Vec::new(),
            ips: hosts.iter().map(ToString::to_string).collect(),
            origin,
            fronts,
            dir,
        };
        for (i, &host) in hosts.iter().enumerate() {
            let config = followers.config(i);
            followers.write_config(i, "ketama");
            let [listen, metrics] = free_addrs(host);
            let peer = SocketAddr::from((host, port));
            let args: Vec<String> = [
                "serve",
                "--config",
                &config.display().to_string(),
                "--listen",
                &listen.to_string(),
                "--peer-listen",
                &peer.to_string(),
                "--metrics",
                &metrics.to_string(),
                "--threads",
                "2",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            let log = followers.dir.path().join(format!("s{i}.log"));
            followers
                .sidecars
                .push(Sidecar::start(&args, listen, Some(peer), metrics, log));
        }
        followers
    }

    fn config(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("s{i}.toml"))
    }

    /// Sidecar `i`'s file: following the fronts with `scheme` (no relay cache, so that the
    /// owners answer every request).
    fn write_config(&self, i: usize, scheme: &str) {
        let fronts: Vec<String> = self.fronts.iter().map(|f| format!("\"{f}\"")).collect();
        let text = format!(
            "origin = \"{}\"\nscheme = \"{scheme}\"\nrelay-cache-bytes = 0\n\
             members-from = [{}]\nmembers-vip = \"{VIP}\"\nmembers-interval = \"200ms\"\n",
            self.origin.url(),
            fronts.join(", ")
        );
        std::fs::write(self.config(i), text).expect("write config");
    }

    /// The member names `indexes` (into `ips`), as the scheme sees them.
    fn names(&self, indexes: &[usize]) -> Vec<String> {
        indexes.iter().map(|&i| self.ips[i].clone()).collect()
    }

    /// Waits until every sidecar has applied `generation` with `members` members.
    fn settle(&self, generation: u64, members: usize) {
        for s in &self.sidecars {
            let applied = wait_for(SETTLE, || {
                let m = s.metrics();
                m.series("dl7_l7_membership_generation") == generation as f64
                    && m.series("dl7_l7_members") == members as f64
            });
            assert!(
                applied,
                "generation {generation} with {members} members not applied: {}",
                s.log_text()
            );
        }
    }
}

/// Forwards from `s` to the member at `peer` so far.
fn forwards(s: &Sidecar, peer: &str) -> f64 {
    s.metric(&format!("dl7_l7_peer_forwards_total{{peer=\"{peer}\"}}"))
}

/// Requests `s` answered itself so far.
fn local(s: &Sidecar) -> f64 {
    s.metric("dl7_l7_requests_total{route=\"local\"}")
}

/// The first `count` keys `/obj/<tag>-<i>` for which `wanted(key)` holds.
fn keys(tag: &str, count: usize, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let found: Vec<String> = (0..10_000)
        .map(|i| format!("/obj/{tag}-{i}?size=200"))
        .filter(|k| wanted(k))
        .take(count)
        .collect();
    assert_eq!(found.len(), count, "keys for {tag}");
    found
}

/// GETs every key through `s`, each answered 200 with its body.
fn get_all(s: &Sidecar, keys: &[String]) {
    let mut client = Client::connect(s.listen);
    for k in keys {
        let r = client.get(k);
        assert_eq!((r.status, r.body.len()), (200, 200), "{k}");
    }
}

#[test]
fn sidecars_follow_the_fronts_membership_without_dropping_requests() {
    let net = 160;
    let (front, spare) = (Front::start(ip(net, 2)), Front::start(ip(net, 3)));
    let [a, b, c] = [11, 12, 13].map(|h| ip(net, h).to_string());
    let drained = Real {
        address: "10.214.0.99",
        weight: 0,
        state: "drained",
    };
    let other: &[Real<'_>] = &[active("10.214.0.98")];
    front.serve(
        100,
        &[
            (VIP, &[active(&a), active(&b), drained]),
            (OTHER_VIP, other),
        ],
    );
    let f = Followers::start(net, 3, &[&front, &spare]);
    let (s0, s2) = (&f.sidecars[0], &f.sidecars[2]);

    // (a) Two members, the reals of the VIP followed; the third sidecar is not one of them
    // and owns nothing.
    f.settle(100, 2);
    let two = f.names(&[0, 1]);
    let theirs = keys("a-b", 5, |k| owner("ketama", &two, k) == 1);
    let ours = keys("a-a", 5, |k| owner("ketama", &two, k) == 0);
    let before = (forwards(s0, &b), local(s0));
    get_all(s0, &theirs);
    get_all(s0, &ours);
    assert_eq!(forwards(s0, &b), before.0 + 5.0, "{b}'s keys went to {b}");
    assert_eq!(local(s0), before.1 + 5.0, "{a}'s keys stayed on {a}");
    let before = forwards(s2, &a);
    get_all(s2, &ours);
    assert_eq!(forwards(s2, &a), before + 5.0, "a non-member forwards");
    assert_eq!(
        s0.metric(&format!(
            "dl7_l7_membership_source{{url=\"{}\"}}",
            front.url()
        )),
        1.0
    );
    assert_eq!(
        s0.metric(&format!(
            "dl7_l7_membership_source{{url=\"{}\"}}",
            spare.url()
        )),
        0.0
    );

    // (b) A third real joins under a steady request loop: no request fails.
    let entries = [f.sidecars[0].listen, f.sidecars[1].listen];
    let load = SteadyLoad::start(&entries, 4, 5_000, "load-", 500);
    assert!(wait_for(SETTLE, || load.done() >= 200), "the load runs");
    front.serve(
        200,
        &[(VIP, &[active(&a), active(&b), active(&c), drained])],
    );
    let swapped_at = load.done();
    f.settle(200, 3);
    // Some more load on the new table, then stop.
    let settled_at = load.done();
    assert!(wait_for(SETTLE, || load.done() >= settled_at + 200));
    let (total, failed) = load.stop();
    eprintln!("member joined after {swapped_at} of {total} GETs: {failed} failed");
    assert!(swapped_at < total, "the swap happened under load");
    assert_eq!(failed, 0, "GETs failed while the membership changed");
    let three = f.names(&[0, 1, 2]);
    let joined = keys("b-c", 5, |k| owner("ketama", &three, k) == 2);
    let before = (forwards(s0, &c), local(s2));
    get_all(s0, &joined);
    assert_eq!(
        forwards(s0, &c),
        before.0 + 5.0,
        "the new member's keys go to it"
    );
    assert_eq!(local(s2), before.1 + 5.0);
    assert!(s0.metric("dl7_l7_membership_updates_total") >= 2.0);

    // (c) The front reports b down: its keys go to the scheme's next candidate, and back when
    // it is active again; it stays in the ring meanwhile.
    let down = Real {
        address: &b,
        weight: 1,
        state: "down",
    };
    front.serve(300, &[(VIP, &[active(&a), down, active(&c)])]);
    f.settle(300, 3);
    let front_down = format!("dl7_l7_peer_front_down{{peer=\"{b}\"}}");
    assert!(
        wait_for(SETTLE, || s0.metric(&front_down) == 1.0),
        "{b} not marked down: {}",
        s0.log_text()
    );
    let to_c = keys("c-bc", 4, |k| {
        candidates("ketama", &three, k)[..2] == [1, 2]
    });
    let to_a = keys("c-ba", 4, |k| {
        candidates("ketama", &three, k)[..2] == [1, 0]
    });
    let before = (forwards(s0, &b), forwards(s0, &c), local(s0));
    get_all(s0, &to_c);
    get_all(s0, &to_a);
    assert_eq!(
        forwards(s0, &b),
        before.0,
        "nothing went to the down member"
    );
    assert_eq!(
        forwards(s0, &c),
        before.1 + 4.0,
        "the next candidate took them"
    );
    assert_eq!(local(s0), before.2 + 4.0, "this server as next candidate");
    front.serve(400, &[(VIP, &[active(&a), active(&b), active(&c)])]);
    f.settle(400, 3);
    assert!(wait_for(SETTLE, || s0.metric(&front_down) == 0.0));
    let before = forwards(s0, &b);
    get_all(s0, &to_c);
    assert_eq!(forwards(s0, &b), before + 4.0, "its keys are back");

    // (d) The front stops answering: the membership stays and grows old; then the next
    // front listed answers (its generations are its own) and is followed.
    let unreachable = "dl7_l7_membership_errors_total{reason=\"unreachable\"}";
    let errors = s0.metric(unreachable);
    let logged = format!("members-from {}: unreachable", front.url());
    let lines = s0.log_text().matches(&logged).count();
    front.hang();
    assert!(
        wait_for(SETTLE, || s0.metric(unreachable) >= errors + 4.0
            && s0.metric("dl7_l7_membership_age_seconds") >= 1.0),
        "no timeouts counted: {}",
        s0.log_text()
    );
    assert_eq!(s0.metric("dl7_l7_members"), 3.0);
    assert_eq!(s0.metric("dl7_l7_membership_generation"), 400.0);
    let before = forwards(s0, &c);
    get_all(s0, &joined);
    assert_eq!(
        forwards(s0, &c),
        before + 5.0,
        "the old membership still routes"
    );
    spare.serve(7, &[(VIP, &[active(&a), active(&b)])]);
    f.settle(7, 2);
    assert!(spare.answered() > 0);
    assert_eq!(
        s0.metric(&format!(
            "dl7_l7_membership_source{{url=\"{}\"}}",
            spare.url()
        )),
        1.0
    );
    assert_eq!(
        s0.metric(&format!(
            "dl7_l7_membership_source{{url=\"{}\"}}",
            front.url()
        )),
        0.0
    );
    assert!(s0.metric("dl7_l7_membership_age_seconds") < 1.0);
    let back = keys("d-b", 5, |k| owner("ketama", &two, k) == 1);
    let before = forwards(s0, &b);
    get_all(s0, &back);
    assert_eq!(forwards(s0, &b), before + 5.0);
    let log = s0.log_text();
    assert_eq!(
        log.matches(&logged).count(),
        lines + 1,
        "a front failing at every poll (4 or more) is logged once: {log}"
    );
}

#[test]
fn before_a_front_answers_a_sidecar_serves_alone_and_sighup_keeps_the_fronts_members() {
    let net = 161;
    let front = Front::start(ip(net, 2));
    let f = Followers::start(net, 2, &[&front]);
    let [a, b] = [11, 12].map(|h| ip(net, h).to_string());
    let s0 = &f.sidecars[0];

    // Nobody answers yet: this server is the only member and serves everything.
    assert!(wait_for(SETTLE, || {
        s0.metric("dl7_l7_membership_errors_total{reason=\"unreachable\"}") >= 1.0
    }));
    assert_eq!(s0.metric("dl7_l7_members"), 1.0);
    let before = local(s0);
    get_all(s0, &keys("alone", 6, |_| true));
    assert_eq!(local(s0), before + 6.0);
    assert!(
        s0.log_text()
            .contains("is the only member and serves every request itself")
    );

    front.serve(50, &[(VIP, &[active(&a), active(&b)])]);
    f.settle(50, 2);
    let two = f.names(&[0, 1]);
    // Owned by b under rendezvous, by a under ketama: they tell the schemes apart.
    let moved = keys("hup", 5, |k| {
        owner("rendezvous", &two, k) == 1 && owner("ketama", &two, k) == 0
    });
    let before = (forwards(s0, &b), local(s0));
    get_all(s0, &moved);
    assert_eq!((forwards(s0, &b), local(s0)), (before.0, before.1 + 5.0));

    // A new scheme in the file: it applies to the front's members at once (the file has no
    // members: were the file's membership applied, this server would serve alone).
    f.write_config(0, "rendezvous");
    s0.signal("HUP");
    assert!(wait_for(SETTLE, || {
        s0.metric("dl7_l7_reloads_total{result=\"ok\"}") >= 1.0
    }));
    assert_eq!(s0.metric("dl7_l7_members"), 2.0);
    let before = forwards(s0, &b);
    get_all(s0, &moved);
    assert_eq!(forwards(s0, &b), before + 5.0, "routed by rendezvous");

    // Without members-from the file's fixed members apply and the membership metrics go.
    let peer = s0.peer.expect("peer address");
    std::fs::write(
        f.config(0),
        format!(
            "origin = \"{}\"\nself = \"a\"\nmembers = \"a={peer}\"\nrelay-cache-bytes = 0\n",
            f.origin.url()
        ),
    )
    .expect("write config");
    s0.signal("HUP");
    assert!(wait_for(SETTLE, || {
        s0.metric("dl7_l7_reloads_total{result=\"ok\"}") >= 2.0
    }));
    assert_eq!(s0.metric("dl7_l7_members"), 1.0);
    let page = s0.metrics();
    assert_eq!(
        page.samples("dl7_l7_membership_age_seconds", &[]).count(),
        0
    );
    assert_eq!(page.samples("dl7_l7_peer_front_down", &[]).count(), 0);
    let before = local(s0);
    get_all(s0, &moved);
    assert_eq!(local(s0), before + 5.0);
    // Still answering the whole time.
    assert_eq!(get(s0.listen, "/obj/end?size=3").status, 200);
}
