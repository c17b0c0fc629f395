//! Prometheus metrics, served at `GET /metrics` (OpenMetrics text).
//!
//! The original only had folsom metrics, readable from an Erlang shell or pushed to graphite
//! (ops.md §6.6). Here the counters live where the events happen — the ZeroMQ thread counts
//! messages, job tasks count finished jobs, an HTTP layer counts requests — and the values
//! that are cheaper to read than to maintain (nodes, live jobs, drops) are read at scrape
//! time from closures the composition root registers ([`Metrics::read_on_scrape`]), so
//! this module knows none of the parts it reports on.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label of the ZeroMQ message counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// The message's `type` (`heartbeat`, `ack_commit`, `run`, …).
    pub r#type: &'static str,
}

/// Label of the finished-jobs counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The job's final status.
    pub status: String,
}

/// Labels of the HTTP request counter. Every label takes a bounded set of values, so no
/// client can grow the page: the route is a registered pattern (or `unmatched`), the
/// method one of [`method_label`]'s, the status a three-digit code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern (`/organizations/{org}/pushy/jobs`), not the concrete path.
    pub route: String,
    /// HTTP method: a standard one, or `other`.
    pub method: &'static str,
    /// Response status code.
    pub status: u16,
}

/// Label of the read-timeout counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `header` (request line and headers) or `body`.
    pub phase: &'static str,
}

/// Label of the HTTP latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route pattern.
    pub route: String,
}

/// Every metric the server keeps. Cheap to share behind an `Arc`; all updates are atomic.
#[derive(Debug)]
pub struct Metrics {
    /// Verified messages received from nodes, by type.
    pub messages_received: Family<MessageLabels, Counter>,
    /// Messages sent to nodes (and heartbeats published), by type.
    pub messages_sent: Family<MessageLabels, Counter>,
    /// Jobs created through the API.
    pub jobs_created: Counter,
    /// Jobs that reached a final status, by status.
    pub jobs_finished: Family<JobLabels, Counter>,
    /// Seconds from a job task's start to its final status.
    pub job_duration: Histogram,
    /// Finished jobs deleted by retention (`[retention]`, `crate::retention`).
    pub jobs_purged: Counter,
    /// HTTP requests, by route, method and status.
    pub http_requests: Family<RequestLabels, Counter>,
    /// Seconds to answer (to the response head: a feed's stream is not timed), by route.
    pub http_duration: Family<RouteLabels, Histogram>,
    /// HTTP connections being served.
    pub http_connections_open: Gauge,
    /// Times the accept loop found every connection slot taken and had to wait.
    pub http_connection_waits: Counter,
    /// Connections closed, or requests refused, for sending their head or body too slowly.
    pub http_read_timeouts: Family<PhaseLabels, Counter>,
    /// Bytes of request bodies held in memory now (bounded by `http_body_memory`).
    pub http_body_bytes: Gauge,
    /// Requests refused (503) because bodies in flight held all of `http_body_memory`.
    pub http_body_memory_refusals: Counter,
    readings: Arc<Readings>,
    registry: Registry,
}

