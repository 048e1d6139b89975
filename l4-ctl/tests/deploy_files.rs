//! The front's files in deploy/ agree with l4-ctl: the example configuration validates, the
//! systemd unit's command lines are ones the CLI accepts, and the Prometheus alert rules use
//! metrics the daemon exports. With `promtool` (Debian package prometheus) and
//! `systemd-analyze` installed, the files also pass their own tools' checks, and the alert
//! rules' unit tests run; without them those checks are skipped with a note.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use common::GlobalCounter;
use dl7_testbed::metrics::AlertCase;
use l4_ctl::{
    Mac,
    config::Config,
    metrics::{self, DaemonMetrics},
    stats::{RealState, RealStats, Snapshot, VipStats},
};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn read(file: &str) -> String {
    let path = deploy(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Whether `tool` runs; prints a note when it does not.
fn have(tool: &str, package: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("note: `{tool}` not installed (Debian package {package}): its checks skipped");
    }
    found
}

/// Runs a command that must succeed; returns its stdout and stderr.
fn ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{stdout}{stderr}");
    (stdout, stderr)
}

#[test]
fn the_example_config_validates() {
    let desired = Config::read(&deploy("dl7.toml"))
        .and_then(|c| c.validate())
        .unwrap_or_else(|e| panic!("deploy/dl7.toml: {e}"));
    assert_eq!(desired.vips.len(), 1);
    let vip = &desired.vips[0];
    assert_eq!(vip.health.kind, common::HealthSpec::KIND_HTTP);
    assert_eq!(vip.reals.len(), 4);
    assert_eq!(vip.reals[3].encap, l4_ctl::Encap::Gue);
}

