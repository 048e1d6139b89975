//! Network namespaces: entering one from a thread, hosts on the testbed's bridge, waiting for
//! a listener, one GET from inside a namespace.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::process;

/// How long a started process may take to listen.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Moves the calling thread into network namespace `ns` (only this thread: the sockets it
/// opens and the interface names it resolves are then those of `ns`).
pub fn enter_netns(ns: &str) -> Result<()> {
    let path = format!("/run/netns/{ns}");
    let file = fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: a namespace fd we own; setns changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(
        rc == 0,
        "setns({path}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Runs `f` on a thread that entered namespace `ns` and returns its result; a panic in `f`
/// is raised again in the caller.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_netns(ns)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// One GET inside namespace `ns`: status and body.
pub fn http_get(ns: &str, addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>)> {
    let r = in_netns(ns, || crate::http::get(addr, path, &addr.to_string()))??;
    Ok((r.status, r.body))
}

/// Waits until `addr` accepts TCP connections from inside `ns`.
pub(crate) fn wait_listening(ns: &str, addr: SocketAddr, what: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    in_netns(ns, || {
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!("{what} did not listen on {addr} within {READY_TIMEOUT:?}")
    })?
}

/// `ip ARGS`.
pub(crate) fn ip(args: &[&str]) -> Result<()> {
    process::output(Command::new("ip").args(args)).map(drop)
}

/// The namespace of `role` in testbed `name`.
pub(crate) fn ns_name(name: &str, role: &str) -> String {
    format!("{name}-{role}")
}

/// The bridge namespace of testbed `name` (its switch: `br0` joins every host's veth).
pub fn switch_ns(name: &str) -> String {
    ns_name(name, "br")
}

/// The second switch of testbed `name`: the routed servers' subnet behind the router.
pub(crate) fn l3_switch_ns(name: &str) -> String {
    ns_name(name, "br2")
}

/// The third switch of testbed `name`: the clients' subnet behind the router (several
/// fronts).
pub(crate) fn client_switch_ns(name: &str) -> String {
    ns_name(name, "br3")
}

/// Creates a switch: namespace `br` holding bridge `br0`.
pub(crate) fn add_switch(br: &str) -> Result<String> {
    ip(&["netns", "add", br])?;
    ip(&["-n", br, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", br, "link", "set", "br0", "up"])?;
    Ok(br.to_owned())
}

/// A host namespace joined to the testbed's switch by a veth (`eth0` inside, `v<role>` on
/// the bridge).
pub(crate) fn add_host(name: &str, role: &str, addrs: &[Ipv4Addr]) -> Result<String> {
    add_host_on(name, &switch_ns(name), role, addrs)
}

/// [`add_host`] on switch `br`.
pub(crate) fn add_host_on(name: &str, br: &str, role: &str, addrs: &[Ipv4Addr]) -> Result<String> {
    let ns = ns_name(name, role);
    ip(&["netns", "add", &ns])?;
    plug(br, &ns, "eth0", &format!("v{role}"), addrs)?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    Ok(ns)
}

/// Joins namespace `ns` to switch `br` by a veth: `iface` inside (with `addrs`/24), `port`
/// on the bridge.
pub(crate) fn plug(br: &str, ns: &str, iface: &str, port: &str, addrs: &[Ipv4Addr]) -> Result<()> {
    ip(&[
        "link", "add", iface, "netns", ns, "type", "veth", "peer", "name", port, "netns", br,
    ])?;
    ip(&["-n", br, "link", "set", port, "master", "br0", "up"])?;
    for a in addrs {
        ip(&["-n", ns, "addr", "add", &format!("{a}/24"), "dev", iface])?;
    }
    ip(&["-n", ns, "link", "set", iface, "up"])
}

/// The namespaces whose names start with `prefix` and a dash.
pub(crate) fn namespaces_of(prefix: &str) -> impl Iterator<Item = String> {
    let prefix = format!("{prefix}-");
    fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(move |n| n.starts_with(&prefix))
}
