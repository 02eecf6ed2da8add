//! W3C trace context across services: into and out of gRPC metadata, and
//! through the outbox (a message's delivery joins the trace of the call that
//! queued it).

use std::collections::BTreeMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MapCarrier<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for MapCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The caller's context, from an incoming request's headers.
pub fn extract_from_headers(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Puts the current span's context into an outgoing request.
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut MetadataInjector(metadata))
    });
}

/// The current span's context as text, to store beside an outbox message.
pub fn current_as_text() -> Option<String> {
    let mut carrier = BTreeMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut MapCarrier(&mut carrier))
    });
    (!carrier.is_empty()).then(|| serde_json::to_string(&carrier).unwrap_or_default())
}

/// Makes `span` a child of the context stored by [`current_as_text`].
pub fn set_parent_from_text(span: &tracing::Span, text: Option<&str>) {
    let Some(mut carrier) =
        text.and_then(|t| serde_json::from_str::<BTreeMap<String, String>>(t).ok())
    else {
        return;
    };
    let context =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&MapCarrier(&mut carrier)));
    let _ = span.set_parent(context);
}

/// Makes `span` a child of the caller's context.
pub fn set_parent(span: &tracing::Span, context: Context) {
    let _ = span.set_parent(context);
}
