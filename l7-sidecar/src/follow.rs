//! Following the front's membership (`members-from`): the sidecars route by the same member
//! list as the XDP front in front of them, learnt from the front instead of written twice.
//!
//! The front daemon (`l4-ctl daemon`) serves every VIP's reals on its metrics listener:
//!
//! ```json
//! {"generation":1764644123456,"vips":[{"vip":"10.0.0.100:80/tcp","reals":[
//!   {"address":"10.0.0.11","weight":1,"state":"active","encap":"l2"},
//!   {"address":"10.0.0.12","weight":1,"state":"down","encap":"l2"}]}]}
//! ```
//!
//! Every `members-interval` the follower asks the `members-from` URLs in order (a plain
//! HTTP/1.1 `GET` with `Connection: close`, each answer awaited [`FollowSettings::timeout`],
//! at most [`MAX_ANSWER`] bytes) and follows the first front whose answer gives a membership
//! ([`membership`]): the reals of `members-vip` (or of the front's only VIP) that are `active`
//! or `down` with a weight above 0, in address order, each named by its address and reached
//! at `ADDR:members-peer-port`, with the front's weight. `drained` reals are left out: their
//! keys move to the others, as new flows do at the front. A `down` real stays in the ring
//! and its pool is marked down by the front, so routing skips it like a member down by
//! health checks: its keys go to the scheme's next candidates, and come back when the front
//! says `active` again, without moving any other key.
//!
//! A membership that differs from the routing table's is swapped in exactly as SIGHUP swaps
//! a reloaded one ([`Routed::apply`], the sidecar's): pools of unchanged members are kept, requests in
//! flight finish with the table they started with. An answer that gives no membership (no
//! connection, not 200, not the front's JSON, no such VIP, several VIPs and no
//! `members-vip`, no member left, a scheme that refuses the members) is counted
//! (`dl7_l7_membership_errors_total{reason}`), logged when a front's reason changes (not at
//! every poll), and the next front is asked; when none gives one, the current membership
//! stays and `dl7_l7_membership_age_seconds` grows.
//!
//! Fronts number their generations independently, so a generation only tells answers of one
//! front apart; what is compared is the membership itself.
//!
//! SIGHUP while following: the file's scheme, `members-vip`, `members-peer-port`,
//! `members-interval` and `members-from` apply at once, to the last answer a front gave
//! (the file's `members` only until a front first answers), and the fronts are asked again
//! at once. Removing `members-from` returns to the file's fixed `members`; adding it starts
//! following.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::config::{Config, FollowSettings, Front, Membership, canonical_vip};
use crate::http::body::{BodyError, BodyReader};
use crate::http::response::{self, ResponseHead};
use crate::http::wire;
use crate::metrics::Metrics;
use crate::scheme::{BuildError, Member};

/// Largest answer read from a front (a VIP with thousands of reals is well below it).
pub const MAX_ANSWER: u64 = 1 << 20;
/// Largest response head read from a front.
const MAX_HEAD: usize = 16 * 1024;

/// A front's answer to `GET /members`, as `l4-ctl`'s `membership` module writes it (fields
/// this sidecar does not use, such as `encap`, are ignored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Answer {
    /// Increases with every change at that front.
    pub generation: u64,
    /// Every VIP of the front.
    pub vips: Vec<VipMembers>,
}

/// One VIP's reals.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct VipMembers {
    /// `ADDR:PORT/PROTO`.
    pub vip: String,
    /// Its reals.
    pub reals: Vec<Real>,
}

/// One real as the front reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Real {
    /// The real's address: its member name (as text) and, with `members-peer-port`, its
    /// sidecar's peer address.
    pub address: IpAddr,
    /// The configured weight (kept while the real is down).
    pub weight: u32,
    /// What the front does with it.
    pub state: RealState,
}

/// Whether the front gives a real new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RealState {
    /// Gets new flows.
    Active,
    /// Weight 0 by the operator: no new flows. Not a member.
    Drained,
    /// Failing the front's health check: no new flows, weight kept. A member that routing
    /// skips.
    Down,
}

/// The membership an answer gives, and which members the front reports down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    /// Members in address order.
    pub membership: Membership,
    /// Per member: reported down (routing skips it).
    pub down: Vec<bool>,
}

