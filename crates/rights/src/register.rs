//! The record of processing activities (GDPR art. 30) of one institution,
//! written from the contract (purposes, legal bases, categories, recipients)
//! and the agreement (parties, term, retention), with the crossings the
//! audit log shows over a period.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use passerelle_boundary::audit::{AuditEntry, Decision, Direction};
use passerelle_contract::{convert, v1};
use passerelle_domain::agreement::Agreement;
use passerelle_domain::{DataCategory, Institution};
use serde::Serialize;

use crate::catalogue::Catalogue;
use crate::render::{Document, Page, date};

/// One legal basis of a processing activity, with its reference and the RPCs that rest on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct BasisUse {
    pub basis: String,
    pub label: String,
    pub reference: String,
    pub rpcs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionLine {
    pub category: String,
    pub months_after_end: u32,
    pub source: String,
    pub confirmed: bool,
}

/// One processing activity: a purpose of the contract this institution takes part in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Activity {
    pub purpose: String,
    pub code: String,
    pub title: String,
    pub description: String,
    pub data_subjects: Vec<String>,
    pub legal_bases: Vec<BasisUse>,
    /// Labels of the categories of data its crossings may carry.
    pub data_categories: Vec<String>,
    pub recipients: Vec<String>,
    pub sources: Vec<String>,
    pub transfers_outside_eu: String,
    /// Empty where the agreement sets none: the register says so.
    pub retention: Vec<RetentionLine>,
    pub rpcs: Vec<String>,
}

/// Crossings recorded over the period, by purpose, direction, partner and decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrossingCount {
    pub purpose: String,
    pub direction: String,
    pub counterpart: String,
    pub decision: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Register {
    pub controller: String,
    pub joint_controllers: Vec<String>,
    pub agreement_id: String,
    pub agreement_name: String,
    pub parties: Vec<String>,
    pub term: String,
    pub generated_at: DateTime<Utc>,
    pub activities: Vec<Activity>,
    pub security_measures: Vec<String>,
    pub period_from: DateTime<Utc>,
    pub period_to: DateTime<Utc>,
    pub crossings_made: Vec<CrossingCount>,
}

/// What the system does to protect the data (art. 30(1)(g), art. 32). Each
/// line is a property of the code, tested in the project's own suite.
const SECURITY_MEASURES: &[&str] = &[
    "Authentification de chaque appel par jeton signé (EdDSA), émetteur, audience, durée et rôle vérifiés ; TLS mutuel entre services lorsqu'il est configuré.",
    "Liste d'autorisation par RPC tirée du contrat : refus par défaut, institution et rôle vérifiés.",
    "Besoin d'en connaître : un agent n'atteint que les dossiers des personnes qu'il accompagne, a orientées ou diagnostiquées, ou ceux de son agence pour le coordinateur.",
    "Consentement vérifié à l'envoi, à chaque remise et à la réception ; un retrait prend effet à l'appel suivant.",
    "Minimisation : tout champ dont la catégorie n'est pas permise par l'échange est retiré avant de partir ; les données LOCAL_ONLY ne quittent jamais leur service.",
    "Journal d'audit append-only chaîné par empreintes SHA-256, dont la tête est confiée régulièrement au partenaire.",
    "Outbox transactionnelle : aucun message perdu ni dupliqué, chaque remise auditée.",
    "Secret statistique : aucune cellule publiée sous le seuil, suppression secondaire ; le pilotage ne reçoit que des agrégats.",
    "Limites d'entrée (taille, débit, délais) et refus comptés par partenaire.",
];

fn institution_name(i: Institution) -> String {
    v1::Institution::from(i).as_str_name().to_owned()
}

fn category_name(c: DataCategory) -> String {
    v1::DataCategory::from(c).as_str_name().to_owned()
}

