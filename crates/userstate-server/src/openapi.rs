//! The OpenAPI document of the HTTP API, generated from the handlers' annotations (utoipa).
//! Served at `/openapi.json` and checked in as `docs/openapi.json` (a test keeps them equal).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::events;
use crate::http::routes::{self, lockout};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "userstate", description = "ZITADEL-style user lifecycle API (v2 and v3alpha). \
        Every error has the body {code, message, details:[{@type, id, message}]}."),
    paths(
        routes::add_human_user, routes::get_user_v2, routes::list_users, routes::user_history,
        routes::user_state, routes::remove_user_v2, routes::erase_user_v2,
        routes::deactivate_user_v2, routes::reactivate_user_v2, routes::lock_user_v2,
        routes::unlock_user_v2, routes::get_user_v3, routes::remove_user_v3,
        routes::deactivate_user_v3, routes::reactivate_user_v3, routes::lock_user_v3,
        routes::unlock_user_v3, lockout::authentication_failed, lockout::authentication_succeeded,
        lockout::get_lockout_policy, lockout::set_lockout_policy, events::events,
    ),
    modifiers(&BearerAuth),
    tags((name = "v2", description = "zitadel.user.v2"),
        (name = "v3alpha", description = "zitadel.user.v3alpha"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::{Verb, OPERATIONS};

    /// The annotations document exactly the table's routes (aliases are routed, not documented)
    /// and the event feed (a stream, outside the table).
    #[test]
    fn the_document_has_every_route_of_the_operation_table() {
        let doc = ApiDoc::openapi();
        let mut documented = 0;
        for (_, rest) in OPERATIONS.iter().flat_map(|op| op.bindings()) {
            for route in rest.iter().filter(|r| !r.alias) {
                let item = doc.paths.paths.get(route.path).expect(route.path);
                let operation = match route.verb {
                    Verb::Get => &item.get,
                    Verb::Post => &item.post,
                    Verb::Delete => &item.delete,
                    Verb::Put => &item.put,
                };
                assert!(operation.is_some(), "{:?} {}", route.verb, route.path);
                documented += 1;
            }
        }
        let in_doc: usize = doc
            .paths
            .paths
            .values()
            .map(|item| {
                usize::from(item.get.is_some())
                    + usize::from(item.post.is_some())
                    + usize::from(item.delete.is_some())
                    + usize::from(item.put.is_some())
            })
            .sum();
        assert!(doc
            .paths
            .paths
            .get("/v2/events")
            .is_some_and(|i| i.get.is_some()));
        assert_eq!(documented + 1, in_doc);
    }
}
