//! The node's settings (the binary fills them from flags and `HOMEROOM_*` environment variables).

use homeroom_shared::{NodeId, Region};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The shared secret the edge and nodes sign tokens with (`NODE_SECRET`). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeSecret(String);

impl NodeSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        NodeSecret(secret.into())
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeSecret(..)")
    }
}

/// Everything a node needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the HTTP API listens (`127.0.0.1:0` picks a port).
    pub http_addr: SocketAddr,
    /// Where the one media UDP socket binds (`127.0.0.1:0` picks a port).
    pub udp_addr: SocketAddr,
    /// The IP announced in ICE candidates; defaults to the UDP bind IP (required when that is unspecified).
    pub announce_ip: Option<IpAddr>,
    pub node_id: NodeId,
    pub region: Region,
    /// Most participant sessions at once.
    pub capacity: u32,
    /// The HTTP API's base URL as clients reach it (sent in heartbeats); defaults to `http://{http_addr}`.
    pub public_url: Option<String>,
    /// The edge's base URL; heartbeats go to `{edge_url}/v1/nodes/heartbeat` when set.
    pub edge_url: Option<String>,
    /// Heartbeat period; shortened to a third of the lease the edge grants when that is shorter.
    pub heartbeat_interval: Duration,
    pub node_secret: NodeSecret,
    /// After SIGTERM/ctrl-c, how long to wait for sessions to end before closing them.
    pub drain_timeout: Duration,
    /// A session that receives nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Shortest interval between keyframe requests to one publisher layer.
    pub keyframe_interval: Duration,
    /// Socket receive/send buffer size asked of the OS for the media socket.
    pub udp_buffer_bytes: usize,
    /// Initial send-side bandwidth estimate towards subscribers, kbit/s (`None` turns estimation off).
    pub bwe_initial_kbps: Option<u32>,
    /// Send a run of datagrams to one peer as one UDP GSO `sendmsg` (Linux); off sends one per call. A kernel
    /// without GSO is detected by a probe at start-up and falls back by itself.
    pub udp_gso: bool,
}

/// The shortest `NODE_SECRET` accepted: 16 bytes (128 bits). HS256 keys shorter than that can be guessed
/// offline from one captured token, and whoever holds the secret can register nodes and mint media tokens.
pub const MIN_SECRET_BYTES: usize = 16;

/// A setting that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("NODE_SECRET is empty: set the secret shared with the edge")]
    MissingSecret,
    #[error("NODE_SECRET is {0} bytes: use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`), the same on the edge (`wrangler secret put NODE_SECRET`)")]
    ShortSecret(usize),
    #[error(
        "node id \"edge\" is reserved (it is the subject of the edge's own control token): choose another --node-id"
    )]
    ReservedNodeId,
    #[error("the UDP address {0} is unspecified (0.0.0.0/::): set --announce-ip (HOMEROOM_ANNOUNCE_IP) to the IP clients reach")]
    AnnounceIpRequired(SocketAddr),
    #[error("the announce IP {0} cannot be an ICE candidate: use a unicast address clients can reach")]
    BadAnnounceIp(IpAddr),
    #[error("{what} must be an http:// or https:// URL, got {url:?}")]
    BadUrl { what: &'static str, url: String },
    #[error("capacity must be at least 1")]
    ZeroCapacity,
    #[error("the heartbeat interval must be at least 100 ms")]
    HeartbeatTooFast,
    #[error("the idle timeout must be at least 1 s (it closes sessions that received nothing for that long)")]
    IdleTimeoutTooShort,
}

impl Config {
    /// Defaults for `node_id` in `region`: HTTP on 127.0.0.1:7000, media on 127.0.0.1 (any port).
    pub fn new(node_id: NodeId, region: Region, node_secret: NodeSecret) -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            udp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            announce_ip: None,
            node_id,
            region,
            capacity: 500,
            public_url: None,
            edge_url: None,
            heartbeat_interval: Duration::from_secs(5),
            node_secret,
            drain_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15),
            keyframe_interval: Duration::from_millis(500),
            udp_buffer_bytes: 4 * 1024 * 1024,
            bwe_initial_kbps: Some(2_000),
            udp_gso: true,
        }
    }

    /// A node for tests: both sockets on `127.0.0.1:0`, short drain.
    pub fn local(node_id: NodeId, region: Region, node_secret: NodeSecret) -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            drain_timeout: Duration::from_secs(2),
            ..Config::new(node_id, region, node_secret)
        }
    }

    /// Checks the settings that can be checked before binding.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_secret.expose().is_empty() {
            return Err(ConfigError::MissingSecret);
        }
        if self.node_secret.expose().len() < MIN_SECRET_BYTES {
            return Err(ConfigError::ShortSecret(self.node_secret.expose().len()));
        }
        if self.node_id.as_str() == homeroom_shared::media::EDGE_SUBJECT {
            return Err(ConfigError::ReservedNodeId);
        }
        if self.capacity == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        if self.heartbeat_interval < Duration::from_millis(100) {
            return Err(ConfigError::HeartbeatTooFast);
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(ConfigError::IdleTimeoutTooShort);
        }
        match self.announce_ip {
            None if self.udp_addr.ip().is_unspecified() => return Err(ConfigError::AnnounceIpRequired(self.udp_addr)),
            Some(ip) if ip.is_unspecified() || ip.is_multicast() => return Err(ConfigError::BadAnnounceIp(ip)),
            _ => {}
        }
        for (what, url) in [("--public-url", &self.public_url), ("--edge-url", &self.edge_url)] {
            if let Some(url) = url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::BadUrl { what, url: url.clone() });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::local(NodeId::parse("n1").unwrap(), Region::parse("eu").unwrap(), NodeSecret::new("sixteen-byte-key"))
    }

    #[test]
    fn defaults_validate_and_mistakes_are_explained() {
        assert_eq!(config().validate(), Ok(()));
        let wildcard = Config { udp_addr: "0.0.0.0:0".parse().unwrap(), ..config() };
        assert!(matches!(wildcard.validate(), Err(ConfigError::AnnounceIpRequired(_))));
        let announced = Config { announce_ip: Some("203.0.113.7".parse().unwrap()), ..wildcard };
        assert_eq!(announced.validate(), Ok(()));
        assert_eq!(Config { node_secret: NodeSecret::new(""), ..config() }.validate(), Err(ConfigError::MissingSecret));
        let short = Config { node_secret: NodeSecret::new("hunter2"), ..config() };
        assert_eq!(short.validate(), Err(ConfigError::ShortSecret(7)));
        let edge = Config { node_id: NodeId::parse("edge").unwrap(), ..config() };
        assert_eq!(edge.validate(), Err(ConfigError::ReservedNodeId));
        let bad_url = Config { edge_url: Some("edge:8787".into()), ..config() };
        assert!(matches!(bad_url.validate(), Err(ConfigError::BadUrl { .. })));
        assert_eq!(format!("{:?}", NodeSecret::new("hunter2")), "NodeSecret(..)");
    }
}
