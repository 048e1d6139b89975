//! deploy/grafana/dl7-dashboard.json stays true to the metrics both tiers export: every
//! `dl7_l4_*` and `dl7_l7_*` name its queries (panel targets and template variables) use is
//! documented and registered in l4-ctl/src/metrics.rs or l7-sidecar/src/metrics.rs (a
//! histogram's `_bucket`, `_sum` and `_count` series included). The sources are read as text,
//! so the sidecar crate is not a dependency. Also: the panels are well formed (unique ids,
//! a datasource and at least one query each), the queries use only defined variables, the
//! Cache row shows every cache metric the sidecar exports, and, with `promtool` (Debian
//! package prometheus) installed, every query parses as PromQL.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use serde_json::Value;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/grafana/dl7-dashboard.json"
);
const FRONT_METRICS: &str = include_str!("../src/metrics.rs");
const SIDECAR_METRICS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../l7-sidecar/src/metrics.rs"
));

/// The datasource every panel and query names: the dashboard's `datasource` variable.
const DATASOURCE_UID: &str = "${datasource}";

/// Grafana's built-in variables the queries may use.
const BUILTINS: &[&str] = &["__rate_interval", "__interval", "__range"];

/// A histogram's series: the name plus one of these.
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD)
        .unwrap_or_else(|e| panic!("read {}: {e}", Path::new(DASHBOARD).display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// The length of the metric-name characters at the start of `s`.
fn name_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

/// Every `dl7_l4_*` / `dl7_l7_*` name in `text`, each with the text before it.
fn dl7_names(text: &str) -> Vec<(&str, &str)> {
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("dl7_l").map(|i| from + i) {
        let len = name_len(&text[at..]);
        let name = &text[at..at + len];
        if name.starts_with("dl7_l4_") || name.starts_with("dl7_l7_") {
            names.push((name, &text[..at]));
        }
        from = at + len.max(1);
    }
    names
}

/// The metrics a metrics.rs exports and documents.
#[derive(Debug, Default)]
struct Metrics {
    /// Names registered (string literals in the code), and whether each is a histogram.
    registered: BTreeMap<String, bool>,
    /// Names the module doc's table mentions.
    documented: BTreeSet<String>,
}

impl Metrics {
    fn scan(source: &str, prefix: &str) -> Self {
        let mut metrics = Metrics::default();
        for line in source.lines() {
            let line = line.trim_start();
            if let Some(doc) = line.strip_prefix("//!") {
                metrics.documented.extend(
                    dl7_names(doc)
                        .into_iter()
                        .filter(|(name, _)| name.starts_with(prefix))
                        .map(|(name, _)| name.to_owned()),
                );
            }
        }
        // String literals: `"dl7_...` ending with `"`, in the code (not comments).
        let code: String = source
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .flat_map(|l| [l, "\n"])
            .collect();
        for (name, before) in dl7_names(&code) {
            let after = &code[before.len() + name.len()..];
            if !(name.starts_with(prefix) && before.ends_with('"') && after.starts_with('"')) {
                continue;
            }
            let opener = before[..before.len() - 1].trim_end();
            let histogram = opener.ends_with("HistogramOpts::new(");
            metrics.registered.insert(name.to_owned(), histogram);
        }
        metrics
    }

    /// Whether a query may use `name`: a documented, registered metric or one of a
    /// histogram's series.
    fn allows(&self, name: &str) -> bool {
        let known = |n: &str| self.documented.contains(n) && self.registered.contains_key(n);
        known(name)
            || HISTOGRAM_SUFFIXES.iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| known(base) && self.registered[base])
            })
    }
}

fn front() -> Metrics {
    Metrics::scan(FRONT_METRICS, "dl7_l4_")
}

fn sidecar() -> Metrics {
    Metrics::scan(SIDECAR_METRICS, "dl7_l7_")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn title(panel: &Value) -> &str {
    panel["title"].as_str().unwrap_or("(untitled)")
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

/// (where, query) for every PromQL query of the panels' targets.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            targets.into_iter().map(move |t| {
                let expr = t["expr"].as_str().unwrap_or_default().to_owned();
                (
                    format!("panel {:?} target {}", title(panel), t["refId"]),
                    expr,
                )
            })
        })
        .collect()
}

