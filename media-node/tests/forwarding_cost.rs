//! Measures the core's CPU time per forwarded packet (1 publisher, N subscribers) on the simulated network.
//! Ignored by default: run with `cargo test --release -p homeroom-media-node --test forwarding_cost -- --ignored
//! --nocapture` (debug builds are ~10x slower).

use homeroom_media_node::peer::PeerOptions;
use homeroom_media_node::sim::{SimIdentity, SimNetwork};
use homeroom_shared::protocol::MediaKind;
use std::time::Duration;

#[test]
#[ignore = "a measurement, not a check; run in release"]
fn cpu_time_per_forwarded_packet() {
    for (bwe, subscribers) in [(true, 1usize), (true, 10), (true, 30), (true, 100), (false, 30), (false, 100)] {
        let mut net = if bwe { SimNetwork::new() } else { SimNetwork::without_bwe() };
        let options = PeerOptions { video_kbps: 1200, ..PeerOptions::publisher() };
        net.join(&SimIdentity::new("alice", "t/cost"), &options).unwrap();
        for i in 0..subscribers {
            net.join(&SimIdentity::new(&format!("s{i}"), "t/cost"), &PeerOptions::subscriber()).unwrap();
        }
        net.run_for(Duration::from_secs(2));
        let busy_before = net.node_busy();
        let out_before = net.metrics.packets_out(MediaKind::Audio) + net.metrics.packets_out(MediaKind::Video);
        net.run_for(Duration::from_secs(5));
        let busy = net.node_busy() - busy_before;
        let out = net.metrics.packets_out(MediaKind::Audio) + net.metrics.packets_out(MediaKind::Video) - out_before;
        eprintln!(
            "bwe {bwe:>5}, {subscribers:>3} subscribers: {out} packets forwarded in 5 s simulated, core busy {busy:?} = {:.1} µs per forwarded packet",
            busy.as_secs_f64() * 1e6 / out.max(1) as f64
        );
    }
}
