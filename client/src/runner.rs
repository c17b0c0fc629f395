//! Runs one job's command as an OS process (zmq.md §6.6) and cleans the job-file
//! directory. The job runner's state machine calls [`check_commit`] before `ack_commit`,
//! [`start`] on `run` (an `Err` means "report `failed` at once", fixing zmq.md §9.3 #3),
//! then awaits [`Running::wait`], cancelling its token on `abort` or a run timeout; the
//! whole process group is then terminated (fixing zmq.md §9.3 #2, STYLE.md §2.5).
//!
//! Differences from the Ruby client, on purpose:
//! * the command always runs as `/bin/sh -c <command_line>`. Ruby's `exec(string)` uses
//!   the shell only when metacharacters are present; for a plain command the observable
//!   behaviour is the same (the shell execs or waits for it, exit status passes through),
//!   and a missing executable becomes exit status 127 (`failed`) instead of a stuck job;
//! * the job file is mode 0600, owned by the job's user, and deleted when the job ends;
//! * output is kept as a tail within a byte budget instead of in full (zmq.md §2.6); the
//!   budget is measured as the output takes room in the JSON message (escaped), so the
//!   newest output that fits is sent instead of none;
//! * when the server asks (issue 15 §2, [`Running::with_live`]), the output also goes out
//!   while the command runs, in bounded chunks at a bounded rate ([`live`]).

use std::ffi::CString;
use std::io::{self, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Gid, Pid, Uid, User};
use rand::Rng as _;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub mod live;
#[cfg(test)]
mod live_tests;
mod output;

use live::{Bounds, Chunker, Live, Stream};
pub use output::{Captured, escaped_size, fit_output};
use output::{Tail, finish_capture};

/// Every command runs through this shell (see the module docs).
const SHELL: &str = "/bin/sh";
/// Job files are `file_dir/pushy_file<random>`; the cleaner removes only these.
const FILE_PREFIX: &str = "pushy_file";
/// After the command exits, how long we keep reading output that a backgrounded
/// process still holds open before giving up on it (the process is left alone).
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);
/// How often a terminating group is checked for survivors.
const GROUP_POLL: Duration = Duration::from_millis(50);

/// What to run: the `commit` options after whitelist lookup (zmq.md §6.4, §6.6).
#[derive(Clone, Debug, Default)]
pub struct JobSpec {
    /// Exported as `CHEF_PUSH_JOB_ID`.
    pub job_id: String,
    /// Exported as `CHEF_PUSH_NODE_NAME`.
    pub node_name: String,
    /// The whitelist result, given to `/bin/sh -c`.
    pub command_line: String,
    /// Run as this user (uid, primary gid, supplementary groups, HOME/USER/LOGNAME).
    pub user: Option<String>,
    /// Working directory.
    pub dir: Option<PathBuf>,
    /// The job's environment, before the `allowed_overwritable_env_vars` renaming.
    pub env: Vec<(String, String)>,
    /// `raw:<content>` or `base64:<content>`, written to a job file.
    pub file: Option<String>,
    /// Whether stdout/stderr are captured for the completion message.
    pub capture: bool,
}

/// The agent settings the runner needs (zmq.md §6.1, §8).
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Where job files go; created (mode 0711, not recursively) when missing. It must be
    /// owned by us and not group/world-writable, or another user could swap a job file.
    pub file_dir: PathBuf,
    /// When `Some`, job env keys not listed are renamed to `CHEF_PUSH_ENV_<key>`.
    pub allowed_overwritable_env_vars: Option<Vec<String>>,
    /// Byte budget for captured stdout and stderr together, measured JSON-escaped (as they
    /// take room in the message); also how many raw bytes of each stream are kept, since
    /// escaping never makes a byte smaller. The agent fits the final message exactly.
    pub max_output: usize,
    /// Time between SIGTERM and SIGKILL to the process group on cancellation.
    pub kill_grace: Duration,
}

impl Default for RunnerConfig {
    /// `file_dir` as the 3.0.12+ CLI, `max_output` = client `max_body_size` (zmq.md §8).
    fn default() -> Self {
        RunnerConfig {
            file_dir: PathBuf::from("/tmp/chef-push"),
            allowed_overwritable_env_vars: None,
            max_output: 63000,
            kill_grace: Duration::from_secs(5),
        }
    }
}

/// How a job's process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code 0 and not killed by us: the job `succeeded`, else it `failed`.
    pub exit_ok: bool,
    /// The exit code; `None` when ended by a signal (or the wait itself failed).
    pub status: Option<i32>,
    /// The signal that ended the process, if any.
    pub signal: Option<i32>,
    /// The process was terminated because the cancel token fired (abort, run timeout).
    pub killed: bool,
    /// `None` unless `capture` was requested.
    pub stdout: Option<Captured>,
    /// `None` unless `capture` was requested.
    pub stderr: Option<Captured>,
}

