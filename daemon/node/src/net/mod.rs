//! The committee network: libp2p over TCP + Noise + Yamux.
//!
//! ```text
//!             Net (owned by the node's one event loop)
//!   send/broadcast ──► stream "/sibyl/msg/3" (one per peer) ──► peer: NetEvent::Message
//!   publish_report ──► gossipsub "sibyl/reports/1" ─────► peer: validator ─► NetEvent::Report
//!                      connection limits, then allow-list: only committee PeerIds get in
//!                      ping every 500 ms; silent 2 s ─► close ─► PeerDisconnected; redial
//! ```
//!
//! Only committee members get in: the allow-list behaviour refuses every
//! connection whose Noise-authenticated PeerId is not in the committee, before
//! any protocol handler exists, so nothing a stranger sends reaches the
//! protocol; connection limits bound the handshakes strangers can start.
//! Inbound messages pass a size limit (enforced while reading) and two
//! per-member token buckets, of messages and of bytes; what fails is dropped
//! and counted by reason. A member not heard from (message, report, ping
//! reply) for `silence_timeout` is disconnected at once, not after TCP's
//! retransmission backoff. Members dial every other member they are not
//! connected to, with a short capped backoff and a bounded setup time, so a
//! restarted or partitioned member rejoins by itself within about a second.
//!
//! `next_event` is cancel-safe: it can sit in a `tokio::select!` next to the
//! node's timers and channels.

mod limits;
mod stream;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::identity::Keypair;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, Transport, allow_block_list, connection_limits, identify, noise,
    ping, tcp, yamux,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use sibyl_util::TokenBucket;
pub use stream::MESSAGE_PROTOCOL;
use stream::{Outgoing, StreamEvent, Wire};

/// The gossipsub topic signed reports travel on.
pub const REPORT_TOPIC: &str = "sibyl/reports/1";

/// One committee member as the network sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// FROST identifier / committee index, 1..=n.
    pub index: u16,
    pub peer_id: PeerId,
    pub addr: Multiaddr,
}

/// Size and rate limits, timers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest point-to-point message accepted or sent.
    pub max_message_bytes: usize,
    /// Largest signed report on gossip.
    pub max_report_bytes: usize,
    /// Sustained inbound messages per second per member (messages + reports).
    pub rate_per_sec: u32,
    /// Burst allowance on top of the sustained rate.
    pub burst: u32,
    /// Sustained inbound bytes per second per member (messages + reports);
    /// see [`Limits::with_byte_budget`].
    pub bytes_per_sec: u32,
    /// Bytes allowed at once on top of `bytes_per_sec`.
    pub byte_burst: u32,
    /// First redial delay after a failure or disconnect.
    pub redial_min: Duration,
    /// Largest redial delay.
    pub redial_max: Duration,
    /// How long a sent message may wait for its acknowledgement.
    pub request_timeout: Duration,
    /// How often each connection is pinged.
    pub ping_interval: Duration,
    /// A connected member from whom nothing arrived for this long (no
    /// message, report or ping reply) is disconnected; also the ping timeout.
    pub silence_timeout: Duration,
    /// Longest a connection may take to set up (TCP connect, Noise, Yamux),
    /// in either direction.
    pub dial_timeout: Duration,
    /// Connections being set up from outside at once (each costs a Noise
    /// handshake before the PeerId is known and the allow-list can refuse it).
    pub max_pending_incoming: u32,
    /// Established connections per member (two members dialling each other
    /// at once make two; a third covers a reconnect while an old one closes).
    pub max_connections_per_peer: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1 << 20,
            max_report_bytes: 4 << 20,
            rate_per_sec: 500,
            burst: 1000,
            bytes_per_sec: 4 << 20,
            byte_burst: 4 << 20,
            redial_min: Duration::from_millis(250),
            redial_max: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_millis(500),
            silence_timeout: Duration::from_secs(2),
            dial_timeout: Duration::from_secs(2),
            max_pending_incoming: 16,
            max_connections_per_peer: 3,
        }
    }
}

