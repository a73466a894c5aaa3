//! A protocol v1 client over a real WebSocket (tokio-tungstenite).
//!
//! [`Client::request`] sends a frame with a fresh `rid` and waits for the reply that echoes it (`ack`,
//! `error`, `history`, `media.assigned`); events that arrive meanwhile are buffered and returned by
//! [`Client::next`] in order. Every logged event's `seq` is recorded in [`Client::log`], so tests can check
//! that a client's view is gap-free and duplicate-free.

use futures_util::{SinkExt, StreamExt};
use homeroom_shared::protocol::{ClientFrame, ClientRequest, ServerFrame, Welcome};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the upgrade with an HTTP status and a JSON body.
    #[error("upgrade refused: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error("connection closed ({0:?})")]
    Closed(Option<(u16, String)>),
    #[error("unexpected frame: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// The JSON body of a refused upgrade.
    pub fn body(&self) -> Option<&str> {
        match self {
            ClientError::Refused { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The HTTP status of a refused upgrade.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The `code` field of a refused upgrade's JSON body.
    pub fn code(&self) -> Option<String> {
        match self {
            ClientError::Refused { body, .. } => serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned)),
            _ => None,
        }
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Connect {
    /// `ws://127.0.0.1:PORT`
    pub base: String,
    pub room: String,
    pub token: String,
    /// Send the token as `Authorization: Bearer` instead of `?token=`.
    pub bearer: bool,
    /// Resume from `(epoch, since)`.
    pub resume: Option<(String, u64)>,
    /// Accept batched frames (`?batch=1`): under load a busy room sends a JSON array of frames.
    pub batch: bool,
}

impl Connect {
    /// A connection to `room` with `token` in the query.
    pub fn new(base: &str, room: &str, token: &str) -> Self {
        Connect {
            base: base.to_owned(),
            room: room.to_owned(),
            token: token.to_owned(),
            bearer: false,
            resume: None,
            batch: true,
        }
    }

    /// The URL this connects to.
    pub fn url(&self) -> String {
        let mut url = format!("{}/v1/rooms/{}/ws", self.base, self.room);
        let mut sep = '?';
        if !self.bearer {
            url.push_str(&format!("?token={}", self.token));
            sep = '&';
        }
        if let Some((epoch, since)) = &self.resume {
            url.push_str(&format!("{sep}since={since}&epoch={epoch}"));
            sep = '&';
        }
        if self.batch {
            url.push_str(&format!("{sep}batch=1"));
        }
        url
    }
}

/// A connected protocol client.
#[derive(Debug)]
pub struct Client {
    ws: Ws,
    /// The `welcome` this connection started with.
    pub welcome: Welcome,
    buffered: VecDeque<ServerFrame>,
    /// Frames of a batch that `read` has not returned yet.
    unread: VecDeque<ServerFrame>,
    /// Batches (JSON arrays) received.
    pub batches: u64,
    next_rid: u64,
    /// Every logged `seq` this connection received, in order (replays included).
    pub log: Vec<u64>,
    /// The close code and reason, once closed by the server.
    pub close: Option<(u16, String)>,
}

/// Default wait for replies and events.
pub const WAIT: Duration = Duration::from_secs(10);

impl Client {
    /// Connects and waits for `welcome`.
    pub async fn connect(target: &Connect) -> Result<Client, ClientError> {
        let mut request = target.url().into_client_request()?;
        if target.bearer {
            let value = format!("Bearer {}", target.token)
                .parse()
                .map_err(|_| ClientError::Unexpected("token is not a valid header value".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let handshake = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| ClientError::Timeout(WAIT, "the WebSocket handshake"))?;
        let (ws, _) = match handshake {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let mut body =
                    response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                if body.is_empty() {
                    // The handshake only keeps body bytes that arrived with the headers; ask again over plain
                    // HTTP (same URL, same upgrade headers) to read the whole JSON error.
                    body = refusal_body(target).await.unwrap_or_default();
                }
                return Err(ClientError::Refused { status, body });
            }
            Err(e) => return Err(e.into()),
        };
        let mut ws = ws;
        let welcome = loop {
            let msg = match tokio::time::timeout(WAIT, ws.next()).await {
                Err(_) => return Err(ClientError::Timeout(WAIT, "welcome")),
                Ok(None) => return Err(ClientError::Closed(None)),
                Ok(Some(msg)) => msg?,
            };
            match msg {
                Message::Text(text) => match serde_json::from_str::<ServerFrame>(text.as_str()) {
                    Ok(ServerFrame::Welcome(w)) => break *w,
                    _ => return Err(ClientError::Unexpected(format!("{text} before welcome"))),
                },
                Message::Close(frame) => {
                    let close = frame.map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()));
                    return Err(ClientError::Closed(close));
                }
                _ => continue,
            }
        };
        Ok(Client {
            ws,
            welcome,
            buffered: VecDeque::new(),
            unread: VecDeque::new(),
            batches: 0,
            next_rid: 0,
            log: Vec::new(),
            close: None,
        })
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.ws.send(Message::binary(bytes)).await?;
        Ok(())
    }

    /// Sends a frame without waiting.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        self.send_text(&frame.to_json()).await
    }

    /// A fresh request id.
    pub fn rid(&mut self) -> String {
        self.next_rid += 1;
        format!("r{}", self.next_rid)
    }

    /// Sends `request` with a fresh `rid` and waits for the reply echoing it.
    pub async fn request(&mut self, request: ClientRequest) -> Result<ServerFrame, ClientError> {
        let rid = self.rid();
        self.request_with_rid(&rid, request).await
    }

    /// Sends `request` with `rid` and waits for the reply echoing it.
    pub async fn request_with_rid(&mut self, rid: &str, request: ClientRequest) -> Result<ServerFrame, ClientError> {
        self.send(&ClientFrame::with_rid(rid, request)).await?;
        self.reply_to(rid, WAIT).await
    }

    /// Waits for the reply to `rid`, buffering other frames.
    pub async fn reply_to(&mut self, rid: &str, wait: Duration) -> Result<ServerFrame, ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.read(left).await?;
            let matches = match &frame {
                ServerFrame::Ack(a) => a.rid == rid,
                ServerFrame::Error(e) => e.rid.as_deref() == Some(rid),
                ServerFrame::History { rid: r, .. } | ServerFrame::MediaAssigned { rid: r, .. } => {
                    r.as_deref() == Some(rid)
                }
                _ => false,
            };
            if matches {
                return Ok(frame);
            }
            self.buffered.push_back(frame);
        }
    }

    /// The next frame (buffered first), or `None` if nothing arrives within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<ServerFrame>, ClientError> {
        if let Some(frame) = self.buffered.pop_front() {
            return Ok(Some(frame));
        }
        match self.read(wait).await {
            Ok(frame) => Ok(Some(frame)),
            Err(ClientError::Timeout(..)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Skips frames until one satisfies `pred`.
    pub async fn expect(
        &mut self,
        what: &'static str,
        wait: Duration,
        pred: impl Fn(&ServerFrame) -> bool,
    ) -> Result<ServerFrame, ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(frame) if pred(&frame) => return Ok(frame),
                Some(_) => continue,
                None => return Err(ClientError::Timeout(wait, what)),
            }
        }
    }

    /// The frames up to and including the first logged event with `seq ≥ upto` (a resume's replay ends at its
    /// welcome's `seq`), within `wait` in all; a timeout if it never comes.
    pub async fn frames_until_seq(&mut self, upto: u64, wait: Duration) -> Result<Vec<ServerFrame>, ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(frame) => {
                    let done = frame.seq().is_some_and(|seq| seq >= upto);
                    frames.push(frame);
                    if done {
                        return Ok(frames);
                    }
                }
                None => return Err(ClientError::Timeout(wait, "the replay up to the welcome's seq")),
            }
        }
    }

    /// Every frame that arrives within `wait` (after the buffered ones).
    pub async fn drain(&mut self, wait: Duration) -> Result<Vec<ServerFrame>, ClientError> {
        let mut frames: Vec<ServerFrame> = self.buffered.drain(..).collect();
        while let Some(frame) = self.next(wait).await? {
            frames.push(frame);
        }
        Ok(frames)
    }

    /// Waits until the server closes the connection; returns its close code and reason.
    pub async fn closed(&mut self, wait: Duration) -> Result<(u16, String), ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Ok(frame) => self.buffered.push_back(frame),
                Err(ClientError::Closed(Some(close))) => return Ok(close),
                Err(ClientError::Closed(None)) => return Ok((1005, String::new())),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `ping` and waits for `pong`.
    pub async fn ping(&mut self, wait: Duration) -> Result<Duration, ClientError> {
        let start = tokio::time::Instant::now();
        self.ws.send(Message::text("ping")).await?;
        let deadline = start + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return Err(ClientError::Timeout(wait, "pong")),
                Ok(None) => return Err(ClientError::Closed(None)),
                Ok(Some(msg)) => match msg? {
                    Message::Text(t) if t.as_str() == "pong" => return Ok(start.elapsed()),
                    Message::Text(t) => {
                        let frames = self.parse(t.as_str())?;
                        self.buffered.extend(frames);
                    }
                    _ => {}
                },
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Drops the TCP connection without a close handshake (a network loss).
    pub fn abort(self) {
        drop(self.ws);
    }

    /// Parses a text frame: one frame, or a batch (a JSON array of frames).
    fn parse(&mut self, text: &str) -> Result<Vec<ServerFrame>, ClientError> {
        let bad = |e: serde_json::Error| ClientError::Unexpected(format!("{e}: {text}"));
        let frames: Vec<ServerFrame> = if text.starts_with('[') {
            self.batches += 1;
            serde_json::from_str(text).map_err(bad)?
        } else {
            vec![serde_json::from_str(text).map_err(bad)?]
        };
        self.log.extend(frames.iter().filter_map(ServerFrame::seq));
        Ok(frames)
    }

    async fn read(&mut self, wait: Duration) -> Result<ServerFrame, ClientError> {
        if let Some(frame) = self.unread.pop_front() {
            return Ok(frame);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return Err(ClientError::Timeout(wait, "a frame")),
                Ok(None) => return Err(ClientError::Closed(self.close.clone())),
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(msg))) => msg,
            };
            match msg {
                Message::Text(text) if text.as_str() == "pong" => continue,
                Message::Text(text) => {
                    let mut frames: VecDeque<ServerFrame> = self.parse(text.as_str())?.into();
                    let Some(first) = frames.pop_front() else { continue };
                    self.unread.extend(frames);
                    return Ok(first);
                }
                Message::Close(frame) => {
                    let close = frame.map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()));
                    self.close = close.clone();
                    return Err(ClientError::Closed(close));
                }
                _ => continue,
            }
        }
    }
}

/// One HTTP client for every refusal probe of the process. Building a `reqwest::Client` loads and parses the
/// platform's root certificates (tens of milliseconds in a debug build, on the caller's thread), so a client
/// per probe stalled every task sharing the runtime — the abuse test's measuring clients among them. Idle
/// connections are not pooled, so the client is not tied to any one test's runtime.
fn probe_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap_or_default())
}

/// Asks again with a plain `GET …&probe=1` (the room runs the same admission checks) to read the JSON body of
/// a refused upgrade.
async fn refusal_body(target: &Connect) -> Option<String> {
    let mut url = target.url().replacen("ws://", "http://", 1);
    url.push_str(if url.contains('?') { "&probe=1" } else { "?probe=1" });
    let mut request = probe_client().get(url);
    if target.bearer {
        request = request.bearer_auth(&target.token);
    }
    request.send().await.ok()?.text().await.ok()
}
