//! The service's instruments. Without a configured exporter they record
//! into a no-op meter, at no cost worth measuring.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

fn meter() -> Meter {
    opentelemetry::global::meter("passerelle")
}

struct Instruments {
    rpc_duration: Histogram<f64>,
    boundary_decisions: Counter<u64>,
    boundary_shed: Counter<u64>,
    agreement_days_left: Gauge<i64>,
    outbox_pending: Gauge<u64>,
    outbox_oldest_age: Gauge<f64>,
    outbox_abandoned: Gauge<u64>,
    pool_connections: Gauge<u64>,
    write_batches: Gauge<u64>,
    write_changes: Gauge<u64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let m = meter();
        Instruments {
            rpc_duration: m
                .f64_histogram("rpc.server.duration")
                .with_unit("ms")
                .with_description("Duration of served RPCs")
                .build(),
            boundary_decisions: m
                .u64_counter("passerelle.boundary.decisions")
                .with_description("Boundary decisions recorded in the audit log")
                .build(),
            boundary_shed: m
                .u64_counter("passerelle.boundary.shed")
                .with_description(
                    "Refused calls past a peer's budget, answered without an audit row each",
                )
                .build(),
            agreement_days_left: m
                .i64_gauge("passerelle.agreement.days_left")
                .with_unit("d")
                .with_description("Days left in the agreement's term (negative once ended)")
                .build(),
            outbox_pending: m
                .u64_gauge("passerelle.outbox.pending")
                .with_description("Messages waiting for the partner")
                .build(),
            outbox_oldest_age: m
                .f64_gauge("passerelle.outbox.oldest_age")
                .with_unit("s")
                .with_description("Age of the oldest waiting message")
                .build(),
            outbox_abandoned: m
                .u64_gauge("passerelle.outbox.abandoned")
                .with_description("Messages refused for good, kept for review")
                .build(),
            pool_connections: m
                .u64_gauge("db.client.connections.usage")
                .with_description("Database pool connections by state")
                .build(),
            write_batches: m
                .u64_gauge("passerelle.write.batches")
                .with_description("Batches of changes committed since start (group commit)")
                .build(),
            write_changes: m
                .u64_gauge("passerelle.write.changes")
                .with_description(
                    "Changes those batches held since start: divided by the batches, the mean batch",
                )
                .build(),
        }
    })
}

/// One served RPC: its wire path and gRPC status code.
pub fn record_rpc(method: &str, status_code: i64, milliseconds: f64) {
    instruments().rpc_duration.record(
        milliseconds,
        &[
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.method", method.to_owned()),
            KeyValue::new("rpc.grpc.status_code", status_code),
        ],
    );
}

/// One boundary decision (allowed or denied), with its purpose and direction.
pub fn record_decision(
    decision: &'static str,
    purpose: Option<&'static str>,
    direction: &'static str,
) {
    instruments().boundary_decisions.add(
        1,
        &[
            KeyValue::new("decision", decision),
            KeyValue::new("purpose", purpose.unwrap_or("none")),
            KeyValue::new("direction", direction),
        ],
    );
}

/// Days left in the agreement's term, as this service reads it.
pub fn record_agreement_days_left(service: &'static str, days: i64) {
    instruments()
        .agreement_days_left
        .record(days, &[KeyValue::new("service", service)]);
}

/// One refused call shed past its peer's budget.
pub fn record_shed() {
    instruments().boundary_shed.add(1, &[]);
}

pub fn record_outbox(service: &'static str, pending: u64, abandoned: u64, oldest_age_seconds: f64) {
    let attrs = [KeyValue::new("service", service)];
    let i = instruments();
    i.outbox_pending.record(pending, &attrs);
    i.outbox_abandoned.record(abandoned, &attrs);
    i.outbox_oldest_age.record(oldest_age_seconds, &attrs);
}

pub fn record_pool(service: &'static str, used: u64, idle: u64) {
    let i = instruments();
    i.pool_connections.record(
        used,
        &[
            KeyValue::new("pool.name", service),
            KeyValue::new("state", "used"),
        ],
    );
    i.pool_connections.record(
        idle,
        &[
            KeyValue::new("pool.name", service),
            KeyValue::new("state", "idle"),
        ],
    );
}

/// The group commit's totals since start.
pub fn record_write_batches(service: &'static str, batches: u64, changes: u64) {
    let attrs = [KeyValue::new("service", service)];
    let i = instruments();
    i.write_batches.record(batches, &attrs);
    i.write_changes.record(changes, &attrs);
}
