//! The person's access report (GDPR art. 15): every value held, each with
//! its category, purposes and retention date, read from the annotations of
//! the messages that describe what is held; and every crossing about the
//! case from the audit log, with its date, recipient, purpose, legal basis
//! and decision (CJEU C-579/21).

use chrono::{DateTime, Months, Utc};
use passerelle_boundary::audit::{AuditEntry, AuditRecord, Decision, Direction};
use passerelle_contract::{convert, v1};
use passerelle_domain::agreement::Agreement;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, ReflectMessage, Value};
use serde::Serialize;

use crate::catalogue::Catalogue;
use crate::render::{Document, Page, date, date_time};

/// One value held about the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldValue {
    pub section: String,
    /// Where it sits, e.g. `referral.person.first_name`.
    pub path: String,
    pub value: String,
    /// The category's value name, e.g. `DATA_CATEGORY_IDENTITY`.
    pub category: String,
    pub category_label: String,
    /// Titles of the purposes it is kept for.
    pub purposes: Vec<String>,
    /// When it is erased: a date, or the rule while the case is open.
    pub kept_until: String,
}

/// One crossing about the case, as the audit log recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrossingLine {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub direction: String,
    /// The other institution: the recipient of what was sent, or the one
    /// that sent or consulted.
    pub counterpart: String,
    pub purpose: String,
    pub legal_basis: String,
    pub decision: String,
    pub categories: Vec<String>,
    pub fields: Vec<String>,
}

/// One institution's part of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    pub institution: String,
    pub values: Vec<HeldValue>,
    pub crossings: Vec<CrossingLine>,
    /// Values this institution keeps for itself alone: listed in its own
    /// report, counted in a partner's.
    pub local_only_values: usize,
    /// Whether `values` include the local-only ones (the institution's own part).
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessReport {
    pub case_id: String,
    pub generated_at: DateTime<Utc>,
    pub requested_from: String,
    pub agreement_id: String,
    pub parts: Vec<Part>,
}

/// How long a value is kept: the agreement's longest rule among the purposes
/// it is kept for, counted from the end of the case.
#[derive(Debug, Clone, Copy)]
pub struct Retention<'a> {
    pub agreement: &'a Agreement,
    /// When the case ended; `None` while it is open.
    pub case_ended_at: Option<DateTime<Utc>>,
}

impl Retention<'_> {
    /// Months after the end for a value of `category` kept for `purposes`
    /// (value names); `None` where the agreement sets no rule.
    pub fn months(&self, purposes: &[String], category: &str) -> Option<u32> {
        let category =
            v1::DataCategory::from_str_name(category).and_then(convert::data_category)?;
        purposes
            .iter()
            .filter_map(|p| v1::Purpose::from_str_name(p).and_then(convert::purpose))
            .filter_map(|p| self.agreement.retention_for(p, category))
            .map(|r| r.months_after_end)
            .max()
    }

    /// The day it may be kept until, once the case has ended.
    pub fn until(&self, purposes: &[String], category: &str) -> Option<DateTime<Utc>> {
        let months = self.months(purposes, category)?;
        self.case_ended_at?.checked_add_months(Months::new(months))
    }

    fn text(&self, purposes: &[String], category: &str) -> String {
        if category == "DATA_CATEGORY_PUBLIC" {
            return "avec le dossier (code public, rien de personnel)".into();
        }
        match (self.months(purposes, category), self.case_ended_at) {
            (None, _) => "non fixée par la convention".into(),
            (Some(months), None) => {
                format!("pendant l'accompagnement, puis {months} mois après sa fin")
            }
            (Some(_), Some(_)) => self
                .until(purposes, category)
                .map(|d| format!("jusqu'au {}", date(d)))
                .unwrap_or_default(),
        }
    }
}

/// Every value set in `held` (messages such as `SubjectData`), each with
/// the category of its field and the purposes of its top-level field.
pub fn held_values(
    catalogue: &Catalogue,
    held: &[DynamicMessage],
    retention: Retention<'_>,
) -> Vec<HeldValue> {
    let mut out = vec![];
    for message in held {
        for (field, value) in message.fields() {
            let top = Top {
                section: catalogue.field_label(&field),
                purposes: catalogue.held_for(&field),
            };
            walk(
                catalogue,
                &top,
                &retention,
                &field,
                field.name(),
                value,
                &mut out,
            );
        }
    }
    out
}

struct Top {
    section: String,
    purposes: Vec<String>,
}

