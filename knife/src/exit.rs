//! Exit codes (ops.md §7.7: "honest exit codes"). knife-push exits 0 for a job whose nodes
//! were all busy or down and 1 for everything else; here every outcome a script may want
//! to branch on has its own code. [`Exit::for_job`] maps a finished job; [`Exit::for_error`]
//! maps an error a command function returned. `main` is the only caller that exits.

use pushy_protocol::job::{JobStatus, NodeStatus};
use serde_json::Value;

use crate::{api, config, search};

/// The table printed by `--help` and copied into the README.
pub const TABLE: &str = "\
Exit codes:
  0  success: the request worked; for `job start`, every node succeeded
  1  the job completed but not every node succeeded (failed, crashed, nacked, unavailable…)
  2  usage or configuration error (bad flag, missing setting, the server refused the job body)
  3  quorum failed: too few nodes agreed to run the command
  4  timed out: the job hit its run timeout, or --timeout passed while waiting
  5  aborted: the job was aborted
  6  authentication or permission error (HTTP 401/403)
  7  not found: no such job, or no output for that node (HTTP 404)
  8  server or connection error (HTTP 5xx, unreachable, unexpected answer, job crashed)
  9  nothing to abort: the job had already finished (HTTP 409)
 10  stopped: --max-errors was passed and the nodes not yet started were skipped
With --success-threshold the job's verdict decides between 0 and 1 (and a stopped or
timed-out job that still met the threshold exits 0); with --run-on-any N, 0 means N nodes
succeeded.";

/// How the process ends. The numbers are part of the interface: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything asked for happened.
    Success = 0,
    /// The job completed, but some node did not succeed.
    NodesFailed = 1,
    /// Bad command line or configuration, or a job body the server refused (400).
    Usage = 2,
    /// The job ended `quorum_failed`.
    QuorumFailed = 3,
    /// The job ended `timed_out`, or the CLI stopped waiting.
    TimedOut = 4,
    /// The job ended `aborted`.
    Aborted = 5,
    /// 401 or 403.
    Auth = 6,
    /// 404.
    NotFound = 7,
    /// 5xx, connection failure, an answer we cannot read, or a `crashed` job.
    Server = 8,
    /// `job abort` of a job that already finished (409).
    AlreadyFinished = 9,
    /// The job ended `stopped`: its error limit was passed.
    Stopped = 10,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The outcome of a job as the final `GET` shows it. A job still unfinished means the
    /// CLI gave up waiting: [`Exit::TimedOut`].
    pub fn for_job(job: &Value) -> Exit {
        let status = job["status"].as_str().and_then(JobStatus::from_wire_name);
        // The success threshold's verdict, when the job has one, is the operator's own
        // definition of success.
        let verdict = job["verdict"].as_str();
        match status {
            Some(JobStatus::Complete | JobStatus::Stopped | JobStatus::TimedOut)
                if verdict == Some("success") =>
            {
                Exit::Success
            }
            Some(JobStatus::Complete) if verdict == Some("failure") => Exit::NodesFailed,
            Some(JobStatus::Complete) => match job["run_on_any"].as_u64() {
                Some(n) if succeeded(&job["nodes"]) >= n as usize => Exit::Success,
                Some(_) => Exit::NodesFailed,
                None if all_nodes_succeeded(&job["nodes"]) => Exit::Success,
                None => Exit::NodesFailed,
            },
            Some(JobStatus::Stopped) => Exit::Stopped,
            Some(JobStatus::QuorumFailed) => Exit::QuorumFailed,
            Some(JobStatus::TimedOut) => Exit::TimedOut,
            Some(JobStatus::Aborted) => Exit::Aborted,
            Some(JobStatus::Crashed) | None => Exit::Server,
            Some(JobStatus::New | JobStatus::Voting | JobStatus::Running) => Exit::TimedOut,
        }
    }

    /// The code for an error a command returned: the first cause that says what kind of
    /// failure it was decides; anything unrecognised is a usage error when it came from
    /// the configuration, else a server error.
    pub fn for_error(error: &anyhow::Error) -> Exit {
        for cause in error.chain() {
            if let Some(e) = cause.downcast_ref::<api::Error>() {
                return Exit::for_api_error(e);
            }
            if let Some(e) = cause.downcast_ref::<search::Error>() {
                return match e {
                    search::Error::Api(e) => Exit::for_api_error(e),
                    // No search API, a query the local directory cannot answer, a wrong
                    // directory: all fixed by the user's flags or configuration.
                    _ => Exit::Usage,
                };
            }
            if cause.downcast_ref::<config::Error>().is_some() {
                return Exit::Usage;
            }
            if cause.downcast_ref::<crate::UsageError>().is_some() {
                return Exit::Usage;
            }
        }
        Exit::Server
    }

    /// The code for one failed request.
    pub fn for_api_error(e: &api::Error) -> Exit {
        match e.status() {
            Some(400) => Exit::Usage,
            Some(401 | 403) => Exit::Auth,
            Some(404) => Exit::NotFound,
            Some(409) => Exit::AlreadyFinished,
            _ => Exit::Server,
        }
    }
}

/// How many nodes `succeeded`.
fn succeeded(nodes: &Value) -> usize {
    nodes["succeeded"].as_array().map_or(0, Vec::len)
}

