//! Transactions that leave no trace when they fail, for both engines.
//!
//! Why not sqlx's `Transaction`: sqlx keeps its own count of a connection's transaction
//! depth. SQLite ends a transaction by itself on some errors (a full disk or an I/O error
//! in a statement or at COMMIT rolls the whole transaction back, as does a trigger's
//! `RAISE(ROLLBACK)`), but sqlx still counts one; its ROLLBACK on drop then fails ("no
//! transaction is active") and the connection goes back to the pool counting one. Its next
//! `begin` sends `SAVEPOINT`, which opens a real transaction, and a failure inside that one
//! rolls back only *to* the savepoint: the transaction stays open for good. Every later
//! statement on that connection then runs inside it, seen by nobody else, holding the write
//! lock ("database is locked" for every other connection until a restart) and keeping the
//! write-ahead log from being checkpointed (issue 12 §3).
//!
//! [`Tx`] sends BEGIN, COMMIT and ROLLBACK itself, so sqlx's count stays at zero, and lets a
//! connection go back to the pool only once the connection is known to be outside any
//! transaction; otherwise it is closed, which ends whatever it held.

use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor, Pool};

use super::Error;

/// One transaction on a connection of its own. End it with [`Tx::finish`]; dropped before
/// that (its future cancelled), it is rolled back in the background, or its connection
/// closed.
pub(super) struct Tx<DB: Database>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// `Some` while a transaction may be open on it.
    conn: Option<PoolConnection<DB>>,
}

impl<DB: Database> Tx<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Takes a connection from `pool` and starts a transaction on it with `begin` (a
    /// `BEGIN …` statement).
    pub(super) async fn begin(pool: &Pool<DB>, begin: &'static str) -> Result<Self, Error> {
        let mut tx = Tx {
            conn: Some(pool.acquire().await?),
        };
        match sqlx::raw_sql(begin).execute(tx.conn()).await {
            Ok(_) => Ok(tx),
            Err(e) => tx.finish(Err(e.into())).await,
        }
    }

    /// The transaction's connection, to run its statements on.
    pub(super) fn conn(&mut self) -> &mut DB::Connection {
        self.conn
            .as_mut()
            .expect("a transaction has its connection until it ends")
    }

    /// Commits if `result` is `Ok`, rolls back if not. Returns `result`, or the error of a
    /// COMMIT that failed (then nothing was committed).
    pub(super) async fn finish<T>(mut self, result: Result<T, Error>) -> Result<T, Error> {
        let result = match result {
            Ok(value) => match sqlx::raw_sql("COMMIT").execute(self.conn()).await {
                Ok(_) => {
                    // Committed: the connection is clean and goes back to the pool.
                    self.conn = None;
                    return Ok(value);
                }
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e),
        };
        let clean = settle(self.conn.as_mut().expect("not yet given back")).await;
        let mut conn = self.conn.take().expect("not yet given back");
        if !clean {
            conn.close_on_drop();
        }
        result
    }
}

impl<DB: Database> Drop for Tx<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // Cancelled mid-transaction. Closing would do, but would lose an in-memory SQLite
        // database: roll back in the background when a runtime is there.
        let mut conn = CloseUnlessSettled(Some(conn));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(c) = conn.0.as_mut()
                    && settle(c).await
                {
                    // Clean: back to the pool.
                    drop(conn.0.take());
                }
            });
        }
    }
}

/// A connection that is closed, not pooled, if dropped while still set.
struct CloseUnlessSettled<DB: Database>(Option<PoolConnection<DB>>);

impl<DB: Database> Drop for CloseUnlessSettled<DB> {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// Ends whatever transaction `conn` may be in; true when the connection is then known to
/// be outside any. A plain ROLLBACK that succeeds proves it (it ends savepoints too). One
/// that fails usually means the engine already rolled back by itself; `BEGIN` then
/// `ROLLBACK` succeeding proves that (SQLite refuses `BEGIN` inside a transaction;
/// PostgreSQL only warns, and the ROLLBACK then ends it).
async fn settle<DB: Database>(conn: &mut PoolConnection<DB>) -> bool
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    if sqlx::raw_sql("ROLLBACK").execute(&mut **conn).await.is_ok() {
        return true;
    }
    sqlx::raw_sql("BEGIN").execute(&mut **conn).await.is_ok()
        && sqlx::raw_sql("ROLLBACK").execute(&mut **conn).await.is_ok()
}
