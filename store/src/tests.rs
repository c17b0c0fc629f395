//! One suite run against every engine (STYLE.md §2.8): SQLite in memory and in a file, and
//! a throwaway PostgreSQL database. Then PostgreSQL-only tests: the schema is the
//! original's, and databases deployed by the original's sqitch plan (1.x and 2.x) are
//! adopted with their rows.
//!
//! PostgreSQL is reached at `PUSHY_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); when it is not reachable those tests
//! say so loudly on stderr and pass, so the suite runs on machines without it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use futures::FutureExt;
use pushy_protocol::job::{JobId, JobStatus, NodeStatus, OrgGuid};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, Row};

use super::{
    Error, IncompleteJob, JobOptions, JobRecord, OutputChannel, PgConnectOptions, PostgresStore,
    SqliteStore, Store,
};

// ---------------------------------------------------------------------------------------
// Helpers

fn org(n: u32) -> OrgGuid {
    OrgGuid(format!("{n:032x}"))
}

fn job_id(n: u32) -> JobId {
    JobId::parse(&format!("{:032x}", 0xabc0_0000_u64 + u64::from(n))).expect("32 hex digits")
}

/// A fixed instant `secs` seconds after a base, so tests never depend on the clock.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap() + TimeDelta::seconds(secs)
}

/// A job as `create_job` expects it, and as `find_job` returns it right after.
fn new_job(id: JobId, org: &OrgGuid, nodes: &[&str], created_at: DateTime<Utc>) -> JobRecord {
    JobRecord {
        id,
        org_id: org.clone(),
        command: "chef-client".to_owned(),
        quorum: nodes.len() as i32,
        run_timeout: 3600,
        status: JobStatus::New,
        created_at,
        updated_at: created_at,
        requestor: None,
        options: JobOptions::default(),
        nodes: nodes
            .iter()
            .map(|n| (n.to_string(), NodeStatus::New))
            .collect(),
    }
}

async fn find(store: &dyn Store, org: &OrgGuid, id: &JobId) -> Option<JobRecord> {
    store.find_job(org, id).await.expect("find_job")
}

// ---------------------------------------------------------------------------------------
// The suite

/// Every behaviour of the `Store` contract, against one fresh store.
async fn suite(store: &dyn Store) {
    round_trip_keeps_every_field(store).await;
    options_are_optional(store).await;
    job_user_is_kept_to_32_characters_and_unpadded(store).await;
    jobs_of_another_org_are_invisible(store).await;
    list_is_oldest_first_without_nodes(store).await;
    status_update_sets_status_and_updated_at(store).await;
    node_update_changes_only_that_node(store).await;
    node_counts_are_per_job_and_status(store).await;
    a_batch_sets_many_nodes_and_the_job_at_once(store).await;
    output_is_stored_once_per_node(store).await;
    incomplete_jobs_are_new_voting_and_running(store).await;
    duplicate_job_id_is_refused_and_changes_nothing(store).await;
    failed_creation_leaves_nothing(store).await;
    only_an_unstarted_job_of_the_org_is_deleted(store).await;
    a_login_is_claimed_once_until_it_expires(store).await;
    // Last, and with times before every other test's: its cutoff touches no other job.
    finished_jobs_past_the_cutoff_go_in_batches_with_their_rows(store).await;
}