/// Why `commit` must be nacked (zmq.md §6.4 "otherwise check").
#[derive(Debug, thiserror::Error)]
pub enum CommitRefusal {
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    #[error("looking up user {user:?}")]
    UserLookup {
        user: String,
        #[source]
        source: io::Error,
    },
    #[error("directory {0} does not exist")]
    MissingDir(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("checking directory {path}")]
    DirCheck {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("job file must start with \"raw:\" or \"base64:\"")]
    FilePrefix,
    #[error("job file is not valid base64")]
    FileBase64(#[source] base64::DecodeError),
    /// Empty, or contains `=` or NUL (would smuggle another variable); or a NUL in the value.
    #[error("invalid environment variable {0:?}")]
    BadEnv(String),
}

/// Why a job could not be started; the caller reports `failed` at once.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A commit check that no longer holds (e.g. the user was deleted since).
    #[error(transparent)]
    Refused(#[from] CommitRefusal),
    #[error("preparing file_dir {path}")]
    FileDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("file_dir {0} is not a directory owned by us and closed to group/other writes")]
    UnsafeFileDir(PathBuf),
    #[error("writing job file {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// fork/exec, `current_dir` or the user switch failed.
    #[error("starting the command")]
    Spawn(#[source] io::Error),
}

/// The checks made before `ack_commit`: the user exists, the dir exists and is a
/// directory, the file has a valid prefix and decodes, env names are usable.
///
/// # Errors
/// The first failing check, in that order.
pub async fn check_commit(spec: &JobSpec) -> Result<(), CommitRefusal> {
    if let Some(user) = &spec.user {
        resolve_account(user, false).await?;
    }
    if let Some(dir) = &spec.dir {
        match tokio::fs::metadata(dir).await {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(CommitRefusal::NotADirectory(dir.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CommitRefusal::MissingDir(dir.clone()));
            }
            Err(source) => {
                return Err(CommitRefusal::DirCheck {
                    path: dir.clone(),
                    source,
                });
            }
        }
    }
    if let Some(file) = &spec.file {
        decode_file(file)?;
    }
    job_env(&spec.env, None)?;
    Ok(())
}

/// A started command. Dropping it without [`Running::wait`] kills its process group.
#[derive(Debug)]
pub struct Running {
    child: Child,
    pid: u32,
    /// = pid: the shell leads its own session and group.
    pgid: Pid,
    job_id: String,
    job_file: Option<PathBuf>,
    capture: bool,
    max_output: usize,
    kill_grace: Duration,
    finished: bool,
    /// Where the output goes while the command runs (issue 15 §2), when asked.
    live: Option<Live>,
}

/// Starts `spec` (zmq.md §6.6): writes the job file, builds the environment, and
/// spawns `/bin/sh -c` in a new session (so its process group can be killed as one)
/// as the job's user, with stdin from `/dev/null`.
///
/// # Errors
/// Anything that keeps the command from starting; the job file is removed again.
pub async fn start(spec: JobSpec, cfg: &RunnerConfig) -> Result<Running, SpawnError> {
    let account = match &spec.user {
        Some(user) => Some(resolve_account(user, true).await?),
        None => None,
    };
    let env = job_env(&spec.env, cfg.allowed_overwritable_env_vars.as_deref())?;
    let content = spec.file.as_deref().map(decode_file).transpose()?;
    let owner = account
        .as_ref()
        .filter(|a| a.uid != nix::unistd::geteuid())
        .map(|a| (a.uid, a.gid));
    let job_file = match content {
        Some(content) => {
            let dir = cfg.file_dir.clone();
            Some(blocking(move || write_job_file(&dir, &content, owner)).await?)
        }
        None => None,
    };

    let mut cmd = Command::new(SHELL);
    cmd.arg("-c").arg(&spec.command_line).stdin(Stdio::null());
    let out = || {
        if spec.capture {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    cmd.stdout(out()).stderr(out());
    if let Some(dir) = &spec.dir {
        cmd.current_dir(dir);
    }
    if let Some(a) = &account {
        cmd.env("HOME", &a.home)
            .env("USER", &a.name)
            .env("LOGNAME", &a.name);
    }
    cmd.envs(env);
    if let Some(path) = &job_file {
        cmd.env("CHEF_PUSH_JOB_FILE", path);
    }
    cmd.env("CHEF_PUSH_NODE_NAME", &spec.node_name)
        .env("CHEF_PUSH_JOB_ID", &spec.job_id);

    // std applies its own uid/gid *before* pre_exec closures and clears supplementary
    // groups, so initgroups could not run after it: switch identity here instead, with
    // the group list computed before the fork.
    let switch = account
        .filter(|a| a.uid != nix::unistd::geteuid() || a.gid != nix::unistd::getegid())
        .map(|a| (a.groups, a.gid, a.uid));
    // SAFETY: runs between fork and exec; it only makes async-signal-safe syscalls
    // (setsid, setgroups, setgid, setuid) on data allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            if let Some((groups, gid, uid)) = &switch {
                nix::unistd::setgroups(groups)?;
                nix::unistd::setgid(*gid)?;
                nix::unistd::setuid(*uid)?;
            }
            Ok(())
        });
    }

    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            if let Some(path) = &job_file {
                remove_job_file(path).await;
            }
            return Err(SpawnError::Spawn(e));
        }
    };
    let pid = child
        .id()
        .expect("a freshly spawned child has not been reaped");
    let pgid = Pid::from_raw(i32::try_from(pid).expect("pids fit in pid_t"));
    info!(job_id = %spec.job_id, pid, "command started");
    Ok(Running {
        child,
        pid,
        pgid,
        job_id: spec.job_id,
        job_file,
        capture: spec.capture,
        max_output: cfg.max_output,
        kill_grace: cfg.kill_grace,
        finished: false,
        live: None,
    })
}