/// Latency buckets, seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Job duration buckets, seconds: 100 ms to 1 h.
const JOB_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `pushy_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pushy");
        let messages_received = Family::<MessageLabels, Counter>::default();
        registry.register(
            "zmq_messages_received",
            "Verified messages received from nodes on the command channel, by type",
            messages_received.clone(),
        );
        let messages_sent = Family::<MessageLabels, Counter>::default();
        registry.register(
            "zmq_messages_sent",
            "Messages sent to nodes and heartbeats published, by type",
            messages_sent.clone(),
        );
        let jobs_created = Counter::default();
        registry.register("jobs_created", "Jobs created", jobs_created.clone());
        let jobs_finished = Family::<JobLabels, Counter>::default();
        registry.register(
            "jobs_finished",
            "Jobs that reached a final status, by status",
            jobs_finished.clone(),
        );
        let job_duration = Histogram::new(JOB_BUCKETS);
        registry.register(
            "job_duration_seconds",
            "Seconds from a job's start (or resume) to its final status",
            job_duration.clone(),
        );
        let jobs_purged = Counter::default();
        registry.register(
            "jobs_purged",
            "Finished jobs deleted by retention, with their nodes and output",
            jobs_purged.clone(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests, by route pattern, method and status",
            http_requests.clone(),
        );
        let http_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(new_latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Seconds to the response head, by route pattern",
            http_duration.clone(),
        );
        let http_connections_open = Gauge::default();
        registry.register(
            "http_connections_open",
            "HTTP connections being served",
            http_connections_open.clone(),
        );
        let http_connection_waits = Counter::default();
        registry.register(
            "http_connection_waits",
            "Times every HTTP connection slot was taken and accepting had to wait",
            http_connection_waits.clone(),
        );
        let http_read_timeouts = Family::<PhaseLabels, Counter>::default();
        registry.register(
            "http_read_timeouts",
            "HTTP requests whose head or body did not arrive in time, by phase",
            http_read_timeouts.clone(),
        );
        let http_body_bytes = Gauge::default();
        registry.register(
            "http_body_bytes",
            "Bytes of HTTP request bodies held in memory",
            http_body_bytes.clone(),
        );
        let http_body_memory_refusals = Counter::default();
        registry.register(
            "http_body_memory_refusals",
            "HTTP requests refused because request bodies held all of http_body_memory",
            http_body_memory_refusals.clone(),
        );
        let readings = Arc::new(Readings::default());
        registry.register_collector(Box::new(readings.clone()));
        Metrics {
            messages_received,
            messages_sent,
            jobs_created,
            jobs_finished,
            job_duration,
            jobs_purged,
            http_requests,
            http_duration,
            http_connections_open,
            http_connection_waits,
            http_read_timeouts,
            http_body_bytes,
            http_body_memory_refusals,
            readings,
            registry,
        }
    }

    /// Counts a verified message from a node.
    pub fn received(&self, kind: &'static str) {
        self.messages_received
            .get_or_create(&MessageLabels { r#type: kind })
            .inc();
    }

    /// Counts a message sent to a node or published.
    pub fn sent(&self, kind: &'static str) {
        self.messages_sent
            .get_or_create(&MessageLabels { r#type: kind })
            .inc();
    }

    /// Counts a request head or body that did not arrive in time.
    pub fn read_timeout(&self, phase: &'static str) {
        self.http_read_timeouts
            .get_or_create(&PhaseLabels { phase })
            .inc();
    }

    /// Adds a value read at each scrape, after the fixed metrics.
    pub fn read_on_scrape(&self, reading: Reading) {
        self.readings
            .list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(reading);
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn new_latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A value computed when scraped.
pub enum Reading {
    /// One gauge.
    Gauge {
        /// Its name, without the `pushy_` prefix.
        name: &'static str,
        /// Its help text.
        help: &'static str,
        /// Reads it.
        read: Box<dyn Fn() -> i64 + Send + Sync>,
    },
    /// A family of counters with one label.
    Counters {
        /// Its name, without the `pushy_` prefix.
        name: &'static str,
        /// Its help text.
        help: &'static str,
        /// The label's name.
        label: &'static str,
        /// Reads each label value and its count.
        read: Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>,
    },
}

/// The values read at scrape time.
#[derive(Default)]
struct Readings {
    list: Mutex<Vec<Reading>>,
}

impl std::fmt::Debug for Readings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("Readings")
            .field("count", &list.len())
            .finish()
    }
}

impl prometheus_client::collector::Collector for Readings {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        for reading in list.iter() {
            match reading {
                Reading::Gauge { name, help, read } => {
                    let gauge = ConstGauge::new(read());
                    gauge.encode(encoder.encode_descriptor(
                        name,
                        help,
                        None,
                        gauge.metric_type(),
                    )?)?;
                }
                Reading::Counters {
                    name,
                    help,
                    label,
                    read,
                } => {
                    let metric_type = ConstCounter::new(0u64).metric_type();
                    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
                    for (value, count) in read() {
                        let labels = [(*label, value)];
                        ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}