async fn round_trip_keeps_every_field(store: &dyn Store) {
    let org = org(1);
    let created = at(0) + TimeDelta::nanoseconds(987_654_321);
    let mut job = new_job(job_id(1), &org, &["DONKEY", "FIONA", "ALPHA"], created);
    job.command = "deploy ünïcode 'quoted' \"twice\"".to_owned();
    job.quorum = 2;
    job.run_timeout = 45;
    job.options = JobOptions {
        user: Some("deploy".to_owned()),
        dir: Some("/var/tmp/work".to_owned()),
        env: Some(r#"{"PATH":"/usr/bin","X":"ü \"q\""}"#.to_owned()),
        capture: true,
        file: Some("base64:aGVsbG8gd29ybGQ=".to_owned()),
        controls: Some(r#"{"max_concurrency":{"percent":10}}"#.to_owned()),
    };
    job.requestor = Some("alice".to_owned());
    store.create_job(&job).await.expect("create_job");

    // Stored with whole seconds, as the original did.
    let mut expected = job.clone();
    expected.created_at = at(0);
    expected.updated_at = at(0);
    assert_eq!(find(store, &org, &job.id).await, Some(expected));
}

async fn options_are_optional(store: &dyn Store) {
    let org = org(2);
    let none = new_job(job_id(20), &org, &["n1"], at(0));
    store.create_job(&none).await.unwrap();
    assert_eq!(find(store, &org, &none.id).await, Some(none));

    let mut capture_only = new_job(job_id(21), &org, &["n1"], at(0));
    capture_only.options.capture = true;
    store.create_job(&capture_only).await.unwrap();
    assert_eq!(
        find(store, &org, &capture_only.id).await,
        Some(capture_only)
    );

    // A job without nodes is not refused here; rejecting it is the API's business.
    let empty = new_job(job_id(22), &org, &[], at(0));
    store.create_job(&empty).await.unwrap();
    assert_eq!(find(store, &org, &empty.id).await, Some(empty));
}

async fn job_user_is_kept_to_32_characters_and_unpadded(store: &dyn Store) {
    let org = org(3);
    let full = "u234567890123456789012345678901z";
    assert_eq!(full.len(), 32);
    let cases = [
        (30, full, full),
        (31, "bob", "bob"),
        (32, "bob  ", "bob"),
        (33, "  lead", "  lead"),
    ];
    for (n, user, read_back) in cases {
        let mut job = new_job(job_id(n), &org, &["n1"], at(0));
        job.options.user = Some(user.to_owned());
        job.options.dir = Some("/srv/app  ".to_owned());
        store.create_job(&job).await.unwrap();
        let found = find(store, &org, &job.id).await.unwrap();
        assert_eq!(
            found.options.user.as_deref(),
            Some(read_back),
            "user {user:?}"
        );
        // The original right-trims `dir` too.
        assert_eq!(found.options.dir.as_deref(), Some("/srv/app"));
    }
}

async fn jobs_of_another_org_are_invisible(store: &dyn Store) {
    let (mine, theirs) = (org(4), org(5));
    let job = new_job(job_id(40), &mine, &["n1"], at(0));
    store.create_job(&job).await.unwrap();
    assert!(
        store
            .insert_output(&job.id, "n1", "out", "err", false)
            .await
            .unwrap()
    );

    assert_eq!(find(store, &theirs, &job.id).await, None);
    assert!(store.list_jobs(&theirs).await.unwrap().is_empty());
    for channel in [OutputChannel::Stdout, OutputChannel::Stderr] {
        let output = store
            .fetch_output(&theirs, &job.id, "n1", channel)
            .await
            .unwrap();
        assert_eq!(output, None);
    }
    store
        .update_statuses(
            &theirs,
            &job.id,
            None,
            &[("n1".into(), NodeStatus::Failed)],
            at(9),
        )
        .await
        .unwrap();
    assert_eq!(find(store, &mine, &job.id).await, Some(job));
}

async fn list_is_oldest_first_without_nodes(store: &dyn Store) {
    let (org, other) = (org(6), org(7));
    // Inserted out of order; two share a creation time and are then ordered by id.
    let late = new_job(job_id(52), &org, &["n1"], at(20));
    let mut early_b = new_job(job_id(51), &org, &["n2", "n3"], at(10));
    early_b.options.capture = true;
    let early_a = new_job(job_id(50), &org, &[], at(10));
    for job in [&late, &early_b, &early_a] {
        store.create_job(job).await.unwrap();
    }
    store
        .create_job(&new_job(job_id(53), &other, &["n1"], at(0)))
        .await
        .unwrap();

    let without_nodes = |job: &JobRecord| JobRecord {
        nodes: Vec::new(),
        ..job.clone()
    };
    assert_eq!(
        store.list_jobs(&org).await.unwrap(),
        vec![
            without_nodes(&early_a),
            without_nodes(&early_b),
            without_nodes(&late)
        ]
    );
    assert!(store.list_jobs(&self::org(8)).await.unwrap().is_empty());
    // The newest first, as many as asked for, this org's only.
    assert_eq!(
        store.recent_jobs(&org, 2).await.unwrap(),
        vec![without_nodes(&late), without_nodes(&early_b)]
    );
    assert_eq!(store.recent_jobs(&org, 10).await.unwrap().len(), 3);
    assert!(
        store
            .recent_jobs(&self::org(8), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn status_update_sets_status_and_updated_at(store: &dyn Store) {
    let org = org(9);
    let job = new_job(job_id(60), &org, &["n1"], at(0));
    store.create_job(&job).await.unwrap();

    for (secs, status) in [
        (1, JobStatus::Voting),
        (5, JobStatus::Running),
        (9, JobStatus::Complete),
    ] {
        let now = at(secs) + TimeDelta::milliseconds(999);
        store
            .update_statuses(&org, &job.id, Some(status), &[], now)
            .await
            .unwrap();
        let found = find(store, &org, &job.id).await.unwrap();
        assert_eq!(
            (found.status, found.created_at, found.updated_at),
            (status, at(0), at(secs))
        );
    }
    // Every status can be stored and read back.
    for &status in JobStatus::ALL {
        store
            .update_statuses(&org, &job.id, Some(status), &[], at(10))
            .await
            .unwrap();
        assert_eq!(find(store, &org, &job.id).await.unwrap().status, status);
    }
    // An unknown job is not an error: there is nothing to update.
    store
        .update_statuses(&org, &job_id(69), Some(JobStatus::Crashed), &[], at(10))
        .await
        .unwrap();
}

async fn node_counts_are_per_job_and_status(store: &dyn Store) {
    let org = org(412);
    let a = new_job(job_id(4120), &org, &["n1", "n2", "n3"], at(0));
    let b = new_job(job_id(4121), &org, &["n1"], at(0));
    let elsewhere = new_job(job_id(4122), &self::org(413), &["n1"], at(0));
    for j in [&a, &b, &elsewhere] {
        store.create_job(j).await.unwrap();
    }
    let ready = [
        ("n1".into(), NodeStatus::Ready),
        ("n2".into(), NodeStatus::Ready),
    ];
    store
        .update_statuses(&org, &a.id, None, &ready, at(1))
        .await
        .unwrap();
    let mut counts = store
        .node_counts(&org, &[a.id.clone(), b.id.clone(), elsewhere.id.clone()])
        .await
        .unwrap();
    counts.sort_by_key(|(j, s, _)| (j.clone(), s.code()));
    assert_eq!(
        counts,
        [
            (a.id.clone(), NodeStatus::New, 1),
            (a.id.clone(), NodeStatus::Ready, 2),
            (b.id.clone(), NodeStatus::New, 1),
        ],
        "another org's job is not counted"
    );
    assert!(store.node_counts(&org, &[]).await.unwrap().is_empty());
}

async fn node_update_changes_only_that_node(store: &dyn Store) {
    let org = org(10);
    let job = new_job(job_id(70), &org, &["web1", "db1", "web2"], at(0));
    let other = new_job(job_id(71), &org, &["db1"], at(0));
    store.create_job(&job).await.unwrap();
    store.create_job(&other).await.unwrap();

    store
        .update_statuses(
            &org,
            &job.id,
            None,
            &[("db1".into(), NodeStatus::Ready)],
            at(3),
        )
        .await
        .unwrap();
    store
        .update_statuses(
            &org,
            &job.id,
            None,
            &[("web2".into(), NodeStatus::Nacked)],
            at(4),
        )
        .await
        .unwrap();
    store
        .update_statuses(
            &org,
            &job.id,
            None,
            &[("db1".into(), NodeStatus::Succeeded)],
            at(5),
        )
        .await
        .unwrap();
    store
        .update_statuses(
            &org,
            &job.id,
            None,
            &[("nope".into(), NodeStatus::Failed)],
            at(5),
        )
        .await
        .unwrap();

    let found = find(store, &org, &job.id).await.unwrap();
    assert_eq!(
        found.nodes,
        vec![
            ("web1".to_owned(), NodeStatus::New),
            ("db1".to_owned(), NodeStatus::Succeeded),
            ("web2".to_owned(), NodeStatus::Nacked),
        ]
    );
    // Node updates leave the job's own timestamps alone.
    assert_eq!((found.status, found.updated_at), (JobStatus::New, at(0)));
    assert_eq!(find(store, &org, &other.id).await, Some(other));

    for &status in NodeStatus::ALL {
        store
            .update_statuses(&org, &job.id, None, &[("web1".into(), status)], at(6))
            .await
            .unwrap();
        assert_eq!(find(store, &org, &job.id).await.unwrap().nodes[0].1, status);
    }
}

async fn a_batch_sets_many_nodes_and_the_job_at_once(store: &dyn Store) {
    let (org, stranger) = (org(12), org(13));
    let names: Vec<String> = (0..500).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let job = new_job(job_id(75), &org, &refs, at(0));
    store.create_job(&job).await.unwrap();

    // Every other node, plus one the job does not have (ignored, as for single updates).
    let mut batch: Vec<(String, NodeStatus)> = names
        .iter()
        .step_by(2)
        .map(|n| (n.clone(), NodeStatus::Succeeded))
        .collect();
    batch.push(("stranger".into(), NodeStatus::Failed));
    store
        .update_statuses(&org, &job.id, Some(JobStatus::Complete), &batch, at(7))
        .await
        .unwrap();

    let found = find(store, &org, &job.id).await.unwrap();
    assert_eq!(
        (found.status, found.updated_at),
        (JobStatus::Complete, at(7))
    );
    assert_eq!(found.nodes.len(), 500);
    for (i, (name, status)) in found.nodes.iter().enumerate() {
        assert_eq!(name, &names[i], "request order kept");
        let want = if i % 2 == 0 {
            NodeStatus::Succeeded
        } else {
            NodeStatus::New
        };
        assert_eq!(*status, want, "{name}");
    }

    // Another org's GUID changes nothing, not even the job row.
    store
        .update_statuses(
            &stranger,
            &job.id,
            None,
            &[("n1".into(), NodeStatus::Failed)],
            at(8),
        )
        .await
        .unwrap();
    assert_eq!(find(store, &org, &job.id).await.unwrap(), found);
}

async fn output_is_stored_once_per_node(store: &dyn Store) {
    let org = org(11);
    let job = new_job(job_id(80), &org, &["n1", "n2"], at(0));
    store.create_job(&job).await.unwrap();
    let fetch = |node: &'static str, channel| store.fetch_output(&org, &job.id, node, channel);

    assert!(
        store
            .insert_output(&job.id, "n1", "hello\nwörld\n", "", false)
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert_output(&job.id, "n1", "second", "attempt", false)
            .await
            .unwrap()
    );
    assert!(
        store
            .insert_output(&job.id, "n2", "", "boom", true)
            .await
            .unwrap()
    );

    assert_eq!(
        fetch("n1", OutputChannel::Stdout)
            .await
            .unwrap()
            .map(|o| o.text)
            .as_deref(),
        Some("hello\nwörld\n")
    );
    assert_eq!(
        fetch("n1", OutputChannel::Stderr)
            .await
            .unwrap()
            .map(|o| o.text)
            .as_deref(),
        Some("")
    );
    assert_eq!(
        fetch("n2", OutputChannel::Stdout)
            .await
            .unwrap()
            .map(|o| o.text)
            .as_deref(),
        Some("")
    );
    assert_eq!(
        fetch("n2", OutputChannel::Stderr)
            .await
            .unwrap()
            .map(|o| o.text)
            .as_deref(),
        Some("boom")
    );
    assert!(
        !fetch("n1", OutputChannel::Stdout)
            .await
            .unwrap()
            .unwrap()
            .truncated
    );
    assert!(
        fetch("n2", OutputChannel::Stderr)
            .await
            .unwrap()
            .unwrap()
            .truncated
    );
    assert_eq!(fetch("n3", OutputChannel::Stdout).await.unwrap(), None);
    let unknown = store
        .fetch_output(&org, &job_id(89), "n1", OutputChannel::Stdout)
        .await;
    assert_eq!(unknown.unwrap(), None);

    // Output of a job that does not exist breaks the foreign key.
    let orphan = store
        .insert_output(&job_id(89), "n1", "out", "err", false)
        .await;
    assert!(matches!(orphan, Err(Error::Database(_))), "{orphan:?}");
}

async fn incomplete_jobs_are_new_voting_and_running(store: &dyn Store) {
    let org = org(12);
    let statuses = [
        JobStatus::New,
        JobStatus::Complete,
        JobStatus::Voting,
        JobStatus::QuorumFailed,
        JobStatus::Running,
        JobStatus::Aborted,
        JobStatus::TimedOut,
        JobStatus::Crashed,
    ];
    for (n, status) in (90..).zip(statuses) {
        let job = new_job(job_id(n), &org, &["n1"], at(i64::from(n)));
        store.create_job(&job).await.unwrap();
        store
            .update_statuses(&org, &job.id, Some(status), &[], at(100))
            .await
            .unwrap();
    }
    let incomplete: Vec<IncompleteJob> = store
        .incomplete_jobs()
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.org_id == org)
        .collect();
    let expected = [
        (90, JobStatus::New),
        (92, JobStatus::Voting),
        (94, JobStatus::Running),
    ]
    .map(|(n, status)| IncompleteJob {
        id: job_id(n),
        org_id: org.clone(),
        status,
        ours: true,
    });
    assert_eq!(incomplete, expected);
}

async fn duplicate_job_id_is_refused_and_changes_nothing(store: &dyn Store) {
    let (org_a, org_b) = (org(13), org(14));
    let mut first = new_job(job_id(100), &org_a, &["n1", "n2"], at(0));
    first.options.dir = Some("/a".to_owned());
    store.create_job(&first).await.unwrap();

    let mut again = new_job(job_id(100), &org_b, &["n3"], at(50));
    again.command = "other".to_owned();
    again.options.capture = true;
    let result = store.create_job(&again).await;
    assert!(
        matches!(&result, Err(Error::DuplicateJob(id)) if *id == first.id),
        "{result:?}"
    );

    assert_eq!(find(store, &org_a, &first.id).await, Some(first));
    assert_eq!(find(store, &org_b, &again.id).await, None);
    assert!(store.list_jobs(&org_b).await.unwrap().is_empty());
}

async fn failed_creation_leaves_nothing(store: &dyn Store) {
    let org = org(15);
    // The jobs row goes in, then a node row fails: the whole creation is undone.
    let twice = new_job(job_id(110), &org, &["n1", "n1"], at(0));
    let result = store.create_job(&twice).await;
    assert!(matches!(result, Err(Error::Database(_))), "{result:?}");

    // The jobs and job_nodes rows go in, then the options row fails (user over 32).
    let mut long_user = new_job(job_id(111), &org, &["n1"], at(0));
    long_user.options.user = Some("u".repeat(33));
    let result = store.create_job(&long_user).await;
    assert!(matches!(result, Err(Error::Database(_))), "{result:?}");

    assert_eq!(find(store, &org, &twice.id).await, None);
    assert_eq!(find(store, &org, &long_user.id).await, None);
    assert!(store.list_jobs(&org).await.unwrap().is_empty());
    // The ids are free again.
    store
        .create_job(&new_job(job_id(110), &org, &["n1"], at(0)))
        .await
        .unwrap();
    store
        .create_job(&new_job(job_id(111), &org, &["n1"], at(0)))
        .await
        .unwrap();
}

async fn only_an_unstarted_job_of_the_org_is_deleted(store: &dyn Store) {
    let (org_a, org_b) = (org(18), org(19));
    let mut unstarted = new_job(job_id(130), &org_a, &["n1", "n2"], at(0));
    unstarted.options.dir = Some("/a".to_owned());
    store.create_job(&unstarted).await.unwrap();
    let started = new_job(job_id(131), &org_a, &["n1"], at(0));
    store.create_job(&started).await.unwrap();
    store
        .update_statuses(&org_a, &started.id, Some(JobStatus::Voting), &[], at(1))
        .await
        .unwrap();

    assert!(
        !store
            .delete_unstarted_job(&org_b, &unstarted.id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_unstarted_job(&org_a, &started.id)
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_unstarted_job(&org_a, &unstarted.id)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_unstarted_job(&org_a, &unstarted.id)
            .await
            .unwrap()
    );

    assert_eq!(find(store, &org_a, &unstarted.id).await, None);
    assert!(find(store, &org_a, &started.id).await.is_some());
    // Its nodes and options went with it: the id can be inserted again.
    store.create_job(&unstarted).await.unwrap();
    assert_eq!(find(store, &org_a, &unstarted.id).await, Some(unstarted));
}

/// Retention (issue 15 §5): only jobs in a terminal status that entered it before the
/// cutoff go, oldest first, at most a batch at a time, with their nodes, options and
/// output; jobs in any other status stay however old.
/// The dashboard's used-login record: the first claim of a nonce wins, later ones lose
/// while the record lasts, and a claim forgets the records already past their expiry.
async fn a_login_is_claimed_once_until_it_expires(store: &dyn Store) {
    let claim = |nonce: &'static str, expires_at, now| async move {
        store
            .claim_login(nonce, expires_at, now)
            .await
            .expect("claim_login")
    };
    assert!(claim("a", 100, 40).await);
    assert!(!claim("a", 100, 41).await);
    assert!(claim("b", 100, 41).await, "another nonce is its own");
    // At its expiry a record is kept: the login is still accepted then.
    assert!(claim("c", 60, 50).await);
    assert!(!claim("c", 60, 60).await);

    // A claim at 101 forgets a, b and c (past their expiry), not its own later one.
    assert!(claim("d", 200, 101).await);
    assert!(!claim("d", 200, 150).await, "a live record is not purged");
    // Forgotten: the same nonce could be claimed again (its login would be refused as
    // expired before it got here).
    assert!(claim("a", 300, 150).await);
    assert!(claim("c", 300, 150).await);
}

async fn finished_jobs_past_the_cutoff_go_in_batches_with_their_rows(store: &dyn Store) {
    let org = org(21);
    let cutoff = at(-50_000);
    let finished = [
        JobStatus::Complete,
        JobStatus::QuorumFailed,
        JobStatus::Aborted,
        JobStatus::TimedOut,
        JobStatus::Crashed,
    ];
    assert!(finished.iter().all(|s| s.is_terminal()));
    // Finished long ago, in this order (the last one first), each with options and output.
    let mut old = Vec::new();
    for (n, status) in (140..).zip(finished) {
        let mut job = new_job(job_id(n), &org, &["n1", "n2"], at(-100_000));
        job.options.capture = true;
        job.options.dir = Some("/srv".to_owned());
        store.create_job(&job).await.unwrap();
        assert!(
            store
                .insert_output(&job.id, "n1", "out", "err", false)
                .await
                .unwrap()
        );
        let finished_at = at(-60_000 - i64::from(n));
        let nodes = [("n1".to_owned(), NodeStatus::Succeeded)];
        store
            .update_statuses(&org, &job.id, Some(status), &nodes, finished_at)
            .await
            .unwrap();
        old.push(job);
    }
    // Unfinished, just as old: never deleted (a `new` job never had its status set).
    let mut kept = Vec::new();
    for (n, status) in (150..).zip([JobStatus::New, JobStatus::Voting, JobStatus::Running]) {
        let job = new_job(job_id(n), &org, &["n1"], at(-100_000));
        store.create_job(&job).await.unwrap();
        if status != JobStatus::New {
            store
                .update_statuses(&org, &job.id, Some(status), &[], at(-90_000))
                .await
                .unwrap();
        }
        kept.push(job.id);
    }
    // Finished, but at the cutoff or after it.
    for (n, finished_at) in [(155, cutoff), (156, at(-10))] {
        let job = new_job(job_id(n), &org, &["n1"], at(-100_000));
        store.create_job(&job).await.unwrap();
        store
            .update_statuses(&org, &job.id, Some(JobStatus::Complete), &[], finished_at)
            .await
            .unwrap();
        kept.push(job.id);
    }

    assert_eq!(store.count_finished_jobs(cutoff).await.unwrap(), 5);
    // Oldest first: 144 finished first, then 143.
    assert_eq!(store.delete_finished_jobs(cutoff, 2).await.unwrap(), 2);
    assert_eq!(find(store, &org, &job_id(144)).await, None);
    assert_eq!(find(store, &org, &job_id(143)).await, None);
    assert!(find(store, &org, &job_id(142)).await.is_some());
    assert_eq!(store.count_finished_jobs(cutoff).await.unwrap(), 3);
    // A second call takes the next batch; the last one is short, then there is nothing.
    assert_eq!(store.delete_finished_jobs(cutoff, 2).await.unwrap(), 2);
    assert_eq!(store.delete_finished_jobs(cutoff, 2).await.unwrap(), 1);
    assert_eq!(store.delete_finished_jobs(cutoff, 2).await.unwrap(), 0);
    assert_eq!(store.count_finished_jobs(cutoff).await.unwrap(), 0);

    for job in &old {
        assert_eq!(find(store, &org, &job.id).await, None);
        let output = store
            .fetch_output(&org, &job.id, "n1", OutputChannel::Stdout)
            .await
            .unwrap();
        assert_eq!(output, None);
    }
    for id in &kept {
        assert!(find(store, &org, id).await.is_some(), "{id} was deleted");
    }
    let listed: Vec<JobId> = store
        .list_jobs(&org)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed.len(), kept.len());
    // No node, option or output row was left behind: the same ids take the same rows
    // again, output included.
    for job in &old {
        store.create_job(job).await.unwrap();
        assert_eq!(find(store, &org, &job.id).await.as_ref(), Some(job));
        assert!(
            store
                .insert_output(&job.id, "n1", "again", "", false)
                .await
                .unwrap()
        );
        assert!(store.delete_unstarted_job(&org, &job.id).await.unwrap());
    }
}

/// A status code this server does not know makes the row unreadable, not misread.
async fn unknown_node_status_is_corrupt(store: &dyn Store, corrupt: impl Future<Output = ()>) {
    let org = org(16);
    let job = new_job(job_id(120), &org, &["n1"], at(0));
    store.create_job(&job).await.unwrap();
    corrupt.await;
    let result = store.find_job(&org, &job.id).await;
    assert!(
        matches!(&result, Err(Error::Corrupt { table: "job_nodes", what }) if what.contains("99")),
        "{result:?}"
    );
}

/// Run on the job `unknown_node_status_is_corrupt` creates, bound to its id.
const CORRUPT_NODE: &str = "UPDATE job_nodes SET status = 99 WHERE job_id = $1";

// ---------------------------------------------------------------------------------------
// SQLite

#[tokio::test]
async fn sqlite_in_memory_passes_suite() {
    let store = SqliteStore::in_memory().await.unwrap();
    suite(&store).await;
    let corrupt = async {
        let corrupt = sqlx::query(CORRUPT_NODE).bind(job_id(120).as_str());
        corrupt.execute(store.pool()).await.unwrap();
    };
    unknown_node_status_is_corrupt(&store, corrupt).await;
}

#[tokio::test]
async fn sqlite_file_passes_suite_and_keeps_data_when_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pushy.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    suite(&store).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
    store.pool().close().await;

    // Reopening runs the migrations again, which finds nothing to do.
    let store = SqliteStore::open(&path).await.unwrap();
    let found = find(&store, &org(1), &job_id(1)).await.unwrap();
    assert_eq!(
        found
            .nodes
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["DONKEY", "FIONA", "ALPHA"]
    );
    let corrupt = async {
        let corrupt = sqlx::query(CORRUPT_NODE).bind(job_id(120).as_str());
        corrupt.execute(store.pool()).await.unwrap();
    };
    unknown_node_status_is_corrupt(&store, corrupt).await;
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The connect options a test database's URL names.
fn options(url: &str) -> PgConnectOptions {
    url.parse().expect("a PostgreSQL URL")
}

/// Runs `test` with the URL of a new, empty database, dropped afterwards even if the test
/// panics. Returns without running it when PostgreSQL is not reachable.
async fn with_throwaway_db<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let admin_url =
        std::env::var("PUSHY_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
    let connected = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin_url));
    let mut admin = match connected.await {
        Ok(Ok(conn)) => conn,
        failed => {
            let why =
                failed.map_or_else(|_| "timed out".to_owned(), |e| e.unwrap_err().to_string());
            // CI starts PostgreSQL (scripts/test): there a missing one is a failure.
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL not reachable in CI"
            );
            eprintln!("SKIPPED: PostgreSQL not reachable at {admin_url}: {why}");
            return;
        }
    };
    let name = format!("pushy_test_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();

    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url.as_str(), String::new()),
    };
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    let outcome = AssertUnwindSafe(test(format!("{server}/{name}{query}")))
        .catch_unwind()
        .await;

    // FORCE ends the connections the test's pools may still hold.
    admin
        .execute(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn postgres_passes_suite() {
    with_throwaway_db(|url| async move {
        let store = PostgresStore::connect(options(&url), 4).await.unwrap();
        suite(&store).await;
        let corrupt = async {
            let corrupt = sqlx::query(CORRUPT_NODE).bind(job_id(120).as_str());
            corrupt.execute(store.pool()).await.unwrap();
        };
        unknown_node_status_is_corrupt(&store, corrupt).await;

        // Each job row names its own job as last updater, as in the original.
        let row = sqlx::query("SELECT id, last_updated_by FROM jobs WHERE id = $1::bpchar")
            .bind(job_id(60).as_str())
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>(0), row.get::<String, _>(1));

        // Connecting again finds every migration applied.
        store.pool().close().await;
        let store = PostgresStore::connect(options(&url), 1).await.unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(applied, 12);
        assert!(find(&store, &org(1), &job_id(1)).await.is_some());
    })
    .await;
}

