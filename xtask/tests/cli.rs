//! `cargo xtask` as a user meets it: bad options of every kind get one clear error and a
//! non-zero exit, before anything is built or brought up. (This test is also why `cargo test`
//! builds the xtask binary that `cargo xtask test` runs its scenarios with.)

use std::process::Command;

fn xtask(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("run xtask");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bench_options_are_checked_before_anything_runs() {
    for (args, message) in [
        (
            &["bench", "hashing", "--duration", "3"][..],
            "bench hashing has no --duration",
        ),
        (
            &["bench", "xdp", "--concurrency", "4"],
            "bench xdp has no --concurrency",
        ),
        (
            &["bench", "l7", "--concurrency", "0"],
            "--concurrency 0 is not between 1 and 100000",
        ),
        (
            &["bench", "l4", "--duration", "0"],
            "--duration 0 is not more than 0",
        ),
        (
            &["bench", "paper", "--warmup=-1"],
            "--warmup -1 is not between 0 and 3600 seconds",
        ),
    ] {
        let (code, stderr) = xtask(args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn unknown_commands_and_flags_are_usage_errors() {
    for args in [&["frobnicate"][..], &["bench", "l7", "--connections", "4"]] {
        let (code, stderr) = xtask(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
}
