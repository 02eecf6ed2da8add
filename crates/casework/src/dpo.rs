//! The data protection officer's RPCs at an institution's service: the
//! register of processing, the audit log's search and verification (against
//! the heads the partner keeps), the person's access report alone or joint,
//! and the crossings that serve the partner's DPO. Every document is built
//! by `passerelle-rights` from the contract's annotations and the audit log.

use chrono::{DateTime, Duration, Utc};
use passerelle_boundary::audit::{AuditEntry, Direction, verify_chain};
use passerelle_boundary::layer::caller;
use passerelle_contract::{convert, v1};
use passerelle_domain::{DomainError, FieldError, LegalBasis, Purpose};
use passerelle_rights::access::{self, AccessReport, Part, Retention};
use passerelle_rights::{Catalogue, Document, Register};
use passerelle_runtime::AppError;
use passerelle_storage::audit::{AuditAnchor, AuditFilter};
use prost_reflect::DynamicMessage;
use tonic::{Request, Response, Status};

use crate::api::{CaseworkRpcs, case_id, required};
use crate::app::InstitutionApp;
use crate::casework::{CaseParts, Casework};
use passerelle_runtime::idempotency::local;

type Answer<T> = Result<Response<T>, Status>;

/// Largest page of an audit search.
const MAX_AUDIT_PAGE: usize = 1_000;
const DEFAULT_AUDIT_PAGE: usize = 100;

pub const GET_SUBJECT_ACCESS_PART: &str = "GetSubjectAccessPart";
pub const RECEIVE_AUDIT_ANCHOR: &str = "ReceiveAuditAnchor";
pub const GET_AUDIT_ANCHORS: &str = "GetAuditAnchors";

fn internal(why: impl std::fmt::Display) -> AppError {
    AppError(DomainError::internal(std::io::Error::other(
        why.to_string(),
    )))
}

/// `doc` in the format asked for; HTML by default: the document a person reads.
fn document(format: i32, doc: &impl Document) -> v1::Document {
    let format = v1::DocumentFormat::try_from(format).unwrap_or(v1::DocumentFormat::Unspecified);
    let (content_type, body) = match format {
        v1::DocumentFormat::Json => ("application/json", doc.to_json()),
        v1::DocumentFormat::Markdown => ("text/markdown; charset=utf-8", doc.to_markdown()),
        v1::DocumentFormat::Html | v1::DocumentFormat::Unspecified => {
            ("text/html; charset=utf-8", doc.to_html())
        }
    };
    v1::Document {
        content_type: content_type.into(),
        body,
    }
}

fn institutions(list: &[passerelle_domain::Institution]) -> Vec<i32> {
    list.iter()
        .map(|i| v1::Institution::from(*i) as i32)
        .collect()
}

fn optional_time(
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, AppError> {
    t.map(|t| convert::timestamp_from(field, Some(t)))
        .transpose()
        .map_err(AppError::from)
}

/// What this institution holds about the person of a case: what may be
/// shown to the partner, what it keeps for itself, and when the case ended.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub shared: v1::SubjectData,
    pub local: v1::LocalSubjectData,
    pub ended_at: Option<DateTime<Utc>>,
}

impl Casework {
    /// Everything held about the person of `case_id` here (nothing for a case
    /// this side does not know).
    pub async fn held(&self, case_id: &str) -> Result<Held, AppError> {
        let Some(CaseParts {
            case,
            referral,
            diagnoses,
            consents,
            notes,
            plan,
            plan_summaries: summaries,
            orientations,
            ..
        }) = self
            .case_parts(case_id)
            .await?
            .map(std::sync::Arc::unwrap_or_clone)
        else {
            return Ok(Held::default());
        };
        Ok(Held {
            shared: v1::SubjectData {
                case: Some((&case).into()),
                referral: referral.as_ref().map(Into::into),
                diagnoses: diagnoses.iter().map(Into::into).collect(),
                consents: consents.iter().map(Into::into).collect(),
                plan_summaries: summaries.iter().map(Into::into).collect(),
                orientations: orientations.iter().map(Into::into).collect(),
            },
            local: v1::LocalSubjectData {
                local_notes: notes
                    .iter()
                    .map(|n| v1::LocalNoteView {
                        topic: n.topic.clone(),
                        note: n.note.clone(),
                        written_at: Some(convert::timestamp(n.written_at)),
                    })
                    .collect(),
                participant: case.participant.as_ref().map(convert::participant_profile),
                plan: plan.as_ref().map(Into::into),
                orientation_grids: orientations
                    .iter()
                    .filter(|o| !o.criteria.is_empty())
                    .map(Into::into)
                    .collect(),
            },
            ended_at: case.ended_at(),
        })
    }

