//! A node's decaying heartbeat average (zmq.md §3.4): whether the server still believes a
//! node is there.
//!
//! Pure: every call takes `now`. One [`HeartbeatAverage`] lives inside each node machine
//! (`machine.rs`); the machine feeds it heartbeats and the registry's periodic scan asks it
//! [`HeartbeatAverage::is_alive`].
//!
//! Fix (zmq.md §3.4 `[bug]`, §9.2 item 3): the record starts when the node machine is
//! created, not at its first valid heartbeat, so a node that never heartbeats is reaped
//! like any other silent node instead of living (and sending `abort`) forever.

use std::time::{Duration, Instant};

/// The three tuning knobs of the average (zmq.md §8: `heartbeat_interval`, `decay_window`,
/// `down_threshold`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Bucket size: heartbeats are counted per interval of this length.
    pub heartbeat_interval: Duration,
    /// `W`: the newest interval weighs `1/W`, history `1 − 1/W`.
    pub decay_window: u64,
    /// The node is dead once the average drops below this (beats per interval).
    pub down_threshold: f64,
}

impl Default for Params {
    /// The omnibus defaults: 10 s, 4, 0.6 (zmq.md §3.4).
    fn default() -> Self {
        Params {
            heartbeat_interval: Duration::from_secs(10),
            decay_window: 4,
            down_threshold: 0.6,
        }
    }
}

/// One node's liveness record.
#[derive(Clone, Debug)]
pub struct HeartbeatAverage {
    /// Decayed beats per interval, up to `interval_start`.
    avg: f64,
    /// Start of the interval whose beats are being counted.
    interval_start: Instant,
    /// Beats counted since `interval_start`.
    heartbeats: u32,
    /// `I`, never zero.
    interval: Duration,
    /// `1/W`.
    now_w: f64,
    /// `1 − 1/W`.
    hist_w: f64,
    down_threshold: f64,
}

impl HeartbeatAverage {
    /// A record starting at `now` with `avg = 2 × down_threshold` and no beats counted yet
    /// (the heartbeat that usually creates a node is then counted by [`HeartbeatAverage::heartbeat`],
    /// which matches the original's record created with one beat).
    ///
    /// A zero `heartbeat_interval` or `decay_window` (rejected by the config) is treated as
    /// 1 ns or 1, so the arithmetic never divides by zero.
    pub fn new(now: Instant, params: Params) -> Self {
        let w = params.decay_window.max(1) as f64;
        HeartbeatAverage {
            avg: 2.0 * params.down_threshold,
            interval_start: now,
            heartbeats: 0,
            interval: params.heartbeat_interval.max(Duration::from_nanos(1)),
            now_w: 1.0 / w,
            hist_w: 1.0 - 1.0 / w,
            down_threshold: params.down_threshold,
        }
    }

    /// Counts a valid heartbeat (zmq.md §3.4): Advance(now), count it, and report whether the
    /// node is still alive. A heartbeat arriving after a long gap can itself report dead
    /// (§9.2 item 2; kept as in the original).
    pub fn heartbeat(&mut self, now: Instant) -> bool {
        self.advance(now);
        self.heartbeats = self.heartbeats.saturating_add(1);
        self.alive()
    }

    /// The periodic scan's check: Advance(now), then compare with the threshold.
    pub fn is_alive(&mut self, now: Instant) -> bool {
        self.advance(now);
        self.alive()
    }

    /// The decayed average as of the last advance.
    pub fn average(&self) -> f64 {
        self.avg
    }

    fn alive(&self) -> bool {
        // The original kills on `avg < down_threshold`.
        self.avg >= self.down_threshold
    }

    /// Advance(t): fold every whole interval elapsed since `interval_start` into the average.
    /// The first contributes its counted beats, the remaining `n − 1` are empty.
    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.interval_start);
        let n = elapsed.as_nanos() / self.interval.as_nanos();
        if n == 0 {
            return;
        }
        let empty = i32::try_from(n - 1).unwrap_or(i32::MAX);
        self.avg = (self.avg * self.hist_w + f64::from(self.heartbeats) * self.now_w)
            * self.hist_w.powi(empty);
        self.interval_start = advance_by(self.interval_start, self.interval, n);
        self.heartbeats = 0;
    }
}

