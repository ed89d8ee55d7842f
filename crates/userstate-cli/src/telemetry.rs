//! Logs on stderr (text or JSON, filtered by `RUST_LOG`) and, with `serve --otlp-endpoint`,
//! OpenTelemetry spans exported over OTLP/gRPC. The request spans carry the caller's W3C trace
//! (userstate_server::trace); exported, they are children of the caller's span.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// What has to be flushed before the process exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "OTLP exporter: spans not flushed at exit");
            }
        }
    }
}

/// Installs the global subscriber: the log lines, and the OTLP exporter when `otlp_endpoint`
/// is given (e.g. `http://127.0.0.1:4317`). Needs a Tokio runtime when exporting.
pub fn init(
    json: bool,
    default_level: &str,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match json {
        true => fmt
            .json()
            .fmt_fields(crate::span_fields::JsonSpanFields)
            .boxed(),
        false => fmt.boxed(),
    };
    let provider = otlp_endpoint.map(exporter).transpose()?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("userstate"))
            .with_tracked_inactivity(false)
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(filter)
        .init();
    if let Some(endpoint) = otlp_endpoint {
        userstate_server::trace::set_exporting(true);
        tracing::info!(endpoint, "exporting spans over OTLP/gRPC");
    }
    Ok(Telemetry { provider })
}

/// A tracer provider that batches spans to the OTLP/gRPC collector at `endpoint`.
fn exporter(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("--otlp-endpoint {endpoint}"))?;
    let resource = Resource::builder()
        .with_service_name("userstate")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
