//! Simulcast layer choice: which layer of a published track one subscriber receives.
//!
//! Pure functions over what the node measured, so the policy is unit-tested on its own:
//!
//! 1. Layers are ranked lowest quality first: by measured bitrate once every active layer has a measurement,
//!    otherwise in the order the publisher declared them (`a=simulcast`, conventionally low to high).
//! 2. The subscriber's preference (bounded by its `receive_quality` cap) names a rank among all declared layers:
//!    `low` the lowest, `high` the highest, `medium` the middle one (the lower middle of an even count).
//! 3. Only layers that are active (packets seen lately) and allowed (within the publisher's caps) are usable;
//!    the pick is the highest usable layer at or below the named rank, else the lowest usable one.
//! 4. With a bandwidth budget, the pick steps down while its measured bitrate exceeds the budget, but never
//!    below the lowest usable layer: a subscriber always gets some video rather than none.

use homeroom_shared::media::Quality;
use std::time::{Duration, Instant};

/// What the selector knows about one layer, in rank order (lowest quality first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerOption {
    /// Measured bitrate, bits per second (`None` before the first measurement).
    pub bitrate_bps: Option<u64>,
    /// Packets arrived recently.
    pub active: bool,
    /// Within the publisher's caps.
    pub allowed: bool,
}

/// The rank a quality level names among `count` layers.
pub fn quality_rank(quality: Quality, count: usize) -> usize {
    let top = count.saturating_sub(1);
    match quality {
        Quality::Low => 0,
        Quality::Medium => top / 2,
        Quality::High => top,
    }
}

/// The layer (index into `layers`, which are in rank order) a subscriber should receive, or `None` when no
/// layer is usable.
pub fn select_layer(layers: &[LayerOption], preference: Quality, budget_bps: Option<u64>) -> Option<usize> {
    let usable = |i: &usize| layers.get(*i).is_some_and(|l| l.active && l.allowed);
    let named = quality_rank(preference, layers.len());
    let mut pick = (0..=named).rev().find(usable).or_else(|| (0..layers.len()).find(usable))?;
    if let Some(budget) = budget_bps {
        while let Some(lower) = (0..pick).rev().find(usable) {
            let too_expensive = layers.get(pick).and_then(|l| l.bitrate_bps).is_some_and(|bps| bps > budget);
            if !too_expensive {
                break;
            }
            pick = lower;
        }
    }
    Some(pick)
}

/// Rank order of layers given in declaration order: by measured bitrate when every layer has one, otherwise
/// declaration order. Returns indices into `bitrates`, lowest quality first.
pub fn rank_layers(bitrates: &[Option<u64>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..bitrates.len()).collect();
    if bitrates.iter().all(Option::is_some) {
        order.sort_by_key(|i| bitrates.get(*i).copied().flatten());
    }
    order
}

/// Bitrate of a stream, measured over windows of [`BitrateMeter::WINDOW`] and smoothed.
#[derive(Clone, Debug, Default)]
pub struct BitrateMeter {
    window_start: Option<Instant>,
    window_bytes: u64,
    rate_bps: Option<u64>,
    last_packet: Option<Instant>,
}

impl BitrateMeter {
    /// Length of one measurement window.
    pub const WINDOW: Duration = Duration::from_millis(500);

    /// Counts `bytes` arriving at `now`.
    pub fn add(&mut self, now: Instant, bytes: usize) {
        self.last_packet = Some(now);
        let start = *self.window_start.get_or_insert(now);
        self.window_bytes = self.window_bytes.saturating_add(bytes as u64);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= Self::WINDOW {
            let measured = self.window_bytes.saturating_mul(8_000) / (elapsed.as_millis().max(1) as u64);
            self.rate_bps = Some(match self.rate_bps {
                Some(previous) => (previous + measured) / 2,
                None => measured,
            });
            self.window_start = Some(now);
            self.window_bytes = 0;
        }
    }

