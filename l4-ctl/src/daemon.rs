//! `l4-ctl daemon`: the front's long-running part. It health-checks the reals of every VIP
//! that has a check configured, drains a real that fails (`FLAG_DOWN`) and restores it when it
//! recovers, and serves Prometheus metrics read from the program's per-CPU counters and the
//! membership of every VIP (`GET /members`, [`l4_ctl::membership`]).
//!
//! The maps stay the only state: every second the daemon re-reads the VIPs, reals and checks
//! (so `l4-ctl real add` or `apply` by an operator is picked up) and starts or stops one probe
//! task per real. A restarted daemon starts each real in the state its flag records.
//! `--config FILE` is applied at start (an invalid file stops the start) and on SIGHUP (an
//! invalid file is logged and the running configuration kept). SIGTERM and SIGINT stop it;
//! the program and the maps stay as they are.
//!
//! With `--announce` it also announces the VIPs to the routers while the front is healthy
//! ([`l4_ctl::announce`]), checking several times a second, and reads BIRD's BGP sessions
//! for its metrics ([`l4_ctl::bird`]).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use common::HealthSpec;
use l4_ctl::{
    Balancer, Vip,
    announce::{self, Announcer},
    bird,
    config::{self, Config},
    front,
    health::{self, State, Target},
    lock::PinLock,
    membership::{self, Generations, Membership},
    metrics::{self, DaemonMetrics},
    stats,
};
use log::{error, info, warn};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    signal::unix::{SignalKind, signal},
    task::JoinHandle,
    time::{MissedTickBehavior, interval, timeout},
};

/// How often the daemon re-reads the configuration from the maps.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// How often an announcing daemon checks that the front is healthy: a detached program or a
/// VIP that lost its last real is withdrawn within this.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(200);
/// Limits of the metrics endpoint's request reader.
const METRICS_HEAD_MAX: usize = 8192;
const METRICS_READ_TIMEOUT: Duration = Duration::from_secs(5);

struct Shared {
    pin_dir: PathBuf,
    balancer: Mutex<Balancer>,
    health: DaemonMetrics,
    members: Mutex<Generations>,
}

