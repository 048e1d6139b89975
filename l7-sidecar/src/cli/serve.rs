//! `l7-sidecar serve`: reads the settings (flags over an optional TOML file), builds the
//! tokio runtime with `--threads` workers and runs the sidecar until SIGTERM.
//!
//! ```text
//! $ l7-sidecar serve --config /etc/dl7/sidecar.toml
//! $ l7-sidecar serve --mode central --listen 0.0.0.0:80 --scheme nginx \
//!       --members 10.0.0.1:8080,10.0.0.2:8080 --threads 1 --metrics 127.0.0.1:9100
//! ```

use anyhow::Context;
use l7_sidecar::config::Settings;
use l7_sidecar::server;

/// Runs `serve`.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    let config = settings.load()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let reload: server::Reload = Box::new(move || settings.load());
    runtime.block_on(server::run(config, reload))?;
    // Connections still open after the drain timeout are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    Ok(())
}
