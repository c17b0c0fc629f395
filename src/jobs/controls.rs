//! The operators' controls a job body may add (issue 15; none is in the original, and a
//! body without them behaves exactly as before): rate control (`max_concurrency`,
//! `max_errors`), any N of the listed nodes (`run_on_any`) and a success threshold
//! (`success_threshold`). Parsed here, stored with the job as JSON, and resolved against
//! the job's node count into the [`Limits`] the job machine applies.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A count of nodes, or a percentage of the job's nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    /// This many nodes.
    Count(u32),
    /// This share of the job's nodes, 0–100.
    Percent(u8),
}

impl Amount {
    /// Reads `7` or `"7"` or `"25%"`.
    fn parse(v: &Value) -> Option<Amount> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Amount::Count),
            Value::String(s) => match s.strip_suffix('%') {
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .map(Amount::Percent),
                None => s.parse::<u32>().ok().map(Amount::Count),
            },
            _ => None,
        }
    }

    /// The amount for a job of `total` nodes, a percentage rounded up (`max_concurrency`,
    /// `success_threshold`: at least that share).
    pub fn at_least(self, total: usize) -> usize {
        match self {
            Amount::Count(n) => n as usize,
            Amount::Percent(p) => (total * usize::from(p)).div_ceil(100),
        }
    }

    /// The amount for a job of `total` nodes, a percentage rounded down (`max_errors`:
    /// no more than that share).
    pub fn at_most(self, total: usize) -> usize {
        match self {
            Amount::Count(n) => n as usize,
            Amount::Percent(p) => total * usize::from(p) / 100,
        }
    }

    /// As posted: a number, or `"N%"`.
    pub fn to_json(self) -> Value {
        match self {
            Amount::Count(n) => n.into(),
            Amount::Percent(p) => format!("{p}%").into(),
        }
    }
}

/// The controls a job was posted with; all absent for an original job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controls {
    /// Most nodes running the command at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<Amount>,
    /// Most failed nodes before no further node is started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<Amount>,
    /// Run on this many of the listed nodes, whichever can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_on_any: Option<u32>,
    /// How many nodes must succeed for the job to count as a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<Amount>,
}

/// The body keys this module reads.
pub const KEYS: [&str; 4] = [
    "max_concurrency",
    "max_errors",
    "run_on_any",
    "success_threshold",
];

/// Why a control was refused (400, in the original's error shape).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Not a count or percentage, or zero where zero means nothing can run.
    #[error("invalid {0} (expected a number of nodes, or a percentage such as \"10%\")")]
    Amount(&'static str),
    /// `run_on_any` not a positive integer.
    #[error("invalid run_on_any (expected a positive number)")]
    RunOnAny,
    /// `run_on_any` asks for more nodes than listed.
    #[error("invalid run_on_any (more than the number of nodes)")]
    RunOnAnyTooMany,
    /// `run_on_any` with `quorum`: any N has its own quorum, N.
    #[error("quorum and run_on_any cannot be combined (run_on_any's quorum is its N)")]
    RunOnAnyQuorum,
}

impl Controls {
    /// Reads the controls of a job body (an object already checked to be one); `nodes`
    /// is the number of distinct nodes listed, `quorum` whether one was given.
    ///
    /// # Errors
    /// The first invalid control.
    pub fn parse(
        obj: &serde_json::Map<String, Value>,
        nodes: usize,
        quorum: bool,
    ) -> Result<Controls, ControlError> {
        let amount = |key: &'static str, zero_ok: bool| match obj.get(key) {
            None => Ok(None),
            Some(v) => match Amount::parse(v) {
                Some(Amount::Count(0) | Amount::Percent(0)) if !zero_ok => {
                    Err(ControlError::Amount(key))
                }
                Some(a) => Ok(Some(a)),
                None => Err(ControlError::Amount(key)),
            },
        };
        let max_concurrency = amount("max_concurrency", false)?;
        let max_errors = amount("max_errors", true)?;
        let success_threshold = amount("success_threshold", true)?;
        let run_on_any = match obj.get("run_on_any") {
            None => None,
            Some(v) => {
                let n = v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or(ControlError::RunOnAny)?;
                if n as usize > nodes {
                    return Err(ControlError::RunOnAnyTooMany);
                }
                if quorum {
                    return Err(ControlError::RunOnAnyQuorum);
                }
                Some(n)
            }
        };
        Ok(Controls {
            max_concurrency,
            max_errors,
            run_on_any,
            success_threshold,
        })
    }

    /// Whether the job uses none of them (an original job).
    pub fn is_empty(&self) -> bool {
        *self == Controls::default()
    }

    /// The nodes the job is meant to run on: `run_on_any`'s N, else every listed node.
    pub fn target(&self, nodes: usize) -> usize {
        self.run_on_any.map_or(nodes, |n| n as usize)
    }

    /// The limits for a job of `nodes` listed nodes. Percentages are of the nodes the job
    /// is meant to run on.
    pub fn limits(&self, nodes: usize) -> Limits {
        let target = self.target(nodes);
        Limits {
            window: self.max_concurrency.map(|a| a.at_least(target).max(1)),
            errors_allowed: self.max_errors.map(|a| a.at_most(target)),
            wanted: self.run_on_any.map(|n| n as usize),
        }
    }

    /// The success verdict of a finished job with `succeeded` nodes of `nodes` listed,
    /// when a threshold was set.
    pub fn verdict(&self, nodes: usize, succeeded: usize) -> Option<bool> {
        self.success_threshold
            .map(|t| succeeded >= t.at_least(self.target(nodes)))
    }

    /// The controls as the job document and start event show them, keys as posted.
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        if let Some(a) = self.max_concurrency {
            m.insert("max_concurrency".into(), a.to_json());
        }
        if let Some(a) = self.max_errors {
            m.insert("max_errors".into(), a.to_json());
        }
        if let Some(n) = self.run_on_any {
            m.insert("run_on_any".into(), n.into());
        }
        if let Some(a) = self.success_threshold {
            m.insert("success_threshold".into(), a.to_json());
        }
        m
    }

    /// The stored form (`job_options.controls`); `None` for an original job.
    pub fn stored(&self) -> Option<String> {
        (!self.is_empty()).then(|| serde_json::to_string(self).expect("controls serialize"))
    }

    /// Reads the stored form; an unreadable one (a later version's) counts as none, with
    /// an error logged by the caller's context.
    pub fn from_stored(stored: Option<&str>) -> Controls {
        stored
            .and_then(|s| match serde_json::from_str(s) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "stored job controls unreadable; ignored");
                    None
                }
            })
            .unwrap_or_default()
    }
}