/// (name, query) of the template variables that query the datasource.
fn variable_queries(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let query = match &v["query"] {
                Value::String(s) => s.clone(),
                q => q["query"].as_str().unwrap_or_default().to_owned(),
            };
            let name = v["name"].as_str().unwrap_or_default();
            (format!("variable {name}"), query)
        })
        .collect()
}

#[test]
fn the_metric_sources_are_read() {
    let (front, sidecar) = (front(), sidecar());
    for (metrics, counter, histogram) in [
        (&front, "dl7_l4_frames_total", None),
        (
            &sidecar,
            "dl7_l7_requests_total",
            Some("dl7_l7_request_duration_seconds"),
        ),
    ] {
        assert_eq!(metrics.registered.get(counter), Some(&false), "{metrics:?}");
        assert!(metrics.documented.contains(counter), "{metrics:?}");
        if let Some(h) = histogram {
            assert_eq!(metrics.registered.get(h), Some(&true), "{metrics:?}");
        }
    }
    assert!(front.allows("dl7_l4_real_up"));
    assert!(sidecar.allows("dl7_l7_request_duration_seconds_bucket"));
    assert!(!sidecar.allows("dl7_l7_requests_total_count"));
    assert!(!front.allows("dl7_l4_no_such_metric"));
}

#[test]
fn every_query_uses_documented_metrics() {
    let dashboard = dashboard();
    let (front, sidecar) = (front(), sidecar());
    let queries: Vec<_> = panel_queries(&dashboard)
        .into_iter()
        .chain(variable_queries(&dashboard))
        .collect();
    let mut used = BTreeSet::new();
    let mut wrong = Vec::new();
    for (place, query) in &queries {
        for (name, _) in dl7_names(query) {
            used.insert(name);
            let metrics = if name.starts_with("dl7_l4_") {
                &front
            } else {
                &sidecar
            };
            if !metrics.allows(name) {
                wrong.push(format!("{place}: {name}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "not metrics that l4-ctl/src/metrics.rs or l7-sidecar/src/metrics.rs document \
         and register:\n{}",
        wrong.join("\n")
    );
    // Both tiers are on the dashboard.
    assert!(used.iter().any(|n| n.starts_with("dl7_l4_")), "{used:?}");
    assert!(used.iter().any(|n| n.starts_with("dl7_l7_")), "{used:?}");
}

/// The panels of the row whose title starts with `heading`: an expanded row's are the panels
/// below it down to the next row, a collapsed row's are nested in it.
fn row_panels<'a>(dashboard: &'a Value, heading: &str) -> Vec<&'a Value> {
    let top = dashboard["panels"].as_array().expect("panels");
    let y = |panel: &Value| panel["gridPos"]["y"].as_u64().unwrap_or_default();
    let row = top
        .iter()
        .find(|p| is_row(p) && title(p).starts_with(heading))
        .unwrap_or_else(|| panic!("no row {heading:?}"));
    let nested = panels(&row["panels"]);
    if !nested.is_empty() {
        return nested;
    }
    let end = top
        .iter()
        .filter(|p| is_row(p) && y(p) > y(row))
        .map(y)
        .min()
        .unwrap_or(u64::MAX);
    top.iter()
        .filter(|p| !is_row(p) && y(p) > y(row) && y(p) < end)
        .collect()
}

/// Every `dl7_l7_cache_*` metric the sidecar documents and registers, and the origin fetches
/// a miss causes, is on a panel of the Cache row.
#[test]
fn the_cache_row_shows_every_cache_metric() {
    let dashboard = dashboard();
    let row = row_panels(&dashboard, "Cache");
    let used: BTreeSet<&str> = row
        .iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .flat_map(|target| dl7_names(target["expr"].as_str().unwrap_or_default()))
        .map(|(name, _)| name)
        .collect();
    let sidecar = sidecar();
    let cache: Vec<&str> = sidecar
        .registered
        .keys()
        .map(String::as_str)
        .filter(|name| name.starts_with("dl7_l7_cache_") && sidecar.allows(name))
        .collect();
    assert!(cache.len() >= 10, "{cache:?}");
    let missing: Vec<&str> = cache
        .into_iter()
        .chain(["dl7_l7_origin_fetches_total"])
        .filter(|name| !used.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "no panel of the Cache row shows {missing:?}"
    );
}

#[test]
fn the_panels_are_well_formed() {
    let dashboard = dashboard();
    let all = panels(&dashboard);
    assert!(all.iter().any(|p| !is_row(p)), "no panels");
    let mut ids = BTreeSet::new();
    for panel in &all {
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {:?} has no id", title(panel)));
        assert!(ids.insert(id), "panel id {id} twice");
        let pos = &panel["gridPos"];
        let (x, w) = (pos["x"].as_u64(), pos["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24),
            "panel {:?}: gridPos {pos}",
            title(panel)
        );
        if is_row(panel) {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"],
            DATASOURCE_UID,
            "panel {:?}: datasource",
            title(panel)
        );
        let targets = panel["targets"].as_array();
        assert!(
            targets.is_some_and(|t| !t.is_empty()),
            "panel {:?} has no targets",
            title(panel)
        );
        let mut refs = BTreeSet::new();
        for target in targets.into_iter().flatten() {
            let ref_id = target["refId"].as_str().unwrap_or_default();
            assert!(
                !ref_id.is_empty() && refs.insert(ref_id),
                "panel {:?}: refId {ref_id:?} missing or repeated",
                title(panel)
            );
            assert_eq!(target["datasource"]["uid"], DATASOURCE_UID);
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| !e.trim().is_empty()),
                "panel {:?} target {ref_id}: no expr",
                title(panel)
            );
        }
    }
}

/// Names of the variables the dashboard defines.
fn variables(dashboard: &Value) -> BTreeMap<String, &Value> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().expect("variable name").to_owned(), v))
        .collect()
}

