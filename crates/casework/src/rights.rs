//! The person's rights applied to a case: erasure (GDPR art. 17) and
//! rectification (art. 16) at the DPO's request, each told to the partner
//! only where the audit log shows it received the data (art. 19); the same
//! notices received from the partner; and the purge once the agreement's
//! retention has passed (art. 5(1)(e)). Each change commits with its audit
//! record and its outbox message, or not at all.

use chrono::{DateTime, Utc};
use passerelle_boundary::audit::{AuditEntry, Decision, Direction};
use passerelle_domain::agreement::Agreement;
use passerelle_domain::rights::{RightsNotice, RightsNoticeKind};
use passerelle_domain::{
    Contact, DomainError, FieldError, Institution, Outbound, PersonIdentity, Purpose,
};
use passerelle_runtime::AppError;
use passerelle_runtime::idempotency::Call;
use passerelle_storage::InstitutionStore;
use passerelle_storage::institution::{ErasureReason, PurgeCandidate, Tx};

use crate::casework::Casework;

type Result<T> = std::result::Result<T, AppError>;

/// What an erasure or a rectification did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RightsOutcome {
    /// Erasure: whether anything was held. Rectification: the fields changed.
    pub erased: bool,
    pub rectified: Vec<String>,
    /// Institutions told of it.
    pub notified: Vec<Institution>,
}

/// A local record of a right applied here (no crossing: the notice to the
/// partner, if any, is audited when delivered).
fn local_entry(
    at: DateTime<Utc>,
    own: Institution,
    agent: Option<&passerelle_boundary::Caller>,
    method: &str,
    case_id: &str,
    reason: String,
) -> AuditEntry {
    AuditEntry {
        at,
        direction: Direction::Inbound,
        agent: agent.map(|c| c.agent.clone()),
        agent_institution: Some(agent.map(|c| c.institution).unwrap_or(own)),
        agent_role: agent.map(|c| c.role),
        counterpart: None,
        method: method.to_owned(),
        case_id: Some(case_id.into()),
        purpose: None,
        legal_basis: None,
        consent_id: None,
        categories: Default::default(),
        fields: vec![],
        decision: Decision::Allowed,
        reason: Some(reason),
    }
}

