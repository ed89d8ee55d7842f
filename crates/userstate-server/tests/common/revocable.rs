//! A token that can be revoked while streams opened with it are open (as a store token or an
//! expiring JWT can): for the event feed's re-authentication ([`userstate_server::feed::RECHECK`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The token [`Revocable`] accepts (a system principal of instance `i1`) until revoked.
pub const REVOCABLE: &str = "tok-revocable";

/// An authenticator of [`REVOCABLE`] alone; chain it after the others.
#[derive(Default)]
pub struct Revocable {
    revoked: AtomicBool,
}

impl Revocable {
    /// From now on the token is refused (`true`) or accepted again (`false`).
    pub fn set_revoked(&self, revoked: bool) {
        self.revoked.store(revoked, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl userstate_server::Authenticator for Revocable {
    async fn authenticate(
        &self,
        credentials: userstate_server::Credentials<'_>,
    ) -> Result<Arc<userstate::Principal>, userstate_server::AuthError> {
        if credentials.bearer()? != REVOCABLE {
            return Err(userstate_server::AuthError::Unknown);
        }
        if self.revoked.load(Ordering::SeqCst) {
            return Err(userstate_server::AuthError::rejected(
                Some("revocable".into()),
                "token revoked",
            ));
        }
        Ok(Arc::new(userstate::Principal::system(
            "revocable",
            userstate::InstanceId::new("i1").unwrap(),
        )))
    }
}

/// The standard test tokens ([`super::authenticator`]) and [`REVOCABLE`], and the handle that
/// revokes it.
pub fn with_revocable() -> (userstate_server::Chain, Arc<Revocable>) {
    let revocable = Arc::new(Revocable::default());
    let chain = userstate_server::Chain::new()
        .with(Arc::new(super::authenticator()))
        .with(revocable.clone());
    (chain, revocable)
}