impl Limits {
    /// Sizes the per-member byte budget from the committee: `members`
    /// members, `feeds` feeds, a round every `round_interval`.
    ///
    /// One member's legitimate traffic per round is at most about a
    /// proposal (every member's observation: `members` x `feeds` values)
    /// plus its report, hint and shares: counted as `(members + 2)` messages
    /// of `feeds x 128 + 512` bytes. The sustained budget is 8x that per
    /// second (retried attempts, round jumps), at least 1 MiB/s so catch-up
    /// pages keep flowing; the burst lets two of the largest messages
    /// through at once.
    pub fn with_byte_budget(
        mut self,
        members: usize,
        feeds: usize,
        round_interval: Duration,
    ) -> Self {
        let message = (feeds as u64).saturating_mul(128).saturating_add(512);
        let per_round = (members as u64).saturating_add(2).saturating_mul(message);
        let interval_ms = u64::try_from(round_interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let per_sec = per_round.saturating_mul(8).saturating_mul(1000) / interval_ms;
        let rate = per_sec.max(1 << 20);
        let burst = rate.max((self.max_message_bytes as u64).saturating_mul(2));
        self.bytes_per_sec = u32::try_from(rate).unwrap_or(u32::MAX);
        self.byte_burst = u32::try_from(burst).unwrap_or(u32::MAX);
        self
    }
}

/// Decides whether a gossiped report is valid (e.g. verifies against the group
/// key). Invalid reports are rejected, not forwarded, and counted.
pub type ReportValidator = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Everything a [`Net`] needs.
#[derive(Clone)]
pub struct NetConfig {
    pub listen: Multiaddr,
    pub identity: Keypair,
    /// The whole committee, this member included.
    pub members: Vec<Member>,
    pub limits: Limits,
    /// Checks gossiped reports; `None` accepts every report from a member.
    pub report_validator: Option<ReportValidator>,
}

impl NetConfig {
    /// The network settings of node.toml and its committee file.
    pub fn from_node_config(
        config: &crate::config::Config,
        identity: Keypair,
    ) -> Result<Self, NetError> {
        let me = identity.public().to_peer_id();
        let members: Vec<Member> = config
            .committee
            .members
            .iter()
            .map(|m| Member {
                index: m.index,
                peer_id: m.peer_id,
                addr: m.address.clone(),
            })
            .collect();
        let listen = match &config.node.net.listen {
            Some(l) => l.get_ref().parse().map_err(|e| NetError::Listen {
                addr: Multiaddr::empty(),
                reason: format!("net.listen {:?} is not a multiaddr: {e}", l.get_ref()),
            })?,
            None => members
                .iter()
                .find(|m| m.peer_id == me)
                .map(|m| m.addr.clone())
                .ok_or(NetError::NotInCommittee(me))?,
        };
        let net = &config.node.net;
        let redial = net.redial_interval.0.max(Duration::from_millis(10));
        let limits = Limits {
            max_message_bytes: net.max_message_bytes,
            rate_per_sec: net.rate_limit_per_peer,
            burst: net.rate_limit_per_peer,
            redial_min: redial,
            redial_max: (redial * 16).max(Duration::from_secs(10)),
            request_timeout: net.request_timeout.0,
            ..Limits::default()
        };
        Ok(Self {
            listen,
            identity,
            members,
            limits,
            report_validator: None,
        })
    }
}

impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetConfig")
            .field("listen", &self.listen)
            .field("peer_id", &self.identity.public().to_peer_id())
            .field("members", &self.members)
            .field("limits", &self.limits)
            .field("report_validator", &self.report_validator.is_some())
            .finish()
    }
}

/// Why an inbound message or connection was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// A connection from a PeerId outside the committee.
    NotMember,
    /// Larger than the size limit.
    Oversized,
    /// Over the member's rate limit.
    RateLimited,
    /// Over the member's byte budget.
    OverByteBudget,
    /// An inbound connection over a connection limit.
    ConnectionLimit,
    /// A gossiped report the validator refused.
    InvalidReport,
    /// A gossiped report without a committee member as its origin.
    UnknownOrigin,
    /// A message the protocol layer could not decode ([`Net::report_malformed`]).
    Malformed,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NotMember => "not_member",
            DropReason::Oversized => "oversized",
            DropReason::RateLimited => "rate_limited",
            DropReason::OverByteBudget => "over_byte_budget",
            DropReason::ConnectionLimit => "connection_limit",
            DropReason::InvalidReport => "invalid_report",
            DropReason::UnknownOrigin => "unknown_origin",
            DropReason::Malformed => "malformed",
        }
    }
}

/// What the network tells the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// A point-to-point message from member `from`.
    Message {
        from: u16,
        bytes: Vec<u8>,
    },
    /// A gossiped report that passed the validator; `from` is its origin.
    Report {
        from: u16,
        bytes: Vec<u8>,
    },
    PeerConnected(u16),
    PeerDisconnected(u16),
    /// Something inbound was dropped (already counted in [`NetStats`]).
    Dropped {
        from: Option<PeerId>,
        reason: DropReason,
    },
}