    /// The smoothed bitrate, once a window has completed.
    pub fn rate_bps(&self) -> Option<u64> {
        self.rate_bps
    }

    /// Whether a packet arrived within `within` of `now`.
    pub fn active(&self, now: Instant, within: Duration) -> bool {
        self.last_packet.is_some_and(|at| now.saturating_duration_since(at) <= within)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(kbps: u64) -> LayerOption {
        LayerOption { bitrate_bps: Some(kbps * 1000), active: true, allowed: true }
    }

    #[test]
    fn quality_names_a_rank() {
        assert_eq!(quality_rank(Quality::Low, 3), 0);
        assert_eq!(quality_rank(Quality::Medium, 3), 1);
        assert_eq!(quality_rank(Quality::High, 3), 2);
        assert_eq!(quality_rank(Quality::Medium, 2), 0);
        assert_eq!(quality_rank(Quality::High, 2), 1);
        assert_eq!(quality_rank(Quality::High, 1), 0);
        assert_eq!(quality_rank(Quality::High, 0), 0);
    }

    #[test]
    fn preference_picks_the_layer() {
        let layers = [layer(150), layer(500), layer(1500)];
        assert_eq!(select_layer(&layers, Quality::Low, None), Some(0));
        assert_eq!(select_layer(&layers, Quality::Medium, None), Some(1));
        assert_eq!(select_layer(&layers, Quality::High, None), Some(2));
    }

    #[test]
    fn inactive_or_capped_layers_fall_back_downwards_then_upwards() {
        let mut layers = [layer(150), layer(500), layer(1500)];
        layers[2].active = false;
        assert_eq!(select_layer(&layers, Quality::High, None), Some(1));
        layers[1].allowed = false;
        assert_eq!(select_layer(&layers, Quality::High, None), Some(0));
        let mut only_top = [layer(150), layer(500), layer(1500)];
        only_top[0].active = false;
        only_top[1].active = false;
        assert_eq!(select_layer(&only_top, Quality::Low, None), Some(2));
        let none = [LayerOption { bitrate_bps: None, active: false, allowed: true }];
        assert_eq!(select_layer(&none, Quality::High, None), None);
    }

    #[test]
    fn the_budget_steps_down_but_never_below_the_lowest_layer() {
        let layers = [layer(150), layer(500), layer(1500)];
        assert_eq!(select_layer(&layers, Quality::High, Some(2_000_000)), Some(2));
        assert_eq!(select_layer(&layers, Quality::High, Some(1_000_000)), Some(1));
        assert_eq!(select_layer(&layers, Quality::High, Some(200_000)), Some(0));
        assert_eq!(select_layer(&layers, Quality::High, Some(10)), Some(0));
        // Unmeasured layers are not stepped over.
        let unmeasured = [layer(150), LayerOption { bitrate_bps: None, active: true, allowed: true }];
        assert_eq!(select_layer(&unmeasured, Quality::High, Some(10)), Some(1));
    }

    #[test]
    fn layers_rank_by_bitrate_once_all_are_measured() {
        assert_eq!(rank_layers(&[Some(1500), Some(150), Some(500)]), vec![1, 2, 0]);
        assert_eq!(rank_layers(&[Some(1500), None, Some(500)]), vec![0, 1, 2]);
        assert_eq!(rank_layers(&[]), Vec::<usize>::new());
    }

    #[test]
    fn the_meter_measures_windows() {
        let t0 = Instant::now();
        let mut meter = BitrateMeter::default();
        for i in 0..=50u64 {
            meter.add(t0 + Duration::from_millis(i * 10), 1250); // 1250 B every 10 ms = 1 Mbit/s
        }
        let rate = meter.rate_bps().unwrap();
        assert!((900_000..=1_100_000).contains(&rate), "{rate}");
        assert!(meter.active(t0 + Duration::from_millis(600), Duration::from_millis(200)));
        assert!(!meter.active(t0 + Duration::from_secs(2), Duration::from_millis(200)));
    }
}
