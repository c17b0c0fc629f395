//! Several instances of the server on one PostgreSQL database (issue 14), as one Push
//! Jobs service. PostgreSQL holds every shared fact (`pushy_store::cluster`) and carries
//! every message between instances: there is no other cluster protocol.
//!
//! - membership ([`membership`]): each instance holds a database lock and renews a
//!   lease; the live set is re-read every tick;
//! - nodes: the config endpoint sends each node to the instance [`assign::holder`] picks;
//!   holders publish their nodes' states ([`presence`]), which every instance keeps in
//!   its [`mirror`];
//! - jobs: the instance that accepts a POST owns the job; its commands for nodes held
//!   elsewhere and those nodes' news travel over the bus ([`outbox`], [`inbox`]), through
//!   the [`Router`] the job's task uses; its events go to every instance's feeds
//!   ([`Feeds`]); a survivor takes over jobs whose owner died (`jobs::takeover`).

pub mod assign;
mod handle;
pub mod inbox;
pub mod membership;
pub mod message;
pub mod mirror;
mod outbox;
pub mod presence;
mod route;

pub use handle::{Cluster, Settings};
pub use message::BusMessage;
pub use outbox::{Outgoing, Queued, run as outbox_task};
pub use route::{Feeds, Router};