impl Register {
    /// The register of `institution` under `agreement`, counting the
    /// crossings of `entries` made in `[from, to)`.
    pub fn build(
        catalogue: &Catalogue,
        agreement: &Agreement,
        institution: Institution,
        entries: &[AuditEntry],
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        generated_at: DateTime<Utc>,
    ) -> Register {
        let own = institution_name(institution);
        let mut activities = vec![];
        for purpose in &catalogue.purposes {
            let domain_purpose =
                v1::Purpose::from_str_name(&purpose.name).and_then(convert::purpose);
            // A processing the agreement does not run is not in its register.
            if domain_purpose.is_some_and(|p| !agreement.runs(p)) {
                continue;
            }
            let rpcs: Vec<_> = catalogue
                .rpcs
                .iter()
                .filter(|r| {
                    r.crossing
                        .as_ref()
                        .is_some_and(|c| c.purpose == purpose.name)
                        && (r.server == own || r.callers.contains(&own))
                })
                .collect();
            if rpcs.is_empty() {
                continue;
            }
            let mut bases: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
            let mut categories = BTreeSet::new();
            let mut recipients = BTreeSet::new();
            let mut sources = BTreeSet::new();
            for rpc in &rpcs {
                let Some(crossing) = &rpc.crossing else {
                    continue;
                };
                bases
                    .entry((
                        crossing.legal_basis.clone(),
                        crossing.legal_reference.clone(),
                    ))
                    .or_default()
                    .push(rpc.path.clone());
                categories.extend(
                    crossing
                        .categories
                        .iter()
                        .filter(|c| *c != "DATA_CATEGORY_PUBLIC")
                        .cloned(),
                );
                let (to, from) = rpc.flows_for(&own);
                recipients.extend(to);
                sources.extend(from);
            }
            let retention = agreement
                .retention
                .iter()
                .filter(|r| Some(r.purpose) == domain_purpose)
                .flat_map(|r| {
                    r.categories.iter().map(move |c| RetentionLine {
                        category: catalogue.label(&category_name(*c)),
                        months_after_end: r.months_after_end,
                        source: r.source.clone(),
                        confirmed: r.confirmed,
                    })
                })
                .collect();
            activities.push(Activity {
                purpose: purpose.name.clone(),
                code: purpose.code.clone(),
                title: purpose.title.clone(),
                description: purpose.description.clone(),
                data_subjects: purpose.data_subjects.clone(),
                legal_bases: bases
                    .into_iter()
                    .map(|((basis, reference), rpcs)| BasisUse {
                        label: catalogue.label(&basis),
                        basis,
                        reference,
                        rpcs,
                    })
                    .collect(),
                data_categories: categories.iter().map(|c| catalogue.label(c)).collect(),
                recipients: recipients.iter().map(|r| catalogue.label(r)).collect(),
                sources: sources.iter().map(|s| catalogue.label(s)).collect(),
                transfers_outside_eu: "Aucun : les destinataires sont des organismes publics français ; aucun échange ne sort de l'Union européenne.".into(),
                retention,
                rpcs: rpcs.iter().map(|r| r.path.clone()).collect(),
            });
        }
        let mut counts: BTreeMap<(String, String, String, String), u64> = BTreeMap::new();
        for e in entries.iter().filter(|e| e.at >= from && e.at < to) {
            let Some(purpose) = e.purpose else { continue };
            let purpose = v1::Purpose::from(purpose).as_str_name().to_owned();
            let direction = match e.direction {
                Direction::Inbound => "reçu ou consulté",
                Direction::Outbound => "transmis",
            };
            let counterpart = e
                .counterpart
                .map(|c| catalogue.label(&institution_name(c)))
                .unwrap_or_else(|| "non identifié".into());
            let decision = match e.decision {
                Decision::Allowed => "autorisé",
                Decision::Denied => "refusé",
            };
            *counts
                .entry((purpose, direction.into(), counterpart, decision.into()))
                .or_default() += 1;
        }
        let crossings_made = counts
            .into_iter()
            .map(
                |((purpose, direction, counterpart, decision), count)| CrossingCount {
                    purpose: catalogue
                        .purpose(&purpose)
                        .map(|p| p.title.clone())
                        .unwrap_or(purpose),
                    direction,
                    counterpart,
                    decision,
                    count,
                },
            )
            .collect();
        let joint_controllers = [Institution::Emploi, Institution::Social]
            .into_iter()
            .filter(|i| *i != institution)
            .map(|i| catalogue.label(&institution_name(i)))
            .collect();
        Register {
            controller: catalogue.label(&own),
            joint_controllers,
            agreement_id: agreement.id.clone(),
            agreement_name: agreement.name.clone(),
            parties: vec![
                agreement.parties.employment.clone(),
                agreement.parties.departement.clone(),
            ],
            term: format!(
                "du {} au {}",
                agreement.term.starts_on.format("%d/%m/%Y"),
                agreement.term.ends_on.format("%d/%m/%Y")
            ),
            generated_at,
            activities,
            security_measures: SECURITY_MEASURES.iter().map(|s| (*s).to_owned()).collect(),
            period_from: from,
            period_to: to,
            crossings_made,
        }
    }