impl Shared {
    fn balancer(&self) -> std::sync::MutexGuard<'_, Balancer> {
        // A panic while holding the lock cannot leave the maps half-written (each map update
        // is one syscall), so a poisoned lock is still usable.
        self.balancer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The membership the maps hold now, as JSON with its generation (which changes when the
    /// membership does: every reconcile tick and every request observe it).
    fn members_json(&self) -> Result<String, l4_ctl::BalancerError> {
        let vips = membership::read(&self.balancer())?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut generations = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let generation = generations.observe(vips, now_ms);
        let vips = generations.current().map_or(&[][..], |(_, v)| v);
        Ok(serde_json::to_string(&Membership { generation, vips })
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")))
    }
}

/// `announce`: BIRD's control socket when the daemon announces the VIPs.
pub fn run(
    pin_dir: &Path,
    config: Option<&Path>,
    metrics_addr: SocketAddr,
    announce: Option<&Path>,
) -> Result<()> {
    let balancer = Balancer::open(pin_dir)?;
    let attached = front::require_attachment(pin_dir)?;
    let shared = Arc::new(Shared {
        pin_dir: pin_dir.to_owned(),
        balancer: Mutex::new(balancer),
        health: DaemonMetrics::new(announce.is_some()),
        members: Mutex::new(Generations::default()),
    });
    if let Some(path) = config {
        apply_file(&shared, attached.ifindex, path)?;
    }
    let announcing = announce
        .map(|socket| Ok::<_, anyhow::Error>((Announcer::create()?, socket.to_owned())))
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(
        shared,
        attached.ifindex,
        config,
        metrics_addr,
        announcing,
    ))
}

/// Applies a config file under the lock, logging each change.
fn apply_file(shared: &Shared, ifindex: u32, path: &Path) -> Result<()> {
    let desired = Config::read(path)?.validate()?;
    let _lock = PinLock::exclusive(&shared.pin_dir)?;
    let mut balancer = shared.balancer();
    let changes = config::plan(&balancer, ifindex, &desired)?;
    config::execute(&mut balancer, &changes)?;
    for change in &changes {
        info!("config {}: {change}", path.display());
    }
    if changes.is_empty() {
        info!("config {}: the maps match it already", path.display());
    }
    Ok(())
}

async fn serve(
    shared: Arc<Shared>,
    ifindex: u32,
    config: Option<&Path>,
    metrics_addr: SocketAddr,
    mut announcing: Option<(Announcer, PathBuf)>,
) -> Result<()> {
    // The last announcement error logged: the same one is not logged again every tick.
    let mut announce_error = None;
    let listener = TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("listening for /metrics on {metrics_addr}"))?;
    info!(
        "serving /metrics on {}; health checks from {}",
        listener.local_addr().unwrap_or(metrics_addr),
        shared.pin_dir.display()
    );
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut checkers = Checkers::default();
    let mut tick = interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut announce_tick = interval(ANNOUNCE_EVERY);
    announce_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = announce_tick.tick(), if announcing.is_some() => {
                if let Some((announcer, _)) = announcing.as_mut() {
                    reannounce(&shared, announcer, &mut announce_error);
                }
            }
            _ = tick.tick() => {
                if let Some((_, socket)) = &announcing {
                    read_bird(&shared, socket).await;
                }
                if let Err(e) = checkers.reconcile(&shared) {
                    error!("reading the configuration from the maps: {e:#}");
                }
                // Numbers a change even when nobody asks for /members meanwhile.
                if let Err(e) = shared.members_json() {
                    error!("reading the membership from the maps: {e:#}");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move { serve_metrics(stream, &shared).await });
                }
                Err(e) => warn!("accepting a metrics connection: {e}"),
            },
            _ = hup.recv() => match config {
                Some(path) => {
                    let (shared2, path2) = (shared.clone(), path.to_owned());
                    let result = tokio::task::spawn_blocking(move || {
                        apply_file(&shared2, ifindex, &path2)
                    })
                    .await;
                    match result {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => error!("SIGHUP: {e:#}; keeping the running configuration"),
                        Err(e) => error!("SIGHUP: {e}"),
                    }
                }
                None => info!("SIGHUP: no --config to reload"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    checkers.stop_all();
    if let Some((mut announcer, _)) = announcing {
        if let Err(e) = announcer.set(&Default::default()) {
            // Closing the device below withdraws them all the same.
            warn!("withdrawing the VIPs: {e:#}");
        }
        info!("withdrew every VIP announcement");
    }
    info!("stopping; the program and its maps stay as they are");
    Ok(())
}

/// Announces the VIP addresses the front is healthy for, and withdraws the others.
/// `last_error`: the error last logged, logged again only when it changes (or after a
/// success).
fn reannounce(shared: &Shared, announcer: &mut Announcer, last_error: &mut Option<String>) {
    let attached = match front::attachment(&shared.pin_dir) {
        Ok(a) => a.is_some(),
        Err(e) => {
            warn!("reading the attachment: {e:#}; withdrawing");
            false
        }
    };
    let (wanted, drained) = if attached {
        let balancer = shared.balancer();
        let drained = balancer
            .settings()
            .map(|s| s.flags & common::FrontSettings::DRAINED != 0)
            .unwrap_or(false);
        match announce::wanted(&balancer) {
            Ok(w) => (w, drained),
            Err(e) => {
                error!("reading the VIPs to announce: {e:#}; withdrawing");
                (Default::default(), drained)
            }
        }
    } else {
        (Default::default(), false)
    };
    let result = if front::ifindex(announce::IFACE).is_err() {
        // Someone deleted the device: make a new one (the old descriptor goes with it).
        warn!("{} is gone; creating it again", announce::IFACE);
        Announcer::create().and_then(|mut fresh| {
            let changes = fresh.set(&wanted);
            *announcer = fresh;
            changes
        })
    } else {
        announcer.set(&wanted)
    };
    let Some(m) = shared.health.announce.as_ref() else {
        return;
    };
    match result {
        Ok((up, down)) => {
            if last_error.take().is_some() {
                info!("announcing works again");
            }
            for addr in &up {
                info!("announcing {addr}");
                m.vip_announced
                    .with_label_values(&[&addr.to_string()])
                    .set(1);
            }
            for addr in &down {
                let why = if !attached {
                    "the program is not attached"
                } else if drained {
                    "the front is drained"
                } else {
                    "no real of it takes new flows"
                };
                warn!("withdrawing {addr}: {why}");
                m.vip_announced
                    .with_label_values(&[&addr.to_string()])
                    .set(0);
            }
        }
        Err(e) => {
            let message = format!("announcing {wanted:?}: {e:#}");
            if last_error.as_deref() != Some(message.as_str()) {
                error!("{message}; retrying every {ANNOUNCE_EVERY:?}");
                *last_error = Some(message);
            }
            m.drained.set(i64::from(drained));
            m.announced.set(announcer.announced().len() as i64);
            return;
        }
    }
    m.drained.set(i64::from(drained));
    m.announced.set(announcer.announced().len() as i64);
}

/// Reads BIRD's protocols into the BGP session gauges.
async fn read_bird(shared: &Shared, socket: &Path) {
    let Some(m) = shared.health.announce.as_ref() else {
        return;
    };
    match bird::protocols(socket).await {
        Ok(protocols) => {
            m.bird_up.set(1);
            m.bgp_session_up.reset();
            for p in protocols.iter().filter(|p| p.proto == "BGP") {
                m.bgp_session_up
                    .with_label_values(&[&p.name])
                    .set(i64::from(p.is_bgp_up()));
            }
        }
        Err(e) => {
            if m.bird_up.get() != 0 {
                warn!("BIRD: {e:#}");
            }
            m.bird_up.set(0);
            m.bgp_session_up.reset();
        }
    }
}

/// One probe task per checked real.
#[derive(Default)]
struct Checkers {
    tasks: BTreeMap<(Vip, IpAddr), (HealthSpec, JoinHandle<()>)>,
}

impl Checkers {
    /// Starts, restarts or stops probe tasks to match the maps.
    fn reconcile(&mut self, shared: &Arc<Shared>) -> Result<()> {
        let mut wanted = BTreeMap::new();
        let mut restore = Vec::new();
        {
            let balancer = shared.balancer();
            for (vip, _) in balancer.vips()? {
                let spec = balancer.health(&vip)?;
                for real in balancer.reals(&vip)? {
                    if spec.kind == HealthSpec::KIND_NONE {
                        if real.is_down() {
                            restore.push((vip, real.addr()));
                        }
                        continue;
                    }
                    wanted.insert((vip, real.addr()), (spec, !real.is_down()));
                }
            }
        }
        for (vip, addr) in restore {
            info!("real {addr} of {vip}: its VIP has no health check any more; restoring it");
            set_down(shared, vip, addr, false);
        }
        self.tasks.retain(|key, (spec, task)| {
            let keep = wanted.get(key).is_some_and(|(want, _)| want == spec);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (spec, up)) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let target = Target {
                vip: key.0,
                addr: key.1,
                spec,
            };
            let task = tokio::spawn(check_forever(shared.clone(), target, up));
            self.tasks.insert(key, (spec, task));
        }
        Ok(())
    }

    fn stop_all(&mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.tasks) {
            task.abort();
        }
    }
}