/// Counters since the `Net` started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub reports_published: u64,
    pub reports_received: u64,
    /// Sent messages that were not acknowledged (peer down, timeout, refused).
    pub send_failures: u64,
    pub dials: u64,
    /// Connections closed because the member went silent or a ping failed.
    pub peer_timeouts: u64,
    pub dropped: BTreeMap<DropReason, u64>,
}

impl NetStats {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or(0)
    }
}

/// Prometheus metrics of the network, registered with
/// [`Net::register_metrics`].
#[derive(Clone, Debug, Default)]
struct NetMetrics {
    messages: Family<Vec<(String, String)>, Counter>,
    reports: Family<Vec<(String, String)>, Counter>,
    dropped: Family<Vec<(String, String)>, Counter>,
    connected: Gauge,
    peer_timeouts: Counter,
    dials: Counter,
}

impl NetMetrics {
    fn inc(family: &Family<Vec<(String, String)>, Counter>, key: &str, value: &str) {
        family
            .get_or_create(&vec![(key.to_string(), value.to_string())])
            .inc();
    }
}

/// Setting up the network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "this node's PeerId {0} is not in the committee; check the identity key and the committee file"
    )]
    NotInCommittee(PeerId),
    #[error("committee member {0} is listed twice (by index or PeerId)")]
    DuplicateMember(u16),
    #[error("committee index 0 is invalid: members are numbered 1..=n")]
    ZeroIndex,
    #[error(
        "cannot listen on {addr}: {reason}; choose a different listen address or stop the process using it"
    )]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot build the libp2p stack: {0}")]
    Build(String),
}

/// Sending failed before anything left the process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no committee member has index {0}")]
    UnknownMember(u16),
    #[error("cannot send a message to ourselves (member {0})")]
    ToSelf(u16),
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("cannot publish the report: {0}")]
    Publish(String),
}

/// Starts the writer task of `peer` (see `stream`); returns its queue.
fn spawn_writer(
    control: &libp2p_stream::Control,
    peer: PeerId,
    events: &tokio::sync::mpsc::Sender<StreamEvent>,
) -> tokio::sync::mpsc::Sender<Outgoing> {
    let (tx, rx) = tokio::sync::mpsc::channel(stream::PEER_QUEUE);
    tokio::spawn(stream::write_loop(
        control.clone(),
        peer,
        rx,
        events.clone(),
    ));
    tx
}