impl Casework {
    /// Erases what this side holds about the person of `case_id`; the
    /// partner is told if the audit log shows it received any of it.
    pub async fn erase(&self, call: Call<'_>, case_id: &str) -> Result<RightsOutcome> {
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            // Who received the data is read before they go.
            let sent = tx.fields_sent(case_id).await?;
            let erased = tx
                .erase_case(case_id, ErasureReason::Request, false, now)
                .await?;
            let notice = self.notice(case_id, RightsNoticeKind::Erasure);
            let notified = self.tell_recipients(tx, &sent, notice).await?;
            self.record_right(tx, &call, case_id, "personal data erased at the person's request (GDPR art. 17)".into(), vec![])
                .await?;
            tracing::info!(case_id, erased, notified = ?notified, by = %call.caller.agent, "erasure");
            Ok(RightsOutcome {
                erased,
                rectified: vec![],
                notified,
            })
        })
        .await
    }

    /// Corrects the person's identity or contact; the partner hears of the
    /// corrected fields it received, and of no other.
    pub async fn rectify(
        &self,
        call: Call<'_>,
        case_id: &str,
        person: Option<PersonIdentity>,
        contact: Option<Contact>,
    ) -> Result<RightsOutcome> {
        self.once(call, async |tx: &mut Tx| {
            let mut referral = tx.referral(case_id).await?.ok_or_else(|| {
                AppError(DomainError::FailedPrecondition(
                    "this case holds no referral form to rectify".into(),
                ))
            })?;
            let changes = referral.rectifications(person.as_ref(), contact.as_ref());
            for change in &changes {
                referral.rectify(change)?;
            }
            if changes.is_empty() {
                return Ok(RightsOutcome::default());
            }
            tx.replace_referral(&referral).await?;
            let sent = tx.fields_sent(case_id).await?;
            // Each recipient hears of the corrected fields it received only.
            let received: Vec<_> = changes
                .iter()
                .filter(|c| sent.contains(c.field.code()))
                .cloned()
                .collect();
            let notified = if received.is_empty() {
                vec![]
            } else {
                let mut notice = self.notice(case_id, RightsNoticeKind::Rectification);
                notice.rectified = received;
                self.tell_recipients(tx, &sent, notice).await?
            };
            let fields: Vec<String> = changes.iter().map(|c| c.field.code().to_owned()).collect();
            self.record_right(tx, &call, case_id, "rectified at the person's request (GDPR art. 16)".into(), fields.clone())
                .await?;
            tracing::info!(case_id, fields = ?fields, notified = ?notified, by = %call.caller.agent, "rectification");
            Ok(RightsOutcome {
                erased: false,
                rectified: fields,
                notified,
            })
        })
        .await
    }

    /// Restricts processing of the case to keeping its data (GDPR art.
    /// 18), or lifts the restriction; recipients of the data are told.
    pub async fn restrict(
        &self,
        call: Call<'_>,
        case_id: &str,
        lift: bool,
    ) -> Result<RightsOutcome> {
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let changed = if lift {
                tx.lift_restriction(case_id).await?
            } else {
                tx.restrict(case_id, now).await?
            };
            let sent = tx.fields_sent(case_id).await?;
            let kind = if lift {
                RightsNoticeKind::RestrictionLifted
            } else {
                RightsNoticeKind::Restriction
            };
            let notified = if changed {
                self.tell_recipients(tx, &sent, self.notice(case_id, kind)).await?
            } else {
                vec![]
            };
            let why = if lift {
                "restriction lifted (GDPR art. 18(3))"
            } else {
                "processing restricted to storage at the person's request (GDPR art. 18)"
            };
            self.record_right(tx, &call, case_id, why.into(), vec![]).await?;
            tracing::info!(case_id, lift, notified = ?notified, by = %call.caller.agent, "restriction");
            Ok(RightsOutcome {
                erased: false,
                rectified: vec![],
                notified,
            })
        })
        .await
    }

    /// Records the person's objection to `purpose` for the case (GDPR art.
    /// 21): from now on its crossings about the case are refused at both
    /// ends; recipients of the data are told.
    pub async fn object(
        &self,
        call: Call<'_>,
        case_id: &str,
        purpose: Purpose,
    ) -> Result<RightsOutcome> {
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            let new = tx.object(case_id, purpose, now).await?;
            let sent = tx.fields_sent(case_id).await?;
            let notified = if new {
                let mut notice = self.notice(case_id, RightsNoticeKind::Objection);
                notice.purpose = Some(purpose);
                self.tell_recipients(tx, &sent, notice).await?
            } else {
                vec![]
            };
            self.record_right(tx, &call, case_id, format!("the person objected to {purpose} (GDPR art. 21)"), vec![]).await?;
            tracing::info!(case_id, %purpose, notified = ?notified, by = %call.caller.agent, "objection");
            Ok(RightsOutcome {
                erased: false,
                rectified: vec![],
                notified,
            })
        })
        .await
    }

    /// The record of a right applied here, committed with the change.
    async fn record_right(
        &self,
        tx: &mut Tx,
        call: &Call<'_>,
        case_id: &str,
        reason: String,
        fields: Vec<String>,
    ) -> Result<()> {
        let mut entry = local_entry(
            self.clock.now(),
            self.own(),
            Some(call.caller),
            call.method,
            case_id,
            reason,
        );
        entry.fields = fields;
        tx.append_audit(&entry);
        Ok(())
    }

    fn notice(&self, case_id: &str, kind: RightsNoticeKind) -> RightsNotice {
        RightsNotice {
            case_id: case_id.into(),
            kind,
            at: self.clock.now(),
            rectified: vec![],
            purpose: None,
        }
    }

    /// Queues `notice` for the partner if the audit log shows it received
    /// any of the person's data (`sent`: the field paths it received);
    /// returns who is told (GDPR art. 19).
    async fn tell_recipients(
        &self,
        tx: &mut Tx,
        sent: &std::collections::BTreeSet<String>,
        notice: RightsNotice,
    ) -> Result<Vec<Institution>> {
        if sent.is_empty() {
            return Ok(vec![]);
        }
        self.tell_partner(tx, &Outbound::RightsNotice(notice))
            .await?;
        Ok(vec![self.partner()])
    }

    /// The partner erased or corrected its copy at the person's request:
    /// this side does the same to its own (and tells nobody further).
    pub async fn receive_rights_notice(&self, call: Call<'_>, notice: RightsNotice) -> Result<()> {
        let now = self.clock.now();
        self.once(call, async |tx: &mut Tx| {
            match notice.kind {
                RightsNoticeKind::Erasure => {
                    tx.erase_case(&notice.case_id, ErasureReason::PartnerNotice, false, now)
                        .await?;
                }
                RightsNoticeKind::Rectification => {
                    let Some(mut referral) = tx.referral(&notice.case_id).await? else {
                        // Nothing held here any more (erased, purged): nothing to correct.
                        return Ok(());
                    };
                    for change in &notice.rectified {
                        referral.rectify(change)?;
                    }
                    tx.replace_referral(&referral).await?;
                }
                RightsNoticeKind::Restriction => {
                    tx.restrict(&notice.case_id, notice.at).await?;
                }
                RightsNoticeKind::RestrictionLifted => {
                    tx.lift_restriction(&notice.case_id).await?;
                }
                RightsNoticeKind::Objection => {
                    let purpose = notice.purpose.ok_or_else(|| {
                        AppError::from(FieldError::new("notice.purpose", "is required for an objection"))
                    })?;
                    tx.object(&notice.case_id, purpose, notice.at).await?;
                }
            }
            tracing::info!(case_id = %notice.case_id, kind = %notice.kind, "partner's rights notice applied");
            Ok(())
        })
        .await
    }
}

