//! `l4-ctl` as operators run it: every call a separate process, the state in the pinned maps.
//!
//! Each test gets a front namespace and a "servers" namespace joined by a veth pair
//! (10.<n>.0.1 on the front, reals at 10.<n>.0.2..4 on the other side), and a pin directory of
//! its own; the program is loaded in generic mode on the front's end. The CLI runs in the
//! front namespace through `nsenter --net` (which, unlike `ip netns exec`, keeps /sys/fs/bpf).

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use l4_ctl::{Balancer, Vip};
use support::frames;
use support::{
    XDP_PASS, XDP_TX,
    netns::{Netns, run, sysctl},
    test_run,
};

/// A front namespace with the program loaded by `l4-ctl load`, removed on drop.
struct Front {
    ns: String,
    pin_dir: PathBuf,
    /// The second octet of this front's 10.x.0.0/24.
    net: u32,
    /// Deletes the namespaces when the front is dropped (after `Drop::drop` unloaded it).
    _netns: Netns,
}

impl Front {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let mut netns = Netns::new();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let net = 220 + n;
        let ns = netns.add_ns("clif");
        let peer = netns.add_ns("clis");
        // The front reaches an IPv6 real too (the family checks need a route).
        sysctl(
            &ns,
            &[
                "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.default.disable_ipv6=0",
            ],
        );
        run(&format!(
            "ip link add fe0 netns {ns} type veth peer name eth0 netns {peer}"
        ));
        run(&format!("ip -n {ns} addr add 10.{net}.0.1/24 dev fe0"));
        run(&format!("ip -n {ns} addr add fd00::1/64 dev fe0 nodad"));
        run(&format!("ip -n {ns} link set fe0 up"));
        for host in 2..=4 {
            run(&format!(
                "ip -n {peer} addr add 10.{net}.0.{host}/24 dev eth0"
            ));
        }
        run(&format!("ip -n {peer} link set eth0 up"));
        Front {
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/dl7-test-{}-cli", netns.prefix())),
            ns,
            net,
            _netns: netns,
        }
    }

    fn real(&self, host: u32) -> String {
        format!("10.{}.0.{host}", self.net)
    }

    fn vip(&self) -> String {
        format!("10.{}.0.100:80/tcp", self.net)
    }

    /// Runs `l4-ctl ARGS` in the front namespace with this front's pin directory.
    fn ctl(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(env!("CARGO_BIN_EXE_l4-ctl"))
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .args(args)
            .output()
            .expect("run l4-ctl")
    }

    /// `ctl` that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "l4-ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `ctl` that must fail with one line on stderr containing `want`.
    fn fails(&self, args: &[&str], want: &str) {
        let out = self.ctl(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "l4-ctl {args:?} succeeded");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "l4-ctl {args:?}: not one line: {stderr:?}"
        );
        assert!(
            stderr.contains(want),
            "l4-ctl {args:?}: {stderr:?} lacks {want:?}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    fn load(&self) -> String {
        self.ok(&["load", "--iface", "fe0", "--mode", "generic"])
    }

    /// The pinned program, to test-run frames through what `load` attached.
    fn program(&self) -> Xdp {
        Xdp::from_pin(self.pin_dir.join("prog"), XdpAttachType::Interface)
            .expect("open the pinned program")
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if self.pin_dir.exists() {
            let _ = self.ctl(&["unload"]);
            let _ = std::fs::remove_dir_all(&self.pin_dir);
        }
    }
}

/// The `real list --json` rows as (address, weight, state, share).
fn real_rows(front: &Front) -> Vec<(String, u64, String, f64)> {
    let text = front.ok(&["real", "list", &front.vip(), "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&text).expect("json");
    rows.as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["address"].as_str().expect("address").to_owned(),
                r["weight"].as_u64().expect("weight"),
                r["state"].as_str().expect("state").to_owned(),
                r["table_share"].as_f64().expect("share"),
            )
        })
        .collect()
}

