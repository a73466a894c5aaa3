//! Chaos resume: many clients in one room drop their connections at random while a sender posts chat
//! messages; every client resumes (`since`/`epoch`) and at the end every client's log must be identical,
//! gap-free and duplicate-free.
//!
//! Used by the `reliability_chaos` e2e test (small) and the `homeroom-chaos` tool (full size, figures in
//! `docs/reliability.md`).

use crate::client::{Client, ClientError, Connect};
use crate::tokens::Minter;
use homeroom_shared::protocol::{ClientFrame, ClientRequest, Role, ServerFrame};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// `ws://host:port`
    pub base: String,
    pub room: String,
    pub clients: usize,
    pub messages: usize,
    /// Sender pace, messages per second.
    pub rate: u32,
    /// Mean time between a client's drops (exponentially distributed).
    pub mean_drop_ms: u64,
    /// Give up after this long.
    pub deadline: Duration,
}

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct ChaosReport {
    pub clients: usize,
    pub messages_sent: usize,
    pub drops: u64,
    pub resumes: u64,
    /// Reconnects that got a fresh snapshot instead of a resume (the log no longer held the gap).
    pub snapshots: u64,
    /// Messages some client never saw (summed over clients).
    pub lost: u64,
    /// Messages a client saw twice (summed over clients).
    pub duplicated: u64,
    /// Logged events that arrived out of order or with a gap.
    pub gaps: u64,
    /// Clients whose list of messages differs from the sender's.
    pub divergent_clients: usize,
    /// Batched frames (JSON arrays) the receivers got: the room coalesced under load.
    pub batches: u64,
    pub elapsed: Duration,
}

/// A tiny deterministic PRNG (xorshift), so runs are reproducible per seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Exponentially distributed with `mean`.
    fn exp_ms(&mut self, mean: u64) -> u64 {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        (-(1.0 - u).ln() * mean as f64) as u64
    }
}

/// One receiving client's record.
#[derive(Debug, Default)]
struct Record {
    /// Message ids in the order received.
    messages: Vec<String>,
    /// Every logged seq received, in order.
    seqs: Vec<u64>,
    drops: u64,
    resumes: u64,
    snapshots: u64,
    gaps: u64,
    batches: u64,
}

/// Runs the scenario and returns what happened.
pub async fn run(config: ChaosConfig) -> anyhow::Result<ChaosReport> {
    let minter = Minter::dev()?;
    let start = Instant::now();
    let last_seq = Arc::new(AtomicU64::new(u64::MAX));

    let mut receivers = Vec::new();
    let mut first_clients = Vec::new();
    for i in 0..config.clients {
        let target = Connect::new(&config.base, &config.room, &minter.token(&format!("listener-{i}"), Role::Student));
        first_clients.push((target.clone(), Client::connect(&target).await?));
    }
    for (i, (target, client)) in first_clients.into_iter().enumerate() {
        let config = config.clone();
        let last_seq = last_seq.clone();
        receivers.push(tokio::spawn(async move { receive(i as u64 + 1, target, client, config, last_seq).await }));
    }

    // The sender: a teacher posting `messages` chat messages at `rate`, pipelined (acks read concurrently).
    let sender_target = Connect::new(&config.base, &config.room, &minter.token("sender", Role::Teacher));
    let mut sender = Client::connect(&sender_target).await?;
    let mut sent_ids = Vec::with_capacity(config.messages);
    let interval = Duration::from_secs_f64(1.0 / f64::from(config.rate.max(1)));
    let mut next_send = Instant::now();
    let mut acked = 0usize;
    let mut max_seq = 0;
    let mut i = 0usize;
    while acked < config.messages {
        anyhow::ensure!(start.elapsed() < config.deadline, "sender did not finish within {:?}", config.deadline);
        if i < config.messages && Instant::now() >= next_send {
            let frame = ClientFrame::with_rid(
                format!("m{i}"),
                ClientRequest::ChatSend { text: format!("message {i}"), reply_to: None },
            );
            sender.send(&frame).await?;
            i += 1;
            next_send += interval;
            continue;
        }
        let wait = next_send.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
        match sender.next(wait.max(Duration::from_millis(1))).await? {
            Some(ServerFrame::Ack(ack)) => {
                let id = ack.id.ok_or_else(|| anyhow::anyhow!("chat ack without id"))?;
                max_seq = max_seq.max(ack.seq.unwrap_or(0));
                sent_ids.push((ack.rid, id));
                acked += 1;
            }
            Some(ServerFrame::Error(e)) => anyhow::bail!("sender got an error: {} {}", e.code, e.message),
            _ => {}
        }
    }
    // Acks come back in order, so sent_ids is in send order.
    let expected: Vec<String> = sent_ids.into_iter().map(|(_, id)| id).collect();
    last_seq.store(max_seq, Ordering::SeqCst);

    let mut report = ChaosReport { clients: config.clients, messages_sent: expected.len(), ..ChaosReport::default() };
    for handle in receivers {
        let record = handle.await??;
        report.drops += record.drops;
        report.resumes += record.resumes;
        report.snapshots += record.snapshots;
        report.gaps += record.gaps;
        report.batches += record.batches;
        let seen: BTreeSet<&String> = record.messages.iter().collect();
        report.duplicated += (record.messages.len() - seen.len()) as u64;
        report.lost += expected.iter().filter(|id| !seen.contains(id)).count() as u64;
        if record.messages != expected {
            report.divergent_clients += 1;
        }
    }
    sender.close().await;
    report.elapsed = start.elapsed();
    Ok(report)
}