impl Running {
    /// The shell's pid, which is also the process group (and session) id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Also sends the output while the command runs, in chunks ([`live`]); only a job
    /// that captures its output has any to send.
    pub fn with_live(mut self, live: Live) -> Running {
        if self.capture {
            self.live = Some(live);
        }
        self
    }

    /// Waits for the command while capturing its output. When `cancel` fires first, the
    /// process group gets SIGTERM, then SIGKILL after `kill_grace` unless every member is
    /// gone by then; the outcome says `killed`. The job file is deleted in every case.
    pub async fn wait(mut self, cancel: CancellationToken) -> Outcome {
        let mut out = Tail::new(self.max_output);
        let mut err = Tail::new(self.max_output);
        let (status, killed) = self.supervise(&cancel, &mut out, &mut err).await;
        self.finished = true;
        if let Some(path) = self.job_file.take() {
            remove_job_file(&path).await;
        }
        let (stdout, stderr) = if self.capture {
            let (a, b) = finish_capture(&out, &err, self.max_output);
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        let status = status.unwrap_or_else(|e| {
            warn!(job_id = %self.job_id, error = %e, "waiting for the command failed");
            None
        });
        let outcome = Outcome {
            exit_ok: !killed && status.is_some_and(|s| s.code() == Some(0)),
            status: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            killed,
            stdout,
            stderr,
        };
        info!(job_id = %self.job_id, pid = self.pid, status = ?outcome.status,
              signal = ?outcome.signal, killed, "command finished");
        outcome
    }

    /// Drives the child, its pipes and a possible termination until all are settled.
    /// Returns the exit status (`Ok(None)` only if reaping was abandoned) and `killed`.
    async fn supervise(
        &mut self,
        cancel: &CancellationToken,
        out: &mut Tail,
        err: &mut Tail,
    ) -> (io::Result<Option<ExitStatus>>, bool) {
        let pgid = self.pgid;
        let stdout = self.child.stdout.take();
        let stderr = self.child.stderr.take();
        let mut live = self.live.take();
        // Shared by both pipes and the ticker, all in this task, so never contended; a
        // Mutex rather than a RefCell only because the task must be Send. No lock is
        // held across an await.
        let chunker = live
            .as_ref()
            .map(|_| Mutex::new(Chunker::new(Bounds::for_body(self.max_output))));
        let feed = |stream| chunker.as_ref().map(|c| (c, stream));
        let pipes = async {
            tokio::join!(
                drain(stdout, out, feed(Stream::Out)),
                drain(stderr, err, feed(Stream::Err))
            )
        };
        tokio::pin!(pipes);
        let mut ticker = tokio::time::interval(live::INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pipes_done = false;
        let mut status: Option<io::Result<ExitStatus>> = None;
        let mut term: Option<Termination> = None;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let term_done = term.as_ref().is_none_or(|t| t.done);
            if status.is_some() && pipes_done && term_done {
                break;
            }
            let poll_at = term.as_ref().map_or_else(Instant::now, |t| t.next_poll);
            let drain_at = drain_deadline.unwrap_or_else(Instant::now);
            tokio::select! {
                _ = &mut pipes, if !pipes_done => pipes_done = true,
                r = self.child.wait(), if status.is_none() => {
                    status = Some(r);
                    drain_deadline = Some(Instant::now() + OUTPUT_DRAIN);
                }
                _ = cancel.cancelled(), if term.is_none() => {
                    if status.is_some() {
                        break; // already exited: just stop waiting for stray output
                    }
                    term = Some(Termination::begin(pgid, self.kill_grace, &self.job_id));
                }
                _ = sleep_until(poll_at), if !term_done => {
                    let t = term.as_mut().expect("guarded by !term_done");
                    t.poll(pgid, status.is_some(), &self.job_id).await;
                }
                _ = sleep_until(drain_at), if drain_deadline.is_some() && !pipes_done && term_done => {
                    debug!(job_id = %self.job_id, "output still open after exit; not waiting");
                    break;
                }
                // Also after the pipes close: the backlog drains while the command runs on.
                _ = ticker.tick(), if live.is_some() => {
                    if let (Some(live), Some(c)) = (&mut live, &chunker) {
                        live.feed(&mut lock(c), Instant::now().into_std(), false);
                    }
                }
            }
        }
        // The last chunk goes before `wait` returns, so before the result.
        if let (Some(live), Some(c)) = (&mut live, &chunker) {
            live.feed(&mut lock(c), Instant::now().into_std(), true);
        }
        (status.transpose(), term.is_some())
    }
}

impl Drop for Running {
    /// Abandoned without `wait` (e.g. the job task itself was cancelled): leave no
    /// orphans and no job file. Best effort; errors mean there is nothing left to kill.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let _ = killpg(self.pgid, Signal::SIGKILL);
        if let Some(path) = self.job_file.take() {
            let _ = std::fs::remove_file(path); // small unlink; Drop cannot await
        }
    }
}

/// A group termination in progress: SIGTERM sent, SIGKILL at `deadline` unless the
/// group is empty before.
struct Termination {
    deadline: Instant,
    next_poll: Instant,
    done: bool,
}

