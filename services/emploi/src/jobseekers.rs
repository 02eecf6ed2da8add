//! The data exchanges of the agreement's title II, served by the employment
//! side: the monthly RSA jobseeker list (LRSA-DE) and the jobseeker file
//! (DUDE), each read by Département agents habilitated one by one; the
//! register they are read from; the habilitations themselves.

use std::pin::Pin;

use passerelle_contract::v1;
use passerelle_domain::jobseeker::{
    FileDetails, HabilitationScope, JobSearchEvent, Jobseeker, Profile, RsaRow, month,
};
use passerelle_domain::{DomainError, FieldError};
use prost::Message;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use passerelle_casework::InstitutionApp;
use passerelle_runtime::{AppError, local};

/// Rows per streamed message.
const CHUNK: i64 = 500;
const MAX_RECORDS: usize = 1_000;

pub type RsaStream =
    Pin<Box<dyn Stream<Item = Result<v1::StreamRsaJobseekerListResponse, Status>> + Send>>;

fn scope(value: i32) -> Result<HabilitationScope, AppError> {
    match v1::HabilitationScope::try_from(value) {
        Ok(v1::HabilitationScope::RsaJobseekerList) => Ok(HabilitationScope::RsaJobseekerList),
        Ok(v1::HabilitationScope::JobseekerFile) => Ok(HabilitationScope::JobseekerFile),
        _ => Err(FieldError::new("scope", "must be RSA_JOBSEEKER_LIST or JOBSEEKER_FILE").into()),
    }
}

fn scope_to_proto(s: HabilitationScope) -> v1::HabilitationScope {
    match s {
        HabilitationScope::RsaJobseekerList => v1::HabilitationScope::RsaJobseekerList,
        HabilitationScope::JobseekerFile => v1::HabilitationScope::JobseekerFile,
    }
}

fn agent(value: &str) -> Result<String, AppError> {
    passerelle_domain::person::required_text("agent", value, 200).map_err(AppError::from)
}

fn jobseeker(p: &v1::JobseekerRecord) -> Jobseeker {
    let profile = p.profile.clone().unwrap_or_default();
    Jobseeker {
        jobseeker_number: p.jobseeker_number.trim().to_owned(),
        first_name: p.first_name.trim().to_owned(),
        last_name: p.last_name.trim().to_owned(),
        birth_date: p.birth_date.trim().to_owned(),
        registration_date: p.registration_date.trim().to_owned(),
        registration_category: p.registration_category.trim().to_owned(),
        agency_code: p.agency_code.trim().to_owned(),
        support_modality: p.support_modality.trim().to_owned(),
        rsa_beneficiary: p.rsa_beneficiary,
        details: FileDetails {
            profile: Profile {
                target_jobs: profile.target_jobs,
                education_level: profile.education_level,
                driving_licence: profile.driving_licence,
            },
            employment_plan: p.employment_plan.clone(),
            history: p
                .history
                .iter()
                .map(|e| JobSearchEvent {
                    date: e.date.clone(),
                    kind: e.kind.clone(),
                    summary: e.summary.clone(),
                })
                .collect(),
        },
    }
}

fn row(r: &RsaRow) -> v1::RsaJobseekerRow {
    v1::RsaJobseekerRow {
        seq: r.seq,
        jobseeker_number: r.jobseeker_number.clone(),
        first_name: r.first_name.clone(),
        last_name: r.last_name.clone(),
        birth_date: r.birth_date.clone(),
        registration_date: r.registration_date.clone(),
        registration_category: r.registration_category.clone(),
        agency_code: r.agency_code.clone(),
        support_modality: r.support_modality.clone(),
    }
}

