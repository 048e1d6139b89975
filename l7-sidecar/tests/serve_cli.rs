//! `l7-sidecar serve` configuration errors as a process: one line on stderr naming the field
//! (and the bad value), exit status 2, for flags and for the TOML file alike.

mod support;

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use support::temp_dir;

fn serve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_l7-sidecar"))
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run l7-sidecar")
}

/// Exit status 2 and exactly one line on stderr containing `needle`.
fn refused(args: &[&str], needle: &str) {
    let o = serve(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
}

const CENTRAL: [&str; 6] = [
    "--mode",
    "central",
    "--listen",
    "127.0.0.1:0",
    "--members",
    "127.0.0.1:9",
];

#[test]
fn flag_errors_name_the_field() {
    refused(
        &["--mode", "central", "--members", "a=127.0.0.1:9"],
        "--listen is required",
    );
    refused(
        &[&CENTRAL[..4], &["--members", "a=nowhere"]].concat(),
        "--members: \"nowhere\"",
    );
    refused(
        &[&CENTRAL[..], &["--scheme", "nope"]].concat(),
        "--scheme: \"nope\"",
    );
    refused(
        &[&CENTRAL[..], &["--weights", "1,2"]].concat(),
        "--weights has 2 values",
    );
    refused(
        &[&CENTRAL[..], &["--self", "a"]].concat(),
        "--self cannot be used in central mode",
    );
    refused(
        &[&CENTRAL[..], &["--header-timeout", "soon"]].concat(),
        "--header-timeout: \"soon\"",
    );
    refused(
        &[&CENTRAL[..], &["--threads", "0"]].concat(),
        "--threads: \"0\"",
    );
    refused(
        &[&CENTRAL[..], &["--max-headers", "100000"]].concat(),
        "--max-headers: \"100000\"",
    );
    refused(&[&CENTRAL[..], &["--mode", "both"]].concat(), "--mode");
    refused(
        &[&CENTRAL[..], &["--cache-bytes", "many"]].concat(),
        "--cache-bytes",
    );
    refused(
        &[
            "--listen",
            "127.0.0.1:0",
            "--members",
            "a=127.0.0.1:9",
            "--peer-listen",
            "127.0.0.1:0",
            "--self",
            "a",
        ],
        "--origin is required",
    );
    refused(
        &[
            "--listen",
            "127.0.0.1:0",
            "--members",
            "a=127.0.0.1:9,a=127.0.0.1:10",
            "--peer-listen",
            "127.0.0.1:0",
            "--self",
            "a",
            "--origin",
            "http://127.0.0.1:9",
        ],
        "--members: member \"a\" is listed twice",
    );
}

#[test]
fn file_errors_name_the_file_and_the_field() {
    let dir = temp_dir("cli");
    refused(
        &["--config", "/nonexistent/dl7.toml"],
        "--config: cannot read /nonexistent/dl7.toml",
    );
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "listen = \"127.0.0.1:0\"\nlisten-port = 80\n").expect("write");
    refused(
        &["--config", unknown.to_str().expect("utf-8 path")],
        "unknown field `listen-port`",
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\nmode = \"central\"\nmembers = \"x=127.0.0.1:9\"\nhop-limit = 0\n")
        .expect("write");
    refused(
        &["--config", bad.to_str().expect("utf-8 path")],
        "--hop-limit: \"0\"",
    );
    // A flag fixes what the file gets wrong.
    let o = serve(&[
        "--config",
        bad.to_str().expect("utf-8 path"),
        "--hop-limit",
        "1",
        "--listen",
        "256.0.0.1:1",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--listen: \"256.0.0.1:1\""));
}

#[test]
fn a_busy_address_is_reported_with_its_flag() {
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("address").to_string();
    refused(
        &[
            "--mode",
            "central",
            "--listen",
            &addr,
            "--members",
            "127.0.0.1:9",
        ],
        &format!("--listen {addr}:"),
    );
}

#[test]
fn help_lists_the_flags_scripts_rely_on() {
    let o = serve(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--config",
        "--listen",
        "--peer-listen",
        "--self",
        "--members",
        "--weights",
        "--scheme",
        "--mode",
        "--key",
        "--origin",
        "--upstream",
        "--cache-bytes",
        "--metrics",
        "--threads",
    ] {
        assert!(help.contains(flag), "{flag} missing from serve --help");
    }
}