fn walk(
    catalogue: &Catalogue,
    top: &Top,
    retention: &Retention<'_>,
    field: &FieldDescriptor,
    path: &str,
    value: &Value,
    out: &mut Vec<HeldValue>,
) {
    let leaf = |text: String, out: &mut Vec<HeldValue>| {
        let category = catalogue
            .category_of(field)
            .unwrap_or_else(|| "DATA_CATEGORY_UNSPECIFIED".into());
        out.push(HeldValue {
            section: top.section.clone(),
            path: path.to_owned(),
            value: text,
            category_label: catalogue.label(&category),
            purposes: top
                .purposes
                .iter()
                .map(|p| {
                    catalogue
                        .purpose(p)
                        .map(|i| i.title.clone())
                        .unwrap_or_else(|| p.clone())
                })
                .collect(),
            kept_until: retention.text(&top.purposes, &category),
            category,
        });
    };
    match value {
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(
                    catalogue,
                    top,
                    retention,
                    field,
                    &format!("{path}[{i}]"),
                    item,
                    out,
                );
            }
        }
        Value::Message(m) if m.descriptor().full_name() == "google.protobuf.Timestamp" => {
            let seconds = m
                .get_field_by_name("seconds")
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            let text = DateTime::from_timestamp(seconds, 0)
                .map(date_time)
                .unwrap_or_else(|| seconds.to_string());
            leaf(text, out);
        }
        Value::Message(m) => {
            for (inner, v) in m.fields() {
                walk(
                    catalogue,
                    top,
                    retention,
                    &inner,
                    &format!("{path}.{}", inner.name()),
                    v,
                    out,
                );
            }
        }
        Value::EnumNumber(n) => {
            let text = match field.kind() {
                Kind::Enum(e) => e
                    .get_value(*n)
                    .map(|v| catalogue.enum_text(&e, v.name()))
                    .unwrap_or_else(|| n.to_string()),
                _ => n.to_string(),
            };
            leaf(text, out);
        }
        Value::Bool(b) => leaf(if *b { "oui" } else { "non" }.into(), out),
        Value::String(s) => leaf(s.clone(), out),
        Value::Bytes(b) => leaf(format!("{} octets", b.len()), out),
        Value::I32(n) => leaf(n.to_string(), out),
        Value::I64(n) => leaf(n.to_string(), out),
        Value::U32(n) => leaf(n.to_string(), out),
        Value::U64(n) => leaf(n.to_string(), out),
        Value::F32(n) => leaf(n.to_string(), out),
        Value::F64(n) => leaf(n.to_string(), out),
        Value::Map(m) => {
            for (k, v) in m {
                walk(
                    catalogue,
                    top,
                    retention,
                    field,
                    &format!("{path}[{k:?}]"),
                    v,
                    out,
                );
            }
        }
    }
}

/// A label without its explanation in brackets, for a table cell.
fn short(label: &str) -> &str {
    label.split(" (").next().unwrap_or(label)
}

/// Values grouped by section, in the order they were listed.
fn sections(values: &[HeldValue]) -> Vec<(&str, Vec<&HeldValue>)> {
    let mut out: Vec<(&str, Vec<&HeldValue>)> = vec![];
    for v in values {
        match out.last_mut() {
            Some((section, items)) if *section == v.section => items.push(v),
            _ => out.push((v.section.as_str(), vec![v])),
        }
    }
    out
}

/// An audit record as the contract shows it.
pub fn record_view(record: &AuditRecord, entry: &AuditEntry) -> v1::AuditRecordView {
    v1::AuditRecordView {
        seq: record.seq,
        at: Some(convert::timestamp(entry.at)),
        direction: match entry.direction {
            Direction::Inbound => v1::AuditDirection::Inbound,
            Direction::Outbound => v1::AuditDirection::Outbound,
        } as i32,
        agent: entry.agent.clone().unwrap_or_default(),
        agent_institution: entry
            .agent_institution
            .map(|i| v1::Institution::from(i) as i32)
            .unwrap_or_default(),
        agent_role: entry
            .agent_role
            .map(|r| v1::Role::from(r) as i32)
            .unwrap_or_default(),
        counterpart: entry
            .counterpart
            .map(|i| v1::Institution::from(i) as i32)
            .unwrap_or_default(),
        method: entry.method.clone(),
        case_id: entry
            .case_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        purpose: entry
            .purpose
            .map(|p| v1::Purpose::from(p) as i32)
            .unwrap_or_default(),
        legal_basis: entry
            .legal_basis
            .map(|b| v1::LegalBasis::from(b) as i32)
            .unwrap_or_default(),
        consent_id: entry
            .consent_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        categories: entry
            .categories
            .iter()
            .map(|c| v1::DataCategory::from(*c) as i32)
            .collect(),
        fields: entry.fields.clone(),
        decision: match entry.decision {
            Decision::Allowed => v1::AuditDecision::Allowed,
            Decision::Denied => v1::AuditDecision::Denied,
        } as i32,
        reason: entry.reason.clone().unwrap_or_default(),
        hash: record.hash.clone(),
    }
}