impl Termination {
    fn begin(pgid: Pid, grace: Duration, job_id: &str) -> Self {
        info!(job_id, pgid = pgid.as_raw(), "terminating command");
        signal_group(pgid, Signal::SIGTERM, job_id);
        let now = Instant::now();
        Termination {
            deadline: now + grace,
            next_poll: now + GROUP_POLL,
            done: false,
        }
    }

    /// `reaped`: the shell itself has been waited for (before that the group is not empty).
    async fn poll(&mut self, pgid: Pid, reaped: bool, job_id: &str) {
        self.next_poll = Instant::now() + GROUP_POLL;
        if Instant::now() >= self.deadline {
            warn!(
                job_id,
                pgid = pgid.as_raw(),
                "command ignored SIGTERM; sending SIGKILL"
            );
            signal_group(pgid, Signal::SIGKILL, job_id);
            self.done = true;
        } else if reaped && !group_alive(pgid).await {
            self.done = true;
        }
    }
}

fn signal_group(pgid: Pid, signal: Signal, job_id: &str) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            warn!(job_id, pgid = pgid.as_raw(), %signal, error = %e, "cannot signal the command")
        }
    }
}

/// Whether any live (non-zombie) process is left in the group. Zombies count as gone:
/// orphans are reparented to init, which in some containers never reaps them.
async fn group_alive(pgid: Pid) -> bool {
    match killpg(pgid, None) {
        Err(Errno::ESRCH) => false,
        Ok(()) if cfg!(target_os = "linux") => {
            let pgid = pgid.as_raw();
            tokio::task::spawn_blocking(move || proc_group_has_live_member(pgid))
                .await
                .unwrap_or(true)
        }
        _ => true, // EPERM: someone is there that we may not signal
    }
}

/// Scans `/proc/<pid>/stat` (fields after the `)` of the command name: state, ppid, pgrp).
fn proc_group_has_live_member(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let (state, pgrp) = (fields.next(), fields.nth(1));
        pgrp.and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && !matches!(state, Some("Z" | "X"))
    })
}

/// Reads a pipe to EOF into `tail` (and the live chunker, when streaming); `None` (not
/// captured) returns at once.
async fn drain<R: AsyncRead + Unpin>(
    reader: Option<R>,
    tail: &mut Tail,
    live: Option<(&Mutex<Chunker>, Stream)>,
) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                tail.push(&buf[..n]);
                if let Some((chunker, stream)) = live {
                    lock(chunker).push(stream, &buf[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!(error = %e, "reading command output failed");
                return;
            }
        }
    }
}

/// The chunker, even after a panic elsewhere poisoned it (it holds only bytes).
fn lock(chunker: &Mutex<Chunker>) -> MutexGuard<'_, Chunker> {
    chunker.lock().unwrap_or_else(|p| p.into_inner())
}

/// A resolved job user.
struct Account {
    name: String,
    uid: Uid,
    gid: Gid,
    home: PathBuf,
    /// Supplementary groups (initgroups' list); only filled when switching.
    groups: Vec<Gid>,
}

/// getpwnam (and getgrouplist), which may do NSS I/O, off the runtime.
async fn resolve_account(name: &str, with_groups: bool) -> Result<Account, CommitRefusal> {
    let owned = name.to_owned();
    tokio::task::spawn_blocking(move || lookup_account(&owned, with_groups))
        .await
        .unwrap_or_else(|e| {
            Err(CommitRefusal::UserLookup {
                user: name.to_owned(),
                source: io::Error::other(e),
            })
        })
}

fn lookup_account(name: &str, with_groups: bool) -> Result<Account, CommitRefusal> {
    let failed = |e: Errno| CommitRefusal::UserLookup {
        user: name.to_owned(),
        source: e.into(),
    };
    let user = User::from_name(name)
        .map_err(failed)?
        .ok_or_else(|| CommitRefusal::UnknownUser(name.to_owned()))?;
    let groups = if with_groups {
        let cname = CString::new(name).map_err(|_| CommitRefusal::UnknownUser(name.to_owned()))?;
        nix::unistd::getgrouplist(&cname, user.gid).map_err(failed)?
    } else {
        Vec::new()
    };
    Ok(Account {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
        home: user.dir,
        groups,
    })
}

/// zmq.md §6.6 environment steps 1–2; the `CHEF_PUSH_*` variables are added last by
/// the caller so the job cannot override them.
fn job_env(
    env: &[(String, String)],
    allowed: Option<&[String]>,
) -> Result<Vec<(String, String)>, CommitRefusal> {
    env.iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                return Err(CommitRefusal::BadEnv(k.clone()));
            }
            let key = match allowed {
                Some(list) if !list.contains(k) => format!("CHEF_PUSH_ENV_{k}"),
                _ => k.clone(),
            };
            Ok((key, v.clone()))
        })
        .collect()
}

/// `raw:<bytes>` or `base64:<text>` (lenient: whitespace, missing padding and trailing
/// bits are accepted, like Ruby's `Base64.decode64` on well-formed input).
fn decode_file(file: &str) -> Result<Vec<u8>, CommitRefusal> {
    if let Some(raw) = file.strip_prefix("raw:") {
        return Ok(raw.as_bytes().to_vec());
    }
    let Some(encoded) = file.strip_prefix("base64:") else {
        return Err(CommitRefusal::FilePrefix);
    };
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let config = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    GeneralPurpose::new(&base64::alphabet::STANDARD, config)
        .decode(compact)
        .map_err(CommitRefusal::FileBase64)
}