/// On PostgreSQL retention also deletes the cluster's owner row of each job it deletes
/// (nothing else would, once the job is gone), and two sweepers at once (two instances of
/// a cluster) share the work without deleting a job twice or waiting on each other.
#[tokio::test]
async fn postgres_retention_takes_owner_rows_and_concurrent_sweeps_share_the_work() {
    with_throwaway_db(|url| async move {
        let store = PostgresStore::connect(options(&url), 4).await.unwrap();
        let org = org(300);
        let cutoff = at(-50_000);
        let mut ids = Vec::new();
        for n in 300..321 {
            let job = new_job(job_id(n), &org, &["n1", "n2", "n3"], at(-100_000));
            store.create_job(&job).await.unwrap();
            let status = if n == 320 {
                JobStatus::Running
            } else {
                JobStatus::Complete
            };
            store
                .update_statuses(&org, &job.id, Some(status), &[], at(-90_000))
                .await
                .unwrap();
            sqlx::query("INSERT INTO pushy_job_owners (job_id, instance_id) VALUES ($1, 'i1')")
                .bind(job.id.as_str())
                .execute(store.pool())
                .await
                .unwrap();
            ids.push(job.id);
        }

        let store = &store;
        let sweep = || async move {
            let mut total = 0;
            loop {
                let n = store.delete_finished_jobs(cutoff, 3).await.unwrap();
                if n == 0 {
                    return total;
                }
                total += n;
            }
        };
        let (a, b) = tokio::join!(sweep(), sweep());
        assert_eq!(a + b, 20);

        let owners: Vec<String> = sqlx::query_scalar("SELECT job_id FROM pushy_job_owners")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(owners, [ids[20].as_str()]);
        assert!(find(store, &org, &ids[20]).await.is_some());
        let nodes: i64 = sqlx::query_scalar("SELECT count(*) FROM job_nodes")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(nodes, 3);
    })
    .await;
}

