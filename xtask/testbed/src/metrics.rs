//! Prometheus metrics as tests and benchmarks read them: one parsed page ([`Metrics`]) with
//! lookups by name and labels, scraped from an address in this namespace or in another one.

use std::net::SocketAddr;

use anyhow::{Context, Result, ensure};
use prometheus_parse::{LineInfo, Scrape};
/// The parser's sample and value types, for callers that look at kinds and labels.
pub use prometheus_parse::{Sample, Value};

use crate::netns;

/// One parsed /metrics page.
pub struct Metrics(pub Scrape);

impl Metrics {
    /// Parses a page in the Prometheus text format; every line must be a sample, a comment or
    /// empty.
    pub fn parse(text: &str) -> Result<Self> {
        if let Some(line) = text
            .lines()
            .find(|line| LineInfo::parse(line) == LineInfo::Ignored)
        {
            anyhow::bail!("a line of /metrics that is not in the text format: {line:?}");
        }
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .context("parsing a /metrics page")?;
        Ok(Metrics(scrape))
    }

    /// The samples of `name` whose labels include `labels`.
    pub fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.samples.iter().filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// The value of the one sample of `name` with `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let found: Vec<&Sample> = self.samples(name, labels).collect();
        ensure!(
            found.len() == 1,
            "{} samples of {name} with {labels:?}, not one",
            found.len()
        );
        value(found[0])
    }

    /// The sum of the samples of `name` with `labels` (0 when there is none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels)
            .filter_map(|s| value(s).ok())
            .sum()
    }

    /// The value of one series written as Prometheus writes it, `name` or
    /// `name{label="value",...}` (its labels are a subset of the sample's); 0 when absent.
    pub fn series(&self, series: &str) -> f64 {
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels: Vec<(&str, &str)> = labels
            .split(',')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((k.trim(), v.trim().trim_matches('"')))
            })
            .collect();
        self.sum(name, &labels)
    }
}

/// How rules that name metrics (Prometheus alert rules, dashboards) fit an exported page:
/// the problems, none when each of `wanted` is used and every name starting with `prefix`
/// that the rules use is a family the page declares (`# TYPE`).
pub fn check_rules(rules: &str, page: &str, prefix: &str, wanted: &[&str]) -> Vec<String> {
    let families: Vec<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut used = Vec::new();
    let mut rest = rules;
    while let Some(at) = rest.find(prefix) {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        used.push(&tail[..len]);
        rest = &tail[len..];
    }
    let missing = wanted
        .iter()
        .filter(|w| !used.contains(w))
        .map(|w| format!("no rule uses {w}"));
    let unknown = used
        .iter()
        .filter(|u| !families.contains(u))
        .map(|u| format!("the rules use {u}, which is not exported"));
    missing.chain(unknown).collect()
}

/// One alert's case in a `promtool test rules` file: at each of the `quiet` times it is not
/// firing yet (or any more), at `fires` it is, with these labels (`name="value",...`).
pub struct AlertCase<'a> {
    pub alert: &'a str,
    pub quiet: &'a [&'a str],
    pub fires: &'a str,
    pub labels: &'a str,
}

/// Runs `promtool test rules` on the alert rules in `alerts`: `series` is the test file's head
/// (`rule_files` naming `ALERTS_FILE`, which is replaced by the path, the input series, and
/// ending with `promql_expr_test:`); each case adds its expressions. An error with promtool's
/// output when a case fails or promtool cannot run.
pub fn test_rules(alerts: &std::path::Path, series: &str, cases: &[AlertCase<'_>]) -> Result<()> {
    let alerts = alerts
        .canonicalize()
        .with_context(|| format!("the alerts file {}", alerts.display()))?;
    let mut text = series.replace("ALERTS_FILE", &alerts.to_string_lossy());
    for case in cases {
        let firing = format!(
            r#"ALERTS{{alertname="{}",alertstate="firing"}}"#,
            case.alert
        );
        for at in case.quiet {
            text += &format!(
                "      - expr: '{firing}'\n        eval_time: {at}\n        exp_samples: []\n"
            );
        }
        text += &format!(
            "      - expr: '{firing}'\n        eval_time: {}\n        exp_samples:\n          \
             - labels: 'ALERTS{{alertname=\"{}\",alertstate=\"firing\",{}}}'\n            \
             value: 1\n",
            case.fires, case.alert, case.labels
        );
    }
    let file = std::env::temp_dir().join(format!(
        "dl7-rules-{}-{}.test.yml",
        std::process::id(),
        alerts.file_stem().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output();
    let _ = std::fs::remove_file(&file);
    let out = out.context("running promtool")?;
    if !out.status.success() {
        anyhow::bail!(
            "promtool test rules:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A sample's number (counters, gauges and untyped samples).
pub fn value(sample: &Sample) -> Result<f64> {
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Ok(v),
        ref other => anyhow::bail!("{}: not a number: {other:?}", sample.metric),
    }
}

/// GET http://`addr`/metrics from this namespace, parsed.
pub fn scrape(addr: SocketAddr) -> Result<Metrics> {
    let r = crate::http::get(addr, "/metrics", &addr.to_string())?;
    page(addr, r.status, &r.body)
}

/// GET http://`addr`/metrics from inside namespace `ns`, parsed.
pub fn scrape_in(ns: &str, addr: SocketAddr) -> Result<Metrics> {
    let (status, body) = netns::http_get(ns, addr, "/metrics")?;
    page(addr, status, &body)
}

fn page(addr: SocketAddr, status: u16, body: &[u8]) -> Result<Metrics> {
    ensure!(status == 200, "http://{addr}/metrics answered {status}");
    let text =
        std::str::from_utf8(body).with_context(|| format!("http://{addr}/metrics is not UTF-8"))?;
    Metrics::parse(text).with_context(|| format!("reading http://{addr}/metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP dl7_x_total x\n# TYPE dl7_x_total counter\n\
        dl7_x_total{pool=\"a\",reason=\"eof\"} 2\ndl7_x_total{pool=\"b\",reason=\"eof\"} 3\n\
        # TYPE dl7_y gauge\ndl7_y 7\n";

    #[test]
    fn lookups_by_name_labels_and_series() {
        let m = Metrics::parse(PAGE).unwrap();
        assert_eq!(m.sum("dl7_x_total", &[]), 5.0);
        assert_eq!(m.sum("dl7_x_total", &[("pool", "b")]), 3.0);
        assert_eq!(m.get("dl7_y", &[]).unwrap(), 7.0);
        assert!(
            m.get("dl7_x_total", &[]).is_err(),
            "two samples are not one"
        );
        assert_eq!(m.series("dl7_x_total{pool=\"a\"}"), 2.0);
        assert_eq!(m.series("dl7_x_total{pool=\"a\", reason=\"eof\"}"), 2.0);
        assert_eq!(m.series("dl7_y"), 7.0);
        assert_eq!(m.series("dl7_absent"), 0.0);
    }

    #[test]
    fn a_line_out_of_the_text_format_is_an_error() {
        assert!(Metrics::parse("dl7_y 7\n=== not a sample ===\n").is_err());
    }
}
