//! Where revoked tokens are kept so they survive a restart: the
//! [`RevocationStore`] contract, what it keeps ([`Revoked`]), and a memory
//! implementation. The SQLite store implements it in the same database as the
//! collections.

use std::sync::Mutex;

use super::{StoreError, StoreFuture};

/// Where revocations are kept.
///
/// Contract: `save` returns once the revocation is durable (for a disk
/// store: fsync), so a revocation the admin API acknowledged survives a
/// restart; `load` returns every revocation saved so far (a subject's latest
/// `issued_before` at least). Both may fail; the caller reports the failure.
pub trait RevocationStore: Send + Sync + 'static {
    /// Records a revocation durably.
    fn save<'a>(&'a self, revoked: &'a Revoked) -> StoreFuture<'a, ()>;
    /// Every revocation saved so far.
    fn load(&self) -> StoreFuture<'_, Vec<Revoked>>;
}

/// Revocations kept in memory only: for tests and ephemeral deployments.
#[derive(Debug, Default)]
pub struct MemoryRevocationStore {
    /// A std mutex: held to push or copy, never across an await.
    saved: Mutex<Vec<Revoked>>,
}

impl RevocationStore for MemoryRevocationStore {
    fn save<'a>(&'a self, revoked: &'a Revoked) -> StoreFuture<'a, ()> {
        self.saved.lock().unwrap_or_else(|e| e.into_inner()).push(revoked.clone());
        Box::pin(std::future::ready(Ok(())))
    }

    fn load(&self) -> StoreFuture<'_, Vec<Revoked>> {
        let saved: Result<Vec<Revoked>, StoreError> = Ok(self.saved.lock().unwrap_or_else(|e| e.into_inner()).clone());
        Box::pin(std::future::ready(saved))
    }
}

/// One revocation, as the admin API records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// One token id.
    Jti(String),
    /// Every token of `sub` issued before `issued_before` (Unix seconds).
    Subject {
        /// The subject.
        sub: String,
        /// Tokens issued before this are revoked.
        issued_before: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_revocation_store_returns_what_was_saved() {
        let store = MemoryRevocationStore::default();
        let saved = [Revoked::Jti("t1".into()), Revoked::Subject { sub: "bob".into(), issued_before: 5 }];
        for revoked in &saved {
            store.save(revoked).await.unwrap();
        }
        assert_eq!(store.load().await.unwrap(), saved);
    }
}