/// `start + n × interval`, saturating instead of overflowing.
fn advance_by(start: Instant, interval: Duration, n: u128) -> Instant {
    let nanos = interval.as_nanos().saturating_mul(n);
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // `n` whole intervals fit in the elapsed time, which was itself a valid `Duration`.
    let step = Duration::new(secs, (nanos % 1_000_000_000) as u32);
    start.checked_add(step).unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Params = Params {
        heartbeat_interval: Duration::from_secs(10),
        decay_window: 4,
        down_threshold: 0.6,
    };

    const UNIT: Params = Params {
        heartbeat_interval: Duration::from_millis(100),
        decay_window: 4,
        down_threshold: 0.25,
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn defaults_are_omnibus_values() {
        assert_eq!(Params::default(), DEFAULTS);
    }

    #[test]
    fn record_starts_at_twice_the_threshold() {
        let t0 = Instant::now();
        let l = HeartbeatAverage::new(t0, DEFAULTS);
        assert_eq!(l.average(), 1.2);
    }

    #[test]
    fn steady_one_beat_per_interval_stays_alive_and_converges_to_one() {
        let t0 = Instant::now();
        let mut l = HeartbeatAverage::new(t0, DEFAULTS);
        for k in 0..200 {
            assert!(l.heartbeat(t0 + secs(10 * k) + secs(3)), "beat {k}");
            assert!(l.is_alive(t0 + secs(10 * k) + secs(7)));
        }
        assert!((l.average() - 1.0).abs() < 1e-9, "avg {}", l.average());
    }

    #[test]
    fn silence_decays_exactly_one_then_075_then_05625() {
        // zmq.md §3.4: from a steady 1.0, after the last beat the average at the next
        // evaluation is 0.75^(n−1): 1.0, 0.75, 0.5625, so dead once 3 boundaries passed.
        let t0 = Instant::now();
        let mut l = HeartbeatAverage::new(t0, DEFAULTS);
        l.avg = 1.0;
        assert!(l.heartbeat(t0)); // the last beat, at the start of its interval
        assert!(l.is_alive(t0 + secs(9)));
        assert_eq!(l.average(), 1.0);
        assert!(l.is_alive(t0 + secs(10)));
        assert_eq!(l.average(), 1.0);
        assert!(l.is_alive(t0 + secs(29)));
        assert_eq!(l.average(), 0.75);
        assert!(!l.is_alive(t0 + secs(30)));
        assert_eq!(l.average(), 0.5625);
    }

    #[test]
    fn silence_after_converged_steady_state_kills_after_three_boundaries() {
        let t0 = Instant::now();
        let mut l = HeartbeatAverage::new(t0, DEFAULTS);
        let mut last = t0;
        for k in 0..100 {
            last = t0 + secs(10 * k);
            assert!(l.heartbeat(last));
        }
        // Alive after two whole intervals of silence …
        assert!(l.is_alive(last + secs(29)));
        assert!((l.average() - 0.75).abs() < 1e-9);
        // … dead once the third boundary since the last beat's interval has passed.
        assert!(!l.is_alive(last + secs(30)));
        assert!((l.average() - 0.5625).abs() < 1e-9);
    }

    #[test]
    fn late_beat_in_its_interval_dies_after_about_two_intervals_of_silence() {
        let t0 = Instant::now();
        let mut l = HeartbeatAverage::new(t0, DEFAULTS);
        l.avg = 1.0;
        let last = t0 + secs(9);
        assert!(l.heartbeat(last));
        assert!(l.is_alive(last + secs(20)));
        assert!(!l.is_alive(last + secs(21)));
    }

    #[test]
    fn evaluating_often_or_rarely_gives_the_same_average() {
        let t0 = Instant::now();
        let mut often = HeartbeatAverage::new(t0, DEFAULTS);
        let mut rarely = HeartbeatAverage::new(t0, DEFAULTS);
        assert!(often.heartbeat(t0));
        assert!(rarely.heartbeat(t0));
        for s in 1..=25 {
            often.is_alive(t0 + secs(s));
        }
        rarely.is_alive(t0 + secs(25));
        assert_eq!(often.average(), rarely.average());
    }

    #[test]
    fn heartbeat_after_a_long_gap_reports_dead() {
        // zmq.md §3.4 / §9.2 item 2, kept: the beat that ends a gap can itself kill.
        let t0 = Instant::now();
        let mut l = HeartbeatAverage::new(t0, DEFAULTS);
        assert!(l.heartbeat(t0));
        assert!(!l.heartbeat(t0 + secs(60)));
    }

    #[test]
    fn unit_test_params_100ms_4_025() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = HeartbeatAverage::new(t0, UNIT);
        assert_eq!(l.average(), 0.5);
        for k in 0..50 {
            assert!(l.heartbeat(t0 + ms(100 * k)));
        }
        let last = t0 + ms(4900);
        // 1.0 → 0.75^(n−1) < 0.25 first at n − 1 = 5: 0.2373.
        assert!(l.is_alive(last + ms(599)));
        assert!(!l.is_alive(last + ms(600)));
    }

    #[test]
    fn fixes_never_heartbeating_node_is_reaped() {
        // zmq.md §3.4 `[bug]`: the original had no record until the first valid heartbeat.
        // 1.2 → 0.9 → 0.675 → 0.50625 < 0.6.
        let t0 = Instant::now();
        let mut l = HeartbeatAverage::new(t0, DEFAULTS);
        assert!(l.is_alive(t0 + secs(29)));
        assert!(!l.is_alive(t0 + secs(30)));
        assert!((l.average() - 0.50625).abs() < 1e-12);
    }

    #[test]
    fn zero_parameters_do_not_divide_by_zero() {
        let t0 = Instant::now();
        let p = Params {
            heartbeat_interval: Duration::ZERO,
            decay_window: 0,
            down_threshold: 0.6,
        };
        let mut l = HeartbeatAverage::new(t0, p);
        assert!(l.heartbeat(t0));
        assert!(l.is_alive(t0));
        assert!(l.average().is_finite());
    }
}