    /// The audit records about `case_id`, as the contract shows them.
    pub async fn case_audit(&self, case_id: &str) -> Result<Vec<v1::AuditRecordView>, AppError> {
        let filter = AuditFilter {
            case_id: Some(case_id.to_owned()),
            limit: usize::MAX,
            ..AuditFilter::default()
        };
        Ok(self
            .store
            .audit()
            .search(&filter)
            .await?
            .iter()
            .map(|(record, entry)| access::record_view(record, entry))
            .collect())
    }

    fn dynamic<M: prost::Message + prost::Name>(
        catalogue: &Catalogue,
        message: &M,
    ) -> Result<DynamicMessage, AppError> {
        catalogue
            .dynamic(message)
            .ok_or_else(|| internal(format!("{} is not in the contract", M::full_name())))
    }

    /// This institution's own part of an access report: everything it holds.
    pub async fn own_part(
        &self,
        catalogue: &Catalogue,
        case_id: &str,
    ) -> Result<(Part, Option<DateTime<Utc>>), AppError> {
        let held = self.held(case_id).await?;
        let retention = Retention {
            agreement: &self.agreement,
            case_ended_at: held.ended_at,
        };
        let messages = [
            Self::dynamic(catalogue, &held.shared)?,
            Self::dynamic(catalogue, &held.local)?,
        ];
        let views = self.case_audit(case_id).await?;
        Ok((
            Part {
                institution: catalogue.label(v1::Institution::from(self.own()).as_str_name()),
                values: access::held_values(catalogue, &messages, retention),
                crossings: access::crossing_lines(catalogue, &views),
                local_only_values: 0,
                complete: true,
            },
            held.ended_at,
        ))
    }

    /// The record of what was received from the partner for the person's
    /// access report.
    fn received_entry(
        &self,
        caller: &passerelle_boundary::Caller,
        case_id: &str,
        fields: Vec<String>,
    ) -> AuditEntry {
        let mut entry = self.crossings.sending_entry(
            Some(caller),
            self.partner(),
            case_id,
            Purpose::SubjectAccess,
            &self.partner_path(GET_SUBJECT_ACCESS_PART),
        );
        entry.direction = Direction::Inbound;
        entry.legal_basis = Some(LegalBasis::LegalObligation);
        entry.fields = fields;
        entry
    }
}

impl CaseworkRpcs {
    fn catalogue(&self) -> Result<&Catalogue, Status> {
        Ok(&self.app()?.catalogue)
    }

