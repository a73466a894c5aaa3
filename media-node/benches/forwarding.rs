//! Criterion benchmarks of the SFU core's forwarding path, sans IO: one publisher's video frame (six ~1 KB VP8
//! packets of a 1.2 Mbit/s, 30 fps stream) goes into the node and comes out as one SRTP datagram per packet per
//! subscriber. Only the node's work is timed (routing, SRTP decryption of the input, fan-out, str0m's send path
//! with SRTP encryption, drains, due timers); the publisher's packets are made outside the timed part and the
//! node's output to the subscribers is dropped. Every 30 frames an untimed step of the whole network lets STUN
//! and RTCP flow, so every peer stays connected however long criterion runs.
//!
//! `cargo bench -p homeroom-media-node --bench forwarding`. Throughput is in forwarded packets, so criterion's
//! "elem/s" is forwarded packets per second of one core and its time per element is the cost per forwarded
//! packet. Variants: subscribers 1/10/100, the frame handed over as one batch (`handle_datagrams`, what the
//! driver does) or datagram by datagram (`handle_datagram`, the old path); bandwidth estimation off.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use homeroom_media_node::core::SfuConfig;
use homeroom_media_node::peer::PeerOptions;
use homeroom_media_node::sim::{SimIdentity, SimNetwork};
use homeroom_shared::protocol::MediaKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// One video frame at 30 fps.
const FRAME: Duration = Duration::from_micros(33_334);
/// Timed frames between two untimed keep-alive steps of the whole network (one second of video).
const KEEPALIVE_FRAMES: usize = 30;

fn network(subscribers: usize, bwe: bool) -> SimNetwork {
    let node_addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 5000));
    let config = SfuConfig {
        // The subscribers are not driven while the node is timed: keep them from being reaped as idle.
        idle_timeout: Duration::from_secs(3600),
        bwe_initial_kbps: bwe.then_some(2_000),
        ..SfuConfig::new(node_addr)
    };
    let mut net = SimNetwork::with_config(config);
    let video_only = PeerOptions { audio: false, video_kbps: 1200, ..PeerOptions::publisher() };
    net.join(&SimIdentity::new("teacher", "t/bench"), &video_only).expect("publisher joins");
    for i in 0..subscribers {
        net.join(&SimIdentity::new(&format!("s{i}"), "t/bench"), &PeerOptions::subscriber()).expect("subscriber joins");
    }
    net.run_for(Duration::from_secs(3));
    let forwarded = net.metrics.packets_out(MediaKind::Video);
    assert!(forwarded > 0, "the setup forwards video before timing starts");
    net
}

fn forwarding(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_frame");
    group.sample_size(20).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(6));
    for subscribers in [1usize, 10, 100] {
        // Bandwidth estimation stays off here: with it on, str0m's pacer releases packets on later timeouts,
        // which this harness runs untimed, so the figures would leave out part of the work.
        for (bwe, batch) in [(false, true), (false, false)] {
            let mut net = network(subscribers, bwe);
            // Forwarded packets per frame, averaged over a second of video.
            let forwarded: usize = (0..KEEPALIVE_FRAMES)
                .map(|_| {
                    let frame = net.step_peer(0, FRAME);
                    net.feed_node(0, &frame, batch)
                })
                .sum();
            let per_frame = forwarded / KEEPALIVE_FRAMES;
            assert!(per_frame >= subscribers, "every subscriber gets the frame");
            group.throughput(Throughput::Elements(per_frame as u64));
            let name = format!("bwe_{}_{}", if bwe { "on" } else { "off" }, if batch { "batch" } else { "single" });
            group.bench_function(BenchmarkId::new(name, subscribers), |b| {
                b.iter_custom(|iters| {
                    let mut busy = Duration::ZERO;
                    let mut forwarded = 0usize;
                    for i in 1..=iters {
                        let frame = net.step_peer(0, FRAME);
                        let before = net.node_busy();
                        let out = net.feed_node(0, &frame, batch);
                        busy += net.node_busy() - before;
                        forwarded += out;
                        if i % KEEPALIVE_FRAMES as u64 == 0 {
                            // Untimed: a whole-network step, so STUN and RTCP flow everywhere and the
                            // subscribers stay alive (it carries one frame, not counted).
                            net.run_for(FRAME);
                        }
                    }
                    // Guard against timing nothing: nearly every timed frame must have been forwarded.
                    let expected = per_frame * usize::try_from(iters).unwrap_or(usize::MAX);
                    assert!(forwarded * 10 >= expected * 8, "forwarded {forwarded} of about {expected} packets");
                    // Criterion divides by the pre-counted `per_frame`: scale the time to the packets the timed
                    // frames really produced, so a run that forwarded fewer is not reported as faster.
                    busy.mul_f64(expected as f64 / forwarded.max(1) as f64)
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, forwarding);
criterion_main!(benches);

#[allow(dead_code)]
fn _unused(_: Instant) {}