#[test]
fn vip_and_real_commands_round_trip_through_the_pinned_maps() {
    let front = Front::new();
    assert!(front.load().contains("attached dl7 to fe0 (generic mode)"));
    let status = front.ok(&["status"]);
    assert!(status.contains("interface: fe0 (generic mode)"), "{status}");
    let vip = front.vip();
    assert_eq!(front.ok(&["vip", "add", &vip]), format!("+ vip {vip}\n"));
    front.ok(&["vip", "add", "[fd00::100]:53/udp"]);
    let list = front.ok(&["vip", "list"]);
    assert!(
        list.contains(&vip) && list.contains("[fd00::100]:53/udp"),
        "{list}"
    );

    // MAC from the neighbour table (resolved by the kernel on demand), and given.
    let out = front.ok(&["real", "add", &vip, &front.real(2)]);
    assert!(
        out.starts_with(&format!("+ real {} in {vip} (mac ", front.real(2))),
        "{out}"
    );
    front.ok(&["real", "add", &vip, &front.real(3), "--weight", "2"]);
    front.ok(&[
        "real",
        "add",
        &vip,
        &front.real(4),
        "--mac",
        "02:00:00:00:00:04",
    ]);
    let rows = real_rows(&front);
    assert_eq!(rows.len(), 3);
    let share: f64 = rows.iter().map(|r| r.3).sum();
    assert!((share - 1.0).abs() < 1e-9, "{rows:?}");
    // Weight 2 of 4 owns about half of the table.
    assert!((rows[1].3 - 0.5).abs() < 0.01, "{rows:?}");
    let mac_of_4 = front.ok(&["real", "list", &vip]);
    assert!(mac_of_4.contains("02:00:00:00:00:04"), "{mac_of_4}");

    front.ok(&["real", "drain", &vip, &front.real(3)]);
    let rows = real_rows(&front);
    assert_eq!(
        (rows[1].1, rows[1].2.as_str(), rows[1].3),
        (0, "drained", 0.0)
    );
    front.ok(&["real", "weight", &vip, &front.real(3), "5"]);
    assert_eq!(real_rows(&front)[1].1, 5);
    front.ok(&["real", "del", &vip, &front.real(3)]);
    let rows = real_rows(&front);
    assert_eq!(rows.len(), 2);
    assert!((rows[0].3 - 0.5).abs() < 0.01, "{rows:?}");

    let status = front.ok(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(status["vips"], 2);
    assert_eq!(status["reals"], 2);
    assert_eq!(status["mode"], "generic");

    front.ok(&["vip", "del", "[fd00::100]:53/udp"]);
    front.ok(&["vip", "del", &vip]);
    assert_eq!(front.ok(&["vip", "list", "--json"]), "[]\n");
    assert!(front.ok(&["unload"]).contains("detached"));
    assert!(!front.pin_dir.exists());
    front.fails(&["status"], "not loaded");
}

#[test]
fn bad_input_gets_one_line_and_changes_nothing() {
    let front = Front::new();
    let vip = front.vip();
    // Before load.
    front.fails(&["vip", "list"], "dl7 is not loaded");
    front.fails(&["vip", "add", &vip], "dl7 is not loaded");
    front.fails(
        &["load", "--iface", "nosuch0"],
        "no interface named \"nosuch0\"",
    );
    assert!(!front.pin_dir.exists(), "a failed first load left pins");
    let out = Command::new(env!("CARGO_BIN_EXE_l4-ctl"))
        .args(["--pin-dir", "/tmp/dl7-not-bpffs/x", "vip", "list"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not on a BPF filesystem"), "{stderr}");

    front.load();
    front.ok(&["vip", "add", &vip]);
    front.ok(&["real", "add", &vip, &front.real(2)]);
    let before = front.ok(&["dump"]);

    // Malformed input: clap's one line, exit 2.
    for (args, want) in [
        (vec!["vip", "add", "10.0.0.1:80"], "has no protocol"),
        (vec!["vip", "add", "10.0.0.1/tcp"], "is not ADDR:PORT"),
        (vec!["vip", "add", "10.0.0.1:80/sctp"], "unknown protocol"),
        (vec!["vip", "add", "10.0.0.1:0/tcp"], "port 0"),
        (vec!["real", "add", &vip, "10.0.0.999"], "invalid value"),
        (
            vec!["real", "add", &vip, "10.0.0.9", "--mac", "02:00:00:00:00"],
            "MAC address",
        ),
        (
            vec!["real", "add", &vip, "10.0.0.9", "--weight", "-1"],
            "unexpected argument",
        ),
        (vec!["lookup", &vip, "--src", "10.0.0.1"], "invalid value"),
        (
            vec!["load", "--iface", "fe0", "--mode", "fast"],
            "invalid value",
        ),
        (
            vec!["stats", "--watch", "--interval", "0"],
            "not a number of seconds",
        ),
        (
            vec!["real", "add", &vip, "10.0.0.9", "--encap", "vxlan"],
            "invalid value",
        ),
        (
            vec!["decap", "attach", "--iface", "fe0", "--mode", "fast"],
            "invalid value",
        ),
    ] {
        let out = front.ctl(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        front.fails(&args, want);
    }
    // Refused by the maps or the network: exit 1.
    let other_vip = format!("10.{}.0.101:80/tcp", front.net);
    let (r2, r3, own) = (
        front.real(2),
        front.real(3),
        format!("10.{}.0.1", front.net),
    );
    let decap_pins = format!("{}-decap", front.pin_dir.display());
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["vip", "add", &vip],
            format!("VIP {vip} exists already"),
        ),
        (
            vec!["vip", "del", &other_vip],
            format!("VIP {other_vip} does not exist"),
        ),
        (
            vec![
                "real",
                "add",
                &other_vip,
                "10.0.0.9",
                "--mac",
                "02:00:00:00:00:09",
            ],
            format!("VIP {other_vip} does not exist"),
        ),
        (vec!["real", "add", &vip, &r2], "exists already".to_owned()),
        (
            vec!["real", "add", &vip, "fd00::9", "--mac", "02:00:00:00:00:09"],
            "not of the same address family".to_owned(),
        ),
        (
            vec!["real", "add", &vip, "10.99.0.9"],
            "no route to 10.99.0.9".to_owned(),
        ),
        (
            vec!["real", "add", &vip, &own],
            "is an address of this host".to_owned(),
        ),
        (
            vec!["real", "add", &vip, &r3, "--weight", "70000"],
            "above the maximum 65535".to_owned(),
        ),
        (
            vec!["real", "del", &vip, &r3],
            format!("real {} is not in VIP {vip}", front.real(3)),
        ),
        (vec!["real", "drain", &vip, &r3], "is not in VIP".to_owned()),
        (
            vec!["lookup", &vip, "--src", "[fd00::1]:5"],
            "not of the same address family".to_owned(),
        ),
        (
            vec!["apply", "-f", "/nonexistent/dl7.toml"],
            "cannot read /nonexistent/dl7.toml".to_owned(),
        ),
        (
            vec!["load", "--iface", "fe0", "--mode", "native"],
            "run `l4-ctl unload`".to_owned(),
        ),
        (
            vec!["real", "add", &vip, &r3, "--encap", "gue"],
            "IP forwarding is off (net.ipv4.conf.fe0.forwarding = 0)".to_owned(),
        ),
        (
            vec![
                "real",
                "add",
                &vip,
                &r3,
                "--encap",
                "ipip",
                "--mac",
                "02:00:00:00:00:09",
            ],
            "--mac is for --encap l2".to_owned(),
        ),
        (
            vec!["decap", "--decap-pin-dir", &decap_pins, "status"],
            "the decapsulator is not attached".to_owned(),
        ),
        (
            vec!["decap", "--decap-pin-dir", &decap_pins, "detach"],
            "the decapsulator is not attached".to_owned(),
        ),
        (
            vec![
                "decap",
                "--decap-pin-dir",
                &decap_pins,
                "attach",
                "--iface",
                "nosuch0",
            ],
            "no interface named \"nosuch0\"".to_owned(),
        ),
    ];
    for (args, want) in &cases {
        let out = front.ctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        front.fails(args, want);
    }
    assert!(
        !std::path::Path::new(&decap_pins).exists(),
        "a refused decap command left pins"
    );
    // An unresolvable neighbour: refused after the probe times out.
    front.fails(
        &["real", "add", &vip, &format!("10.{}.0.50", front.net)],
        "cannot resolve the MAC",
    );
    // Config files: syntax, unknown fields, bad values name the field; nothing applied.
    let dir = tempdir(&front);
    for (text, want) in [
        ("[[vip]\naddress = 1", "dl7.toml"),
        (
            "[[vip]]\nadress = \"10.0.0.1:80/tcp\"",
            "unknown field `adress`",
        ),
        (
            &*format!("[[vip]]\naddress = \"{vip}\"\n[[vip.real]]\naddress = \"10.0.0.x\""),
            "vip[1].real[1].address",
        ),
        (
            &*format!(
                "[[vip]]\naddress = \"{vip}\"\n[[vip.real]]\naddress = \"{}\"\n[[vip]]\naddress = \"{other_vip}\"\n[[vip.real]]\naddress = \"10.{}.0.51\"",
                front.real(2),
                front.net
            ),
            "cannot resolve the MAC of",
        ),
    ] {
        let file = dir.join("dl7.toml");
        std::fs::write(&file, text).expect("write config");
        front.fails(&["apply", "-f", file.to_str().expect("utf-8")], want);
    }
    std::fs::write(dir.join("unreadable.toml"), [0xff, 0xfe, 0x00]).expect("write");
    front.fails(
        &[
            "apply",
            "-f",
            dir.join("unreadable.toml").to_str().expect("utf-8"),
        ],
        "cannot read",
    );
    assert_eq!(
        front.ok(&["dump"]),
        before,
        "a refused change altered the maps"
    );

    // Not root: checked before anything else.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_l4-ctl"))
        .args([
            "--pin-dir",
            front.pin_dir.to_str().expect("utf-8"),
            "vip",
            "list",
        ])
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("must run as root"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir(front: &Front) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{}-cfg", front.ns));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn apply_converges_is_idempotent_and_dump_round_trips() {
    let front = Front::new();
    front.load();
    let dir = tempdir(&front);
    let file = dir.join("dl7.toml");
    let vip = front.vip();
    let v6 = "[fd00::100]:443/tcp";
    std::fs::write(
        &file,
        format!(
            r#"
[[vip]]
address = "{vip}"
[vip.health]
check = "http"
path = "/healthz"
[[vip.real]]
address = "{r2}"
[[vip.real]]
address = "{r3}"
weight = 3
[[vip]]
address = "{v6}"
[[vip.real]]
address = "fd00::7"
mac = "02:00:00:00:00:07"
"#,
            r2 = front.real(2),
            r3 = front.real(3),
        ),
    )
    .expect("write");
    let f = file.to_str().expect("utf-8");
    let dry = front.ok(&["apply", "-f", f, "--dry-run"]);
    assert!(dry.contains("(dry run: nothing changed)"), "{dry}");
    assert_eq!(front.ok(&["vip", "list", "--json"]), "[]\n");
    let first = front.ok(&["apply", "-f", f]);
    assert_eq!(first.lines().count(), 6, "{first}");
    assert_eq!(front.ok(&["apply", "-f", f]), "no changes\n");

    // dump -> apply: no changes; the dump of the dump is the same file.
    let dumped = front.ok(&["dump"]);
    assert!(dumped.contains("check = \"http\"") && dumped.contains("path = \"/healthz\""));
    let dump_file = dir.join("dump.toml");
    std::fs::write(&dump_file, &dumped).expect("write");
    let d = dump_file.to_str().expect("utf-8");
    assert_eq!(front.ok(&["apply", "-f", d]), "no changes\n");
    assert_eq!(front.ok(&["dump"]), dumped);

    // Converge to a smaller file: reals and VIPs not in it go, weights change.
    std::fs::write(
        &file,
        format!(
            "[[vip]]\naddress = \"{vip}\"\n[[vip.real]]\naddress = \"{}\"\nweight = 2\n",
            front.real(3)
        ),
    )
    .expect("write");
    let out = front.ok(&["apply", "-f", f]);
    for want in [
        "~ vip".to_owned(),
        format!("~ real {} in {vip}: weight 3 -> 2", front.real(3)),
        format!("- real {} in {vip}", front.real(2)),
        format!("- vip {v6}"),
    ] {
        assert!(out.contains(&want), "{out} lacks {want}");
    }
    assert_eq!(front.ok(&["apply", "-f", f]), "no changes\n");
    let rows = real_rows(&front);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].1, rows[0].3), (2, 1.0));
    let _ = std::fs::remove_dir_all(dir);
}