async fn receive(
    seed: u64,
    target: Connect,
    first: Client,
    config: ChaosConfig,
    last_seq: Arc<AtomicU64>,
) -> anyhow::Result<Record> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut record = Record::default();
    let mut client = Some(first);
    let mut epoch = client.as_ref().map(|c| c.welcome.epoch.clone()).unwrap_or_default();
    let mut position = client.as_ref().map(|c| c.welcome.seq).unwrap_or(0);
    let start = Instant::now();
    loop {
        anyhow::ensure!(start.elapsed() < config.deadline, "receiver {seed} stuck at seq {position}");
        let c = match client.as_mut() {
            Some(c) => c,
            None => {
                let mut resume = target.clone();
                resume.resume = Some((epoch.clone(), position));
                match Client::connect(&resume).await {
                    Ok(c) => {
                        if c.welcome.resumed {
                            record.resumes += 1;
                        } else {
                            // A fresh snapshot: the gap cannot be replayed; count it (the test fails on it).
                            record.snapshots += 1;
                            epoch = c.welcome.epoch.clone();
                            position = c.welcome.seq;
                        }
                        client.insert(c)
                    }
                    Err(ClientError::Refused { status, body }) => anyhow::bail!("reconnect refused: {status} {body}"),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
        };
        let target_seq = last_seq.load(Ordering::SeqCst);
        if target_seq != u64::MAX && position >= target_seq {
            break;
        }
        let live_for = Duration::from_millis(rng.exp_ms(config.mean_drop_ms).max(1));
        let until = Instant::now() + live_for;
        let mut dropped = false;
        while Instant::now() < until {
            let wait = until.saturating_duration_since(Instant::now());
            match c.next(wait).await {
                Ok(Some(frame)) => {
                    if let Some(seq) = frame.seq() {
                        if seq != position + 1 {
                            record.gaps += 1;
                        }
                        position = seq;
                        record.seqs.push(seq);
                        if let ServerFrame::ChatMessage { message, .. } = &frame {
                            record.messages.push(message.id.clone());
                        }
                    }
                    let target_seq = last_seq.load(Ordering::SeqCst);
                    if target_seq != u64::MAX && position >= target_seq {
                        break;
                    }
                }
                Ok(None) => {}
                Err(_) => {
                    dropped = true;
                    break;
                }
            }
        }
        let target_seq = last_seq.load(Ordering::SeqCst);
        if target_seq != u64::MAX && position >= target_seq {
            break;
        }
        // Drop the connection abruptly (no close frame), as a network loss would.
        if let Some(c) = client.take() {
            record.batches += c.batches;
            c.abort();
        }
        if !dropped {
            record.drops += 1;
        }
    }
    if let Some(c) = client.take() {
        record.batches += c.batches;
        c.close().await;
    }
    Ok(record)
}