/// Two instances of a cluster (two pools on one database) claiming the same dashboard
/// login at the same moment: exactly one wins, and the loser's instance refuses it after.
#[tokio::test]
async fn postgres_concurrent_claims_of_a_login_have_one_winner() {
    with_throwaway_db(|url| async move {
        let one = PostgresStore::connect(options(&url), 2).await.unwrap();
        let two = PostgresStore::connect(options(&url), 2).await.unwrap();
        for n in 0..20 {
            let nonce = format!("nonce-{n}");
            let (a, b) = tokio::join!(
                one.claim_login(&nonce, 1060, 1000),
                two.claim_login(&nonce, 1060, 1000)
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert!(a ^ b, "{nonce}: one claim wins, not {a} and {b}");
            assert!(!one.claim_login(&nonce, 1060, 1001).await.unwrap());
            assert!(!two.claim_login(&nonce, 1060, 1001).await.unwrap());
        }
    })
    .await;
}

/// The original's sqitch deploy scripts for 1.x (`@1.0.0`): job_status, jobs, job_nodes.
const ORIGINAL_1X: &str = include_str!("../../tests/fixtures/original_1x.sql");

/// The sqitch changes 2.x adds (`@2.0.0-alpha.3`): job_options, job_output.
const ORIGINAL_2X_ADDITIONS: &str = "
CREATE TABLE IF NOT EXISTS job_options (
    job_id character(32) NOT NULL PRIMARY KEY
           REFERENCES jobs(id) ON UPDATE CASCADE ON DELETE CASCADE,
    job_user character(32),
    dir text,
    env text,
    capture boolean,
    job_file text
);
CREATE TABLE IF NOT EXISTS job_output (
    job_id character(32) NOT NULL
           REFERENCES jobs(id) ON UPDATE CASCADE ON DELETE CASCADE,
    node_name text NOT NULL,
    UNIQUE (job_id, node_name),
    stdout text NOT NULL,
    stderr text NOT NULL
);
";

/// A job as the original server wrote it: finished, its nodes unpositioned.
const ORIGINAL_ROWS: &str = "
INSERT INTO jobs VALUES ('0123456789abcdef0123456789abcdef', 'feedfacefeedfacefeedfacefeedface',
  'chef-client', 2, 3600, '0123456789abcdef0123456789abcdef',
  '2013-10-14 12:00:00', '2013-10-14 12:01:40', 2);
INSERT INTO job_nodes VALUES
  ('0123456789abcdef0123456789abcdef', 'feedfacefeedfacefeedfacefeedface', 'zeta', 3,
   '2013-10-14 12:00:00', '2013-10-14 12:01:39'),
  ('0123456789abcdef0123456789abcdef', 'feedfacefeedfacefeedfacefeedface', 'alpha', 4,
   '2013-10-14 12:00:00', '2013-10-14 12:01:40');
";

fn original_job() -> JobRecord {
    let time = |s| Utc.with_ymd_and_hms(2013, 10, 14, 12, 0, 0).unwrap() + TimeDelta::seconds(s);
    JobRecord {
        id: JobId::parse("0123456789abcdef0123456789abcdef").unwrap(),
        org_id: OrgGuid("feedfacefeedfacefeedfacefeedface".to_owned()),
        command: "chef-client".to_owned(),
        quorum: 2,
        run_timeout: 3600,
        status: JobStatus::Complete,
        created_at: time(0),
        updated_at: time(100),
        requestor: None,
        options: JobOptions::default(),
        // No position: by name.
        nodes: vec![
            ("alpha".to_owned(), NodeStatus::Failed),
            ("zeta".to_owned(), NodeStatus::Succeeded),
        ],
    }
}

async fn raw(url: &str, sql: &'static str) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    conn.execute(sql).await.unwrap();
    conn.close().await.unwrap();
}

/// A job with options and output, made through the store after the upgrade.
async fn new_job_works_after_adoption(store: &PostgresStore) {
    let org = org(200);
    let mut job = new_job(job_id(200), &org, &["DONKEY", "FIONA", "ALPHA"], at(0));
    job.options = JobOptions {
        user: Some("ops".to_owned()),
        capture: true,
        ..JobOptions::default()
    };
    store.create_job(&job).await.unwrap();
    assert_eq!(find(store, &org, &job.id).await, Some(job.clone()));
    assert!(
        store
            .insert_output(&job.id, "FIONA", "o", "e", false)
            .await
            .unwrap()
    );
    let out = store
        .fetch_output(&org, &job.id, "FIONA", OutputChannel::Stderr)
        .await
        .unwrap();
    assert_eq!(out.map(|o| o.text).as_deref(), Some("e"));
}

#[tokio::test]
async fn postgres_adopts_original_1x_database() {
    with_throwaway_db(|url| async move {
        raw(&url, ORIGINAL_1X).await;
        raw(&url, ORIGINAL_ROWS).await;

        let store = PostgresStore::connect(options(&url), 2).await.unwrap();
        let old = original_job();
        assert_eq!(find(&store, &old.org_id, &old.id).await, Some(old.clone()));
        assert_eq!(
            store.list_jobs(&old.org_id).await.unwrap(),
            vec![JobRecord {
                nodes: vec![],
                ..old.clone()
            }]
        );
        assert!(store.incomplete_jobs().await.unwrap().is_empty());
        // An original job left running is not ours to resume (issue 12 §2).
        raw(
            &url,
            "UPDATE jobs SET status = 1 WHERE id = '0123456789abcdef0123456789abcdef'",
        )
        .await;
        assert_eq!(
            store.incomplete_jobs().await.unwrap(),
            [IncompleteJob {
                id: old.id.clone(),
                org_id: old.org_id.clone(),
                status: JobStatus::Running,
                ours: false,
            }]
        );
        raw(
            &url,
            "UPDATE jobs SET status = 2 WHERE id = '0123456789abcdef0123456789abcdef'",
        )
        .await;

        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY 1",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(
            tables,
            [
                "_sqlx_migrations",
                "job_nodes",
                "job_options",
                "job_output",
                "job_status",
                "jobs",
                "pushy_bus",
                "pushy_dashboard_logins",
                "pushy_instances",
                "pushy_job_owners",
                "pushy_presence"
            ]
        );

        // The old job still takes updates and output.
        store
            .update_statuses(
                &old.org_id,
                &old.id,
                None,
                &[("alpha".into(), NodeStatus::Crashed)],
                at(0),
            )
            .await
            .unwrap();
        assert!(
            store
                .insert_output(&old.id, "zeta", "out", "", false)
                .await
                .unwrap()
        );
        let found = find(&store, &old.org_id, &old.id).await.unwrap();
        assert_eq!(found.nodes[0], ("alpha".to_owned(), NodeStatus::Crashed));
        new_job_works_after_adoption(&store).await;
    })
    .await;
}