fn check_port_free(addr: &Multiaddr) -> Result<(), NetError> {
    use libp2p::multiaddr::Protocol;
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    if let (Some(ip), Some(port)) = (ip, port)
        && port != 0
    {
        std::net::TcpListener::bind((ip, port)).map_err(|e| NetError::Listen {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// How long sent data may stay unacknowledged before the kernel drops the
/// connection: bounds how long closing a connection to a silent member can
/// hang on a full send buffer (libp2p waits for the close without a limit).
fn tcp_user_timeout(limits: &Limits) -> Duration {
    (limits.silence_timeout * 2).max(Duration::from_secs(1))
}

#[cfg(target_os = "linux")]
fn set_tcp_user_timeout(stream: &tcp::tokio::TcpStream, timeout: Duration) {
    let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    if let Err(e) = rustix::net::sockopt::set_tcp_user_timeout(&stream.0, ms) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

#[cfg(not(target_os = "linux"))]
fn set_tcp_user_timeout(_: &tcp::tokio::TcpStream, _: Duration) {}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
    gossip: gossipsub::Behaviour,
}

#[derive(Debug)]
struct Redial {
    next: Instant,
    backoff: Duration,
    dialing: bool,
}

/// The network of one member. Owns the libp2p swarm; drive it by awaiting
/// [`Net::next_event`] in the node's event loop.
pub struct Net {
    swarm: Swarm<Behaviour>,
    me: u16,
    members: BTreeMap<u16, Member>,
    by_peer: HashMap<PeerId, u16>,
    connected: BTreeSet<u16>,
    /// Open connections to members (those being closed are not in it).
    conns: HashMap<ConnectionId, u16>,
    /// When each member was last heard from: a message, a report, a ping
    /// reply or a new connection.
    last_seen: BTreeMap<u16, Instant>,
    redial: BTreeMap<u16, Redial>,
    buckets: BTreeMap<u16, TokenBucket>,
    byte_buckets: BTreeMap<u16, TokenBucket>,
    limits: Limits,
    topic: IdentTopic,
    validator: Option<ReportValidator>,
    pending: VecDeque<NetEvent>,
    /// Opens the message streams (see `stream`).
    control: libp2p_stream::Control,
    /// Each peer's writer task, by member index.
    outbox: HashMap<u16, tokio::sync::mpsc::Sender<Outgoing>>,
    stream_tx: tokio::sync::mpsc::Sender<StreamEvent>,
    stream_rx: tokio::sync::mpsc::Receiver<StreamEvent>,
    stats: NetStats,
    metrics: NetMetrics,
    tick: tokio::time::Interval,
    /// When the tick last ran, and until when nobody is judged silent: after
    /// this process itself stalled (stopped, starved), members get a whole
    /// `silence_timeout` to be heard from again.
    last_tick: Instant,
    grace_until: Instant,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net")
            .field("me", &self.me)
            .field("peer_id", self.swarm.local_peer_id())
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

impl Net {
    /// Build the stack and start listening. Must run inside a tokio runtime.
    pub fn new(config: NetConfig) -> Result<Self, NetError> {
        let local = config.identity.public().to_peer_id();
        let mut members = BTreeMap::new();
        let mut by_peer = HashMap::new();
        for m in &config.members {
            if m.index == 0 {
                return Err(NetError::ZeroIndex);
            }
            if members.insert(m.index, m.clone()).is_some()
                || by_peer.insert(m.peer_id, m.index).is_some()
            {
                return Err(NetError::DuplicateMember(m.index));
            }
        }
        let me = *by_peer.get(&local).ok_or(NetError::NotInCommittee(local))?;
        let limits = config.limits.clone();

        let gossip_config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .max_transmit_size(limits.max_report_bytes)
            .heartbeat_interval(Duration::from_millis(500))
            .build()
            .map_err(|e| NetError::Build(format!("gossipsub config: {e}")))?;
        let topic = IdentTopic::new(REPORT_TOPIC);

        let noise = noise::Config::new(&config.identity)
            .map_err(|e| NetError::Build(format!("noise config: {e}")))?;
        let dial_timeout = limits.dial_timeout;
        let user_timeout = tcp_user_timeout(&limits);
        let others = u32::try_from(members.len().saturating_sub(1)).unwrap_or(u32::MAX);
        let connection_limits = connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(limits.max_pending_incoming))
            .with_max_established_incoming(Some(
                others.saturating_mul(limits.max_connections_per_peer),
            ))
            .with_max_established_per_peer(Some(limits.max_connections_per_peer));
        let ping_config = ping::Config::new()
            .with_interval(limits.ping_interval)
            .with_timeout(limits.silence_timeout);
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.identity.clone())
            .with_tokio()
            // TCP + Noise + Yamux as `with_tcp` builds it, plus TCP_USER_TIMEOUT
            // on every socket and a time limit on setting a connection up.
            .with_other_transport(|_| {
                tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                    .map(move |stream, _| {
                        set_tcp_user_timeout(&stream, user_timeout);
                        stream
                    })
                    .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default())
                    .timeout(dial_timeout)
            })
            .map_err(|e| NetError::Build(e.to_string()))?
            // `/dns`, `/dns4` and `/dns6` member addresses, resolved with the
            // system's resolver configuration (/etc/resolv.conf).
            .with_dns()
            .map_err(|e| {
                NetError::Build(format!(
                    "cannot read the system's DNS resolver configuration (/etc/resolv.conf): {e}"
                ))
            })?
            .with_behaviour(|key| {
                let mut gossip = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossip_config,
                )?;
                gossip.subscribe(&topic)?;
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(connection_limits),
                    allow: allow_block_list::Behaviour::default(),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/sibyl/1".to_string(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::new(ping_config),
                    stream: libp2p_stream::Behaviour::new(),
                    gossip,
                })
            })
            .map_err(|e| NetError::Build(e.to_string()))?
            // Committee connections are long-lived; the redial timer handles loss.
            // Every message is a new substream: with lazy protocol negotiation
            // the request follows the protocol proposal at once instead of
            // waiting a round trip for the peer's confirmation (all members
            // speak the same protocols, so the optimism never fails).
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(Duration::from_secs(24 * 3600))
                    .with_substream_upgrade_protocol_override(
                        libp2p::core::upgrade::Version::V1Lazy,
                    )
            })
            .build();

        // libp2p's TCP listener sets SO_REUSEPORT, so a second node on the
        // same port would silently share it: check with a plain bind first.
        check_port_free(&config.listen)?;
        swarm
            .listen_on(config.listen.clone())
            .map_err(|e| NetError::Listen {
                addr: config.listen.clone(),
                reason: e.to_string(),
            })?;

        let now = Instant::now();
        let mut redial = BTreeMap::new();
        let mut buckets = BTreeMap::new();
        let mut byte_buckets = BTreeMap::new();
        for m in members.values() {
            swarm.behaviour_mut().allow.allow_peer(m.peer_id);
            if m.index == me {
                continue;
            }
            swarm.add_peer_address(m.peer_id, m.addr.clone());
            swarm.behaviour_mut().gossip.add_explicit_peer(&m.peer_id);
            redial.insert(
                m.index,
                Redial {
                    next: now,
                    backoff: limits.redial_min,
                    dialing: false,
                },
            );
            buckets.insert(
                m.index,
                limits::member_bucket(limits.rate_per_sec, limits.burst, now),
            );
            byte_buckets.insert(
                m.index,
                limits::member_bucket(limits.bytes_per_sec, limits.byte_burst, now),
            );
        }
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control
            .accept(MESSAGE_PROTOCOL)
            .map_err(|e| NetError::Build(e.to_string()))?;
        let (stream_tx, stream_rx) = tokio::sync::mpsc::channel(stream::EVENT_QUEUE);
        tokio::spawn(stream::accept_loop(
            incoming,
            stream_tx.clone(),
            limits.max_message_bytes,
        ));
        let mut tick = tokio::time::interval(limits.redial_min.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        Ok(Self {
            swarm,
            me,
            members,
            by_peer,
            connected: BTreeSet::new(),
            conns: HashMap::new(),
            last_seen: BTreeMap::new(),
            redial,
            buckets,
            byte_buckets,
            limits,
            topic,
            validator: config.report_validator,
            pending: VecDeque::new(),
            control,
            outbox: HashMap::new(),
            stream_tx,
            stream_rx,
            stats: NetStats::default(),
            metrics: NetMetrics::default(),
            tick,
            last_tick: now,
            grace_until: now,
        })
    }

    /// This member's committee index.
    pub fn me(&self) -> u16 {
        self.me
    }

    pub fn local_peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Addresses we listen on (after the listener reported them).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.swarm.listeners().cloned().collect()
    }

    /// Members we currently have at least one connection to.
    pub fn connected(&self) -> BTreeSet<u16> {
        self.connected.clone()
    }

    pub fn stats(&self) -> NetStats {
        self.stats.clone()
    }

    /// When each member was last heard from (any authenticated message,
    /// gossiped report, ping reply or new connection).
    pub fn last_seen(&self) -> &BTreeMap<u16, Instant> {
        &self.last_seen
    }

    /// Register the network's metrics: `sibyl_net_messages_total{direction}`,
    /// `sibyl_net_reports_total{direction}`, `sibyl_net_dropped_total{reason}`,
    /// `sibyl_net_connected_members`, `sibyl_net_peer_timeouts_total`,
    /// `sibyl_net_dials_total`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("sibyl_net");
        r.register(
            "messages",
            "Point-to-point committee messages by direction",
            self.metrics.messages.clone(),
        );
        r.register(
            "reports",
            "Gossiped signed reports by direction",
            self.metrics.reports.clone(),
        );
        r.register(
            "dropped",
            "Inbound messages and connections dropped, by reason",
            self.metrics.dropped.clone(),
        );
        r.register(
            "connected_members",
            "Committee members currently connected",
            self.metrics.connected.clone(),
        );
        r.register(
            "peer_timeouts",
            "Connections to members closed because the member went silent or a ping failed",
            self.metrics.peer_timeouts.clone(),
        );
        r.register(
            "dials",
            "Connection attempts to members",
            self.metrics.dials.clone(),
        );
    }

    /// The protocol layer found a message from `from` malformed: count it
    /// with the network's other drops.
    pub fn report_malformed(&mut self, from: u16) {
        let peer = self.members.get(&from).map(|m| m.peer_id);
        *self.stats.dropped.entry(DropReason::Malformed).or_insert(0) += 1;
        NetMetrics::inc(
            &self.metrics.dropped,
            "reason",
            DropReason::Malformed.as_str(),
        );
        tracing::debug!(member = from, ?peer, "malformed message dropped");
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Send `bytes` to member `to`. Dials if not connected; delivery failures
    /// show up in [`NetStats::send_failures`], never as an error here.
    pub fn send(&mut self, to: u16, bytes: Vec<u8>) -> Result<(), SendError> {
        if to == self.me {
            return Err(SendError::ToSelf(to));
        }
        let peer = self
            .members
            .get(&to)
            .ok_or(SendError::UnknownMember(to))?
            .peer_id;
        if bytes.len() > self.limits.max_message_bytes {
            return Err(SendError::TooLarge {
                len: bytes.len(),
                max: self.limits.max_message_bytes,
            });
        }
        if self
            .writer(to, peer)
            .try_send(Outgoing::Message(bytes))
            .is_err()
        {
            self.stats.send_failures += 1;
            NetMetrics::inc(&self.metrics.messages, "direction", "send_failed");
            tracing::debug!(member = to, "message not queued: the peer's queue is full");
            return Ok(());
        }
        self.stats.messages_sent += 1;
        NetMetrics::inc(&self.metrics.messages, "direction", "sent");
        Ok(())
    }

    /// The queue of member `to`'s writer task, started if need be.
    fn writer(&mut self, to: u16, peer: PeerId) -> &tokio::sync::mpsc::Sender<Outgoing> {
        self.outbox
            .entry(to)
            .and_modify(|q| {
                if q.is_closed() {
                    *q = spawn_writer(&self.control, peer, &self.stream_tx);
                }
            })
            .or_insert_with(|| spawn_writer(&self.control, peer, &self.stream_tx))
    }

    /// Send `bytes` to every other member.
    pub fn broadcast(&mut self, bytes: Vec<u8>) -> Result<(), SendError> {
        if bytes.len() > self.limits.max_message_bytes {
            return Err(SendError::TooLarge {
                len: bytes.len(),
                max: self.limits.max_message_bytes,
            });
        }
        let others: Vec<u16> = self
            .members
            .keys()
            .copied()
            .filter(|i| *i != self.me)
            .collect();
        for to in others {
            self.send(to, bytes.clone())?;
        }
        Ok(())
    }

    /// Publish a signed report on gossip. Fails if no member is subscribed yet.
    pub fn publish_report(&mut self, bytes: Vec<u8>) -> Result<(), SendError> {
        if bytes.len() > self.limits.max_report_bytes {
            return Err(SendError::TooLarge {
                len: bytes.len(),
                max: self.limits.max_report_bytes,
            });
        }
        self.swarm
            .behaviour_mut()
            .gossip
            .publish(self.topic.clone(), bytes)
            .map_err(|e| SendError::Publish(e.to_string()))?;
        self.stats.reports_published += 1;
        NetMetrics::inc(&self.metrics.reports, "direction", "published");
        Ok(())
    }

    /// Members subscribed to the report topic (gossip can reach them).
    pub fn report_peers(&self) -> BTreeSet<u16> {
        let hash = self.topic.hash();
        self.swarm
            .behaviour()
            .gossip
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&hash))
            .filter_map(|(p, _)| self.by_peer.get(p).copied())
            .collect()
    }

    /// Drives the swarm until it has nothing to do right now, so requests
    /// queued by [`Net::send`] reach their connections without waiting for
    /// the next [`Net::next_event`]. Events it yields are kept for
    /// `next_event`. (Polling with a no-op waker is fine: the event loop
    /// polls `next_event`, registering its own waker, before it sleeps.)
    pub fn flush(&mut self) {
        use futures::FutureExt;
        while let Some(Some(event)) = self.swarm.next().now_or_never() {
            self.on_swarm_event(event);
        }
    }

    /// The next network event. Cancel-safe.
    pub async fn next_event(&mut self) -> NetEvent {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(event) = self.stream_rx.recv() => self.on_stream_event(event),
                _ = self.tick.tick() => self.on_tick(),
            }
        }
    }

    fn drop_event(&mut self, from: Option<PeerId>, reason: DropReason) {
        *self.stats.dropped.entry(reason).or_insert(0) += 1;
        NetMetrics::inc(&self.metrics.dropped, "reason", reason.as_str());
        tracing::debug!(?from, reason = reason.as_str(), "dropped inbound");
        self.pending.push_back(NetEvent::Dropped { from, reason });
    }

    fn on_tick(&mut self) {
        // Take in what already arrived (ping replies, messages) before
        // judging silence: the tick may win the race against them.
        self.flush();
        while let Ok(event) = self.stream_rx.try_recv() {
            self.on_stream_event(event);
        }
        let now = Instant::now();
        let gap = now.saturating_duration_since(self.last_tick);
        self.last_tick = now;
        if gap
            > self.limits.redial_min.max(Duration::from_millis(10))
                + self.limits.silence_timeout / 4
        {
            tracing::info!(
                stalled_ms = u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
                "this node stalled; members get a fresh silence limit"
            );
            self.grace_until = now + self.limits.silence_timeout;
        }
        if now >= self.grace_until {
            self.close_silent();
        }
        let due: Vec<u16> = self
            .redial
            .iter()
            .filter(|(i, r)| !self.connected.contains(i) && !r.dialing && r.next <= now)
            .map(|(i, _)| *i)
            .collect();
        for index in due {
            let Some(member) = self.members.get(&index) else {
                continue;
            };
            // Not `DisconnectedAndNotDialing`: a connection this node
            // closed may still be shutting down.
            let opts = DialOpts::peer_id(member.peer_id)
                .addresses(vec![member.addr.clone()])
                .condition(PeerCondition::NotDialing)
                .build();
            let result = self.swarm.dial(opts);
            if let Some(r) = self.redial.get_mut(&index) {
                match result {
                    Ok(()) => {
                        r.dialing = true;
                        self.stats.dials += 1;
                        self.metrics.dials.inc();
                    }
                    Err(e) => {
                        tracing::debug!(member = index, error = %e, "dial not started");
                        r.next = now + r.backoff;
                    }
                }
            }
        }
    }

    /// Closes the connections of every connected member not heard from
    /// for `silence_timeout`. Pings every `ping_interval` keep a live
    /// member heard from; TCP alone would take minutes to notice.
    fn close_silent(&mut self) {
        let now = Instant::now();
        let silent: Vec<(u16, Duration)> = self
            .connected
            .iter()
            .filter_map(|i| {
                let quiet = self
                    .last_seen
                    .get(i)
                    .map_or(Duration::MAX, |t| now.saturating_duration_since(*t));
                (quiet >= self.limits.silence_timeout).then_some((*i, quiet))
            })
            .collect();
        for (index, quiet) in silent {
            tracing::warn!(
                member = index,
                silent_ms = u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX),
                "member silent; closing its connections"
            );
            let ids: Vec<ConnectionId> = self
                .conns
                .iter()
                .filter(|(_, i)| **i == index)
                .map(|(c, _)| *c)
                .collect();
            for id in ids {
                self.close_connection(id);
            }
        }
    }

    /// Closes one connection; the member counts as disconnected at once
    /// when it was its last (closing may take a while on a dead link).
    fn close_connection(&mut self, id: ConnectionId) {
        self.swarm.close_connection(id);
        let Some(index) = self.conns.remove(&id) else {
            return;
        };
        self.stats.peer_timeouts += 1;
        self.metrics.peer_timeouts.inc();
        if !self.conns.values().any(|i| *i == index) {
            self.on_member_lost(index);
        }
    }

    /// The member's last connection is gone: tell the node, redial soon.
    fn on_member_lost(&mut self, index: u16) {
        if !self.connected.remove(&index) {
            return;
        }
        self.metrics
            .connected
            .set(i64::try_from(self.connected.len()).unwrap_or(i64::MAX));
        let peer = self.members.get(&index).map(|m| m.peer_id);
        tracing::info!(member = index, ?peer, "member disconnected");
        if let Some(r) = self.redial.get_mut(&index) {
            r.next = Instant::now() + self.limits.redial_min;
        }
        self.pending.push_back(NetEvent::PeerDisconnected(index));
    }

    fn touch(&mut self, index: u16) {
        self.last_seen.insert(index, Instant::now());
    }

    fn on_ping(&mut self, event: ping::Event) {
        let Some(&index) = self.by_peer.get(&event.peer) else {
            return;
        };
        match event.result {
            Ok(_) => self.touch(index),
            // A member that does not speak ping is not a dead one.
            Err(ping::Failure::Unsupported) => {}
            // libp2p's ping reports failures but does not act on them.
            Err(e) => {
                if self.conns.contains_key(&event.connection) {
                    tracing::warn!(member = index, error = %e, "ping failed; closing the connection");
                    self.close_connection(event.connection);
                }
            }
        }
    }

    fn on_dial_failed(&mut self, index: u16) {
        let max = self.limits.redial_max;
        if let Some(r) = self.redial.get_mut(&index) {
            r.dialing = false;
            r.next = Instant::now() + r.backoff;
            r.backoff = (r.backoff * 2).min(max);
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.on_ping(e),
            SwarmEvent::Behaviour(_) => {}
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                let Some(&index) = self.by_peer.get(&peer_id) else {
                    return;
                };
                self.conns.insert(connection_id, index);
                self.touch(index);
                if let Some(r) = self.redial.get_mut(&index) {
                    r.dialing = false;
                    r.backoff = self.limits.redial_min;
                }
                if self.connected.insert(index) {
                    self.metrics
                        .connected
                        .set(i64::try_from(self.connected.len()).unwrap_or(i64::MAX));
                    tracing::info!(member = index, %peer_id, "member connected");
                    self.pending.push_back(NetEvent::PeerConnected(index));
                    // Open the message stream now, not at the first message
                    // (and a fresh one after a reconnect).
                    let _ = self.writer(index, peer_id).try_send(Outgoing::Open);
                }
            }
            SwarmEvent::ConnectionClosed { connection_id, .. } => {
                if let Some(index) = self.conns.remove(&connection_id)
                    && !self.conns.values().any(|i| *i == index)
                {
                    self.on_member_lost(index);
                }
            }
            SwarmEvent::IncomingConnectionError { peer_id, error, .. } => {
                if let ListenError::Denied { cause } = &error
                    && cause
                        .downcast_ref::<allow_block_list::NotAllowed>()
                        .is_some()
                {
                    self.drop_event(peer_id, DropReason::NotMember);
                } else if let ListenError::Denied { cause } = &error
                    && cause
                        .downcast_ref::<connection_limits::Exceeded>()
                        .is_some()
                {
                    self.drop_event(peer_id, DropReason::ConnectionLimit);
                } else {
                    tracing::debug!(?peer_id, %error, "inbound connection failed");
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let DialError::Denied { cause } = &error
                    && cause
                        .downcast_ref::<allow_block_list::NotAllowed>()
                        .is_some()
                {
                    self.drop_event(peer_id, DropReason::NotMember);
                }
                if let Some(index) = peer_id.and_then(|p| self.by_peer.get(&p).copied()) {
                    tracing::debug!(member = index, %error, "dial failed");
                    self.on_dial_failed(index);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            _ => {}
        }
    }

    /// Charges a message of `len` bytes to the member's message and byte
    /// budgets.
    fn admit(&mut self, index: u16, len: usize) -> Result<(), DropReason> {
        let now = Instant::now();
        if !self.buckets.get_mut(&index).is_some_and(|b| b.take(now)) {
            return Err(DropReason::RateLimited);
        }
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        if !self
            .byte_buckets
            .get_mut(&index)
            .is_some_and(|b| b.take_n(len, now))
        {
            return Err(DropReason::OverByteBudget);
        }
        Ok(())
    }

    fn on_stream_event(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Inbound { peer, wire } => {
                let Some(&from) = self.by_peer.get(&peer) else {
                    // Unreachable through the allow-list; refuse anyway.
                    self.drop_event(Some(peer), DropReason::NotMember);
                    return;
                };
                self.touch(from);
                let Wire::Bytes(bytes) = wire else {
                    self.drop_event(Some(peer), DropReason::Oversized);
                    return;
                };
                if let Err(reason) = self.admit(from, bytes.len()) {
                    self.drop_event(Some(peer), reason);
                    return;
                }
                self.stats.messages_received += 1;
                NetMetrics::inc(&self.metrics.messages, "direction", "received");
                self.pending.push_back(NetEvent::Message { from, bytes });
            }
            StreamEvent::SendFailed { peer, error } => {
                self.stats.send_failures += 1;
                NetMetrics::inc(&self.metrics.messages, "direction", "send_failed");
                tracing::debug!(%peer, %error, "message not delivered");
            }
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        if let Some(&via) = self.by_peer.get(&propagation_source) {
            self.touch(via);
        }
        let origin = message.source.and_then(|p| self.by_peer.get(&p).copied());
        let (acceptance, outcome) = match origin {
            None => (MessageAcceptance::Reject, Err(DropReason::UnknownOrigin)),
            Some(from) => match self.admit(from, message.data.len()) {
                Err(reason) => (MessageAcceptance::Ignore, Err(reason)),
                Ok(()) if self.validator.as_ref().is_none_or(|v| v(&message.data)) => {
                    (MessageAcceptance::Accept, Ok(from))
                }
                Ok(()) => (MessageAcceptance::Reject, Err(DropReason::InvalidReport)),
            },
        };
        self.swarm
            .behaviour_mut()
            .gossip
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
        match outcome {
            Ok(from) => {
                self.stats.reports_received += 1;
                NetMetrics::inc(&self.metrics.reports, "direction", "received");
                self.pending.push_back(NetEvent::Report {
                    from,
                    bytes: message.data,
                });
            }
            Err(reason) => self.drop_event(message.source, reason),
        }
    }
}
