//! The `l7-sidecar` binary's subcommands (not part of the library): `serve` starts
//! [`l7_sidecar::server`] from the settings, `route` prints the owner of keys with a scheme.

pub mod route;
pub mod serve;