/// Why a front's answer was not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No connection, or no complete answer in time.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// A status other than 200.
    #[error("answered {0}, not 200")]
    Status(u16),
    /// Not an HTTP response carrying the front's membership JSON.
    #[error("bad answer: {0}")]
    BadAnswer(String),
    /// The VIP followed is not among the front's (or the front serves none).
    #[error("serves {0}")]
    NoVip(String),
    /// Several VIPs and no `members-vip` to choose one.
    #[error("serves {0} VIPs and --members-vip is not set")]
    VipAmbiguous(usize),
    /// No real of the VIP is active or down with a weight above 0.
    #[error("no real of {0} is active or down with a weight above 0")]
    NoMembers(String),
    /// The scheme refused the members.
    #[error("the scheme refused the members: {0}")]
    Scheme(BuildError),
}

impl Refused {
    /// The `reason` label of `dl7_l7_membership_errors_total` (one of
    /// [`crate::metrics::MEMBERSHIP_ERRORS`]).
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Unreachable(_) => "unreachable",
            Refused::Status(_) => "bad_status",
            Refused::BadAnswer(_) => "bad_answer",
            Refused::NoVip(_) => "no_vip",
            Refused::VipAmbiguous(_) => "vip_ambiguous",
            Refused::NoMembers(_) => "no_members",
            Refused::Scheme(_) => "scheme",
        }
    }
}

/// The membership `answer` gives under `settings`, for `scheme` (not built here: the routing
/// table's build checks it).
///
/// ```
/// use l7_sidecar::config::FollowSettings;
/// use l7_sidecar::follow::{self, Answer};
///
/// let answer: Answer = serde_json::from_str(r#"{"generation":7,"vips":[{"vip":"10.0.0.100:80/tcp",
///     "reals":[{"address":"10.0.0.12","weight":2,"state":"down","encap":"l2"},
///              {"address":"10.0.0.11","weight":1,"state":"active","encap":"l2"},
///              {"address":"10.0.0.13","weight":1,"state":"drained","encap":"l2"}]}]}"#).unwrap();
/// let settings = FollowSettings {
///     fronts: Vec::new(),
///     vip: None,
///     peer_port: 8081,
///     interval: std::time::Duration::from_secs(1),
///     self_ip: "10.0.0.11".parse().unwrap(),
/// };
/// let f = follow::membership(&answer, &settings, "ketama").unwrap();
/// let names: Vec<&str> = f.membership.members.iter().map(|m| m.name.as_str()).collect();
/// assert_eq!(names, ["10.0.0.11", "10.0.0.12"]);
/// assert_eq!(f.membership.addrs[1], "10.0.0.12:8081".parse().unwrap());
/// assert_eq!(f.membership.self_index, Some(0));
/// assert_eq!(f.down, [false, true]);
/// ```
pub fn membership(
    answer: &Answer,
    settings: &FollowSettings,
    scheme: &str,
) -> Result<Followed, Refused> {
    let served = || {
        let vips: Vec<&str> = answer.vips.iter().map(|v| v.vip.as_str()).collect();
        vips.join(", ")
    };
    let vip = match &settings.vip {
        Some(wanted) => answer
            .vips
            .iter()
            .find(|v| canonical_vip(&v.vip).as_deref() == Some(wanted.as_str()))
            .ok_or_else(|| match answer.vips.is_empty() {
                true => Refused::NoVip(format!("no VIP {wanted} (it serves none)")),
                false => Refused::NoVip(format!("no VIP {wanted} (it serves {})", served())),
            })?,
        None => match answer.vips.as_slice() {
            [only] => only,
            [] => return Err(Refused::NoVip("no VIP".to_owned())),
            several => return Err(Refused::VipAmbiguous(several.len())),
        },
    };
    let mut reals: Vec<&Real> = vip
        .reals
        .iter()
        .filter(|r| r.weight > 0 && r.state != RealState::Drained)
        .collect();
    reals.sort_by_key(|r| r.address);
    if let Some(twice) = reals.windows(2).find(|w| w[0].address == w[1].address) {
        return Err(Refused::BadAnswer(format!(
            "{} lists {} twice",
            vip.vip, twice[0].address
        )));
    }
    if reals.is_empty() {
        return Err(Refused::NoMembers(vip.vip.clone()));
    }
    Ok(Followed {
        membership: Membership {
            scheme: scheme.to_owned(),
            members: reals
                .iter()
                .map(|r| Member::new(r.address.to_string(), r.weight))
                .collect(),
            addrs: reals
                .iter()
                .map(|r| SocketAddr::new(r.address, settings.peer_port))
                .collect(),
            self_index: reals.iter().position(|r| r.address == settings.self_ip),
        },
        down: reals.iter().map(|r| r.state == RealState::Down).collect(),
    })
}