#[tokio::test]
async fn postgres_adopts_original_2x_database() {
    with_throwaway_db(|url| async move {
        raw(&url, ORIGINAL_1X).await;
        raw(&url, ORIGINAL_2X_ADDITIONS).await;
        raw(&url, ORIGINAL_ROWS).await;
        raw(
            &url,
            "INSERT INTO job_options VALUES ('0123456789abcdef0123456789abcdef', 'deploy', \
               '/srv/app', '{\"A\":\"1\"}', true, 'raw:hello');
             INSERT INTO job_output VALUES ('0123456789abcdef0123456789abcdef', 'zeta', \
               'all good', 'a warning');",
        )
        .await;

        let store = PostgresStore::connect(options(&url), 2).await.unwrap();
        let mut old = original_job();
        old.options = JobOptions {
            user: Some("deploy".to_owned()),
            dir: Some("/srv/app".to_owned()),
            env: Some(r#"{"A":"1"}"#.to_owned()),
            capture: true,
            file: Some("raw:hello".to_owned()),
            controls: None,
        };
        assert_eq!(find(&store, &old.org_id, &old.id).await, Some(old.clone()));
        let fetch = |channel| store.fetch_output(&old.org_id, &old.id, "zeta", channel);
        assert_eq!(
            fetch(OutputChannel::Stdout)
                .await
                .unwrap()
                .map(|o| o.text)
                .as_deref(),
            Some("all good")
        );
        assert_eq!(
            fetch(OutputChannel::Stderr)
                .await
                .unwrap()
                .map(|o| o.text)
                .as_deref(),
            Some("a warning")
        );
        // The original's unique constraint still holds.
        assert!(
            !store
                .insert_output(&old.id, "zeta", "again", "", false)
                .await
                .unwrap()
        );
        new_job_works_after_adoption(&store).await;
    })
    .await;
}

/// Columns, constraints and indexes of the public tables, one line each, comparable
/// between databases.
async fn describe_schema(url: &str) -> Vec<String> {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let mut lines: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' | ', 'column', table_name, column_name, ordinal_position, \
                data_type, character_maximum_length, is_nullable, column_default) \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations' \
         UNION ALL \
         SELECT concat_ws(' | ', 'constraint', conrelid::regclass::text, conname, \
                pg_get_constraintdef(oid)) \
         FROM pg_constraint \
         WHERE connamespace = 'public'::regnamespace \
           AND conrelid::regclass::text <> '_sqlx_migrations' \
         UNION ALL \
         SELECT concat_ws(' | ', 'index', indexdef) FROM pg_indexes \
         WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations' \
         UNION ALL \
         SELECT concat_ws(' | ', 'job_status', id, description) FROM job_status",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    lines.sort();
    lines
}

