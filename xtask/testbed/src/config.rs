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

/// deploy/dl7.toml's first VIP (its health check) once for each of the testbed's `vips`, with
/// the testbed's reals (each with its encapsulation, if any); health checks ask the sidecars'
/// own health endpoint on `health_port`.
pub(crate) fn front<'a>(
    template: &Path,
    vips: &[String],
    reals: impl Iterator<Item = (SocketAddr, Option<&'a str>)> + Clone,
    health_port: u16,
) -> Result<String> {
    let text =
        fs::read_to_string(template).with_context(|| format!("reading {}", template.display()))?;
    let doc: toml::Table = toml::from_str(&text)?;
    let first = doc
        .get("vip")
        .and_then(|v| v.as_array())
        .and_then(|v| v.first())
        .and_then(|v| v.as_table())
        .cloned()
        .with_context(|| format!("{} has no [[vip]]", template.display()))?;
    let mut tables = Vec::new();
    for vip in vips {
        let mut t = first.clone();
        t.insert("address".into(), vip.as_str().into());
        if let Some(health) = t.get_mut("health").and_then(|h| h.as_table_mut()) {
            health.insert("check".into(), "http".into());
            health.insert("port".into(), i64::from(health_port).into());
            health.insert("path".into(), "/healthz".into());
        }
        let reals: Vec<toml::Value> = reals
            .clone()
            .map(|(addr, encap)| {
                let mut r = toml::Table::new();
                r.insert("address".into(), addr.ip().to_string().into());
                if let Some(encap) = encap {
                    r.insert("encap".into(), encap.into());
                }
                toml::Value::Table(r)
            })
            .collect();
        t.insert("real".into(), reals.into());
        tables.push(toml::Value::Table(t));
    }
    let mut out = toml::Table::new();
    out.insert("vip".into(), tables.into());
    Ok(toml::to_string(&out)?)
}