    /// The case a DPO's request names: well formed, within the caller's
    /// reach, and held here.
    async fn known_case_of<T>(
        &self,
        request: &Request<T>,
        case_id_of: impl Fn(&T) -> &str,
    ) -> Result<String, Status> {
        let id = case_id("case_id", case_id_of(request.get_ref()))?;
        self.reach(request, &id).await?;
        self.app()?.casework.known_case(&id).await?;
        Ok(id)
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetProcessingRegister"))]
    pub async fn get_processing_register(
        &self,
        request: Request<v1::GetProcessingRegisterRequest>,
    ) -> Answer<v1::GetProcessingRegisterResponse> {
        let (app, m) = (self.app()?, request.get_ref());
        let cw = &app.casework;
        let now = cw.now();
        // Up to now included: what was just recorded counts.
        let to = optional_time("to", m.to.as_ref())?.unwrap_or(now + Duration::microseconds(1));
        let from = optional_time("from", m.from.as_ref())?.unwrap_or(to - Duration::days(365));
        if from >= to {
            return Err(AppError::from(FieldError::new("from", "is not before to")).into());
        }
        let filter = AuditFilter {
            from: Some(from),
            to: Some(to),
            limit: usize::MAX,
            ..AuditFilter::default()
        };
        let entries: Vec<AuditEntry> = cw
            .store
            .audit()
            .search(&filter)
            .await
            .map_err(AppError::from)?
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let register = Register::build(
            self.catalogue()?,
            &cw.agreement,
            cw.own(),
            &entries,
            (from, to),
            now,
        );
        let document = document(m.format, &register);
        Ok(Response::new(v1::GetProcessingRegisterResponse {
            document: Some(document),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SearchAudit"))]
    pub async fn search_audit(
        &self,
        request: Request<v1::SearchAuditRequest>,
    ) -> Answer<v1::SearchAuditResponse> {
        let (app, m) = (self.app()?, request.get_ref());
        let case = match m.case_id.trim() {
            "" => None,
            id => Some(case_id("case_id", id)?),
        };
        let agent = passerelle_domain::person::optional_text(
            "agent",
            &m.agent,
            passerelle_domain::person::MAX_SHORT_TEXT,
        )
        .map_err(AppError::from)?;
        let purpose = match v1::Purpose::try_from(m.purpose) {
            Ok(v1::Purpose::Unspecified) => None,
            _ => Some(
                convert::enum_field("purpose", m.purpose, convert::purpose)
                    .map_err(AppError::from)?,
            ),
        };
        let decision = match v1::AuditDecision::try_from(m.decision) {
            Ok(v1::AuditDecision::Unspecified) => None,
            Ok(v1::AuditDecision::Allowed) => Some(passerelle_boundary::Decision::Allowed),
            Ok(v1::AuditDecision::Denied) => Some(passerelle_boundary::Decision::Denied),
            Err(_) => {
                return Err(
                    AppError::from(FieldError::new("decision", "is not a decision")).into(),
                );
            }
        };
        let limit = match m.limit {
            0 => DEFAULT_AUDIT_PAGE,
            n if n as usize > MAX_AUDIT_PAGE => {
                return Err(AppError::from(FieldError::new(
                    "limit",
                    format!("is above {MAX_AUDIT_PAGE}"),
                ))
                .into());
            }
            n => n as usize,
        };
        if m.after_seq < 0 {
            return Err(AppError::from(FieldError::new("after_seq", "is negative")).into());
        }
        let filter = AuditFilter {
            case_id: case,
            agent,
            purpose,
            decision,
            from: optional_time("from", m.from.as_ref())?,
            to: optional_time("to", m.to.as_ref())?,
            after_seq: m.after_seq,
            limit,
        };
        let found = app
            .casework
            .store
            .audit()
            .search(&filter)
            .await
            .map_err(AppError::from)?;
        let next_after_seq = if found.len() == limit {
            found.last().map(|(r, _)| r.seq).unwrap_or_default()
        } else {
            0
        };
        Ok(Response::new(v1::SearchAuditResponse {
            records: found
                .iter()
                .map(|(r, e)| access::record_view(r, e))
                .collect(),
            next_after_seq,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "VerifyAudit"))]
    pub async fn verify_audit(
        &self,
        _request: Request<v1::VerifyAuditRequest>,
    ) -> Answer<v1::VerifyAuditResponse> {
        let app = self.app()?;
        let audit = app.casework.store.audit();
        let records = audit.records().await.map_err(AppError::from)?;
        let chain = verify_chain(&records);
        // The heads the partner keeps of this log; without a partner, none.
        let anchors: Vec<v1::AuditAnchor> = match &app.partner {
            Some(partner) => {
                let path = app.casework.partner_path(GET_AUDIT_ANCHORS);
                let call = partner.request(v1::GetAuditAnchorsRequest {})?;
                let answer: v1::GetAuditAnchorsResponse =
                    partner.unary(&path, call).await.map_err(|s| {
                        tracing::warn!(code = ?s.code(), "the partner's anchors are unavailable");
                        Status::unavailable("the partner's anchors are unavailable")
                    })?;
                answer.anchors
            }
            None => vec![],
        };
        let seqs: Vec<i64> = anchors.iter().map(|a| a.seq).collect();
        let held = audit.hashes_at(&seqs).await.map_err(AppError::from)?;
        let first_differing = passerelle_rights::audit::first_differing_anchor(
            &anchors
                .iter()
                .map(|a| (a.seq, a.hash.clone()))
                .collect::<Vec<_>>(),
            &held,
        );
        Ok(Response::new(v1::VerifyAuditResponse {
            records: records.len() as i64,
            chain_intact: chain.is_ok(),
            first_broken_seq: chain.err().unwrap_or_default(),
            anchors_checked: anchors.len() as u32,
            anchors_match: first_differing.is_none(),
            first_differing_seq: first_differing.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "EraseSubjectData"))]
    pub async fn erase_subject_data(
        &self,
        request: Request<v1::EraseSubjectDataRequest>,
    ) -> Answer<v1::EraseSubjectDataResponse> {
        let app = self.app()?;
        let case_id = case_id("case_id", &request.get_ref().case_id)?;
        self.reach(&request, &case_id).await?;
        // Once erased, the case is no longer known: a replay is answered
        // from the idempotency record, and a new request erases nothing.
        let (l, m) = (local(&request)?, request.get_ref());
        let outcome = app
            .casework
            .erase(l.call(&m.idempotency_key), &case_id)
            .await?;
        Ok(Response::new(v1::EraseSubjectDataResponse {
            erased: outcome.erased,
            notified: institutions(&outcome.notified),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RectifySubjectData"))]
    pub async fn rectify_subject_data(
        &self,
        request: Request<v1::RectifySubjectDataRequest>,
    ) -> Answer<v1::RectifySubjectDataResponse> {
        let app = self.app()?;
        let case_id = self.known_case_of(&request, |m| &m.case_id).await?;
        let (l, m) = (local(&request)?, request.get_ref());
        let (person, contact) =
            crate::rights::corrected_parts(m.person.as_ref(), m.contact.as_ref())
                .map_err(AppError::from)?;
        if person.is_none() && contact.is_none() {
            return Err(AppError::from(FieldError::new(
                "person",
                "or contact is required: what should the data read?",
            ))
            .into());
        }
        let outcome = app
            .casework
            .rectify(l.call(&m.idempotency_key), &case_id, person, contact)
            .await?;
        Ok(Response::new(v1::RectifySubjectDataResponse {
            rectified_fields: outcome.rectified,
            notified: institutions(&outcome.notified),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RestrictProcessing"))]
    pub async fn restrict_processing(
        &self,
        request: Request<v1::RestrictProcessingRequest>,
    ) -> Answer<v1::RestrictProcessingResponse> {
        let app = self.app()?;
        let case_id = self.known_case_of(&request, |m| &m.case_id).await?;
        let (l, m) = (local(&request)?, request.get_ref());
        let outcome = app
            .casework
            .restrict(l.call(&m.idempotency_key), &case_id, m.lift)
            .await?;
        Ok(Response::new(v1::RestrictProcessingResponse {
            restricted: !m.lift,
            notified: institutions(&outcome.notified),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ObjectToProcessing"))]
    pub async fn object_to_processing(
        &self,
        request: Request<v1::ObjectToProcessingRequest>,
    ) -> Answer<v1::ObjectToProcessingResponse> {
        let app = self.app()?;
        let case_id = self.known_case_of(&request, |m| &m.case_id).await?;
        let (l, m) = (local(&request)?, request.get_ref());
        let purpose =
            convert::enum_field("purpose", m.purpose, convert::purpose).map_err(AppError::from)?;
        // Art. 21 applies to processing on a public task: the contract says which.
        let own = v1::Institution::from(app.casework.own()).as_str_name();
        let name = v1::Purpose::from(purpose).as_str_name();
        let catalogue = self.catalogue()?;
        let bases = catalogue.bases_of(name, own, true);
        let public_task = v1::LegalBasis::PublicTask.as_str_name();
        if !bases.contains(public_task) {
            let why = if catalogue.bases_of(name, own, false).contains(public_task) {
                "is carried out on a public task, but none of its crossings is about one case: there is no processing of this person's case to stop"
            } else if bases.contains(v1::LegalBasis::Consent.as_str_name()) {
                "rests on the person's consent here: they withdraw it instead (WithdrawConsent)"
            } else if bases.is_empty() {
                "is not a processing this institution carries out"
            } else {
                "rests on a legal obligation: the right to object does not apply (GDPR art. 21(1))"
            };
            return Err(AppError::from(FieldError::new("purpose", why)).into());
        }
        let outcome = app
            .casework
            .object(l.call(&m.idempotency_key), &case_id, purpose)
            .await?;
        Ok(Response::new(v1::ObjectToProcessingResponse {
            notified: institutions(&outcome.notified),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReceiveRightsNotice"))]
    pub async fn receive_rights_notice(
        &self,
        request: Request<v1::ReceiveRightsNoticeRequest>,
    ) -> Answer<v1::ReceiveRightsNoticeResponse> {
        self.push(
            request,
            |m| &m.case_id,
            async |p| {
                let m = &p.message;
                let notice =
                    convert::rights_notice(&m.case_id, required("notice", m.notice.as_ref())?)
                        .map_err(passerelle_runtime::within("notice"))?;
                let call = p.call(&m.idempotency_key);
                self.app()?
                    .casework
                    .receive_rights_notice(call, notice)
                    .await?;
                Ok(v1::ReceiveRightsNoticeResponse {})
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetSubjectAccessReport"))]
    pub async fn get_subject_access_report(
        &self,
        request: Request<v1::GetSubjectAccessReportRequest>,
    ) -> Answer<v1::GetSubjectAccessReportResponse> {
        let app = self.app()?;
        let case_id = self.known_case_of(&request, |m| &m.case_id).await?;
        let (m, dpo) = (request.get_ref(), caller(&request)?);
        let catalogue = self.catalogue()?;
        let cw = &app.casework;
        let (own, ended_at) = cw.own_part(catalogue, &case_id).await?;
        let mut parts = vec![own];
        if m.joint {
            let partner = app.partner.as_ref().ok_or_else(|| {
                AppError(DomainError::FailedPrecondition(
                    "no partner service is configured: the joint report cannot be assembled".into(),
                ))
            })?;
            let path = cw.partner_path(GET_SUBJECT_ACCESS_PART);
            let call = partner.request(v1::GetSubjectAccessPartRequest {
                case_id: case_id.clone(),
            })?;
            let answer: v1::GetSubjectAccessPartResponse =
                partner.unary(&path, call).await.map_err(|s| {
                    tracing::warn!(code = ?s.code(), "the partner's part is unavailable");
                    Status::unavailable("the partner's part of the report is unavailable")
                })?;
            let shared = answer.data.unwrap_or_default();
            let retention = Retention {
                agreement: &cw.agreement,
                // Both copies end together: the end of processing crosses.
                case_ended_at: ended_at,
            };
            let values = access::held_values(
                catalogue,
                &[Casework::dynamic(catalogue, &shared)?],
                retention,
            );
            let fields = values.iter().map(|v| v.path.clone()).collect();
            cw.crossings
                .record_sent(cw.received_entry(dpo, &case_id, fields))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "audit append failed");
                    Status::unavailable("audit log unavailable")
                })?;
            parts.push(Part {
                institution: catalogue.label(v1::Institution::from(cw.partner()).as_str_name()),
                values,
                crossings: access::crossing_lines(catalogue, &answer.crossings),
                local_only_values: answer.local_only_values as usize,
                complete: false,
            });
        }
        let report = AccessReport {
            case_id: case_id.clone(),
            generated_at: cw.now(),
            requested_from: catalogue.label(v1::Institution::from(cw.own()).as_str_name()),
            agreement_id: cw.agreement.id.clone(),
            parts,
        };
        // Who read everything held about a person, and when, is on record (a
        // local read, not a crossing: no purpose of the contract's crossings).
        let path = passerelle_boundary::layer::admission(&request)?
            .rule
            .path
            .clone();
        let mut read = AuditEntry::inbound(cw.now(), Some(dpo), &path);
        read.case_id = Some(case_id.as_str().into());
        read.legal_basis = Some(LegalBasis::LegalObligation);
        read.counterpart = None;
        read.reason = Some(format!(
            "access report written ({} part(s), {} values)",
            report.parts.len(),
            report.parts.iter().map(|p| p.values.len()).sum::<usize>()
        ));
        cw.store.audit().append(read).await.map_err(|e| {
            tracing::error!(error = %e, "audit append failed");
            Status::unavailable("audit log unavailable")
        })?;
        tracing::info!(case_id, joint = m.joint, by = %dpo.agent, "access report written");
        let document = document(m.format, &report);
        Ok(Response::new(v1::GetSubjectAccessReportResponse {
            document: Some(document),
        }))
    }

    /// The partner's DPO assembles a joint report: this side's part, without
    /// what never leaves it (counted instead) and without agents' names.
    #[tracing::instrument(skip_all, fields(rpc = "GetSubjectAccessPart"))]
    pub async fn get_subject_access_part(
        &self,
        request: Request<v1::GetSubjectAccessPartRequest>,
    ) -> Answer<v1::GetSubjectAccessPartResponse> {
        let app = self.app()?;
        let subject = case_id("case_id", &request.get_ref().case_id)?;
        let crossings = &app.casework.crossings;
        let ticket = crossings.admit(&request, Some(&subject)).await?;
        let cw = &app.casework;
        let catalogue = self.catalogue()?;
        let held = cw.held(&subject).await?;
        let local_values = access::held_values(
            catalogue,
            &[Casework::dynamic(catalogue, &held.local)?],
            Retention {
                agreement: &cw.agreement,
                case_ended_at: held.ended_at,
            },
        );
        let mut views = cw.case_audit(&subject).await?;
        for v in &mut views {
            v.agent.clear();
        }
        views.retain(access::is_crossing);
        let answer = v1::GetSubjectAccessPartResponse {
            institution: v1::Institution::from(cw.own()) as i32,
            data: Some(held.shared),
            crossings: views,
            local_only_values: local_values.len() as u32,
            assembled_at: Some(convert::timestamp(cw.now())),
        };
        crossings.release(&ticket, answer).await
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReceiveAuditAnchor"))]
    pub async fn receive_audit_anchor(
        &self,
        request: Request<v1::ReceiveAuditAnchorRequest>,
    ) -> Answer<v1::ReceiveAuditAnchorResponse> {
        let app = self.app()?;
        let crossings = &app.casework.crossings;
        let ticket = crossings.admit(&request, None).await?;
        let m = crossings.receive(&ticket, request.into_inner()).await?;
        let anchor = required("anchor", m.anchor.as_ref())?;
        if anchor.seq <= 0 {
            return Err(AppError::from(FieldError::new("anchor.seq", "must be positive")).into());
        }
        if anchor.hash.len() != 64 || !anchor.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                AppError::from(FieldError::new("anchor.hash", "is not a SHA-256 in hex")).into(),
            );
        }
        let at =
            convert::timestamp_from("anchor.at", anchor.at.as_ref()).map_err(AppError::from)?;
        app.casework
            .store
            .audit()
            .keep_partner_anchor(
                &AuditAnchor {
                    seq: anchor.seq,
                    hash: anchor.hash.to_ascii_lowercase(),
                    at,
                },
                app.casework.now(),
            )
            .await
            .map_err(AppError::from)?;
        Ok(Response::new(v1::ReceiveAuditAnchorResponse {}))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetAuditAnchors"))]
    pub async fn get_audit_anchors(
        &self,
        request: Request<v1::GetAuditAnchorsRequest>,
    ) -> Answer<v1::GetAuditAnchorsResponse> {
        let app = self.app()?;
        let crossings = &app.casework.crossings;
        let ticket = crossings.admit(&request, None).await?;
        let anchors = app
            .casework
            .store
            .audit()
            .partner_anchors()
            .await
            .map_err(AppError::from)?;
        let answer = v1::GetAuditAnchorsResponse {
            anchors: anchors
                .iter()
                .map(|a| v1::AuditAnchor {
                    seq: a.seq,
                    hash: a.hash.clone(),
                    at: Some(convert::timestamp(a.at)),
                })
                .collect(),
        };
        crossings.release(&ticket, answer).await
    }
}

/// Sends this log's head to the partner when something was recorded since
/// the last one sent (anchors themselves do not count, or the two services
/// would anchor each other's anchors for ever).
pub async fn anchor_if_due(app: &InstitutionApp) -> Result<bool, String> {
    let Some(partner) = &app.partner else {
        return Ok(false);
    };
    let audit = app.casework.store.audit();
    let substantive = audit
        .last_substantive_seq()
        .await
        .map_err(|e| e.to_string())?;
    let sent = audit.last_sent_anchor().await.map_err(|e| e.to_string())?;
    if substantive <= sent {
        return Ok(false);
    }
    let Some((seq, hash)) = audit.head().await.map_err(|e| e.to_string())? else {
        return Ok(false);
    };
    let now = app.casework.now();
    let path = app.casework.partner_path(RECEIVE_AUDIT_ANCHOR);
    let request = partner
        .request(v1::ReceiveAuditAnchorRequest {
            idempotency_key: format!("{}:anchor:{seq}", app.casework.side.code()),
            anchor: Some(v1::AuditAnchor {
                seq,
                hash,
                at: Some(convert::timestamp(now)),
            }),
        })
        .map_err(|s| s.message().to_owned())?;
    let () = partner
        .unary::<_, ()>(&path, request)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    let mut entry = app.casework.crossings.sending_entry(
        None,
        app.casework.partner(),
        "",
        Purpose::AuditIntegrity,
        &path,
    );
    entry.case_id = None;
    entry.legal_basis = Some(LegalBasis::LegalObligation);
    entry.categories = [passerelle_domain::DataCategory::Public].into();
    entry.fields = vec![
        "anchor.seq".into(),
        "anchor.hash".into(),
        "anchor.at".into(),
    ];
    app.casework.crossings.record_sent(entry).await?;
    audit
        .record_sent_anchor(seq, now)
        .await
        .map_err(|e| e.to_string())?;
    Ok(true)
}