#[tokio::test]
async fn postgres_schema_is_the_originals_plus_position_truncated_and_org_index() {
    with_throwaway_db(|original_url| async move {
        raw(&original_url, ORIGINAL_1X).await;
        raw(&original_url, ORIGINAL_2X_ADDITIONS).await;
        let original = describe_schema(&original_url).await;

        with_throwaway_db(|url| async move {
            PostgresStore::connect(options(&url), 1).await.unwrap();
            // The cluster's tables (issue 14) are ours alone; the original's tables
            // gain only these.
            let (cluster, ours): (Vec<String>, Vec<String>) = describe_schema(&url)
                .await
                .into_iter()
                .partition(|line| line.contains("pushy_"));
            for table in [
                "pushy_bus",
                "pushy_dashboard_logins",
                "pushy_instances",
                "pushy_job_owners",
                "pushy_presence",
            ] {
                assert!(cluster.iter().any(|l| l.contains(table)), "{table} missing");
            }
            let extra = [
                "column | job_nodes | position | 7 | integer | YES",
                "column | job_output | truncated | 5 | boolean | YES",
                "column | job_options | controls | 7 | text | YES",
                "job_status | 8 | stopped",
                "column | jobs | requestor | 10 | text | YES",
                "index | CREATE INDEX jobs_org_id_created_at_idx ON public.jobs USING btree (org_id, created_at)",
                "index | CREATE INDEX jobs_updated_at_idx ON public.jobs USING btree (updated_at)",
            ];
            let mut expected = original.clone();
            expected.extend(extra.map(str::to_owned));
            expected.sort();
            assert_eq!(ours, expected);
        })
        .await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Faults (issue 12 §3): a failed transaction leaves no connection inside it, a job exists
// durably or not at all, and the store works again once the fault clears.

use crate::pg_proxy;

use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteConnectOptions;

/// A connection to the store's file from outside its pool, waiting at most 1 s for a lock.
async fn outsider(path: &std::path::Path) -> SqliteConnection {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(1));
    SqliteConnection::connect_with(&options).await.unwrap()
}

/// Every connection of the pool is outside any transaction (SQLite refuses `BEGIN` inside
/// one), and nothing holds the write lock: another connection can take it.
async fn no_transaction_left_open(store: &SqliteStore, path: &std::path::Path) {
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = store.pool().acquire().await.unwrap();
        sqlx::raw_sql("BEGIN")
            .execute(&mut *conn)
            .await
            .expect("a pooled connection is still inside a transaction");
        sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.unwrap();
        held.push(conn);
    }
    drop(held);
    let mut outside = outsider(path).await;
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut outside)
        .await
        .expect("the write lock is free");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut outside)
        .await
        .unwrap();
}