/// The unit's `KEY=value` settings in [Service], in order (a key may repeat).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_unit_runs_command_lines_the_cli_accepts() {
    let text = read("dl7-front.service");
    let settings = unit_settings(&text);
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    // Defaults for the variables the command lines use.
    let env: BTreeMap<&str, &str> = get("Environment")
        .into_iter()
        .flat_map(str::split_whitespace)
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(get("EnvironmentFile"), ["-/etc/default/dl7-front"]);
    assert_eq!(get("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(get("Restart"), ["on-failure"]);
    // Stopping must leave the program and the maps (flows survive a restart).
    for key in ["ExecStop", "ExecStopPost"] {
        assert!(
            get(key).is_empty(),
            "{key} in the unit: the program must stay"
        );
    }
    let commands: Vec<(&str, &str)> = ["ExecStartPre", "ExecStart"]
        .into_iter()
        .flat_map(|key| get(key).into_iter().map(move |v| (key, v)))
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(
        commands[0]
            .1
            .contains(" load --iface ${DL7_IFACE} --mode ${DL7_MODE}")
    );
    assert!(
        commands[1]
            .1
            .contains(" daemon --config /etc/dl7/dl7.toml --metrics ${DL7_METRICS}")
    );
    // With its defaults, and with the flags an operator of several fronts sets.
    let announcing: BTreeMap<&str, &str> = env
        .iter()
        .map(|(&k, &v)| {
            (
                k,
                if k == "DL7_DAEMON_ARGS" {
                    "--announce"
                } else {
                    v
                },
            )
        })
        .collect();
    for env in [&env, &announcing] {
        for (key, line) in &commands {
            let mut words = line.split_whitespace();
            assert_eq!(words.next(), Some("/usr/local/bin/l4-ctl"), "{key}");
            // systemd: `${VAR}` is one word, `$VAR` is split into words (none when empty).
            let args: Vec<String> = words
                .flat_map(|w| {
                    let value = |var: &str| {
                        env.get(var)
                            .unwrap_or_else(|| panic!("{key}: ${var} has no default"))
                            .to_string()
                    };
                    match (
                        w.strip_prefix("${").and_then(|w| w.strip_suffix('}')),
                        w.strip_prefix('$'),
                    ) {
                        (Some(var), _) => vec![value(var)],
                        (None, Some(var)) => {
                            value(var).split_whitespace().map(str::to_owned).collect()
                        }
                        (None, None) => vec![w.to_owned()],
                    }
                })
                .collect();
            // clap parses (and checks the values of) every argument before it acts on
            // --help, so this succeeds exactly when the command line would be accepted.
            ok(Command::new(env!("CARGO_BIN_EXE_l4-ctl"))
                .args(&args)
                .arg("--help"));
        }
    }

    if have("systemd-analyze", "systemd") {
        // A copy that names the binary just built, which `verify` requires to exist.
        let dir = std::env::temp_dir().join(format!("dl7-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let unit = dir.join("dl7-front.service");
        std::fs::write(
            &unit,
            text.replace("/usr/local/bin/l4-ctl", env!("CARGO_BIN_EXE_l4-ctl")),
        )
        .expect("write the unit");
        let result = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output();
        let _ = std::fs::remove_dir_all(&dir);
        let out = result.expect("run systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Other units of the host may draw warnings; none may be about this one.
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("dl7-front")).collect();
        assert!(out.status.success() && ours.is_empty(), "{stderr}");
    }
}

#[test]
fn the_alert_rules_use_metrics_the_daemon_exports() {
    let vip = "192.0.2.10:80/tcp".parse().unwrap();
    let snapshot = Snapshot {
        vips: vec![VipStats {
            vip,
            packets: 0,
            bytes: 0,
            reals: vec![RealStats {
                address: "10.0.1.11".parse().unwrap(),
                mac: Mac([2, 0, 0, 1, 0, 0x11]),
                encap: l4_ctl::Encap::L2,
                weight: 1,
                state: RealState::Active,
                table_share: 1.0,
                packets: 0,
                bytes: 0,
            }],
        }],
        global: GlobalCounter::ALL.iter().map(|c| (c.name(), 0)).collect(),
    };
    let health = DaemonMetrics::new(true);
    health.check("192.0.2.10:80/tcp", "10.0.1.11", true);
    health.transition("192.0.2.10:80/tcp", "10.0.1.11", true);
    let announce = health.announce.as_ref().expect("announcing");
    announce
        .bgp_session_up
        .with_label_values(&["router1"])
        .set(1);
    announce
        .vip_announced
        .with_label_values(&["192.0.2.10"])
        .set(1);
    let exported = metrics::render(&snapshot, Some(&health));
    let rules = read("prometheus/dl7-front-alerts.yml");
    let problems = dl7_testbed::metrics::check_rules(
        &rules,
        &exported,
        "dl7_l4_",
        &[
            "dl7_l4_real_up",
            "dl7_l4_vip_active_reals",
            "dl7_l4_frames_total",
        ],
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The outcome label values the drop-rate rule selects with `drop_.*`.
    assert!(
        GlobalCounter::ALL
            .iter()
            .any(|c| c.name().starts_with("drop_") && c.is_outcome())
    );
    // The job the rules select is the one the scrape config defines.
    assert!(rules.contains("up{job=\"dl7-front\"}"));
    assert!(read("prometheus/dl7-front-scrape.yml").contains("job_name: dl7-front"));
}

/// Input series for `promtool test rules`, one sample a minute from 0m, all from one front.
const RULE_SERIES: &str = r#"
rule_files:
  - ALERTS_FILE
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'dl7_l4_real_up{job="dl7-front",instance="f1:9400",vip="192.0.2.10:80/tcp",real="10.0.1.11"}'
        values: '1 1 0x20'
      - series: 'dl7_l4_real_up{job="dl7-front",instance="f1:9400",vip="192.0.2.10:80/tcp",real="10.0.1.12"}'
        values: '1x22'
      - series: 'dl7_l4_vip_active_reals{job="dl7-front",instance="f1:9400",vip="192.0.2.10:80/tcp"}'
        values: '2 2 1 1 1 1 0x16'
      # 0.5% of the frames dropped for 10 minutes, then about 5%.
      - series: 'dl7_l4_frames_total{job="dl7-front",instance="f1:9400",outcome="tx"}'
        values: '0+1000x22'
      - series: 'dl7_l4_frames_total{job="dl7-front",instance="f1:9400",outcome="drop_malformed"}'
        values: '0+5x10 100+50x11'
      - series: 'up{job="dl7-front",instance="f1:9400"}'
        values: '1x11 0x11'
      # Announcing: stops at 6m while not drained; BGP down from 9m; BIRD silent from 15m.
      - series: 'dl7_l4_announced_addresses{job="dl7-front",instance="f1:9400"}'
        values: '1x5 0x16'
      - series: 'dl7_l4_front_drained{job="dl7-front",instance="f1:9400"}'
        values: '0x22'
      - series: 'dl7_l4_bgp_session_up{job="dl7-front",instance="f1:9400",protocol="router1"}'
        values: '1x8 0x13'
      - series: 'dl7_l4_bird_up{job="dl7-front",instance="f1:9400"}'
        values: '1x14 0x7'
    promql_expr_test:
"#;

/// What each alert must do on `RULE_SERIES`: not fire yet at the first times (its condition
/// has not lasted its `for`), fire at the last, with these labels.
const RULE_CASES: &[AlertCase<'static>] = &[
    AlertCase {
        alert: "Dl7RealDown",
        quiet: &["2m"],
        fires: "3m",
        labels: r#"severity="warning",job="dl7-front",instance="f1:9400",vip="192.0.2.10:80/tcp",real="10.0.1.11""#,
    },
    AlertCase {
        alert: "Dl7VipNoActiveReal",
        quiet: &["6m"],
        fires: "7m",
        labels: r#"severity="critical",job="dl7-front",instance="f1:9400",vip="192.0.2.10:80/tcp""#,
    },
    // Over 1% from 11m on.
    AlertCase {
        alert: "Dl7FrontDropRate",
        quiet: &["10m", "15m"],
        fires: "18m",
        labels: r#"severity="warning",job="dl7-front",instance="f1:9400""#,
    },
    AlertCase {
        alert: "Dl7FrontNotAnnouncing",
        quiet: &["5m", "6m"],
        fires: "7m",
        labels: r#"severity="warning",job="dl7-front",instance="f1:9400""#,
    },
    AlertCase {
        alert: "Dl7FrontBgpSessionDown",
        quiet: &["9m"],
        fires: "10m",
        labels: r#"severity="warning",job="dl7-front",instance="f1:9400",protocol="router1""#,
    },
    AlertCase {
        alert: "Dl7FrontBirdDown",
        quiet: &["15m"],
        fires: "17m",
        labels: r#"severity="critical",job="dl7-front",instance="f1:9400""#,
    },
    AlertCase {
        alert: "Dl7FrontDaemonDown",
        quiet: &["11m", "12m"],
        fires: "13m",
        labels: r#"severity="critical",job="dl7-front",instance="f1:9400""#,
    },
];

#[test]
fn the_prometheus_files_pass_promtool() {
    if !have("promtool", "prometheus") {
        return;
    }
    let alerts = deploy("prometheus/dl7-front-alerts.yml");
    ok(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&alerts));
    // Also loads the rule files it names.
    ok(Command::new("promtool")
        .args(["check", "config"])
        .arg(deploy("prometheus/dl7-front-scrape.yml")));
    if let Err(e) = dl7_testbed::metrics::test_rules(&alerts, RULE_SERIES, RULE_CASES) {
        panic!("{e:#}");
    }
}
