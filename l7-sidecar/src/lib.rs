//! dl7's layer-7 sidecar: it runs on every server, hashes each request's URL with a pluggable
//! scheme to find the server that owns it, serves what it owns and forwards the rest to the owner.

pub mod scheme;