/// What the job machine applies, resolved for the job's node count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most nodes sent `run` and not finished at once.
    pub window: Option<usize>,
    /// Failed or crashed nodes tolerated; one more and no further node starts.
    pub errors_allowed: Option<usize>,
    /// Run on exactly this many of the listed nodes.
    pub wanted: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value, nodes: usize) -> Result<Controls, ControlError> {
        Controls::parse(v.as_object().unwrap(), nodes, false)
    }

    #[test]
    fn amounts_are_counts_or_percentages() {
        let c = parse(
            json!({"max_concurrency": "10%", "max_errors": 2, "success_threshold": "90%"}),
            25,
        )
        .unwrap();
        assert_eq!(c.max_concurrency, Some(Amount::Percent(10)));
        let l = c.limits(25);
        // 10 % of 25 rounds up to 3 running at once; 90 % of 25 needs 23 successes.
        assert_eq!(
            (l.window, l.errors_allowed, l.wanted),
            (Some(3), Some(2), None)
        );
        assert_eq!(c.verdict(25, 23), Some(true));
        assert_eq!(c.verdict(25, 22), Some(false));
        let c = parse(json!({"max_errors": "10%"}), 25).unwrap();
        assert_eq!(c.limits(25).errors_allowed, Some(2));
        assert_eq!(c.verdict(25, 0), None);
        assert!(parse(json!({}), 3).unwrap().is_empty());
    }

    #[test]
    fn bad_controls_are_refused_with_their_name() {
        for (body, msg) in [
            (json!({"max_concurrency": 0}), "invalid max_concurrency"),
            (json!({"max_concurrency": "0%"}), "invalid max_concurrency"),
            (json!({"max_errors": "101%"}), "invalid max_errors"),
            (json!({"max_errors": -1}), "invalid max_errors"),
            (
                json!({"success_threshold": true}),
                "invalid success_threshold",
            ),
            (json!({"run_on_any": 0}), "invalid run_on_any"),
            (json!({"run_on_any": "1"}), "invalid run_on_any"),
            (json!({"run_on_any": 4}), "more than the number of nodes"),
        ] {
            let e = parse(body.clone(), 3).unwrap_err().to_string();
            assert!(e.contains(msg), "{body}: {e}");
        }
        let e = Controls::parse(json!({"run_on_any": 1}).as_object().unwrap(), 3, true);
        assert_eq!(e, Err(ControlError::RunOnAnyQuorum));
    }

    #[test]
    fn any_n_percentages_are_of_n_and_the_stored_form_round_trips() {
        let c = parse(
            json!({"run_on_any": 4, "max_concurrency": "50%", "success_threshold": "100%"}),
            10,
        )
        .unwrap();
        assert_eq!(c.limits(10).window, Some(2));
        assert_eq!(c.verdict(10, 4), Some(true));
        assert_eq!(Controls::from_stored(c.stored().as_deref()), c);
        assert_eq!(Controls::default().stored(), None);
        assert_eq!(
            Value::Object(c.to_json()),
            json!({"max_concurrency": "50%", "run_on_any": 4, "success_threshold": "100%"})
        );
    }
}
