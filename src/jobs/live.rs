//! The one record of which jobs are live in this process: each live job's task inbox.
//! The registry reaches jobs through it ([`LiveJobs::deliver`]), aborts find their task in
//! it, and metrics count it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use pushy_protocol::job::JobId;
use tokio::sync::mpsc;

use super::task::TaskMsg;
use crate::nodes::news::NodeNews;

/// The inboxes of live job tasks. Cheap to clone; the map is only touched in short
/// sections without `.await`.
#[derive(Clone, Default)]
pub struct LiveJobs {
    inboxes: Arc<Mutex<HashMap<JobId, mpsc::UnboundedSender<TaskMsg>>>>,
}

impl LiveJobs {
    /// No live jobs.
    pub fn new() -> LiveJobs {
        LiveJobs::default()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<JobId, mpsc::UnboundedSender<TaskMsg>>> {
        // A panic while holding this lock leaves a plain map behind, still consistent.
        self.inboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn insert(&self, job: JobId, inbox: mpsc::UnboundedSender<TaskMsg>) {
        self.map().insert(job, inbox);
    }

    pub(super) fn remove(&self, job: &JobId) {
        self.map().remove(job);
    }

    pub(super) fn inbox(&self, job: &JobId) -> Option<mpsc::UnboundedSender<TaskMsg>> {
        self.map().get(job).cloned()
    }

    /// How many job tasks are alive.
    pub fn count(&self) -> usize {
        self.map().len()
    }

    /// Hands news of a node to its job's task; false when the job has no task here.
    pub fn deliver(&self, job: &JobId, news: NodeNews) -> bool {
        self.try_deliver(job, news).is_ok()
    }

    /// [`LiveJobs::deliver`], giving the news back when the job has no task here (for
    /// another instance of a cluster to deliver).
    pub fn try_deliver(&self, job: &JobId, news: NodeNews) -> Result<(), NodeNews> {
        let Some(inbox) = self.inbox(job) else {
            return Err(news);
        };
        inbox.send(TaskMsg::Node(news)).map_err(|e| match e.0 {
            TaskMsg::Node(news) => news,
            TaskMsg::Abort(_) => unreachable!("a node's news was sent"),
        })
    }
}
