//! `Ctx`: what one request is answered with, handed through the request path
//! ([`crate::connection`] -> [`crate::local`] / [`crate::proxy`]) instead of loose
//! parameters: the configuration, the metrics, and the routing table the request started
//! with (a SIGHUP in the middle of a request does not change the table it uses).

use crate::config::Config;
use crate::metrics::Metrics;
use crate::router::Routing;

/// One request's view of the sidecar.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// The metrics.
    pub metrics: &'a Metrics,
    /// The routing table when the request arrived.
    pub routing: &'a Routing,
}