/// Creates `dir/pushy_file<random>` (0600, owned by `owner` if given) holding `content`.
fn write_job_file(
    dir: &Path,
    content: &[u8],
    owner: Option<(Uid, Gid)>,
) -> Result<PathBuf, SpawnError> {
    ensure_file_dir(dir)?;
    loop {
        let suffix: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        let path = dir.join(format!("{FILE_PREFIX}{suffix}"));
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(SpawnError::WriteFile { path, source }),
        };
        let written = owner
            .map_or(Ok(()), |(uid, gid)| {
                std::os::unix::fs::fchown(&file, Some(uid.as_raw()), Some(gid.as_raw()))
            })
            .and_then(|()| file.write_all(content));
        return match written {
            Ok(()) => Ok(path),
            Err(source) => {
                let _ = std::fs::remove_file(&path); // best effort; the write error is what matters
                Err(SpawnError::WriteFile { path, source })
            }
        };
    }
}

/// Creates `dir` (mode 0711: job users may open their file by name but not list) if
/// missing, and refuses a directory someone else could write into.
fn ensure_file_dir(dir: &Path) -> Result<(), SpawnError> {
    let fail = |source| SpawnError::FileDir {
        path: dir.to_owned(),
        source,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(fail)?
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(e)),
    }
    let meta = std::fs::metadata(dir).map_err(fail)?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        return Err(SpawnError::UnsafeFileDir(dir.to_owned()));
    }
    Ok(())
}

async fn remove_job_file(path: &Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn!(path = %path.display(), error = %e, "cannot delete job file"),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpawnError> + Send + 'static,
) -> Result<T, SpawnError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(SpawnError::Spawn(io::Error::other(e))))
}

