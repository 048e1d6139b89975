//! dl7's layer-7 sidecar: it runs on every server, hashes each request's URL with a pluggable
//! scheme to find the server that owns it, serves what it owns and forwards the rest to the
//! owner.
//!
//! The request path, module by module: [`server`] accepts (connection caps, signals; on
//! `listen-tls` the [`tls`] handshake first) and hands each connection, a [`stream`] plain
//! or TLS, to [`connection`], which reads heads with [`http::request`], asks
//! [`router`] who answers, and either forwards with [`proxy`] over a [`pool`] (with
//! [`outlier`] detection and active [`health`] checks) or serves with [`local`] (the [`cache`] filled from the origin, or
//! a local upstream). [`config`] is the one definition of every setting, [`metrics`] of every
//! metric, [`admin`] serves them; [`scheme`] holds the hashing schemes; [`follow`] keeps the
//! members in step with the front's (`members-from`).

pub mod admin;
pub mod cache;
pub mod client;
pub mod config;
pub mod connection;
pub mod context;
pub mod follow;
pub mod health;
pub mod http;
pub mod local;
pub mod members;
pub mod metrics;
pub mod outlier;
pub mod pool;
pub mod proxy;
pub mod router;
pub mod scheme;
pub mod server;
pub mod sidecar;
pub mod stream;
pub mod tls;