/// Whether an audit record is a crossing (it names a purpose), not a local refusal.
pub fn is_crossing(view: &v1::AuditRecordView) -> bool {
    view.purpose != v1::Purpose::Unspecified as i32
}

/// The lines of the report for crossings recorded by one institution.
pub fn crossing_lines(catalogue: &Catalogue, views: &[v1::AuditRecordView]) -> Vec<CrossingLine> {
    let name = |n: i32, e: &str| {
        catalogue
            .pool
            .get_enum_by_name(e)
            .and_then(|d| d.get_value(n))
            .map(|v| v.name().to_owned())
            .unwrap_or_default()
    };
    views
        .iter()
        .filter(|v| is_crossing(v))
        .map(|v| {
            let purpose = name(v.purpose, "passerelle.v1.Purpose");
            CrossingLine {
                seq: v.seq,
                at: v
                    .at
                    .as_ref()
                    .and_then(|t| DateTime::from_timestamp(t.seconds, 0))
                    .unwrap_or_default(),
                direction: catalogue.label(&name(v.direction, "passerelle.v1.AuditDirection")),
                counterpart: catalogue.label(&name(v.counterpart, "passerelle.v1.Institution")),
                purpose: catalogue
                    .purpose(&purpose)
                    .map(|p| p.title.clone())
                    .unwrap_or(purpose),
                legal_basis: catalogue.label(&name(v.legal_basis, "passerelle.v1.LegalBasis")),
                decision: catalogue.label(&name(v.decision, "passerelle.v1.AuditDecision")),
                categories: v
                    .categories
                    .iter()
                    .map(|c| catalogue.label(&name(*c, "passerelle.v1.DataCategory")))
                    .collect(),
                fields: v.fields.clone(),
            }
        })
        .collect()
}

impl AccessReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

impl Document for AccessReport {
    fn title(&self) -> String {
        format!("Vos données — dossier {}", self.case_id)
    }

    fn write(&self, page: &mut dyn Page) {
        page.p(&format!(
            "Rapport établi le {} par {} au titre de votre droit d'accès (RGPD art. 15), dans le cadre de la convention {}.",
            date(self.generated_at),
            self.requested_from,
            self.agreement_id
        ));
        page.note("Vous pouvez demander la rectification d'une donnée inexacte, son effacement, la limitation de son traitement, vous opposer au traitement fondé sur une mission d'intérêt public, et retirer votre consentement à tout moment, auprès du délégué à la protection des données de l'une ou l'autre institution.");
        for part in &self.parts {
            page.h2(&format!("Données détenues par {}", part.institution));
            for (section, values) in sections(&part.values) {
                page.h3(section);
                page.note(&format!("Finalités : {}.", values[0].purposes.join(", ")));
                let rows: Vec<Vec<String>> = values
                    .iter()
                    .map(|v| {
                        vec![
                            v.path.clone(),
                            v.value.clone(),
                            short(&v.category_label).to_owned(),
                            v.kept_until.clone(),
                        ]
                    })
                    .collect();
                page.table(&["Donnée", "Valeur", "Catégorie", "Conservation"], &rows);
            }
            if !part.complete && part.local_only_values > 0 {
                page.note(&format!(
                    "{} autre(s) donnée(s) ne quittent jamais {} : elles figurent dans le rapport qu'elle établit elle-même.",
                    part.local_only_values, part.institution
                ));
            }
            page.h3(&format!("Échanges enregistrés par {}", part.institution));
            let rows: Vec<Vec<String>> = part
                .crossings
                .iter()
                .map(|x| {
                    vec![
                        date_time(x.at),
                        x.direction.clone(),
                        x.counterpart.clone(),
                        x.purpose.clone(),
                        short(&x.legal_basis).to_owned(),
                        x.decision.clone(),
                        x.fields.join(", "),
                    ]
                })
                .collect();
            page.table(
                &[
                    "Date",
                    "Sens",
                    "Institution",
                    "Finalité",
                    "Base légale",
                    "Décision",
                    "Données",
                ],
                &rows,
            );
        }
    }
}