/// Asks `front` for its membership, all within `timeout`.
pub async fn fetch(front: &Front, timeout: Duration) -> Result<Answer, Refused> {
    let unreachable = |e: std::io::Error| Refused::Unreachable(e.to_string());
    let exchange = async {
        let mut stream = TcpStream::connect(front.addr).await.map_err(unreachable)?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: dl7-sidecar\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n",
            front.path, front.authority
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(unreachable)?;
        let mut buf = BytesMut::with_capacity(4096);
        let mut head = ResponseHead::default();
        loop {
            match response::parse(&buf, MAX_HEAD, &mut head) {
                Ok(true) if head.status >= 200 => break,
                Ok(true) => {
                    // An interim response: the final one follows.
                    buf.advance(head.len);
                    continue;
                }
                Ok(false) => {}
                Err(e) => return Err(Refused::BadAnswer(e.to_string())),
            }
            let read = wire::read_up_to(&mut stream, &mut buf, 4096, Duration::MAX).await;
            if read.map_err(unreachable)? == 0 {
                return Err(Refused::BadAnswer(
                    "closed before a complete response head".to_owned(),
                ));
            }
        }
        if head.status != 200 {
            return Err(Refused::Status(head.status));
        }
        buf.advance(head.len);
        let mut reader = BodyReader::new(head.framing(false), MAX_ANSWER);
        let mut body = Vec::new();
        loop {
            let n = reader
                .next(&mut stream, &mut buf, Duration::MAX)
                .await
                .map_err(|e| match e {
                    BodyError::Read(e) => unreachable(e),
                    BodyError::TooLarge => {
                        Refused::BadAnswer(format!("larger than {MAX_ANSWER} bytes"))
                    }
                    other => Refused::BadAnswer(other.to_string()),
                })?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
            buf.advance(n);
        }
        serde_json::from_slice::<Answer>(&body)
            .map_err(|e| Refused::BadAnswer(format!("not the front's membership JSON: {e}")))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(Refused::Unreachable(format!(
                "no complete answer within {timeout:?}"
            )))
        })
}

/// The follower's state, shared by its task ([`run`]) and SIGHUP (the sidecar's reload);
/// whoever swaps the routing table holds its lock, so the two never interleave.
#[derive(Debug)]
pub struct Follower {
    state: Mutex<State>,
    /// Wakes the task for a poll at once (after a reload).
    wake: Notify,
}

/// What the follower knows.
#[derive(Debug)]
pub struct State {
    /// `None`: not following (fixed `members`).
    settings: Option<FollowSettings>,
    /// The configured scheme.
    scheme: String,
    /// The last answer that gave a membership.
    last: Option<Answered>,
    /// When following began (the age's reference until a front answers).
    since: Instant,
    /// The reason last logged per front URL, while it fails.
    failing: HashMap<String, &'static str>,
    /// True once "no front answered" was logged, until one does.
    stale_logged: bool,
}

/// An answer that gave a membership.
#[derive(Debug)]
struct Answered {
    answer: Answer,
    url: String,
    at: Instant,
}

impl Follower {
    /// The follower for `config` (idle without `members-from`).
    pub fn new(config: &Config, metrics: &Metrics) -> Self {
        metrics.following(config.follow.is_some());
        if let Some(settings) = &config.follow {
            started(settings, &config.membership, metrics);
        }
        Self {
            state: Mutex::new(State {
                settings: config.follow.clone(),
                scheme: config.membership.scheme.clone(),
                last: None,
                since: Instant::now(),
                failing: HashMap::new(),
                stale_logged: false,
            }),
            wake: Notify::new(),
        }
    }

