//! OpenTelemetry across institutions: an OTLP receiver runs in this process,
//! the services export to it, and the test reads what arrived.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use passerelle_domain::Institution;
use passerelle_telemetry::{Format, TelemetryConfig};
use passerelle_tests::pb as v1;
use passerelle_tests::*;

#[derive(Debug, Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    metric_names: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut names = self.metric_names.lock().expect("lock");
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                names.extend(scope.metrics.into_iter().map(|m| m.name));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(&kv.value))
}

fn all_values(span: &Span) -> Vec<String> {
    let mut out: Vec<String> = span
        .attributes
        .iter()
        .map(|kv: &KeyValue| text(&kv.value))
        .collect();
    out.push(span.name.clone());
    for event in &span.events {
        out.push(event.name.clone());
        out.extend(event.attributes.iter().map(|kv| text(&kv.value)));
    }
    out
}

fn trace_of(spans: &[Span], method: &str) -> Option<Vec<u8>> {
    spans
        .iter()
        .find(|s| attribute(s, "rpc.method").as_deref() == Some(method))
        .map(|s| s.trace_id.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_referral_is_one_trace_across_services_and_spans_carry_no_personal_value() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .add_service(MetricsServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let guard = Arc::new(passerelle_telemetry::init(TelemetryConfig {
        service_name: "passerelle-tests".into(),
        format: Format::Text,
        default_filter: "warn".into(),
        otlp_endpoint: Some(endpoint),
        metrics_interval: Duration::from_millis(500),
    }));

    let t = start(Backend::Sqlite, 1).await;
    let mut social = t.social().await;
    let consent = social
        .record_consent(t.as_social_worker(v1::RecordConsentRequest {
            idempotency_key: "otel-consent".into(),
            consent: Some(consent(
                &t.clock,
                &[v1::Purpose::Referral],
                &[v1::Institution::Emploi, v1::Institution::Social],
            )),
        }))
        .await
        .expect("consent")
        .into_inner()
        .consent
        .expect("consent");
    social
        .create_referral(t.as_social_worker(v1::CreateReferralRequest {
            idempotency_key: "otel-referral".into(),
            referral: Some(referral(&consent.case_id, &consent.consent_id, "Morgane")),
            local_note: "CANARY-NOTE santé".into(),
        }))
        .await
        .expect("referral");
    let emploi = t.store(Institution::Emploi).await;
    referral_held(&emploi, &consent.case_id).await;
    t.pilotage()
        .await
        .get_dashboard(t.as_steering(v1::GetDashboardRequest {}))
        .await
        .expect("dashboard");

    let spans = {
        let mut found = vec![];
        for _ in 0..100 {
            let flusher = guard.clone();
            tokio::task::spawn_blocking(move || flusher.force_flush())
                .await
                .expect("flush");
            found = receiver.spans.lock().expect("lock").clone();
            if trace_of(&found, "/passerelle.v1.EmploiService/ReceiveReferral").is_some()
                && trace_of(&found, "/passerelle.v1.SocialService/GetIndicators").is_some()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found
    };

    // The referral: the social worker's call, the relay's delivery, the employment side's reception.
    let referral_trace = trace_of(&spans, "/passerelle.v1.SocialService/CreateReferral")
        .expect("CreateReferral span");
    assert_eq!(
        trace_of(&spans, "/passerelle.v1.EmploiService/ReceiveReferral"),
        Some(referral_trace.clone()),
        "one trace across services"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.name == "outbox.deliver" && s.trace_id == referral_trace),
        "the outbox delivery is in the trace"
    );

    // The committee's dashboard: one trace through the steering service and both sources.
    let dashboard_trace =
        trace_of(&spans, "/passerelle.v1.PilotageService/GetDashboard").expect("GetDashboard span");
    assert_eq!(
        trace_of(&spans, "/passerelle.v1.EmploiService/GetIndicators"),
        Some(dashboard_trace.clone())
    );
    assert_eq!(
        trace_of(&spans, "/passerelle.v1.SocialService/GetIndicators"),
        Some(dashboard_trace)
    );

    // No span, attribute or event carries a personal value.
    for span in &spans {
        for value in all_values(span) {
            for personal in [
                "Morgane",
                "Le Gall",
                "1986-11-02",
                "4471234A",
                "06 12 34 56 78",
                "a.legall@example.org",
                "CANARY-NOTE",
            ] {
                assert!(
                    !value.contains(personal),
                    "span {} carries {personal}: {value}",
                    span.name
                );
            }
        }
    }

    // The service's metrics arrived too.
    let mut names = vec![];
    for _ in 0..100 {
        names = receiver.metric_names.lock().expect("lock").clone();
        if [
            "rpc.server.duration",
            "passerelle.boundary.decisions",
            "passerelle.outbox.pending",
            "db.client.connections.usage",
        ]
        .iter()
        .all(|n| names.iter().any(|m| m == n))
        {
            break;
        }
        let flusher = guard.clone();
        tokio::task::spawn_blocking(move || flusher.force_flush())
            .await
            .expect("flush");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for expected in [
        "rpc.server.duration",
        "passerelle.boundary.decisions",
        "passerelle.outbox.pending",
        "passerelle.outbox.oldest_age",
        "db.client.connections.usage",
    ] {
        assert!(
            names.iter().any(|m| m == expected),
            "metric {expected} missing from {names:?}"
        );
    }
    t.shutdown().await;
}
