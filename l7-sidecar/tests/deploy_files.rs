//! The sidecar's files in deploy/ agree with `l7-sidecar`: the example configuration is valid
//! and every key it mentions (commented-out ones too) is a setting; the systemd unit's
//! command line starts a sidecar that drains and exits cleanly on the unit's stop signal;
//! with `systemd-analyze` installed, the unit also passes `systemd-analyze verify`; the alert
//! rules use only metrics the sidecar exports, and the job the scrape config defines (with
//! `promtool` installed, both files also pass `promtool check`, and every alert passes its
//! unit tests: `promtool test rules` on series where it must fire and ones where it must not).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dl7_testbed::metrics::AlertCase;
use l7_sidecar::config::Settings;
use support::process::Sidecar;
use support::{free_addrs, ip, temp_dir};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn read(file: &str) -> String {
    let path = deploy(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Whether `promtool` runs; prints a note when it does not.
fn have_promtool() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("note: `promtool` not installed (Debian package prometheus): its checks skipped");
    }
    found
}

#[test]
fn the_example_config_is_valid_and_mentions_only_settings() {
    let settings =
        Settings::from_file(&deploy("sidecar.example.toml")).expect("the example parses");
    let config = settings.validate().expect("the example validates");
    assert_eq!(config.membership.members.len(), 3);

    let help = Command::new(env!("CARGO_BIN_EXE_l7-sidecar"))
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for line in read("sidecar.example.toml").lines() {
        let line = line.trim_start_matches('#').trim();
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            assert!(
                help.contains(&format!("--{key} ")),
                "{key} is not a setting"
            );
        }
    }
}

#[test]
fn the_unit_starts_a_sidecar_that_drains_on_stop() {
    let unit = read("dl7-sidecar.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/l7-sidecar"));
    let example = deploy("sidecar.example.toml").display().to_string();
    let mut args: Vec<String> = words
        .map(|w| {
            if w == "/etc/dl7/sidecar.toml" {
                example.clone()
            } else {
                w.to_owned()
            }
        })
        .collect();
    assert_eq!(
        unit.lines().find_map(|l| l.strip_prefix("KillSignal=")),
        Some("SIGTERM")
    );

    // The example's addresses are not this host's: flags put the sidecar on loopback.
    let dir = temp_dir("unit");
    let [listen, peer, metrics] = free_addrs(ip(130, 11));
    for (flag, value) in [
        ("--listen", listen.to_string()),
        ("--peer-listen", peer.to_string()),
        ("--metrics", metrics.to_string()),
        ("--origin", "http://127.0.0.1:9".to_owned()),
    ] {
        args.push(flag.to_owned());
        args.push(value);
    }
    let mut s = Sidecar::start(&args, listen, Some(peer), metrics, dir.path().join("s.log"));
    assert_eq!(support::client::get(metrics, "/healthz").body, b"ok\n");
    s.signal("TERM");
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}: {}", s.log_text());

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let copy = dir.path().join("dl7-sidecar.service");
        std::fs::write(
            &copy,
            unit.replace(
                "/usr/local/bin/l7-sidecar",
                env!("CARGO_BIN_EXE_l7-sidecar"),
            ),
        )
        .expect("write the unit");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("run systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Other units of the host may draw warnings; none may be about this one.
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("dl7-sidecar"))
            .collect();
        assert!(out.status.success() && ours.is_empty(), "{stderr}");
    } else {
        eprintln!("note: systemd-analyze is not installed; the unit was not verified");
    }
}