/// Sources spread over addresses and ports, as clients would be.
fn sources(n: u32) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| {
            SocketAddr::new(
                IpAddr::from([10, 200, (i / 250) as u8, (i % 250) as u8 + 1]),
                1024 + (i * 7919 % 60000) as u16,
            )
        })
        .collect()
}

/// The real (by MAC) the program sent a frame to.
fn forwarded_to(program: &Xdp, src: SocketAddr, vip: &Vip, flags: u8) -> Option<[u8; 6]> {
    let frame = frames::tcp_frame(src, vip.addr, flags, b"");
    let (action, out) = test_run(program, &frame);
    (action == XDP_TX).then(|| out[..6].try_into().expect("six bytes"))
}

#[test]
fn lookup_agrees_with_the_loaded_program_and_an_upgrade_keeps_every_flow() {
    let front = Front::new();
    front.load();
    let vip_s = front.vip();
    let vip: Vip = vip_s.parse().expect("vip");
    front.ok(&["vip", "add", &vip_s]);
    let macs = [
        "02:00:00:00:00:02",
        "02:00:00:00:00:03",
        "02:00:00:00:00:04",
    ];
    for (host, mac) in (2..=4).zip(macs) {
        front.ok(&["real", "add", &vip_s, &front.real(host), "--mac", mac]);
    }
    let mac_to_real: Vec<([u8; 6], String)> = macs
        .iter()
        .zip(2..=4)
        .map(|(m, host)| {
            let mac: l4_ctl::Mac = m.parse().expect("mac");
            (mac.0, front.real(host))
        })
        .collect();
    let real_of = |mac: [u8; 6]| {
        mac_to_real
            .iter()
            .find(|(m, _)| *m == mac)
            .map(|(_, r)| r.clone())
            .expect("a known real's MAC")
    };

    // 1,000 new flows: the CLI's answer is where the program sends the SYN.
    let program = front.program();
    let srcs = sources(1000);
    let mut assigned = Vec::with_capacity(srcs.len());
    let mut per_real = std::collections::BTreeMap::new();
    for src in &srcs {
        let said = front.ok(&["lookup", &vip_s, "--src", &src.to_string()]);
        let mac = forwarded_to(&program, *src, &vip, frames::TCP_SYN).expect("forwarded");
        let got = real_of(mac);
        assert_eq!(said.trim(), got, "flow from {src}");
        *per_real.entry(got.clone()).or_insert(0u32) += 1;
        assigned.push(got);
    }
    assert_eq!(per_real.len(), 3, "{per_real:?}");

    // Upgrade with the flows in the table, then change the reals: established flows (non-SYN
    // packets) keep their real, because the new program uses the same pinned table.
    let old_id = front.ok(&["status", "--json"]);
    let upgraded = front.load();
    assert!(upgraded.contains("upgraded dl7 on fe0"), "{upgraded}");
    assert_ne!(front.ok(&["status", "--json"]), old_id);
    let balancer = Balancer::open(&front.pin_dir).expect("open pins");
    assert!(balancer.conn_count().expect("count") >= 1000);
    drop(program);
    let program = front.program();
    front.ok(&["real", "drain", &vip_s, &front.real(2)]);
    front.ok(&["real", "weight", &vip_s, &front.real(3), "3"]);
    for (src, real) in srcs.iter().zip(&assigned) {
        let mac = forwarded_to(&program, *src, &vip, frames::TCP_ACK).expect("forwarded");
        assert_eq!(&real_of(mac), real, "established flow from {src} moved");
    }
    // New flows avoid the drained real.
    for src in sources(1300).iter().skip(1000) {
        let mac = forwarded_to(&program, *src, &vip, frames::TCP_SYN).expect("forwarded");
        assert_ne!(
            real_of(mac),
            front.real(2),
            "new flow from {src} to a drained real"
        );
    }
    // Traffic not for a VIP passes.
    let other: SocketAddr = format!("10.{}.0.1:22", front.net).parse().expect("addr");
    let frame = frames::tcp_frame(
        "10.200.0.1:5000".parse().expect("addr"),
        other,
        frames::TCP_SYN,
        b"",
    );
    assert_eq!(test_run(&program, &frame).0, XDP_PASS);
}