/// Every `$name` and `${name}` in `query`.
fn variable_refs(query: &str) -> Vec<&str> {
    query
        .match_indices('$')
        .map(|(at, _)| {
            let rest = &query[at + 1..];
            match rest.strip_prefix('{') {
                Some(inner) => &inner[..inner.find('}').unwrap_or(inner.len())],
                None => &rest[..name_len(rest)],
            }
        })
        .collect()
}

#[test]
fn the_variables_are_defined_and_used() {
    let dashboard = dashboard();
    let vars = variables(&dashboard);
    let datasource = vars.get("datasource").expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    for (name, metric) in [("vip", "dl7_l4_vip_packets_total"), ("instance", "dl7_l7_")] {
        let var = vars
            .get(name)
            .unwrap_or_else(|| panic!("no {name} variable"));
        assert_eq!(var["datasource"]["uid"], DATASOURCE_UID, "variable {name}");
        let query = variable_queries(&dashboard)
            .into_iter()
            .find(|(place, _)| *place == format!("variable {name}"))
            .map(|(_, q)| q)
            .unwrap_or_default();
        assert!(
            query.starts_with("label_values(") && query.contains(metric),
            "variable {name}: {query:?}"
        );
    }
    let panel_queries = panel_queries(&dashboard);
    let mut used = BTreeSet::new();
    for (place, query) in &panel_queries {
        for var in variable_refs(query) {
            assert!(
                vars.contains_key(var) || BUILTINS.contains(&var),
                "{place}: undefined variable ${var}"
            );
            used.insert(var);
        }
    }
    for name in vars.keys().filter(|n| *n != "datasource") {
        assert!(used.contains(name.as_str()), "variable {name} is not used");
    }
}

/// `query` as Prometheus would get it from Grafana, the selectors matching everything.
fn substituted(query: &str) -> String {
    let mut out = query.to_owned();
    for var in variable_refs(query) {
        let value = match var {
            "__range" => "1h",
            v if v.starts_with("__") => "1m",
            _ => ".*",
        };
        out = out
            .replace(&format!("${{{var}}}"), value)
            .replace(&format!("${var}"), value);
    }
    out
}

#[test]
fn every_panel_query_parses_as_promql() {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("note: `promtool` not installed (Debian package prometheus): check skipped");
        return;
    }
    let queries = panel_queries(&dashboard());
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, query))| {
            let record = format!("dashboard_query_{i}");
            serde_json::json!({ "record": record, "expr": substituted(query) })
        })
        .collect();
    // JSON is YAML: a rule file with one recording rule per query.
    let file = serde_json::json!({ "groups": [{ "name": "dl7-dashboard", "rules": rules }] });
    let dir = std::env::temp_dir().join(format!("dl7-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("queries.yml");
    std::fs::write(&path, file.to_string()).expect("write the rule file");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}\nthe queries:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        queries
            .iter()
            .enumerate()
            .map(|(i, (place, query))| format!("dashboard_query_{i}: {place}: {query}\n"))
            .collect::<String>()
    );
}