/// Every default is written once (`config::DEFAULTS`); what the help text, the README and the
/// example configuration say of it must agree with that table.
#[test]
fn documented_defaults_are_the_defaults() {
    use l7_sidecar::config::DEFAULTS;
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let help = Command::new(env!("CARGO_BIN_EXE_l7-sidecar"))
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let readme = words(&std::fs::read_to_string(deploy("../README.md")).expect("README"));
    let example = read("sidecar.example.toml");
    let mut wrong = Vec::new();
    for (name, default) in DEFAULTS {
        // The flag's paragraph in --help.
        let start = help
            .find(&format!("--{name} "))
            .unwrap_or_else(|| panic!("--{name} is not in serve --help"));
        let end = help[start + 2..]
            .find("\n  -")
            .map_or(help.len(), |i| start + 2 + i);
        if !words(&help[start..end]).contains(&format!("default {default}")) {
            wrong.push(format!(
                "serve --help: --{name} does not say 'default {default}'"
            ));
        }
        // "`name` (value" in the README.
        let mention = format!("`{name}` (");
        for (at, _) in readme.match_indices(&mention) {
            let value = readme[at + mention.len()..]
                .split([',', ')'])
                .next()
                .unwrap_or_default();
            if value != *default {
                wrong.push(format!(
                    "README: `{name}` ({value}), the default is {default}"
                ));
            }
        }
        // "name = value" (or "# name = value") in the example configuration.
        let line = example.lines().find_map(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.strip_prefix(&format!("{name} = "))
        });
        match line {
            None => wrong.push(format!("sidecar.example.toml does not mention {name}")),
            Some(rest) => {
                let value = rest.split('#').next().unwrap_or_default().trim();
                if value.trim_matches('"') != *default {
                    wrong.push(format!(
                        "sidecar.example.toml: {name} = {value}, the default is {default}"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_alert_rules_use_exported_metrics_and_the_scrape_job() {
    let m = l7_sidecar::metrics::Metrics::new().expect("metrics");
    // Series with labels appear once they have a value.
    let pool = m.pool("s1");
    pool.stalls.inc();
    pool.retired_unsolicited.inc();
    m.health("s1").up.set(1);
    m.purge("refused");
    // Exported only by sidecars that follow a front (members-from).
    m.following(true);
    m.tls_certificate_expiries(&[("/etc/dl7/site.pem".to_owned(), 2_000_000_000)]);
    m.request(
        l7_sidecar::metrics::Route::Peer,
        502,
        Duration::from_millis(1),
    );
    let exported = String::from_utf8(m.render()).expect("utf-8");
    let rules = read("prometheus/dl7-sidecar-alerts.yml");
    let problems = dl7_testbed::metrics::check_rules(
        &rules,
        &exported,
        "dl7_l7_",
        &[
            "dl7_l7_peer_up",
            "dl7_l7_peer_stalls_total",
            "dl7_l7_pool_retired_total",
            "dl7_l7_requests_total",
            "dl7_l7_cache_hits_total",
            "dl7_l7_cache_misses_total",
            "dl7_l7_cache_objects",
            "dl7_l7_cache_evictions_total",
            "dl7_l7_cache_stale_served_total",
            "dl7_l7_cache_purges_total",
            "dl7_l7_membership_age_seconds",
            "dl7_l7_tls_certificate_expiry_seconds",
        ],
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(rules.contains("up{job=\"dl7-sidecar\"}"));
    let scrape = read("prometheus/dl7-sidecar-scrape.yml");
    assert!(scrape.contains("job_name: dl7-sidecar"));
    assert!(scrape.contains("- dl7-sidecar-alerts.yml"));
    if have_promtool() {
        for (what, file) in [
            ("rules", "prometheus/dl7-sidecar-alerts.yml"),
            ("config", "prometheus/dl7-sidecar-scrape.yml"),
        ] {
            let out = Command::new("promtool")
                .args(["check", what])
                .arg(deploy(file))
                .output()
                .expect("run promtool");
            assert!(
                out.status.success(),
                "promtool check {what} {file}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Input series for `promtool test rules`, one sample a minute from 0m. Sidecar s1 goes wrong
/// in every way the rules watch, from 10m on unless said otherwise; s2 stays just short of
/// every rule all along, so it must never fire.
const RULE_SERIES: &str = r#"
rule_files:
  - ALERTS_FILE
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # s1 stops answering scrapes at 50m.
      - series: 'up{job="dl7-sidecar",instance="s1:9101"}'
        values: '1x49 0x10'
      - series: 'up{job="dl7-sidecar",instance="s2:9101"}'
        values: '1x59'
      # s1 sees its peer down; s2's check of its peer fails twice, never for a minute.
      - series: 'dl7_l7_peer_up{job="dl7-sidecar",instance="s1:9101",peer="10.0.0.12:9102"}'
        values: '1x9 0x50'
      - series: 'dl7_l7_peer_up{job="dl7-sidecar",instance="s2:9101",peer="10.0.0.11:9102"}'
        values: '1x8 0 1 0 1x48'
      # 0.2 stalled forwards a second; 0.05.
      - series: 'dl7_l7_peer_stalls_total{job="dl7-sidecar",instance="s1:9101",peer="10.0.0.12:9102"}'
        values: '0x9 12+12x50'
      - series: 'dl7_l7_peer_stalls_total{job="dl7-sidecar",instance="s2:9101",peer="10.0.0.11:9102"}'
        values: '0+3x59'
      # One connection retired for unsolicited bytes at 30m; s2 only sees connections closed.
      - series: 'dl7_l7_pool_retired_total{job="dl7-sidecar",instance="s1:9101",pool="origin",reason="unsolicited"}'
        values: '0x29 1x30'
      - series: 'dl7_l7_pool_retired_total{job="dl7-sidecar",instance="s2:9101",pool="origin",reason="unsolicited"}'
        values: '0x59'
      - series: 'dl7_l7_pool_retired_total{job="dl7-sidecar",instance="s2:9101",pool="origin",reason="closed"}'
        values: '0+10x59'
      # 5xx: 1 %, then 9 %; s2 3.8 %.
      - series: 'dl7_l7_requests_total{job="dl7-sidecar",instance="s1:9101",route="local",status="200"}'
        values: '0+1000x59'
      - series: 'dl7_l7_requests_total{job="dl7-sidecar",instance="s1:9101",route="local",status="502"}'
        values: '0+10x9 190+100x50'
      - series: 'dl7_l7_requests_total{job="dl7-sidecar",instance="s2:9101",route="local",status="200"}'
        values: '0+1000x59'
      # A hot spot: from 30m on, s1 also answers 4,000 a minute from its relay cache.
      - series: 'dl7_l7_requests_total{job="dl7-sidecar",instance="s1:9101",route="relay",status="200"}'
        values: '0x29 0+4000x30'
      - series: 'dl7_l7_requests_total{job="dl7-sidecar",instance="s2:9101",route="local",status="502"}'
        values: '0+40x59'
      # Cache hit ratio 80 %, then 20 %, at 10 lookups a second; s2 20 % at 0.5 a second.
      - series: 'dl7_l7_cache_hits_total{job="dl7-sidecar",instance="s1:9101"}'
        values: '0+480x9 4440+120x50'
      - series: 'dl7_l7_cache_misses_total{job="dl7-sidecar",instance="s1:9101"}'
        values: '0+120x9 1560+480x50'
      - series: 'dl7_l7_cache_hits_total{job="dl7-sidecar",instance="s2:9101"}'
        values: '0+6x59'
      - series: 'dl7_l7_cache_misses_total{job="dl7-sidecar",instance="s2:9101"}'
        values: '0+24x59'
      # Evictions a minute: 5 %, then 20 % of the objects held; s2 9 %.
      - series: 'dl7_l7_cache_objects{job="dl7-sidecar",instance="s1:9101"}'
        values: '1000x59'
      - series: 'dl7_l7_cache_evictions_total{job="dl7-sidecar",instance="s1:9101"}'
        values: '0+50x9 650+200x50'
      - series: 'dl7_l7_cache_objects{job="dl7-sidecar",instance="s2:9101"}'
        values: '1000x59'
      - series: 'dl7_l7_cache_evictions_total{job="dl7-sidecar",instance="s2:9101"}'
        values: '0+90x59'
      # Stale answers for origin errors, 3 a minute; s2 serves 3 in a blip (9m to 11m), and
      # many while revalidating.
      - series: 'dl7_l7_cache_stale_served_total{job="dl7-sidecar",instance="s1:9101",reason="error"}'
        values: '0x9 3+3x50'
      - series: 'dl7_l7_cache_stale_served_total{job="dl7-sidecar",instance="s1:9101",reason="revalidating"}'
        values: '0x59'
      - series: 'dl7_l7_cache_stale_served_total{job="dl7-sidecar",instance="s2:9101",reason="error"}'
        values: '0x8 1 2 3x48'
      - series: 'dl7_l7_cache_stale_served_total{job="dl7-sidecar",instance="s2:9101",reason="revalidating"}'
        values: '0+30x59'
      # One PURGE refused at 20m; s2's purges are all allowed.
      - series: 'dl7_l7_cache_purges_total{job="dl7-sidecar",instance="s1:9101",result="refused"}'
        values: '0x19 1x40'
      - series: 'dl7_l7_cache_purges_total{job="dl7-sidecar",instance="s1:9101",result="purged"}'
        values: '0+5x59'
      - series: 'dl7_l7_cache_purges_total{job="dl7-sidecar",instance="s2:9101",result="refused"}'
        values: '0x59'
      - series: 'dl7_l7_cache_purges_total{job="dl7-sidecar",instance="s2:9101",result="purged"}'
        values: '0+5x59'
      - series: 'dl7_l7_cache_purges_total{job="dl7-sidecar",instance="s2:9101",result="absent"}'
        values: '0+1x59'
      # s1's fronts stop answering at 9m; s2's membership reaches 30 s of age, never more.
      - series: 'dl7_l7_membership_age_seconds{job="dl7-sidecar",instance="s1:9101"}'
        values: '0.5x8 60+60x50'
      - series: 'dl7_l7_membership_age_seconds{job="dl7-sidecar",instance="s2:9101"}'
        values: '0.5x8 30x5 0.5x45'
      # s1's certificate expires 14 days and 5 minutes after time 0; s2's in 2286.
      - series: 'dl7_l7_tls_certificate_expiry_seconds{job="dl7-sidecar",instance="s1:9101",name="/etc/dl7/site.pem"}'
        values: '1209900x59'
      - series: 'dl7_l7_tls_certificate_expiry_seconds{job="dl7-sidecar",instance="s2:9101",name="/etc/dl7/site.pem"}'
        values: '10000000000x59'
    promql_expr_test:
"#;

/// What each alert must do on `RULE_SERIES`: not fire at the first times (its condition has
/// not lasted its `for` yet, or no longer holds), fire at the last for s1 alone, with these
/// labels.
const RULE_CASES: &[AlertCase<'static>] = &[
    AlertCase {
        alert: "Dl7SidecarDown",
        quiet: &["50m"],
        fires: "51m",
        labels: r#"severity="critical",job="dl7-sidecar",instance="s1:9101""#,
    },
    AlertCase {
        alert: "Dl7PeerDown",
        quiet: &["10m"],
        fires: "11m",
        labels: r#"severity="warning",job="dl7-sidecar",instance="s1:9101",peer="10.0.0.12:9102""#,
    },
    AlertCase {
        alert: "Dl7PeerStalls",
        quiet: &["16m"],
        fires: "17m",
        labels: r#"severity="warning",job="dl7-sidecar",instance="s1:9101",peer="10.0.0.12:9102""#,
    },
    // For the 15 minutes its increase window spans, no longer.
    AlertCase {
        alert: "Dl7UnsolicitedBytes",
        quiet: &["29m", "45m"],
        fires: "30m",
        labels: r#"severity="warning",job="dl7-sidecar",instance="s1:9101",pool="origin""#,
    },
    AlertCase {
        alert: "Dl7SidecarErrorRate",
        quiet: &["16m"],
        fires: "17m",
        labels: r#"severity="warning",job="dl7-sidecar",instance="s1:9101""#,
    },
    // Under 50 % from 12m on.
    AlertCase {
        alert: "Dl7CacheHitRatioLow",
        quiet: &["20m", "26m"],
        fires: "27m",
        labels: r#"severity="warning",job="dl7-sidecar",instance="s1:9101""#,
    },
    // Over 10 % a minute from 11m on.
    AlertCase {
        alert: "Dl7CacheEvictionChurn",
        quiet: &["30m", "40m"],
        fires: "41m",
        labels: r#"severity="warning",job="dl7-sidecar",instance="s1:9101""#,
    },
    AlertCase {
        alert: "Dl7CacheServingStale",
        quiet: &["14m", "15m"],
        fires: "16m",
        labels: r#"severity="warning",job="dl7-sidecar",instance="s1:9101""#,
    },
    AlertCase {
        alert: "Dl7CachePurgeRefused",
        quiet: &["19m", "35m"],
        fires: "20m",
        labels: r#"severity="warning",job="dl7-sidecar",instance="s1:9101""#,
    },
    // Over 1.5x the mean from about 31m on (the 5-minute rate), for 15 minutes.
    AlertCase {
        alert: "Dl7HotSpot",
        quiet: &["29m", "40m"],
        fires: "52m",
        labels: r#"severity="warning",job="dl7-sidecar",instance="s1:9101""#,
    },
    // Over 30 s from 9m on, for a minute.
    AlertCase {
        alert: "Dl7SidecarMembershipStale",
        quiet: &["8m", "9m"],
        fires: "10m",
        labels: r#"severity="warning",job="dl7-sidecar",instance="s1:9101""#,
    },
    // Within 14 days from 6m on (time() > 300 s), for 10 minutes.
    AlertCase {
        alert: "Dl7TlsCertificateExpiring",
        quiet: &["5m", "15m"],
        fires: "16m",
        labels: r#"severity="warning",job="dl7-sidecar",instance="s1:9101",name="/etc/dl7/site.pem""#,
    },
];

#[test]
fn every_alert_rule_passes_its_unit_tests() {
    let rules = read("prometheus/dl7-sidecar-alerts.yml");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    let cases: Vec<&str> = RULE_CASES.iter().map(|case| case.alert).collect();
    assert_eq!(alerts, cases, "one case per alert, in the file's order");
    if !have_promtool() {
        return;
    }
    let alerts = deploy("prometheus/dl7-sidecar-alerts.yml");
    if let Err(e) = dl7_testbed::metrics::test_rules(&alerts, RULE_SERIES, RULE_CASES) {
        panic!("{e:#}");
    }
}
