//! Dispatch by content type: one port, two front ends.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use axum::Router;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, Service, ServiceExt};

/// Whether a `content-type` is gRPC or gRPC-web (`application/grpc`, `application/grpc+proto`,
/// `application/grpc-web`, `application/grpc-web+proto`, `application/grpc-web-text`, …).
pub fn is_grpc_content_type(content_type: &str) -> bool {
    content_type
        .get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
}

/// Sends gRPC and gRPC-web requests to the tonic router (behind the gRPC-web translation),
/// every other request to the HTTP router.
#[derive(Clone)]
pub struct ByContentType {
    http: Router,
    grpc: GrpcWebService<Router>,
}

impl ByContentType {
    /// Dispatches between `http` and `grpc`.
    pub fn new(http: Router, grpc: Router) -> Self {
        Self {
            http,
            grpc: GrpcWebLayer::new().layer(grpc),
        }
    }
}

impl Service<Request> for ByContentType {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let grpc = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_grpc_content_type);
        if grpc {
            let service = self.grpc.clone();
            Box::pin(async move {
                let response = service.oneshot(req).await?;
                Ok(response.map(Body::new))
            })
        } else {
            Box::pin(self.http.clone().oneshot(req))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC-web+proto",
            "application/grpc-web-text",
        ] {
            assert!(is_grpc_content_type(ct), "{ct}");
        }
        for ct in ["application/json", "application/grp", "", "text/plain"] {
            assert!(!is_grpc_content_type(ct), "{ct}");
        }
    }
}
