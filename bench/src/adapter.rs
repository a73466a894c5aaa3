//! The three wire protocols the load tool speaks, reduced to what a fan-out benchmark needs: join a room,
//! post a message, recognise a delivered benchmark message (and answer keep-alives).
//!
//! | adapter | URL | join | post | delivered as |
//! |---|---|---|---|---|
//! | `homeroom` | `/v1/rooms/{room}/ws?token=JWT` (dev token, `Minter::dev()`) | the `welcome` frame | `{"type":"chat.send","rid":…,"text":…}` | `{"type":"chat.message",…,"message":{…,"text":…}}` |
//! | `socketio` | `/socket.io/?EIO=4&transport=websocket` | `0{…}` open, send `40`, get `40{…}`, send `420["join",room]`, get ack `430[…]` | `42["msg",{"text":…}]` | `42["msg",{"text":…}]` |
//! | `ws` | `/` | send `{"type":"join","room":…}`, get `{"type":"joined",…}` | `{"type":"msg","text":…}` | the same frame |
//!
//! Engine.IO pings (`2`) are answered with `3`. A benchmark message's text is
//! `bench:{step}:{seq}:{scheduled send time, µs since the Unix epoch}:` padded with `x` to the payload size;
//! receivers find it with a substring search instead of parsing the whole frame, so the client stays cheap.

use futures_util::{SinkExt, StreamExt};
use homeroom_shared::protocol::{ClientFrame, ClientRequest};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
pub enum Adapter {
    /// Homeroom protocol v1 (`docs/protocol.md`).
    Homeroom,
    /// socket.io over Engine.IO v4, WebSocket transport only.
    Socketio,
    /// Plain WebSocket with JSON frames (`bench/servers/ws-server.mjs`).
    Ws,
}

/// Microseconds since the Unix epoch (the clock shared by the load tool and the servers on this machine).
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Small per-connection buffers, so thousands of connections stay cheap in the load tool.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024).write_buffer_size(0)
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("HTTP {status} refusing the upgrade: {body}")]
    Refused { status: u16, body: String },
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("connection closed during the join ({0})")]
    Closed(String),
    #[error("unexpected frame during the join: {0}")]
    Unexpected(String),
}

fn head(text: &str) -> String {
    text.chars().take(160).collect()
}

/// Reads the next text frame (answering Engine.IO pings on the way).
async fn next_text(ws: &mut Ws, adapter: Adapter) -> Result<String, JoinError> {
    loop {
        match ws.next().await {
            None => return Err(JoinError::Closed("end of stream".into())),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) => {
                if adapter == Adapter::Socketio && t.as_str() == "2" {
                    ws.send(Message::text("3")).await?;
                    continue;
                }
                return Ok(t.as_str().to_owned());
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(JoinError::Closed(frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default()))
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// Connects and joins `room`; returns the socket once the server confirmed the join (Homeroom: `welcome`;
/// socket.io: the join event's ack; ws: `joined`).
pub async fn join(adapter: Adapter, base: &str, room: &str, token: Option<&str>) -> Result<Ws, JoinError> {
    let url = match adapter {
        // `batch=1`: busy rooms coalesce events into one frame per flush window (docs/protocol.md, "Batching").
        Adapter::Homeroom => format!("{base}/v1/rooms/{room}/ws?batch=1&token={}", token.unwrap_or_default()),
        Adapter::Socketio => format!("{base}/socket.io/?EIO=4&transport=websocket"),
        Adapter::Ws => format!("{base}/"),
    };
    let (mut ws, _) = match tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            return Err(JoinError::Refused { status, body });
        }
        Err(e) => return Err(e.into()),
    };
    match adapter {
        Adapter::Homeroom => {
            let first = next_text(&mut ws, adapter).await?;
            // The welcome comes alone, or first in a batch when the room is coalescing.
            if !(first.starts_with("{\"type\":\"welcome\"") || first.starts_with("[{\"type\":\"welcome\"")) {
                return Err(JoinError::Unexpected(format!("{} (expected the welcome)", head(&first))));
            }
        }
        Adapter::Socketio => {
            let open = next_text(&mut ws, adapter).await?;
            if !open.starts_with('0') {
                return Err(JoinError::Unexpected(format!(
                    "{} (expected the Engine.IO open packet 0{{…}})",
                    head(&open)
                )));
            }
            ws.send(Message::text("40")).await?;
            let connected = next_text(&mut ws, adapter).await?;
            if !connected.starts_with("40") {
                return Err(JoinError::Unexpected(format!("{} (expected 40{{\"sid\":…}})", head(&connected))));
            }
            ws.send(Message::text(format!("420[\"join\",\"{room}\"]"))).await?;
            loop {
                let text = next_text(&mut ws, adapter).await?;
                if text.starts_with("430") {
                    break;
                }
            }
        }
        Adapter::Ws => {
            ws.send(Message::text(format!("{{\"type\":\"join\",\"room\":\"{room}\"}}"))).await?;
            loop {
                let text = next_text(&mut ws, adapter).await?;
                if text.starts_with("{\"type\":\"joined\"") {
                    break;
                }
            }
        }
    }
    Ok(ws)
}

/// [`join`] with a time limit.
pub async fn join_within(
    adapter: Adapter,
    base: &str,
    room: &str,
    token: Option<&str>,
    limit: Duration,
) -> Result<Ws, String> {
    match tokio::time::timeout(limit, join(adapter, base, room, token)).await {
        Ok(Ok(ws)) => Ok(ws),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no join confirmation within {limit:?}")),
    }
}

/// The benchmark text for message `seq` of `step`, scheduled at `sched_us`, padded to `len` bytes.
pub fn payload(step: u32, seq: u64, sched_us: u64, len: usize) -> String {
    let mut text = format!("bench:{step}:{seq}:{sched_us}:");
    while text.len() < len {
        text.push('x');
    }
    text
}

/// The frame that posts `text` (only `[A-Za-z0-9:]`, no escaping needed) to the sender's room.
pub fn post_frame(adapter: Adapter, rid: &str, text: &str) -> String {
    match adapter {
        Adapter::Homeroom => {
            ClientFrame::with_rid(rid, ClientRequest::ChatSend { text: text.to_owned(), reply_to: None }).to_json()
        }
        Adapter::Socketio => format!("42[\"msg\",{{\"text\":\"{text}\"}}]"),
        Adapter::Ws => format!("{{\"type\":\"msg\",\"text\":\"{text}\"}}"),
    }
}

/// What a received text frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A delivered benchmark message.
    Bench { step: u32, seq: u64, sched_us: u64 },
    /// An Engine.IO ping: answer `3`.
    Ping,
    /// Anything else (acks, presence, ...).
    Other,
}