/// How many `jobs` rows of `org` another connection sees on disk.
async fn jobs_on_disk(path: &std::path::Path, org: &OrgGuid) -> i64 {
    let mut outside = outsider(path).await;
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE org_id = $1")
        .bind(org.as_str())
        .fetch_one(&mut outside)
        .await
        .unwrap()
}

/// Armed by a row in `fault`: inserting nodes makes SQLite roll the whole transaction back
/// by itself (as a full disk does), and so does updating a job; a job row inserted makes
/// COMMIT fail on a deferred foreign key (the transaction stays open).
const SQLITE_FAULTS: &str = "
CREATE TABLE fault (kind TEXT NOT NULL);
CREATE TABLE fault_parent (id INTEGER PRIMARY KEY);
CREATE TABLE fault_child (parent INTEGER REFERENCES fault_parent(id) DEFERRABLE INITIALLY DEFERRED);
CREATE TRIGGER fault_nodes BEFORE INSERT ON job_nodes
  WHEN EXISTS (SELECT 1 FROM fault WHERE kind = 'rollback')
  BEGIN SELECT RAISE(ROLLBACK, 'injected fault'); END;
CREATE TRIGGER fault_jobs BEFORE UPDATE ON jobs
  WHEN EXISTS (SELECT 1 FROM fault WHERE kind = 'rollback')
  BEGIN SELECT RAISE(ROLLBACK, 'injected fault'); END;
CREATE TRIGGER fault_commit AFTER INSERT ON jobs
  WHEN EXISTS (SELECT 1 FROM fault WHERE kind = 'commit')
  BEGIN INSERT INTO fault_child VALUES (42); END;
";

#[tokio::test]
async fn sqlite_failed_transactions_leave_no_connection_inside_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pushy.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    sqlx::raw_sql(SQLITE_FAULTS)
        .execute(store.pool())
        .await
        .unwrap();
    let arm = |kind: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::query("DELETE FROM fault")
                .execute(&pool)
                .await
                .unwrap();
            if !kind.is_empty() {
                sqlx::query("INSERT INTO fault VALUES ($1)")
                    .bind(kind)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }
    };
    let org = org(200);
    let before = new_job(job_id(200), &org, &["n1", "n2"], at(0));
    store.create_job(&before).await.unwrap();

    // The engine rolls back by itself, often enough to meet every pooled connection.
    arm("rollback").await;
    for n in 0..8 {
        let job = new_job(job_id(210 + n), &org, &["n1"], at(1));
        let result = store.create_job(&job).await;
        assert!(matches!(result, Err(Error::Database(_))), "{result:?}");
        let result = store
            .update_statuses(
                &org,
                &before.id,
                Some(JobStatus::Complete),
                &[("n1".into(), NodeStatus::Succeeded)],
                at(2),
            )
            .await;
        assert!(matches!(result, Err(Error::Database(_))), "{result:?}");
        assert!(!result.unwrap_err().is_transient());
    }
    // Then ordinary failures on the same connections (with sqlx's own transactions these
    // left one open for good), and failed COMMITs.
    arm("").await;
    for n in 0..8 {
        let twice = new_job(job_id(220 + n), &org, &["n1", "n1"], at(3));
        let result = store.create_job(&twice).await;
        assert!(matches!(result, Err(Error::Database(_))), "{result:?}");
    }
    arm("commit").await;
    for n in 0..8 {
        let job = new_job(job_id(230 + n), &org, &["n1"], at(4));
        let result = store.create_job(&job).await;
        assert!(matches!(result, Err(Error::Database(_))), "{result:?}");
    }
    arm("").await;

    no_transaction_left_open(&store, &path).await;
    // Nothing of the failed jobs or updates, in the API or on disk.
    assert_eq!(find(&store, &org, &before.id).await, Some(before.clone()));
    for n in (210..238).filter(|n| n % 10 < 8) {
        assert_eq!(find(&store, &org, &job_id(n)).await, None, "job {n}");
    }
    assert_eq!(store.list_jobs(&org).await.unwrap().len(), 1);
    assert_eq!(jobs_on_disk(&path, &org).await, 1);

    // The store works, and what it says is what is on disk.
    for n in 0..8 {
        let job = new_job(job_id(240 + n), &org, &["n1"], at(5));
        store.create_job(&job).await.unwrap();
    }
    store
        .update_statuses(
            &org,
            &before.id,
            Some(JobStatus::Running),
            &[("n2".into(), NodeStatus::Running)],
            at(6),
        )
        .await
        .unwrap();
    assert_eq!(jobs_on_disk(&path, &org).await, 9);
    no_transaction_left_open(&store, &path).await;
    store.pool().close().await;
    let reopened = SqliteStore::open(&path).await.unwrap();
    let found = find(&reopened, &org, &before.id).await.unwrap();
    assert_eq!(found.status, JobStatus::Running);
    assert_eq!(
        found.nodes,
        [
            ("n1".to_owned(), NodeStatus::New),
            ("n2".to_owned(), NodeStatus::Running)
        ]
    );
    assert_eq!(reopened.list_jobs(&org).await.unwrap().len(), 9);
}