/// Whether `nodes` (a map from node status to names) has at least one node and every
/// node `succeeded`. knife-push also counted `nacked` and `unavailable` as success (§7.2
/// step 8); those nodes never ran the command.
fn all_nodes_succeeded(nodes: &Value) -> bool {
    let Some(map) = nodes.as_object() else {
        return false;
    };
    let mut any = false;
    for (status, names) in map {
        let count = names.as_array().map_or(0, Vec::len);
        if count == 0 {
            continue;
        }
        if NodeStatus::from_wire_name(status) != Some(NodeStatus::Succeeded) {
            return false;
        }
        any = true;
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(status: &str, nodes: Value) -> Value {
        json!({"status": status, "nodes": nodes})
    }

    #[test]
    fn a_verdict_or_any_n_decides_success_and_a_stopped_job_has_its_code() {
        let mut j = job("complete", json!({"succeeded": ["a"], "failed": ["b"]}));
        j["verdict"] = json!("success");
        assert_eq!(Exit::for_job(&j), Exit::Success);
        j["verdict"] = json!("failure");
        assert_eq!(Exit::for_job(&j), Exit::NodesFailed);
        let mut j = job("stopped", json!({"failed": ["a"], "skipped": ["b"]}));
        assert_eq!(Exit::for_job(&j), Exit::Stopped);
        j["verdict"] = json!("success");
        assert_eq!(Exit::for_job(&j), Exit::Success);
        let mut j = job(
            "complete",
            json!({"succeeded": ["a"], "nacked": ["b"], "skipped": ["c"]}),
        );
        j["run_on_any"] = json!(1);
        assert_eq!(Exit::for_job(&j), Exit::Success);
        j["run_on_any"] = json!(2);
        assert_eq!(Exit::for_job(&j), Exit::NodesFailed);
        assert!(TABLE.contains("\n 10  stopped"));
    }

    #[test]
    fn complete_with_every_node_succeeded_is_success() {
        let j = job("complete", json!({"succeeded": ["a", "b"]}));
        assert_eq!(Exit::for_job(&j), Exit::Success);
    }

    #[test]
    fn fixes_exit_zero_with_nacked_or_unavailable_nodes() {
        for other in ["nacked", "unavailable", "failed", "crashed", "aborted"] {
            let j = job("complete", json!({"succeeded": ["a"], other: ["b"]}));
            assert_eq!(Exit::for_job(&j), Exit::NodesFailed, "{other}");
        }
        assert_eq!(
            Exit::for_job(&job("complete", json!({}))),
            Exit::NodesFailed
        );
    }

    #[test]
    fn terminal_job_statuses_have_their_own_codes() {
        let n = json!({"nacked": ["a"]});
        assert_eq!(
            Exit::for_job(&job("quorum_failed", n.clone())),
            Exit::QuorumFailed
        );
        assert_eq!(Exit::for_job(&job("timed_out", n.clone())), Exit::TimedOut);
        assert_eq!(Exit::for_job(&job("aborted", n.clone())), Exit::Aborted);
        assert_eq!(Exit::for_job(&job("crashed", n.clone())), Exit::Server);
        assert_eq!(Exit::for_job(&job("running", n.clone())), Exit::TimedOut);
        assert_eq!(Exit::for_job(&job("bogus", n)), Exit::Server);
    }

    #[test]
    fn http_statuses_map_to_codes() {
        let e = |status| api::Error::Status {
            method: "GET",
            url: "http://x/".into(),
            status,
            message: String::new(),
        };
        assert_eq!(Exit::for_api_error(&e(400)), Exit::Usage);
        assert_eq!(Exit::for_api_error(&e(401)), Exit::Auth);
        assert_eq!(Exit::for_api_error(&e(403)), Exit::Auth);
        assert_eq!(Exit::for_api_error(&e(404)), Exit::NotFound);
        assert_eq!(Exit::for_api_error(&e(409)), Exit::AlreadyFinished);
        assert_eq!(Exit::for_api_error(&e(500)), Exit::Server);
        assert_eq!(Exit::for_api_error(&e(502)), Exit::Server);
    }

    #[test]
    fn errors_are_classified_by_their_first_known_cause() {
        let api = anyhow::Error::new(api::Error::Status {
            method: "GET",
            url: "http://x/".into(),
            status: 403,
            message: "no".into(),
        })
        .context("listing jobs");
        assert_eq!(Exit::for_error(&api), Exit::Auth);
        let cfg = anyhow::Error::new(config::Error::Missing {
            setting: "node_name",
            hint: "",
        });
        assert_eq!(Exit::for_error(&cfg), Exit::Usage);
        let search = anyhow::Error::new(search::Error::NoSearchApi { url: "u".into() });
        assert_eq!(Exit::for_error(&search), Exit::Usage);
        let usage = anyhow::Error::new(crate::UsageError("bad".into()));
        assert_eq!(Exit::for_error(&usage), Exit::Usage);
        assert_eq!(Exit::for_error(&anyhow::anyhow!("what")), Exit::Server);
    }

    #[test]
    fn codes_are_stable() {
        let all = [
            Exit::Success,
            Exit::NodesFailed,
            Exit::Usage,
            Exit::QuorumFailed,
            Exit::TimedOut,
            Exit::Aborted,
            Exit::Auth,
            Exit::NotFound,
            Exit::Server,
            Exit::AlreadyFinished,
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(usize::from(e.code()), i);
            assert!(TABLE.contains(&format!("\n  {i}  ")), "{i} is documented");
        }
    }
}