/// The file-dir cleaner's pass (zmq.md §6.6): deletes `dir/pushy_file*` regular files
/// last modified more than `older_than` ago. A missing `dir` counts as clean.
///
/// # Errors
/// Listing `dir` failed; failures on single entries are logged and skipped.
pub async fn clean_file_dir(dir: &Path, older_than: Duration) -> io::Result<usize> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut removed = 0;
    while let Some(entry) = entries.next_entry().await? {
        if !entry.file_name().to_string_lossy().starts_with(FILE_PREFIX) {
            continue;
        }
        let old = match entry.metadata().await {
            Ok(m) => m.is_file() && m.modified().is_ok_and(|t| t < cutoff),
            Err(_) => false, // vanished meanwhile
        };
        if !old {
            continue;
        }
        match tokio::fs::remove_file(entry.path()).await {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %entry.path().display(), error = %e, "cannot delete old job file")
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    fn spec(command_line: &str) -> JobSpec {
        JobSpec {
            job_id: "job-1".into(),
            node_name: "node1".into(),
            command_line: command_line.into(),
            capture: true,
            ..JobSpec::default()
        }
    }

    fn config(tmp: &tempfile::TempDir) -> RunnerConfig {
        RunnerConfig {
            file_dir: tmp.path().join("files"),
            ..RunnerConfig::default()
        }
    }

    async fn run(spec: JobSpec, cfg: &RunnerConfig) -> Outcome {
        let running = start(spec, cfg).await.expect("command starts");
        tokio::time::timeout(LIMIT, running.wait(CancellationToken::new()))
            .await
            .expect("command finishes")
    }

    fn stdout(o: &Outcome) -> &str {
        &o.stdout.as_ref().expect("captured").text
    }

    /// Dead or a zombie nobody reaps (this container's init does not).
    fn is_dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => nix::sys::signal::kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH),
        }
    }

    async fn wait_for_pid_file(path: &Path) -> i32 {
        tokio::time::timeout(LIMIT, async {
            loop {
                if let Ok(s) = tokio::fs::read_to_string(path).await
                    && let Ok(pid) = s.trim().parse()
                {
                    return pid;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("grandchild pid written")
    }

    async fn wait_dead(pid: i32) {
        tokio::time::timeout(LIMIT, async {
            while !is_dead(pid) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("process dies");
    }

    #[tokio::test]
    async fn exit_zero_succeeds() {
        let tmp = tempfile::tempdir().unwrap();
        let o = run(spec("true"), &config(&tmp)).await;
        assert!(o.exit_ok);
        assert_eq!((o.status, o.signal, o.killed), (Some(0), None, false));
    }

    #[tokio::test]
    async fn nonzero_exit_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let o = run(spec("exit 3"), &config(&tmp)).await;
        assert!(!o.exit_ok);
        assert_eq!(o.status, Some(3));
    }

    #[tokio::test]
    async fn killed_by_signal_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let o = run(spec("kill -KILL $$"), &config(&tmp)).await;
        assert!(!o.exit_ok);
        assert_eq!((o.status, o.signal, o.killed), (None, Some(9), false));
    }

    #[tokio::test]
    async fn missing_executable_fails_with_127() {
        let tmp = tempfile::tempdir().unwrap();
        let o = run(spec("/no/such/program"), &config(&tmp)).await;
        assert!(!o.exit_ok);
        assert_eq!(o.status, Some(127));
    }

    #[tokio::test]
    async fn captures_both_streams() {
        let tmp = tempfile::tempdir().unwrap();
        let o = run(spec("echo out; echo err >&2"), &config(&tmp)).await;
        let text = |c: Option<Captured>| c.expect("captured");
        assert_eq!(
            text(o.stdout),
            Captured {
                text: "out\n".into(),
                truncated: false
            }
        );
        assert_eq!(
            text(o.stderr),
            Captured {
                text: "err\n".into(),
                truncated: false
            }
        );
    }

    #[tokio::test]
    async fn empty_output_is_captured_as_empty_strings() {
        let tmp = tempfile::tempdir().unwrap();
        let o = run(spec("true"), &config(&tmp)).await;
        assert_eq!(o.stdout, Some(Captured::default()));
        assert_eq!(o.stderr, Some(Captured::default()));
    }

    #[tokio::test]
    async fn no_capture_gives_no_output() {
        let tmp = tempfile::tempdir().unwrap();
        let o = run(
            JobSpec {
                capture: false,
                ..spec("echo out; echo err >&2")
            },
            &config(&tmp),
        )
        .await;
        assert!(o.exit_ok);
        assert_eq!((o.stdout, o.stderr), (None, None));
    }

    #[tokio::test]
    async fn output_over_budget_keeps_the_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = RunnerConfig {
            max_output: 100,
            ..config(&tmp)
        };
        let lines = "i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done";
        let o = run(spec(lines), &cfg).await;
        let out = o.stdout.unwrap();
        assert!(out.truncated);
        // Ten lines of "lineNNNN\n", each 10 bytes once the newline is escaped.
        assert_eq!(escaped_size(&out.text), 100);
        assert!(out.text.starts_with("line1990\n"), "{:?}", out.text);
        assert!(out.text.ends_with("line1998\nline1999\n"), "{:?}", out.text);
        assert_eq!(o.stderr, Some(Captured::default()));
    }

    #[tokio::test]
    async fn budget_is_split_between_streams() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = RunnerConfig {
            max_output: 100,
            ..config(&tmp)
        };
        let both = "i=0; while [ $i -lt 500 ]; do echo o$i; echo e$i >&2; i=$((i+1)); done";
        let o = run(spec(both), &cfg).await;
        let (out, err) = (o.stdout.unwrap(), o.stderr.unwrap());
        // Half each, in whole characters; every line is 6 bytes escaped.
        for c in [&out, &err] {
            assert!((45..=50).contains(&escaped_size(&c.text)), "{c:?}");
        }
        assert!(out.truncated && err.truncated);
        assert!(out.text.ends_with("o499\n") && err.text.ends_with("e499\n"));

        let small_err = "i=0; while [ $i -lt 500 ]; do echo o$i; i=$((i+1)); done; echo oops >&2";
        let o = run(spec(small_err), &cfg).await;
        let (out, err) = (o.stdout.unwrap(), o.stderr.unwrap());
        assert_eq!(
            err,
            Captured {
                text: "oops\n".into(),
                truncated: false
            }
        );
        assert!((89..=94).contains(&escaped_size(&out.text)), "{out:?}");
        assert!(out.truncated);
    }

    #[tokio::test]
    async fn large_output_on_both_streams_does_not_block() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = RunnerConfig {
            max_output: 1000,
            ..config(&tmp)
        };
        let cmd = "head -c 2000000 /dev/zero >&2; head -c 2000000 /dev/zero; echo end";
        let o = run(spec(cmd), &cfg).await;
        assert!(o.exit_ok);
        assert!(stdout(&o).ends_with("\0end\n"));
        // A NUL is six bytes escaped (`\u0000`).
        let size = escaped_size(&o.stdout.unwrap().text) + escaped_size(&o.stderr.unwrap().text);
        assert!((988..=1000).contains(&size), "{size}");
    }

    #[tokio::test]
    async fn truncation_cuts_at_a_utf8_boundary() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = RunnerConfig {
            max_output: 5,
            ..config(&tmp)
        };
        let o = run(spec("printf 'ééééé'"), &cfg).await;
        assert_eq!(
            o.stdout,
            Some(Captured {
                text: "éé".into(),
                truncated: true
            })
        );
    }

    #[tokio::test]
    async fn fixes_binary_output_keeps_every_line() {
        let tmp = tempfile::tempdir().unwrap();
        let o = run(spec(r"printf '\000\001\377\nline2\n'"), &config(&tmp)).await;
        assert_eq!(
            o.stdout,
            Some(Captured {
                text: "\0\u{1}\u{FFFD}\nline2\n".into(),
                truncated: false
            })
        );
    }

    #[tokio::test]
    async fn job_env_is_added_and_chef_push_vars_win() {
        let tmp = tempfile::tempdir().unwrap();
        let env = vec![
            ("FOO".to_owned(), "bar baz".to_owned()),
            ("CHEF_PUSH_JOB_ID".to_owned(), "evil".to_owned()),
            ("CHEF_PUSH_NODE_NAME".to_owned(), "evil".to_owned()),
        ];
        let cmd = r#"echo "$FOO|$CHEF_PUSH_JOB_ID|$CHEF_PUSH_NODE_NAME|${CHEF_PUSH_JOB_FILE-unset}|${PATH:+path}""#;
        let o = run(JobSpec { env, ..spec(cmd) }, &config(&tmp)).await;
        assert_eq!(stdout(&o), "bar baz|job-1|node1|unset|path\n");
    }

    #[tokio::test]
    async fn keys_not_allowed_to_overwrite_are_prefixed() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = RunnerConfig {
            allowed_overwritable_env_vars: Some(vec!["FOO".into()]),
            ..config(&tmp)
        };
        let env = vec![
            ("FOO".to_owned(), "1".to_owned()),
            ("PATH".to_owned(), "/evil".to_owned()),
        ];
        let cmd = r#"echo "$FOO|$CHEF_PUSH_ENV_PATH|${CHEF_PUSH_ENV_FOO-unset}"; [ "$PATH" != /evil ] && echo kept"#;
        let o = run(JobSpec { env, ..spec(cmd) }, &cfg).await;
        assert_eq!(stdout(&o), "1|/evil|unset\nkept\n");
    }

    #[tokio::test]
    async fn runs_in_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let o = run(
            JobSpec {
                dir: Some(dir.clone()),
                ..spec("pwd -P")
            },
            &config(&tmp),
        )
        .await;
        assert_eq!(stdout(&o), format!("{}\n", dir.display()));
    }

    #[tokio::test]
    async fn stdin_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let o = run(spec("wc -c"), &config(&tmp)).await;
        assert_eq!(stdout(&o).trim(), "0");
    }

    #[tokio::test]
    async fn fixes_job_file_written_readable_and_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(&tmp);
        let cmd = r#"cat "$CHEF_PUSH_JOB_FILE"; echo; echo "$CHEF_PUSH_JOB_FILE"; stat -c %a "$CHEF_PUSH_JOB_FILE""#;
        for (file, content) in [
            ("raw:hello world", "hello world"),
            ("base64:aGVs\nbG8", "hello"),
        ] {
            let o = run(
                JobSpec {
                    file: Some(file.into()),
                    ..spec(cmd)
                },
                &cfg,
            )
            .await;
            let out = stdout(&o).lines().collect::<Vec<_>>();
            assert_eq!(out[0], content);
            let path = Path::new(out[1]);
            assert_eq!(path.parent(), Some(cfg.file_dir.as_path()));
            assert!(
                path.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("pushy_file")
            );
            assert_eq!(out[2], "600");
            assert!(!path.exists(), "job file deleted after the job");
        }
        let mode = std::fs::metadata(&cfg.file_dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o711);
    }

    #[tokio::test]
    async fn refuses_a_file_dir_others_can_write() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(&tmp);
        std::fs::create_dir(&cfg.file_dir).unwrap();
        std::fs::set_permissions(&cfg.file_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let r = start(
            JobSpec {
                file: Some("raw:x".into()),
                ..spec("true")
            },
            &cfg,
        )
        .await;
        assert!(matches!(r, Err(SpawnError::UnsafeFileDir(_))), "{r:?}");
    }

    #[tokio::test]
    async fn fixes_abort_kills_the_whole_process_group() {
        let tmp = tempfile::tempdir().unwrap();
        // A long grace: finishing within LIMIT proves SIGTERM alone ended the group.
        let cfg = RunnerConfig {
            kill_grace: Duration::from_secs(600),
            ..config(&tmp)
        };
        let pid_file = tmp.path().join("grandchild");
        let cmd = format!("sleep 600 & echo $! > {}; sleep 600", pid_file.display());
        let running = start(spec(&cmd), &cfg).await.unwrap();
        let grandchild = wait_for_pid_file(&pid_file).await;
        let cancel = CancellationToken::new();
        cancel.cancel();
        let o = tokio::time::timeout(LIMIT, running.wait(cancel))
            .await
            .expect("terminated within the grace");
        assert!(o.killed && !o.exit_ok);
        assert_eq!(o.signal, Some(Signal::SIGTERM as i32));
        // A group's members get the signal each on its own: wait for this one, bounded.
        wait_dead(grandchild).await;
    }

    #[tokio::test]
    async fn abort_escalates_to_sigkill_after_the_grace() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = RunnerConfig {
            kill_grace: Duration::from_millis(300),
            ..config(&tmp)
        };
        let pid_file = tmp.path().join("grandchild");
        let cmd = format!(
            "trap '' TERM; sleep 600 & echo $! > {}; sleep 600",
            pid_file.display()
        );
        let running = start(spec(&cmd), &cfg).await.unwrap();
        let grandchild = wait_for_pid_file(&pid_file).await;
        let cancel = CancellationToken::new();
        let waiting = tokio::spawn(running.wait(cancel.clone()));
        cancel.cancel();
        let o = tokio::time::timeout(LIMIT, waiting)
            .await
            .expect("killed")
            .unwrap();
        assert!(o.killed && !o.exit_ok);
        assert_eq!(o.signal, Some(Signal::SIGKILL as i32));
        // A group's members get the signal each on its own: wait for this one, bounded.
        wait_dead(grandchild).await;
    }

    #[tokio::test]
    async fn dropping_a_running_job_kills_its_group_and_file() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(&tmp);
        let pid_file = tmp.path().join("grandchild");
        let cmd = format!("sleep 600 & echo $! > {}; sleep 600", pid_file.display());
        let running = start(
            JobSpec {
                file: Some("raw:x".into()),
                ..spec(&cmd)
            },
            &cfg,
        )
        .await
        .unwrap();
        let grandchild = wait_for_pid_file(&pid_file).await;
        drop(running);
        wait_dead(grandchild).await;
        assert_eq!(std::fs::read_dir(&cfg.file_dir).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn exit_with_a_background_process_holding_output_returns() {
        let tmp = tempfile::tempdir().unwrap();
        let pid_file = tmp.path().join("grandchild");
        let cmd = format!("sleep 600 & echo $! > {}; echo done", pid_file.display());
        let o = run(spec(&cmd), &config(&tmp)).await;
        assert_eq!((o.exit_ok, stdout(&o)), (true, "done\n"));
        let grandchild = wait_for_pid_file(&pid_file).await;
        nix::sys::signal::kill(Pid::from_raw(grandchild), Signal::SIGKILL).unwrap();
    }

    #[tokio::test]
    async fn fixes_spawn_failure_is_reported_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(&tmp);
        let bad = JobSpec {
            dir: Some(tmp.path().join("missing")),
            file: Some("raw:x".into()),
            ..spec("true")
        };
        let r = start(bad, &cfg).await;
        assert!(matches!(r, Err(SpawnError::Spawn(_))), "{r:?}");
        assert_eq!(
            std::fs::read_dir(&cfg.file_dir).unwrap().count(),
            0,
            "job file removed"
        );
    }

    #[tokio::test]
    async fn check_commit_refusals() {
        let tmp = tempfile::tempdir().unwrap();
        let a_file = tmp.path().join("f");
        std::fs::write(&a_file, "").unwrap();
        let check = |spec: JobSpec| async move { check_commit(&spec).await };
        assert!(check(spec("true")).await.is_ok());
        let ok = JobSpec {
            user: Some("root".into()),
            dir: Some(tmp.path().into()),
            file: Some("base64:aGVsbG8=".into()),
            ..spec("true")
        };
        assert!(check(ok).await.is_ok());
        let r = check(JobSpec {
            user: Some("no-such-user-pushy".into()),
            ..spec("true")
        })
        .await;
        assert!(matches!(r, Err(CommitRefusal::UnknownUser(_))), "{r:?}");
        let r = check(JobSpec {
            dir: Some(tmp.path().join("missing")),
            ..spec("true")
        })
        .await;
        assert!(matches!(r, Err(CommitRefusal::MissingDir(_))), "{r:?}");
        let r = check(JobSpec {
            dir: Some(a_file),
            ..spec("true")
        })
        .await;
        assert!(matches!(r, Err(CommitRefusal::NotADirectory(_))), "{r:?}");
        let r = check(JobSpec {
            file: Some("text:abc".into()),
            ..spec("true")
        })
        .await;
        assert!(matches!(r, Err(CommitRefusal::FilePrefix)), "{r:?}");
        let r = check(JobSpec {
            file: Some("base64:!!!".into()),
            ..spec("true")
        })
        .await;
        assert!(matches!(r, Err(CommitRefusal::FileBase64(_))), "{r:?}");
        let r = check(JobSpec {
            env: vec![("A=B".into(), "x".into())],
            ..spec("true")
        })
        .await;
        assert!(matches!(r, Err(CommitRefusal::BadEnv(_))), "{r:?}");
    }

    #[tokio::test]
    async fn runs_as_the_given_user() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping runs_as_the_given_user: needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let cfg = config(&tmp);
        let nobody = User::from_name("nobody")
            .unwrap()
            .expect("user nobody exists");
        let cmd = r#"id -un; id -G; echo "$HOME|$USER|$LOGNAME"; cat "$CHEF_PUSH_JOB_FILE""#;
        let job = JobSpec {
            user: Some("nobody".into()),
            file: Some("raw:secret".into()),
            ..spec(cmd)
        };
        let o = run(job, &cfg).await;
        assert!(o.exit_ok, "{o:?}");
        let name = CString::new("nobody").unwrap();
        let groups = nix::unistd::getgrouplist(&name, nobody.gid).unwrap();
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        groups.dedup();
        let expected = format!(
            "nobody\n{}\n{}|nobody|nobody\nsecret",
            groups.join(" "),
            nobody.dir.display()
        );
        assert_eq!(stdout(&o), expected);
    }

    #[tokio::test]
    async fn clean_file_dir_removes_only_old_job_files() {
        let tmp = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        for (name, mtime) in [
            ("pushy_fileOLD", Some(old)),
            ("pushy_fileNEW", None),
            ("other", Some(old)),
        ] {
            let path = tmp.path().join(name);
            let file = std::fs::File::create(&path).unwrap();
            if let Some(t) = mtime {
                file.set_modified(t).unwrap();
            }
        }
        assert_eq!(
            clean_file_dir(tmp.path(), Duration::from_secs(3600))
                .await
                .unwrap(),
            1
        );
        let mut left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["other", "pushy_fileNEW"]);
        assert_eq!(
            clean_file_dir(&tmp.path().join("missing"), Duration::ZERO)
                .await
                .unwrap(),
            0
        );
    }
}