    /// Locks the state (held while the routing table is swapped).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the fronts again at once.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Time since a front last answered with a membership (since following began, until
    /// one does); `None` when not following.
    pub fn age(&self) -> Option<Duration> {
        let state = self.lock();
        state.settings.as_ref()?;
        Some(state.last.as_ref().map_or(state.since, |l| l.at).elapsed())
    }
}

/// Exports the fronts' `dl7_l7_membership_source` (none followed yet) and logs what following
/// starts with.
fn started(settings: &FollowSettings, membership: &Membership, metrics: &Metrics) {
    let urls: Vec<&str> = settings.fronts.iter().map(|f| f.url.as_str()).collect();
    metrics.membership.source(&urls, None);
    let vip = settings.vip.as_deref().unwrap_or("the front's only VIP");
    log::info!(
        "members-from: following the reals of {vip} as served by {} (every {:?}, peer port {})",
        urls.join(", "),
        settings.interval,
        settings.peer_port
    );
    let me = settings.self_ip.to_string();
    if let [only] = membership.members.as_slice()
        && only.name == me
    {
        log::warn!(
            "members-from: until a front answers, this server ({me}) is the only member and \
             serves every request itself"
        );
    } else {
        let names: Vec<&str> = membership.members.iter().map(|m| m.name.as_str()).collect();
        log::info!(
            "members-from: until a front answers, the members are --members: {}",
            names.join(", ")
        );
    }
}

/// What to swap in: a membership and, while following, which members the front reports
/// down.
#[derive(Debug)]
pub struct Target {
    /// The membership.
    pub membership: Membership,
    /// Per member, down by the front; `None`: not following.
    pub down: Option<Vec<bool>>,
}

impl State {
    /// Takes the settings of a reloaded configuration and says what to swap in: the file's
    /// membership when not following or before a front answered, else the last answer's
    /// under the new settings; `None` when that answer gives none under them (the current
    /// table stays until a front's answer does).
    pub fn reconfigure(&mut self, new: &Config, metrics: &Metrics) -> Option<Target> {
        let was_following = self.settings.is_some();
        self.settings = new.follow.clone();
        self.scheme = new.membership.scheme.clone();
        metrics.following(self.settings.is_some());
        let Some(settings) = &self.settings else {
            self.last = None;
            self.failing.clear();
            return Some(Target {
                membership: new.membership.clone(),
                down: None,
            });
        };
        if !was_following {
            self.since = Instant::now();
            started(settings, &new.membership, metrics);
        }
        let urls: Vec<&str> = settings.fronts.iter().map(|f| f.url.as_str()).collect();
        self.failing.retain(|url, _| urls.contains(&url.as_str()));
        let followed = self.last.as_ref().map(|l| l.url.as_str());
        metrics
            .membership
            .source(&urls, followed.filter(|url| urls.contains(url)));
        let Some(last) = &self.last else {
            return Some(Target {
                membership: new.membership.clone(),
                down: Some(vec![false; new.membership.members.len()]),
            });
        };
        match membership(&last.answer, settings, &self.scheme) {
            Ok(f) => Some(Target {
                membership: f.membership,
                down: Some(f.down),
            }),
            Err(e) => {
                log::warn!(
                    "reload: the last answer of {} gives no membership under the new settings \
                     ({e}); the current members stay until a front's answer does",
                    last.url
                );
                None
            }
        }
    }

    /// Counts and (when its reason changed) logs a front's answer that was not followed.
    fn refused(&mut self, url: &str, why: &Refused, metrics: &Metrics) {
        metrics.membership.error(why.reason());
        if self.failing.get(url) != Some(&why.reason()) {
            log::warn!("members-from {url}: {why}");
            self.failing.insert(url.to_owned(), why.reason());
        }
    }
}

/// What the follower acts on: the sidecar (which implements it), kept behind a trait so that
/// this module does not depend on the one that holds it.
pub trait Routed {
    /// The follower's state.
    fn follower(&self) -> &Follower;
    /// The metrics.
    fn metrics(&self) -> &Metrics;
    /// Members in the routing table now.
    fn members(&self) -> usize;
    /// Swaps in `membership` if it differs from the routing table's, and marks the members
    /// `down` says the front reports down; true when the table was swapped.
    fn apply(&self, membership: &Membership, down: Option<&[bool]>) -> Result<bool, BuildError>;
}