pub async fn record_jobseekers(
    app: &InstitutionApp,
    request: &Request<v1::RecordJobseekersRequest>,
) -> Result<v1::RecordJobseekersResponse, Status> {
    let l = local(request)?;
    let m = request.get_ref();
    if m.jobseekers.is_empty() || m.jobseekers.len() > MAX_RECORDS {
        return Err(AppError::from(FieldError::new(
            "jobseekers",
            format!("needs 1 to {MAX_RECORDS} records"),
        ))
        .into());
    }
    let list: Vec<Jobseeker> = m.jobseekers.iter().map(jobseeker).collect();
    for (i, j) in list.iter().enumerate() {
        j.validate()
            .map_err(|e| AppError::from(e.within(&format!("jobseekers[{i}]"))))?;
    }
    let cw = &app.casework;
    let now = cw.now();
    let recorded = cw
        .once(l.call(&m.idempotency_key), async |tx| {
            tx.upsert_jobseekers(&list, now).await?;
            Ok(list.len() as u32)
        })
        .await?;
    Ok(v1::RecordJobseekersResponse { recorded })
}

/// A habilitation granted or withdrawn: the request's key, agent and scope.
#[derive(Debug, Clone, Copy)]
pub struct HabilitationChange<'a> {
    pub key: &'a str,
    pub agent: &'a str,
    pub scope: i32,
    pub revoke: bool,
}

pub async fn set_habilitation(
    app: &InstitutionApp,
    request: &Request<impl Message>,
    change: HabilitationChange<'_>,
) -> Result<(), Status> {
    let l = local(request)?;
    let (who, scope) = (agent(change.agent)?, scope(change.scope)?);
    let (key, revoke) = (change.key, change.revoke);
    let cw = &app.casework;
    let now = cw.now();
    cw.once(l.call(key), async |tx| {
        tx.set_habilitation(&who, scope, revoke, &l.caller.agent, now)
            .await?;
        tracing::info!(agent = %who, %scope, revoke, by = %l.caller.agent, "habilitation changed");
        Ok(())
    })
    .await?;
    Ok(())
}

pub async fn count_habilitations(
    app: &InstitutionApp,
) -> Result<v1::CountHabilitationsResponse, Status> {
    let counts = app
        .casework
        .store
        .habilitation_counts()
        .await
        .map_err(AppError::from)?;
    Ok(v1::CountHabilitationsResponse {
        counts: counts
            .iter()
            .map(|c| v1::HabilitationCount {
                scope: scope_to_proto(c.scope) as i32,
                agents: c.agents,
                pending_requests: c.pending_requests,
            })
            .collect(),
    })
}

pub async fn request_habilitation_change(
    app: &InstitutionApp,
    request: &Request<v1::RequestHabilitationChangeRequest>,
) -> Result<(), Status> {
    let l = local(request)?;
    let m = request.get_ref();
    let (who, scope) = (agent(&m.agent)?, scope(m.scope)?);
    let cw = &app.casework;
    let now = cw.now();
    cw.once(l.call(&m.idempotency_key), async |tx| {
        tx.request_habilitation_change(&who, scope, m.habilitate, &l.caller.agent, now)
            .await?;
        Ok(())
    })
    .await?;
    Ok(())
}

pub async fn publish_rsa_list(
    app: &InstitutionApp,
    request: &Request<v1::PublishRsaJobseekerListRequest>,
) -> Result<v1::PublishRsaJobseekerListResponse, Status> {
    let l = local(request)?;
    let m = request.get_ref();
    let month = month(m.month.trim()).map_err(AppError::from)?;
    let cw = &app.casework;
    let now = cw.now();
    let rows = cw
        .once(l.call(&m.idempotency_key), async |tx| {
            tx.publish_rsa_list(&month, &l.caller.agent, now)
                .await?
                .ok_or_else(|| {
                    AppError(DomainError::FailedPrecondition(format!(
                        "the list of {month} is published already"
                    )))
                })
        })
        .await?;
    tracing::info!(%month, rows, "RSA jobseeker list published");
    Ok(v1::PublishRsaJobseekerListResponse { rows })
}