/// Classifies a received text frame (the first benchmark message in it, if any).
pub fn classify(adapter: Adapter, text: &str) -> Incoming {
    classify_all(adapter, text).first().copied().unwrap_or(Incoming::Other)
}

/// Every benchmark message in a received text frame, in order: one for a single frame, several for a
/// Homeroom batch (a JSON array of frames); `[Ping]` for an Engine.IO ping; empty otherwise.
pub fn classify_all(adapter: Adapter, text: &str) -> Vec<Incoming> {
    if adapter == Adapter::Socketio && text == "2" {
        return vec![Incoming::Ping];
    }
    text.match_indices("bench:")
        .filter_map(|(at, _)| {
            let mut parts = text.get(at + 6..).unwrap_or_default().splitn(4, ':');
            let step = parts.next().and_then(|s| s.parse().ok());
            let seq = parts.next().and_then(|s| s.parse().ok());
            let sched = parts.next().and_then(|s| s.parse().ok());
            match (step, seq, sched) {
                (Some(step), Some(seq), Some(sched_us)) => Some(Incoming::Bench { step, seq, sched_us }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_through_every_adapter() {
        let text = payload(3, 42, 1_700_000_000_123_456, 200);
        assert_eq!(text.len(), 200);
        for adapter in [Adapter::Homeroom, Adapter::Socketio, Adapter::Ws] {
            let frame = post_frame(adapter, "r1", &text);
            assert_eq!(
                classify(adapter, &frame),
                Incoming::Bench { step: 3, seq: 42, sched_us: 1_700_000_000_123_456 }
            );
        }
    }

    #[test]
    fn homeroom_frame_is_a_valid_chat_send() {
        let frame = post_frame(Adapter::Homeroom, "b1", "bench:1:2:3:");
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap_or_default();
        assert_eq!(v["type"], "chat.send");
        assert_eq!(v["rid"], "b1");
        assert_eq!(v["text"], "bench:1:2:3:");
    }

    #[test]
    fn a_homeroom_batch_holds_several_messages() {
        let one =
            |seq| format!("{{\"type\":\"chat.message\",\"message\":{{\"text\":\"{}\"}}}}", payload(1, seq, 7, 40));
        let batch = format!("[{},{},{}]", one(1), one(2), one(3));
        let seqs: Vec<u64> = classify_all(Adapter::Homeroom, &batch)
            .into_iter()
            .filter_map(|m| match m {
                Incoming::Bench { seq, .. } => Some(seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn pings_and_other_frames() {
        assert_eq!(classify(Adapter::Socketio, "2"), Incoming::Ping);
        assert_eq!(classify(Adapter::Ws, "2"), Incoming::Other);
        assert_eq!(classify(Adapter::Homeroom, "{\"type\":\"ack\",\"rid\":\"b1\"}"), Incoming::Other);
    }
}