/// Follows the fronts until aborted: every `members-interval`, or at once when a reload
/// wakes it; idle while not following.
pub async fn run<S: Routed>(sidecar: Arc<S>) {
    let follower = sidecar.follower();
    loop {
        let settings = follower.lock().settings.clone();
        let Some(settings) = settings else {
            follower.wake.notified().await;
            continue;
        };
        poll(&*sidecar, &settings).await;
        tokio::select! {
            () = tokio::time::sleep(settings.interval) => {}
            () = follower.wake.notified() => {}
        }
    }
}

/// Asks the fronts in order until one's answer gives a membership, and follows it.
async fn poll<S: Routed>(sidecar: &S, settings: &FollowSettings) {
    let metrics = sidecar.metrics();
    for front in &settings.fronts {
        let fetched = fetch(front, settings.timeout()).await;
        let mut state = sidecar.follower().lock();
        let followed = fetched.and_then(|answer| follow_answer(sidecar, &mut state, front, answer));
        match followed {
            Ok(()) => {
                if state.failing.remove(&front.url).is_some() {
                    log::info!("members-from {}: answers again", front.url);
                }
                state.stale_logged = false;
                return;
            }
            Err(why) => state.refused(&front.url, &why, metrics),
        }
    }
    let mut state = sidecar.follower().lock();
    if !state.stale_logged {
        state.stale_logged = true;
        let members = sidecar.members();
        match &state.last {
            Some(last) => log::warn!(
                "members-from: no front gave a membership; keeping the {members} members of \
                 generation {} from {}",
                last.answer.generation,
                last.url
            ),
            None => log::warn!(
                "members-from: no front gave a membership yet; keeping the {members} members \
                 this server started with"
            ),
        }
    }
}