/// Streams the month's list to a habilitated agent, from `after_seq`; the
/// read is audited once, before the first row leaves.
pub async fn stream_rsa_list(
    app: &InstitutionApp,
    request: Request<v1::StreamRsaJobseekerListRequest>,
) -> Result<Response<RsaStream>, Status> {
    let m = request.get_ref().clone();
    let month = month(m.month.trim()).map_err(AppError::from)?;
    let ticket = app.casework.crossings.admit(&request, None).await?;
    let store = app.casework.store.clone();
    if !store
        .habilitated(&ticket.caller.agent, HabilitationScope::RsaJobseekerList)
        .await
        .map_err(AppError::from)?
    {
        return Err(app
            .casework
            .crossings
            .refuse(
                &ticket,
                "the agent holds no habilitation for the RSA jobseeker list",
            )
            .await);
    }
    let Some(total) = store
        .rsa_list_published(&month)
        .await
        .map_err(AppError::from)?
    else {
        return Err(AppError(DomainError::NotFound("published list for this month")).into());
    };
    // What each row carries, as the contract declares it.
    let fields = passerelle_contract::descriptor_pool()
        .get_message_by_name("passerelle.v1.RsaJobseekerRow")
        .map(|row| row.fields().map(|f| f.full_name().to_owned()).collect())
        .unwrap_or_default();
    app.casework
        .crossings
        .record_stream(
            &ticket,
            fields,
            format!("month {month}, {total} rows, after seq {}", m.after_seq),
        )
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut after = m.after_seq;
        loop {
            let rows = match store.rsa_rows(&month, after, CHUNK).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "reading the RSA list failed");
                    let _ = tx
                        .send(Err(Status::unavailable("list unavailable: resume later")))
                        .await;
                    return;
                }
            };
            let Some(last) = rows.last().map(|r| r.seq) else {
                return;
            };
            let chunk = v1::StreamRsaJobseekerListResponse {
                rows: rows.iter().map(row).collect(),
            };
            if tx.send(Ok(chunk)).await.is_err() {
                // The client went away: it resumes from its last seq.
                return;
            }
            after = last;
        }
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

/// The jobseeker file for a habilitated agent; the answer is minimised to
/// the crossing's categories and audited with its subject.
pub async fn jobseeker_file(
    app: &InstitutionApp,
    request: Request<v1::GetJobseekerFileRequest>,
) -> Result<Response<v1::GetJobseekerFileResponse>, Status> {
    let number = request.get_ref().jobseeker_number.trim().to_owned();
    if number.is_empty() {
        return Err(AppError::from(FieldError::new("jobseeker_number", "is required")).into());
    }
    // The subject of the read, kept in the audit record's case field.
    let subject = format!("jobseeker:{number}");
    let ticket = app
        .casework
        .crossings
        .admit(&request, Some(&subject))
        .await?;
    let store = &app.casework.store;
    if !store
        .habilitated(&ticket.caller.agent, HabilitationScope::JobseekerFile)
        .await
        .map_err(AppError::from)?
    {
        return Err(app
            .casework
            .crossings
            .refuse(
                &ticket,
                "the agent holds no habilitation for the jobseeker file",
            )
            .await);
    }
    let j = store
        .jobseeker(&number)
        .await
        .map_err(AppError::from)?
        .ok_or(AppError(DomainError::NotFound("jobseeker")))?;
    let file = v1::JobseekerFile {
        jobseeker_number: j.jobseeker_number,
        first_name: j.first_name,
        last_name: j.last_name,
        birth_date: j.birth_date,
        registration_date: j.registration_date,
        registration_category: j.registration_category,
        agency_code: j.agency_code,
        support_modality: j.support_modality,
        profile: Some(v1::JobseekerProfile {
            target_jobs: j.details.profile.target_jobs,
            education_level: j.details.profile.education_level,
            driving_licence: j.details.profile.driving_licence,
        }),
        employment_plan: j.details.employment_plan,
        history: j
            .details
            .history
            .into_iter()
            .map(|e| v1::JobSearchEvent {
                date: e.date,
                kind: e.kind,
                summary: e.summary,
            })
            .collect(),
    };
    app.casework
        .crossings
        .release(&ticket, v1::GetJobseekerFileResponse { file: Some(file) })
        .await
}
