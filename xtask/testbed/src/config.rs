//! The deploy/ example configs, filled in with the testbed's addresses: the testbed runs what
//! an operator would, not configs of its own.

use std::{fs, net::SocketAddr, path::Path};

use anyhow::{Context, Result};

/// A TOML file with the given keys replaced and the keys in `remove` left out (the rest kept
/// as operators see it).
pub(crate) fn edit(
    template: &Path,
    values: &[(&str, toml::Value)],
    remove: &[&str],
) -> Result<String> {
    let text =
        fs::read_to_string(template).with_context(|| format!("reading {}", template.display()))?;
    let mut doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", template.display()))?;
    for key in remove {
        doc.remove(*key);
    }
    for (key, value) in values {
        doc.insert((*key).to_owned(), value.clone());
    }
    Ok(toml::to_string(&doc)?)
}

/// Rewrites the keys of a config file in place.
pub(crate) fn update(path: &Path, values: &[(&str, toml::Value)]) -> Result<()> {
    let text = edit(path, values, &[])?;
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// deploy/dl7.toml's first VIP (its health check) with the testbed's VIP and reals (each with
/// its encapsulation, if any); health checks ask the sidecars' own health endpoint on
/// `health_port`.
pub(crate) fn front<'a>(
    template: &Path,
    vip: &str,
    reals: impl Iterator<Item = (SocketAddr, Option<&'a str>)>,
    health_port: u16,
) -> Result<String> {
    let text =
        fs::read_to_string(template).with_context(|| format!("reading {}", template.display()))?;
    let doc: toml::Table = toml::from_str(&text)?;
    let mut first = doc
        .get("vip")
        .and_then(|v| v.as_array())
        .and_then(|v| v.first())
        .and_then(|v| v.as_table())
        .cloned()
        .with_context(|| format!("{} has no [[vip]]", template.display()))?;
    first.insert("address".into(), vip.into());
    if let Some(health) = first.get_mut("health").and_then(|h| h.as_table_mut()) {
        health.insert("check".into(), "http".into());
        health.insert("port".into(), i64::from(health_port).into());
        health.insert("path".into(), "/healthz".into());
    }
    let reals: Vec<toml::Value> = reals
        .map(|(addr, encap)| {
            let mut t = toml::Table::new();
            t.insert("address".into(), addr.ip().to_string().into());
            if let Some(encap) = encap {
                t.insert("encap".into(), encap.into());
            }
            toml::Value::Table(t)
        })
        .collect();
    first.insert("real".into(), reals.into());
    let mut out = toml::Table::new();
    out.insert("vip".into(), vec![toml::Value::Table(first)].into());
    Ok(toml::to_string(&out)?)
}
