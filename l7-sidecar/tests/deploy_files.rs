//! The sidecar's files in deploy/ agree with `l7-sidecar`: the example configuration is valid
//! and every key it mentions (commented-out ones too) is a setting; the systemd unit's
//! command line starts a sidecar that drains and exits cleanly on the unit's stop signal;
//! with `systemd-analyze` installed, the unit also passes `systemd-analyze verify`; the alert
//! rules use only metrics the sidecar exports, and the job the scrape config defines (with
//! `promtool` installed, both files also pass `promtool check`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
        ],
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(rules.contains("up{job=\"dl7-sidecar\"}"));
    let scrape = read("prometheus/dl7-sidecar-scrape.yml");
    assert!(scrape.contains("job_name: dl7-sidecar"));
    assert!(scrape.contains("- dl7-sidecar-alerts.yml"));
    let have_promtool = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if have_promtool {
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