/// Swaps in the membership of `front`'s `answer` if it differs from the routing table's,
/// and marks the members the front reports down.
fn follow_answer<S: Routed>(
    sidecar: &S,
    state: &mut State,
    front: &Front,
    answer: Answer,
) -> Result<(), Refused> {
    let Some(settings) = &state.settings else {
        // Following stopped (a reload) while the front was asked.
        return Ok(());
    };
    let followed = membership(&answer, settings, &state.scheme)?;
    let swapped = sidecar
        .apply(&followed.membership, Some(&followed.down))
        .map_err(Refused::Scheme)?;
    let metrics = &sidecar.metrics().membership;
    if swapped {
        metrics.updates.inc();
        let names: Vec<&str> = followed
            .membership
            .members
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        log::info!(
            "members-from {}: generation {}: {} members ({}), scheme {}{}",
            front.url,
            answer.generation,
            names.len(),
            names.join(", "),
            followed.membership.scheme,
            match followed.membership.self_index {
                Some(_) => "",
                None => "; this server is not one of them and owns no key",
            }
        );
    }
    metrics
        .generation
        .set(i64::try_from(answer.generation).unwrap_or(i64::MAX));
    if state.last.as_ref().is_none_or(|l| l.url != front.url) {
        let urls: Vec<&str> = settings.fronts.iter().map(|f| f.url.as_str()).collect();
        metrics.source(&urls, Some(&front.url));
    }
    state.last = Some(Answered {
        answer,
        url: front.url.clone(),
        at: Instant::now(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vip: Option<&str>) -> FollowSettings {
        FollowSettings {
            fronts: Vec::new(),
            vip: vip.map(|v| canonical_vip(v).unwrap()),
            peer_port: 8081,
            interval: Duration::from_secs(1),
            self_ip: "10.0.0.12".parse().unwrap(),
        }
    }

    fn answer(json: &str) -> Answer {
        serde_json::from_str(json).unwrap()
    }

    const TWO_VIPS: &str = r#"{"generation":5,"vips":[
        {"vip":"10.0.0.100:80/tcp","reals":[
            {"address":"10.0.0.13","weight":3,"state":"active","encap":"l2"},
            {"address":"10.0.0.11","weight":1,"state":"down","encap":"ipip"},
            {"address":"10.0.0.12","weight":2,"state":"active","encap":"l2"},
            {"address":"10.0.0.14","weight":0,"state":"drained","encap":"l2"},
            {"address":"10.0.0.15","weight":0,"state":"down","encap":"l2"},
            {"address":"10.0.0.9","weight":1,"state":"drained","encap":"l2"}]},
        {"vip":"[2001:db8::1]:443/tcp","reals":[
            {"address":"2001:db8::12","weight":1,"state":"active","encap":"l2"}]}]}"#;

    #[test]
    fn members_are_the_active_and_down_reals_in_address_order() {
        let f = membership(
            &answer(TWO_VIPS),
            &settings(Some("10.0.0.100:80/TCP")),
            "maglev",
        )
        .unwrap();
        let m = &f.membership;
        assert_eq!(m.scheme, "maglev");
        assert_eq!(
            m.members,
            [
                Member::new("10.0.0.11", 1),
                Member::new("10.0.0.12", 2),
                Member::new("10.0.0.13", 3)
            ]
        );
        let addrs: Vec<String> = m.addrs.iter().map(ToString::to_string).collect();
        assert_eq!(
            addrs,
            ["10.0.0.11:8081", "10.0.0.12:8081", "10.0.0.13:8081"]
        );
        assert_eq!(m.self_index, Some(1));
        assert_eq!(f.down, [true, false, false]);
        // Address order, not text order: 10.0.0.9 sorts before 10.0.0.11.
        let json = TWO_VIPS.replace(
            r#""10.0.0.9","weight":1,"state":"drained""#,
            r#""10.0.0.9","weight":1,"state":"active""#,
        );
        let f = membership(
            &answer(&json),
            &settings(Some("10.0.0.100:80/tcp")),
            "ketama",
        )
        .unwrap();
        assert_eq!(f.membership.members[0].name, "10.0.0.9");
        assert_eq!(f.membership.self_index, Some(2));
    }

    #[test]
    fn a_server_the_front_does_not_list_owns_nothing() {
        let mut s = settings(Some("[2001:db8::1]:443/tcp"));
        let f = membership(&answer(TWO_VIPS), &s, "ketama").unwrap();
        assert_eq!(f.membership.members, [Member::new("2001:db8::12", 1)]);
        assert_eq!(f.membership.addrs[0].to_string(), "[2001:db8::12]:8081");
        assert_eq!(f.membership.self_index, None);
        s.self_ip = "2001:db8::12".parse().unwrap();
        let f = membership(&answer(TWO_VIPS), &s, "ketama").unwrap();
        assert_eq!(f.membership.self_index, Some(0));
    }

    #[test]
    fn the_vip_must_be_named_when_the_front_serves_several() {
        let err = membership(&answer(TWO_VIPS), &settings(None), "ketama").unwrap_err();
        assert_eq!(err, Refused::VipAmbiguous(2));
        assert_eq!(err.reason(), "vip_ambiguous");
        let err = membership(
            &answer(TWO_VIPS),
            &settings(Some("10.0.0.101:80/tcp")),
            "ketama",
        )
        .unwrap_err();
        assert_eq!(err.reason(), "no_vip");
        assert!(
            err.to_string()
                .contains("(it serves 10.0.0.100:80/tcp, [2001:db8::1]:443/tcp)"),
            "{err}"
        );
        let none = answer(r#"{"generation":1,"vips":[]}"#);
        assert_eq!(
            membership(&none, &settings(None), "ketama").unwrap_err(),
            Refused::NoVip("no VIP".into())
        );
        // One VIP needs no members-vip.
        let one = answer(
            r#"{"generation":1,"vips":[{"vip":"10.0.0.100:80/udp","reals":[
                {"address":"10.0.0.12","weight":1,"state":"active"}]}]}"#,
        );
        let f = membership(&one, &settings(None), "ketama").unwrap();
        assert_eq!(f.membership.self_index, Some(0));
    }

    #[test]
    fn answers_without_members_are_refused() {
        let drained = answer(
            r#"{"generation":1,"vips":[{"vip":"10.0.0.100:80/tcp","reals":[
                {"address":"10.0.0.11","weight":0,"state":"drained"},
                {"address":"10.0.0.12","weight":0,"state":"down"}]}]}"#,
        );
        let err = membership(&drained, &settings(None), "ketama").unwrap_err();
        assert_eq!(err, Refused::NoMembers("10.0.0.100:80/tcp".into()));
        assert_eq!(err.reason(), "no_members");
        let twice = answer(
            r#"{"generation":1,"vips":[{"vip":"10.0.0.100:80/tcp","reals":[
                {"address":"10.0.0.11","weight":1,"state":"active"},
                {"address":"10.0.0.11","weight":2,"state":"down"}]}]}"#,
        );
        let err = membership(&twice, &settings(None), "ketama").unwrap_err();
        assert_eq!(err.reason(), "bad_answer");
    }

    #[test]
    fn malformed_json_is_not_an_answer() {
        for bad in [
            "",
            "{}",
            "[]",
            r#"{"generation":-1,"vips":[]}"#,
            r#"{"generation":1,"vips":[{"vip":"x","reals":[{"address":"nowhere","weight":1,"state":"active"}]}]}"#,
            r#"{"generation":1,"vips":[{"vip":"x","reals":[{"address":"10.0.0.1","weight":1,"state":"resting"}]}]}"#,
            r#"{"generation":1,"vips":[{"vip":"x","reals":[{"address":"10.0.0.1","weight":4294967296,"state":"active"}]}]}"#,
            r#"{"generation":1,"vips":[]} trailing"#,
        ] {
            assert!(serde_json::from_str::<Answer>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_reason_is_a_metric_label() {
        let all = [
            Refused::Unreachable(String::new()),
            Refused::Status(404),
            Refused::BadAnswer(String::new()),
            Refused::NoVip(String::new()),
            Refused::VipAmbiguous(2),
            Refused::NoMembers(String::new()),
            Refused::Scheme(BuildError::NoMembers),
        ];
        let reasons: Vec<&str> = all.iter().map(Refused::reason).collect();
        assert_eq!(reasons, crate::metrics::MEMBERSHIP_ERRORS);
    }

    /// A front on loopback that answers each connection with the next of `answers`.
    async fn front(answers: Vec<Vec<u8>>) -> Front {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in answers {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut request = [0u8; 1024];
                let _ = s.read(&mut request).await;
                let _ = s.write_all(&answer).await;
            }
        });
        Front {
            url: format!("http://{addr}/members"),
            addr,
            authority: addr.to_string(),
            path: "/members".into(),
        }
    }

    #[tokio::test]
    async fn fetching_reads_any_framing_and_refuses_the_rest() {
        let json = r#"{"generation":9,"vips":[]}"#;
        let ok = [
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            ),
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{json}\r\n0\r\n\r\n",
                json.len()
            ),
            format!("HTTP/1.0 200 OK\r\n\r\n{json}"),
        ];
        let f = front(ok.iter().map(|a| a.clone().into_bytes()).collect()).await;
        for _ in 0..ok.len() {
            let got = fetch(&f, Duration::from_secs(2)).await.unwrap();
            assert_eq!(got.generation, 9);
        }
        // An answer without a length, larger than the cap.
        let too_large = format!(
            "HTTP/1.0 200 OK\r\n\r\n{{\"generation\":1,\"vips\":[{}]}}",
            " ".repeat(MAX_ANSWER as usize)
        );
        let bad: [(&str, &str); 5] = [
            (
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                "bad_status",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!",
                "bad_answer",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}",
                "bad_answer",
            ),
            ("garbage\r\n\r\n", "bad_answer"),
            (&too_large, "bad_answer"),
        ];
        let f = front(bad.iter().map(|(a, _)| a.as_bytes().to_vec()).collect()).await;
        for (answer, reason) in bad {
            let err = fetch(&f, Duration::from_secs(2)).await.unwrap_err();
            let answer = &answer[..answer.len().min(60)];
            assert_eq!(err.reason(), reason, "{answer:?}: {err}");
        }
        // Accepted by the kernel, never answered: bounded by the timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let hung = Front { addr, ..f.clone() };
        let started = Instant::now();
        let err = fetch(&hung, Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(err.reason(), "unreachable");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(silent);
        let err = fetch(&hung, Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(err.reason(), "unreachable", "{err}");
    }
}
