//! How the simulated nodes behave, and the dice they roll: failure rates, the run
//! delay, the reconnect splay and retry backoff. Pure: every random choice takes the
//! caller's RNG, so tests seed it.

use std::time::Duration;

use rand::{Rng as _, RngCore};

/// The knobs of a run, shared by every node (read-only).
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Probability that a node answers `commit` with `nack_commit`.
    pub commit_fail_rate: f64,
    /// Probability that a run ends `failed` instead of `succeeded`.
    pub run_fail_rate: f64,
    /// Time between `ack_run` and the completion message (zero: sent at once).
    pub run_delay: Duration,
    /// Upper bound of the random wait before reconfiguring after a server restart or
    /// loss; `None` uses the heartbeat interval from the config, as the real agent does
    /// (zmq.md §3.3).
    pub splay: Option<Duration>,
    /// How long a new command channel may stay silent before the node assumes CURVE
    /// failed and reconfigures (client/src/agent.rs `COMMAND_SILENCE`, zmq.md §3.5).
    pub command_silence: Duration,
    /// Largest wait between failed config fetches (the backoff doubles up to it).
    pub fetch_retry_max: Duration,
    /// Delay before a reconfigure after a refused send (zmq.md §3.6: 60 s, jittered).
    pub send_failure_reconfigure: Duration,
}

impl Default for Behaviour {
    /// The real agent's timings, every job succeeding at once.
    fn default() -> Self {
        Behaviour {
            commit_fail_rate: 0.0,
            run_fail_rate: 0.0,
            run_delay: Duration::ZERO,
            splay: None,
            command_silence: Duration::from_secs(3),
            fetch_retry_max: Duration::from_secs(30),
            send_failure_reconfigure: Duration::from_secs(60),
        }
    }
}

/// Why a rate is not usable.
#[derive(Debug, thiserror::Error)]
#[error("a rate must be a number between 0 and 1, got {0}")]
pub struct BadRate(pub String);

/// Parses a probability in `[0, 1]` (a clap value parser).
///
/// # Errors
/// When the text is not a number in that range.
pub fn parse_rate(text: &str) -> Result<f64, BadRate> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(BadRate(text.to_owned())),
    }
}

/// True with probability `rate`. A zero rate never draws, so runs without failures
/// consume no randomness.
pub fn roll(rate: f64, rng: &mut dyn RngCore) -> bool {
    rate > 0.0 && rng.random::<f64>() < rate
}

/// A uniform wait in `[0, bound)`.
pub fn splay(bound: Duration, rng: &mut dyn RngCore) -> Duration {
    bound.mul_f64(rng.random_range(0.0..1.0))
}

/// `d × (1 − U[0, 0.1))`, how the real agent spreads its reconfigures.
pub fn jitter(d: Duration, rng: &mut dyn RngCore) -> Duration {
    d.mul_f64(1.0 - rng.random_range(0.0..0.1))
}

/// The wait before fetch attempt number `failures + 1`: 1 s doubling per failure up to
/// `max`, jittered so a fleet that failed together does not retry together.
pub fn backoff(failures: u32, max: Duration, rng: &mut dyn RngCore) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1 << failures.saturating_sub(1).min(16));
    jitter(base.min(max), rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    #[test]
    fn rates_are_probabilities() {
        assert_eq!(parse_rate("0").unwrap(), 0.0);
        assert_eq!(parse_rate("0.25").unwrap(), 0.25);
        assert_eq!(parse_rate("1").unwrap(), 1.0);
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("-0.1").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("often").is_err());
    }

    #[test]
    fn roll_never_and_always() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..1000).all(|_| !roll(0.0, &mut rng)));
        assert!((0..1000).all(|_| roll(1.0, &mut rng)));
    }

    #[test]
    fn roll_follows_the_rate() {
        let mut rng = StdRng::seed_from_u64(7);
        let hits = (0..10_000).filter(|_| roll(0.3, &mut rng)).count();
        assert!((2700..3300).contains(&hits), "{hits}");
    }

    #[test]
    fn splay_stays_below_its_bound() {
        let mut rng = StdRng::seed_from_u64(3);
        let bound = Duration::from_millis(500);
        for _ in 0..1000 {
            assert!(splay(bound, &mut rng) < bound);
        }
        assert_eq!(splay(Duration::ZERO, &mut rng), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(5);
        let max = Duration::from_secs(30);
        let within = |d: Duration, nominal: u64| {
            let n = Duration::from_secs(nominal);
            d <= n && d > n.mul_f64(0.9)
        };
        assert!(within(backoff(1, max, &mut rng), 1));
        assert!(within(backoff(2, max, &mut rng), 2));
        assert!(within(backoff(4, max, &mut rng), 8));
        assert!(within(backoff(6, max, &mut rng), 30));
        assert!(within(backoff(u32::MAX, max, &mut rng), 30));
    }
}
