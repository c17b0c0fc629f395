//! What jobs do in a cluster (issue 14): abort a job another instance drives, and take
//! over the jobs of an instance that died.

use std::time::{Duration, Instant};

use pushy_protocol::job::{JobId, OrgGuid};
use pushy_store as store;
use tokio::sync::oneshot;

use super::task::TaskMsg;
use super::{ABORT_WAIT, JobsHandle};
use crate::cluster::BusMessage;
use crate::cluster::inbox::decode;
use crate::nodes::news::NodeNews;

impl JobsHandle {
    /// In a cluster, asks the live instance that drives job `id` to abort it, and waits
    /// (at most [`ABORT_WAIT`]) until the store shows it finished. False when no other
    /// live instance drives it.
    pub(super) async fn abort_elsewhere(
        &self,
        org: &OrgGuid,
        id: &JobId,
    ) -> Result<bool, store::Error> {
        let Some(cluster) = &self.cluster else {
            return Ok(false);
        };
        let Some(owner) = cluster.db().owner(id.as_str()).await? else {
            return Ok(false);
        };
        if owner == cluster.id() || !cluster.live_ids().contains(&owner) {
            return Ok(false);
        }
        cluster.post(
            &owner,
            None,
            &BusMessage::Abort {
                job: id.to_string(),
            },
        );
        let deadline = Instant::now() + ABORT_WAIT;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self
                .store
                .find_job(org, id)
                .await?
                .is_none_or(|j| j.status.is_terminal())
            {
                break;
            }
        }
        Ok(true)
    }

    /// Aborts job `id` if its task runs in this process (asked by another instance);
    /// whether it does.
    pub fn abort_here(&self, id: &JobId) -> bool {
        match self.live.inbox(id) {
            Some(inbox) => inbox.send(TaskMsg::Abort(oneshot::channel().0)).is_ok(),
            None => false,
        }
    }

    /// In a cluster: takes over every unfinished job whose owner is not a live instance
    /// (it died, or the job was left by a single server before the cluster), one claim
    /// each so that of several survivors exactly one drives it, resumes it as a restart
    /// would, and has the news its dead owner never read sent again. Returns how many
    /// jobs it took.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn take_over_orphans(&self) -> Result<usize, store::Error> {
        let Some(cluster) = &self.cluster else {
            return Ok(0);
        };
        let live = cluster.live_ids();
        let mut taken = 0;
        for orphan in cluster.db().orphans(&live).await? {
            let job = &orphan.job;
            if self.live.inbox(&job.id).is_some()
                || !cluster
                    .db()
                    .claim(job.id.as_str(), orphan.owner.as_deref(), cluster.id())
                    .await?
            {
                continue;
            }
            tracing::warn!(job_id = %job.id, org = %job.org_id, dead_owner = orphan.owner.as_deref().unwrap_or("none"), "taking over a job whose owner is gone");
            if !job.ours {
                self.crash_foreign(job).await?;
                continue;
            }
            // What the dead owner never read comes first: a node's result must count
            // before its next heartbeat says it is idle.
            let unread = cluster
                .db()
                .take_unread(cluster.id(), &live, Some(job.id.as_str()))
                .await?;
            self.resume_one(job, news_of(&unread)).await?;
            taken += 1;
        }
        // News holders sent to a dead owner before they heard of the new one.
        let stragglers = cluster.db().take_unread(cluster.id(), &live, None).await?;
        for (job, news) in news_of(&stragglers) {
            self.live.deliver(&job, news);
        }
        Ok(taken)
    }
}

/// The node news among bus rows, with its job.
fn news_of(rows: &[pushy_store::cluster::BusRow]) -> Vec<(JobId, NodeNews)> {
    rows.iter()
        .filter_map(|row| match decode(row)? {
            BusMessage::News { job, news, .. } => Some((JobId::parse(&job)?, news)),
            _ => None,
        })
        .collect()
}
