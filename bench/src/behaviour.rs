//! How the simulated nodes behave, and the dice they roll: failure rates, the run delay
//! and the reconnect splay. Everything else is the real agent's (its machine's timings).
//! Pure: every random choice takes the caller's RNG, so tests seed it.

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
    /// Lines per second the pretend command prints while it runs; streamed with the real
    /// agent's chunker when the server asks for live output (zero: silent).
    pub output_rate: u32,
    /// Upper bound of the random wait before reconfiguring after a server restart;
    /// `None` uses the heartbeat interval from the config, as the real agent does
    /// (zmq.md §3.3).
    pub splay: Option<Duration>,
}

/// The agent's default message size limit (`max_body_size`); simulated nodes capture no
/// output, so it only bounds what the agent would send.
pub const MAX_BODY: usize = 63_000;

impl Default for Behaviour {
    /// The real agent's timings, every job succeeding at once.
    fn default() -> Self {
        Behaviour {
            commit_fail_rate: 0.0,
            run_fail_rate: 0.0,
            run_delay: Duration::ZERO,
            output_rate: 0,
            splay: None,
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
}