/// The purge's pace: cases erased per pass.
pub const PURGE_BATCH: usize = 100;

/// How long after a case ends its data (everything but the consent
/// records) and its consent records are kept, by the agreement's longest
/// rules; `None` where the agreement sets no retention at all.
pub fn retention_months(agreement: &Agreement) -> Option<(u32, u32)> {
    let data = agreement
        .retention
        .iter()
        .filter(|r| r.purpose != Purpose::ConsentRecord)
        .map(|r| r.months_after_end)
        .max()?;
    let consents = agreement
        .retention
        .iter()
        .filter(|r| r.purpose == Purpose::ConsentRecord)
        .map(|r| r.months_after_end)
        .max()
        .unwrap_or(data)
        .max(data);
    Some((data, consents))
}

/// Erases what the agreement's retention lets go at `now` (at most
/// `limit` cases), each case in its own transaction with its audit record:
/// a purge stopped at any point and run again ends in the same state, and
/// runs with nothing left to do change nothing. With `dry_run`, only lists.
pub async fn purge(
    store: &InstitutionStore,
    agreement: &Agreement,
    now: DateTime<Utc>,
    dry_run: bool,
    limit: usize,
) -> std::result::Result<Vec<PurgeCandidate>, passerelle_storage::StoreError> {
    let Some((data_months, consent_months)) = retention_months(agreement) else {
        return Ok(vec![]);
    };
    let due = store
        .purge_candidates(now, data_months, consent_months, limit)
        .await?;
    if dry_run {
        return Ok(due);
    }
    for candidate in &due {
        let mut tx = store.begin().await?;
        let (what, months) = if candidate.consents_only {
            tx.erase_consents(&candidate.case_id).await?;
            ("consent records", consent_months)
        } else {
            tx.erase_case(&candidate.case_id, ErasureReason::Retention, true, now)
                .await?;
            ("personal data", data_months)
        };
        tx.append_audit(&local_entry(
            now,
            store.own(),
            None,
            "passerelle.purge",
            &candidate.case_id,
            format!(
                "{what} purged: {months} months after the case ended on {} (agreement {} retention)",
                candidate.ended_at.date_naive(),
                agreement.id
            ),
        ));
        tx.update_statistics().await?;
        tx.commit().await?;
    }
    if !due.is_empty() {
        tracing::info!(cases = due.len(), "retention purge");
    }
    Ok(due)
}

/// A rectification request's parts, each checked.
pub fn corrected_parts(
    person: Option<&passerelle_contract::v1::PersonIdentity>,
    contact: Option<&passerelle_contract::v1::Contact>,
) -> std::result::Result<(Option<PersonIdentity>, Option<Contact>), FieldError> {
    let person = person
        .map(PersonIdentity::try_from)
        .transpose()
        .map_err(|e| e.within("person"))?;
    let contact = contact
        .map(Contact::try_from)
        .transpose()
        .map_err(|e| e.within("contact"))?;
    Ok((person, contact))
}