/// A tmpfs of 3 MB on a fresh directory, unmounted when dropped. `None` (said on stderr)
/// where tmpfs cannot be mounted (not root, or no mount permission in the container).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        match mounted {
            Ok(status) if status.success() => Some(SmallDisk { dir }),
            other => {
                eprintln!("SKIPPED: cannot mount a tmpfs here ({other:?})");
                None
            }
        }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills what is left of the disk with a file.
    fn fill(&self) {
        use std::io::Write as _;
        let mut filler = std::fs::File::create(self.dir.path().join("filler")).unwrap();
        let chunk = vec![0xa5_u8; 64 * 1024];
        // 3 MB in 64 KiB chunks: the bound is never reached.
        for _ in 0..1000 {
            if filler.write_all(&chunk).is_err() {
                return;
            }
        }
        panic!("the disk never filled");
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn sqlite_full_disk_is_unavailable_then_recovers_by_itself() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let path = disk.path().join("pushy.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    let org = org(300);
    let before = new_job(job_id(300), &org, &["n1", "n2"], at(0));
    store.create_job(&before).await.unwrap();
    // An empty write-ahead log, so that any commit needs new space.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.pool())
        .await
        .unwrap();
    disk.fill();

    for n in 0..8 {
        let job = new_job(job_id(310 + n), &org, &["n1"], at(1));
        let result = store.create_job(&job).await;
        assert!(
            matches!(&result, Err(e @ Error::Unavailable(_)) if e.is_transient()),
            "{result:?}"
        );
        let result = store
            .update_statuses(
                &org,
                &before.id,
                Some(JobStatus::Complete),
                &[("n1".into(), NodeStatus::Succeeded)],
                at(2),
            )
            .await;
        assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    }
    // Reads still work and show only what was committed.
    assert_eq!(find(&store, &org, &before.id).await, Some(before.clone()));
    assert_eq!(find(&store, &org, &job_id(310)).await, None);
    assert_eq!(store.list_jobs(&org).await.unwrap().len(), 1);

    disk.free();
    no_transaction_left_open(&store, &path).await;
    for n in 0..8 {
        let job = new_job(job_id(320 + n), &org, &["n1"], at(3));
        store.create_job(&job).await.unwrap();
    }
    store
        .update_statuses(&org, &before.id, Some(JobStatus::Running), &[], at(4))
        .await
        .unwrap();
    store.pool().close().await;
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        find(&reopened, &org, &before.id).await.unwrap().status,
        JobStatus::Running
    );
    assert_eq!(reopened.list_jobs(&org).await.unwrap().len(), 9);
    assert_eq!(find(&reopened, &org, &job_id(310)).await, None);
    reopened.pool().close().await;
}

/// Armed by a row in `fault`: inserting options fails mid-transaction (after the job and
/// node rows), and a deferred constraint trigger makes COMMIT fail.
const POSTGRES_FAULTS: &str = "
CREATE TABLE fault (kind text NOT NULL);
CREATE FUNCTION fault_if(k text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM fault WHERE kind = k) THEN
    RAISE EXCEPTION 'injected fault';
  END IF;
END $$;
CREATE FUNCTION fault_options() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM fault_if('statement'); RETURN NEW; END $$;
CREATE FUNCTION fault_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM fault_if('commit'); RETURN NULL; END $$;
CREATE TRIGGER fault_options BEFORE INSERT ON job_options
  FOR EACH ROW EXECUTE FUNCTION fault_options();
CREATE CONSTRAINT TRIGGER fault_commit AFTER INSERT ON jobs
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault_commit();
";

/// Connections to the current database that are inside a transaction, other than the
/// asking one.
async fn open_transactions(admin: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn postgres_failed_transactions_leave_no_connection_inside_one() {
    with_throwaway_db(|url| async move {
        // One connection, so every transaction reuses the one that failed before.
        let store = PostgresStore::connect(options(&url), 1).await.unwrap();
        sqlx::raw_sql(POSTGRES_FAULTS)
            .execute(store.pool())
            .await
            .unwrap();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let org = org(400);
        let before = new_job(job_id(400), &org, &["n1"], at(0));
        store.create_job(&before).await.unwrap();

        for (n, kind) in [(410, "statement"), (420, "commit")] {
            sqlx::query("INSERT INTO fault VALUES ($1)")
                .bind(kind)
                .execute(&mut admin)
                .await
                .unwrap();
            for i in 0..3 {
                let mut job = new_job(job_id(n + i), &org, &["n1", "n2"], at(1));
                job.options.capture = true;
                let result = store.create_job(&job).await;
                assert!(
                    matches!(result, Err(Error::Database(_))),
                    "{kind}: {result:?}"
                );
                assert_eq!(open_transactions(&mut admin).await, 0, "{kind}");
                // The pool's one connection works, outside any transaction.
                assert_eq!(find(&store, &org, &job.id).await, None);
            }
            sqlx::query("DELETE FROM fault")
                .execute(&mut admin)
                .await
                .unwrap();
        }

        let after = new_job(job_id(430), &org, &["n1"], at(2));
        store.create_job(&after).await.unwrap();
        let on_disk: Vec<String> =
            sqlx::query_scalar("SELECT id::text FROM jobs WHERE org_id = $1::bpchar ORDER BY id")
                .bind(org.as_str())
                .fetch_all(&mut admin)
                .await
                .unwrap();
        assert_eq!(on_disk, [before.id.as_str(), after.id.as_str()]);
        let nodes: i64 = sqlx::query_scalar("SELECT count(*) FROM job_nodes")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(nodes, 2);
        assert_eq!(open_transactions(&mut admin).await, 0);
        store.pool().close().await;
    })
    .await;
}

#[tokio::test]
async fn postgres_outage_is_unavailable_and_the_pool_recovers() {
    with_throwaway_db(|url| async move {
        let proxy = pg_proxy::PgProxy::in_front_of(&url).await;
        let store = PostgresStore::connect(proxy.options(&url), 2)
            .await
            .unwrap();
        let org = org(500);
        let before = new_job(job_id(500), &org, &["n1"], at(0));
        store.create_job(&before).await.unwrap();

        // A transaction under way when the database goes: its COMMIT fails and nothing of
        // it stays.
        let mut tx = super::tx::Tx::begin(store.pool(), "BEGIN").await.unwrap();
        sqlx::query(
            "INSERT INTO jobs (id, org_id, command, quorum, status, run_timeout, \
             last_updated_by, created_at, updated_at) \
             VALUES ($1, $2, 'x', 1, 0, 1, $1, now(), now())",
        )
        .bind(job_id(501).as_str())
        .bind(org.as_str())
        .execute(tx.conn())
        .await
        .unwrap();
        proxy.cut().await;
        let result = tx.finish(Ok(())).await;
        assert!(matches!(&result, Err(e) if e.is_transient()), "{result:?}");

        let result = store
            .create_job(&new_job(job_id(502), &org, &["n1"], at(1)))
            .await;
        assert!(matches!(&result, Err(e) if e.is_transient()), "{result:?}");
        let result = store.find_job(&org, &before.id).await;
        assert!(matches!(&result, Err(e) if e.is_transient()), "{result:?}");
        let result = store.list_jobs(&org).await;
        assert!(matches!(&result, Err(e) if e.is_transient()), "{result:?}");

        // Back, with the same pool.
        proxy.restore().await;
        assert_eq!(find(&store, &org, &before.id).await, Some(before.clone()));
        assert_eq!(find(&store, &org, &job_id(501)).await, None);
        assert_eq!(find(&store, &org, &job_id(502)).await, None);
        let after = new_job(job_id(503), &org, &["n1"], at(2));
        store.create_job(&after).await.unwrap();
        let ids: Vec<JobId> = store
            .list_jobs(&org)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(ids, [before.id, after.id]);
        store.pool().close().await;
    })
    .await;
}
