//! dl7's traffic tools, as a library for the tasks, tests and benchmarks and as the
//! `dl7-traffic` binary (`dl7-traffic load|origin`):
//!
//! - [`http1`]: HTTP/1.1 on the wire for the tools (a buffered message reader, a one-shot GET);
//! - [`workload`]: the SURGE-like synthetic workload (Zipf popularity, heavy-tailed sizes);
//! - [`origin`]: the synthetic origin that serves any requested size and counts what it serves;
//! - [`load`]: the load generator and its one typed report, [`load::LoadReport`], which every
//!   caller reads (in process, or as the binary's `--json`).

pub mod http1;
pub mod load;
pub mod origin;
pub mod workload;
