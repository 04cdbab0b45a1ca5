//! Claims on client ids for a single node: an epoch per client id, in memory.
//! The registry already lets one connection at a time hold a session; the
//! claims are what makes a write from a connection that lost it harmless — a
//! clean session's clean-up running late must not delete what its successor
//! stored (see [`crate::broker::seam::SessionStore`]).
//!
//! A fenced write holds the lock for its store write, so "check, then write" is
//! one step. Those writes happen at connect, subscribe and disconnect, never
//! per message.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::broker::seam::{Claim, Error};
use crate::protocol::ClientId;

#[derive(Debug, Default)]
pub(super) struct Claims {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    epochs: HashMap<ClientId, u64>,
    next: u64,
}

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section is a map operation plus one store write, which
        // leaves the map consistent even if the write panicked.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn claim(&self, client_id: &ClientId) -> Claim {
        let mut state = self.lock();
        state.next += 1;
        let epoch = state.next;
        state.epochs.insert(client_id.clone(), epoch);
        Claim { epoch }
    }

    pub(super) fn is_current(&self, client_id: &ClientId, claim: Claim) -> bool {
        check(&self.lock(), client_id, claim).is_ok()
    }

    /// Runs `write` if `claim` is current.
    pub(super) fn fenced(
        &self,
        client_id: &ClientId,
        claim: Claim,
        write: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let state = self.lock();
        check(&state, client_id, claim)?;
        write()
    }

    /// Forgets the claim of a session that is gone, if `claim` is still the newest.
    /// Any positive claim on the client id is stale from then on.
    pub(super) fn release(&self, client_id: &ClientId, claim: Claim) {
        let mut state = self.lock();
        if state.epochs.get(client_id) == Some(&claim.epoch) {
            state.epochs.remove(client_id);
        }
    }
}

/// A claim is current if no newer claim was taken, and if it was not released.
/// The zero claim belongs to a session restored at start-up that nobody has
/// claimed since.
fn check(state: &State, client_id: &ClientId, claim: Claim) -> Result<(), Error> {
    let current = state.epochs.get(client_id).copied();
    let is_current = match current {
        Some(current) => claim.epoch >= current,
        None => claim.epoch == 0,
    };
    if is_current {
        return Ok(());
    }
    Err(Error::Fenced {
        client_id: client_id.clone(),
        stale: claim.epoch,
        current: current.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_claim_fences_the_older_one() {
        let claims = Claims::default();
        let a = ClientId::new("a");
        let old = claims.claim(&a);
        let new = claims.claim(&a);
        assert!(claims.fenced(&a, old, || Ok(())).is_err());
        assert!(claims.fenced(&a, new, || Ok(())).is_ok());
        claims.release(&a, old);
        assert!(claims.is_current(&a, new), "only the newest claim releases");
        claims.release(&a, new);
        assert!(!claims.is_current(&a, new), "a released claim is stale");
        assert!(!claims.is_current(&a, old));
    }

    #[test]
    fn the_zero_claim_writes_until_someone_claims() {
        let claims = Claims::default();
        let a = ClientId::new("a");
        assert!(claims.is_current(&a, Claim::default()));
        claims.claim(&a);
        assert!(!claims.is_current(&a, Claim::default()));
    }

    #[test]
    fn claims_on_other_client_ids_do_not_fence() {
        let claims = Claims::default();
        let a = claims.claim(&ClientId::new("a"));
        claims.claim(&ClientId::new("b"));
        assert!(claims.fenced(&ClientId::new("a"), a, || Ok(())).is_ok());
    }
}