    fn retention_text(a: &Activity) -> Vec<String> {
        if a.retention.is_empty() {
            return vec!["Non fixée par la convention : à définir par les deux délégués".into()];
        }
        a.retention
            .iter()
            .map(|r| {
                format!(
                    "{} : {} mois après la fin de l'accompagnement — {}{}",
                    r.category,
                    r.months_after_end,
                    r.source,
                    if r.confirmed { "" } else { " (à confirmer)" }
                )
            })
            .collect()
    }
}

impl Document for Register {
    fn title(&self) -> String {
        format!("Registre des activités de traitement — {}", self.controller)
    }

    fn write(&self, page: &mut dyn Page) {
        page.p(&format!(
            "Responsable de traitement : {}. Responsable(s) conjoint(s) (RGPD art. 26) : {}.",
            self.controller,
            self.joint_controllers.join(", ")
        ));
        page.p(&format!(
            "Convention : {} ({}), {} ; parties : {}. Établi le {}.",
            self.agreement_name,
            self.agreement_id,
            self.term,
            self.parties.join(" ; "),
            date(self.generated_at)
        ));
        for a in &self.activities {
            page.h2(&a.title);
            page.p(&a.description);
            let mut rows = vec![
                ("Finalité".to_owned(), a.code.clone()),
                ("Personnes concernées".into(), a.data_subjects.join(" ; ")),
            ];
            for b in &a.legal_bases {
                rows.push((
                    "Base légale".into(),
                    format!("{} — {} ({})", b.label, b.reference, b.rpcs.join(", ")),
                ));
            }
            rows.push(("Catégories de données".into(), or_none(&a.data_categories)));
            rows.push(("Destinataires".into(), or_none(&a.recipients)));
            rows.push(("Provenance".into(), or_none(&a.sources)));
            rows.push(("Transferts hors UE".into(), a.transfers_outside_eu.clone()));
            for r in Self::retention_text(a) {
                rows.push(("Conservation".into(), r));
            }
            page.definitions(&rows);
        }
        page.h2("Mesures de sécurité");
        page.list(&self.security_measures);
        page.h2(&format!(
            "Échanges réalisés du {} au {}",
            date(self.period_from),
            date(self.period_to)
        ));
        let rows: Vec<Vec<String>> = self
            .crossings_made
            .iter()
            .map(|c| {
                vec![
                    c.purpose.clone(),
                    c.direction.clone(),
                    c.counterpart.clone(),
                    c.decision.clone(),
                    c.count.to_string(),
                ]
            })
            .collect();
        page.table(
            &["Finalité", "Sens", "Institution", "Décision", "Nombre"],
            &rows,
        );
    }
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "aucun".into()
    } else {
        items.join(" ; ")
    }
}
