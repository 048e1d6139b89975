//! `l7-sidecar route` run as a process: good input on the command line and on stdin,
//! `--explain`, and every kind of bad input (one line on stderr, non-zero exit, no panic).

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn route(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_l7-sidecar"))
        .arg("route")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start l7-sidecar");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        // The process may exit on bad arguments before reading: a broken pipe is fine.
        let _ = input.write_all(bytes);
    }
    drop(input);
    child.wait_with_output().expect("wait for l7-sidecar")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

const MEMBERS: &str = "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80";

#[test]
fn keys_on_the_command_line() {
    let o = route(
        &["--scheme", "ketama", "--members", MEMBERS, "/a", "/b", "/c"],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert!(MEMBERS.split(',').any(|m| m == line), "{line}");
    }
}

#[test]
fn members_are_printed_exactly_as_written() {
    let o = route(
        &["--scheme", "md5", "--members", "Cache-A.example:8080", "/x"],
        None,
    );
    assert_eq!(stdout(&o), "Cache-A.example:8080\n");
}

#[test]
fn stdin_keys_match_argument_keys_and_crlf_is_stripped() {
    let args = [
        "--scheme",
        "nginx",
        "--members",
        MEMBERS,
        "--weights",
        "1,2,3",
    ];
    let keys = ["/index.html", "/img/1.png", "/?q=1", "/a/b/c"];
    let mut with_keys = args.to_vec();
    with_keys.extend(keys);
    let from_args = route(&with_keys, None);
    let from_stdin = route(&args, Some(b"/index.html\r\n/img/1.png\n/?q=1\r\n/a/b/c"));
    assert!(from_stdin.status.success());
    assert_eq!(stdout(&from_args), stdout(&from_stdin));
    assert_eq!(stdout(&from_stdin).lines().count(), keys.len());
}

#[test]
fn explain_lists_every_member_once_after_the_owner() {
    let o = route(
        &[
            "--scheme",
            "rendezvous",
            "--members",
            MEMBERS,
            "--explain",
            "/k1",
        ],
        None,
    );
    assert!(o.status.success());
    let out = stdout(&o);
    let (head, rest) = out.trim_end().split_once(" (candidates: ").expect("format");
    let (key, owner) = head.split_once(" -> ").expect("arrow");
    assert_eq!(key, "/k1");
    let candidates: Vec<&str> = rest.trim_end_matches(')').split(',').collect();
    assert_eq!(candidates[0], owner);
    let mut sorted = candidates.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, MEMBERS.split(',').collect::<Vec<_>>());
}

#[test]
fn every_scheme_name_works() {
    for scheme in [
        "rr",
        "md5",
        "mit-ch",
        "carp",
        "ketama",
        "nginx",
        "ht-rr",
        "mod-ch",
        "rendezvous",
        "jump",
        "maglev",
        "bounded",
    ] {
        let o = route(
            &[
                "--scheme",
                scheme,
                "--members",
                MEMBERS,
                "--weights",
                "2,1,1",
                "/k",
            ],
            None,
        );
        assert!(
            o.status.success(),
            "{scheme}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Bad input: exit status 2, nothing on stdout, exactly one line on stderr containing `needle`.
fn assert_one_line_error(args: &[&str], needle: &str) {
    let o = route(args, Some(b"/k\n"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(o.stdout.is_empty(), "{args:?}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

#[test]
fn bad_input_gives_one_line_errors() {
    assert_one_line_error(&["--scheme", "crc", "--members", MEMBERS], "known: rr, md5");
    assert_one_line_error(&["--scheme", "md5", "--members", ""], "empty name");
    assert_one_line_error(
        &["--scheme", "md5", "--members", "a,,b"],
        "member #2 has an empty name",
    );
    assert_one_line_error(&["--scheme", "md5", "--members", "a,b,a"], "listed twice");
    assert_one_line_error(
        &["--scheme", "md5", "--members", "a,b", "--weights", "1"],
        "2 members",
    );
    assert_one_line_error(
        &["--scheme", "md5", "--members", "a,b", "--weights", "1,2,3"],
        "3 values",
    );
    assert_one_line_error(
        &["--scheme", "md5", "--members", "a,b", "--weights", "1,x"],
        "\"x\"",
    );
    assert_one_line_error(
        &["--scheme", "md5", "--members", "a,b", "--weights", "1,-2"],
        "\"-2\"",
    );
    assert_one_line_error(
        &["--scheme", "md5", "--members", "a,b", "--weights", "1,0"],
        "weight 0",
    );
    assert_one_line_error(
        &[
            "--scheme",
            "md5",
            "--members",
            "a",
            "--weights",
            "99999999999",
        ],
        "99999999999",
    );
    assert_one_line_error(
        &[
            "--scheme",
            "jump",
            "--members",
            "a,b",
            "--weights",
            "4000000000,1",
        ],
        "supported",
    );
    assert_one_line_error(&["--members", MEMBERS], "--scheme");
    assert_one_line_error(&["--scheme", "md5"], "--members");
    assert_one_line_error(
        &["--scheme", "md5", "--members", MEMBERS, "--bogus"],
        "--bogus",
    );
}