/// Probes one real every interval and acts on its transitions.
async fn check_forever(shared: Arc<Shared>, target: Target, up: bool) {
    let mut state = State::new(up);
    let (vip, real) = (target.vip.to_string(), target.addr.to_string());
    let mut tick = interval(target.interval());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = health::probe(&target).await;
        shared.health.check(&vip, &real, result.is_ok());
        let Some(now_up) = state.record(result.is_ok(), &target.spec) else {
            continue;
        };
        if now_up {
            info!(
                "real {real} of {vip} is up after {} good checks: restored",
                target.spec.rise
            );
        } else {
            warn!(
                "real {real} of {vip} is down after {} failed checks ({}): drained",
                target.spec.fall,
                result.err().unwrap_or_default()
            );
        }
        shared.health.transition(&vip, &real, now_up);
        let (shared2, vip2, addr) = (shared.clone(), target.vip, target.addr);
        let _ = tokio::task::spawn_blocking(move || set_down(&shared2, vip2, addr, !now_up)).await;
    }
}

/// Sets or clears a real's down flag under the lock.
fn set_down(shared: &Shared, vip: Vip, addr: IpAddr, down: bool) {
    let result = PinLock::exclusive(&shared.pin_dir)
        .map_err(anyhow::Error::from)
        .and_then(|_lock| Ok(shared.balancer().set_down(&vip, addr, down)?));
    if let Err(e) = result {
        error!(
            "real {addr} of {vip}: cannot mark it {}: {e:#}",
            if down { "down" } else { "up" }
        );
    }
}

/// Answers one HTTP request on the metrics port, then closes the connection.
async fn serve_metrics(mut stream: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; METRICS_HEAD_MAX];
    let mut len = 0;
    let read = timeout(METRICS_READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf[len..]).await.ok()?;
            if n == 0 {
                return None;
            }
            len += n;
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf[..len]) {
                Ok(httparse::Status::Complete(_)) => {
                    return Some(Ok((
                        request.method.unwrap_or("").to_owned(),
                        request.path.unwrap_or("").to_owned(),
                    )));
                }
                Ok(httparse::Status::Partial) if len < buf.len() => continue,
                Ok(httparse::Status::Partial) => return Some(Err(431)),
                Err(_) => return Some(Err(400)),
            }
        }
    })
    .await;
    let (status, content_type, body) = match read {
        Err(_) => (408, "text/plain", "request timeout\n".to_owned()),
        Ok(None) => return,
        Ok(Some(Err(code))) => (code, "text/plain", "bad request\n".to_owned()),
        Ok(Some(Ok((method, path)))) => {
            let path = path.split('?').next().unwrap_or("");
            match (method.as_str(), path) {
                ("GET", "/metrics") => {
                    let snapshot = stats::snapshot(&shared.balancer());
                    match snapshot {
                        Ok(s) => (
                            200,
                            "text/plain; version=0.0.4; charset=utf-8",
                            metrics::render(&s, Some(&shared.health)),
                        ),
                        Err(e) => (500, "text/plain", format!("reading the maps: {e}\n")),
                    }
                }
                ("GET", "/members") => match shared.members_json() {
                    Ok(json) => (200, "application/json", json + "\n"),
                    Err(e) => (500, "text/plain", format!("reading the maps: {e}\n")),
                },
                ("GET", "/healthz") => (200, "text/plain", "ok\n".to_owned()),
                ("GET", _) => (
                    404,
                    "text/plain",
                    "not found: try /metrics or /members\n".to_owned(),
                ),
                _ => (405, "text/plain", "only GET\n".to_owned()),
            }
        }
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}
