//! The jobseeker register, the monthly RSA lists and the habilitations of
//! Département agents, in the employment side's database.

use crate::sql::{Row, query};
use chrono::{DateTime, Utc};
use passerelle_domain::jobseeker::{FileDetails, HabilitationScope, Jobseeker, RsaRow};

use crate::institution::{InstitutionStore, Tx};
use crate::{Result, from_json, json, to_micros};

/// Counts of one habilitation scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HabilitationCount {
    pub scope: HabilitationScope,
    pub agents: u32,
    pub pending_requests: u32,
}

fn jobseeker_from(row: &Row) -> Result<Jobseeker> {
    let details: FileDetails = from_json(&row.try_get::<String, _>("file")?)?;
    Ok(Jobseeker {
        jobseeker_number: row.try_get("jobseeker_number")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        birth_date: row.try_get("birth_date")?,
        registration_date: row.try_get("registration_date")?,
        registration_category: row.try_get("registration_category")?,
        agency_code: row.try_get("agency_code")?,
        support_modality: row.try_get("support_modality")?,
        rsa_beneficiary: row.try_get::<i64, _>("rsa_beneficiary")? != 0,
        details,
    })
}

impl Tx {
    pub async fn upsert_jobseekers(&mut self, list: &[Jobseeker], at: DateTime<Utc>) -> Result<()> {
        for j in list {
            let file = json(&j.details)?;
            query(
                "INSERT INTO jobseekers (jobseeker_number, first_name, last_name, birth_date, registration_date,
                    registration_category, agency_code, support_modality, rsa_beneficiary, file, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (jobseeker_number) DO UPDATE SET first_name = excluded.first_name,
                    last_name = excluded.last_name, birth_date = excluded.birth_date,
                    registration_date = excluded.registration_date,
                    registration_category = excluded.registration_category, agency_code = excluded.agency_code,
                    support_modality = excluded.support_modality, rsa_beneficiary = excluded.rsa_beneficiary,
                    file = excluded.file, updated_at = excluded.updated_at",
            )
            .bind(&j.jobseeker_number)
            .bind(&j.first_name)
            .bind(&j.last_name)
            .bind(&j.birth_date)
            .bind(&j.registration_date)
            .bind(&j.registration_category)
            .bind(&j.agency_code)
            .bind(&j.support_modality)
            .bind(i64::from(j.rsa_beneficiary))
            .bind(file)
            .bind(to_micros(at))
            .execute(self.db())
            .await?;
        }
        Ok(())
    }

    /// Fixes the month's list from the register (RSA beneficiaries only, in
    /// jobseeker-number order). `None` when the month is published already.
    pub async fn publish_rsa_list(
        &mut self,
        month: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<u64>> {
        let exists = query("SELECT 1 AS one FROM rsa_lists WHERE month = $1")
            .bind(month)
            .fetch_optional(self.db())
            .await?
            .is_some();
        if exists {
            return Ok(None);
        }
        let rows = query(
            "INSERT INTO rsa_list_rows (month, seq, jobseeker_number, first_name, last_name, birth_date,
                registration_date, registration_category, agency_code, support_modality)
             SELECT $1, ROW_NUMBER() OVER (ORDER BY jobseeker_number), jobseeker_number, first_name, last_name,
                birth_date, registration_date, registration_category, agency_code, support_modality
             FROM jobseekers WHERE rsa_beneficiary = 1",
        )
        .bind(month)
        .execute(self.db())
        .await?
        ;
        query(
            "INSERT INTO rsa_lists (month, row_count, published_by, published_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(month)
        .bind(rows as i64)
        .bind(by)
        .bind(to_micros(at))
        .execute(self.db())
        .await?;
        Ok(Some(rows))
    }

    /// Grants (or, with `revoke`, withdraws) a habilitation, and closes the
    /// Département's requests it answers.
    pub async fn set_habilitation(
        &mut self,
        agent: &str,
        scope: HabilitationScope,
        revoke: bool,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        if revoke {
            query(
                "UPDATE habilitations SET revoked_by = $3, revoked_at = $4
                 WHERE agent = $1 AND scope = $2 AND revoked_at IS NULL",
            )
            .bind(agent)
            .bind(scope.code())
            .bind(by)
            .bind(to_micros(at))
            .execute(self.db())
            .await?;
        } else {
            query(
                "INSERT INTO habilitations (agent, scope, granted_by, granted_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (agent, scope) DO UPDATE SET granted_by = excluded.granted_by,
                    granted_at = excluded.granted_at, revoked_by = NULL, revoked_at = NULL",
            )
            .bind(agent)
            .bind(scope.code())
            .bind(by)
            .bind(to_micros(at))
            .execute(self.db())
            .await?;
        }
        query(
            "UPDATE habilitation_requests SET resolved_at = $4
             WHERE agent = $1 AND scope = $2 AND habilitate = $3 AND resolved_at IS NULL",
        )
        .bind(agent)
        .bind(scope.code())
        .bind(i64::from(!revoke))
        .bind(to_micros(at))
        .execute(self.db())
        .await?;
        Ok(())
    }

    pub async fn request_habilitation_change(
        &mut self,
        agent: &str,
        scope: HabilitationScope,
        habilitate: bool,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        query(
            "INSERT INTO habilitation_requests (agent, scope, habilitate, requested_by, requested_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(agent)
        .bind(scope.code())
        .bind(i64::from(habilitate))
        .bind(by)
        .bind(to_micros(at))
        .execute(self.db())
        .await?;
        Ok(())
    }
}

impl InstitutionStore {
    pub async fn jobseeker(&self, number: &str) -> Result<Option<Jobseeker>> {
        self.database()
            .read(async |connection| {
                let row = query("SELECT * FROM jobseekers WHERE jobseeker_number = $1")
                    .bind(number)
                    .fetch_optional(connection)
                    .await?;
                row.as_ref().map(jobseeker_from).transpose()
            })
            .await
    }

    pub async fn rsa_list_published(&self, month: &str) -> Result<Option<u64>> {
        let row = query("SELECT row_count FROM rsa_lists WHERE month = $1")
            .bind(month)
            .fetch_optional(self.database())
            .await?;
        row.map(|r| Ok(r.try_get::<i64, _>("row_count")? as u64))
            .transpose()
    }

    /// Up to `limit` rows of the month's list after `after_seq`.
    pub async fn rsa_rows(&self, month: &str, after_seq: u64, limit: i64) -> Result<Vec<RsaRow>> {
        let rows = query(
            "SELECT seq, jobseeker_number, first_name, last_name, birth_date, registration_date,
                registration_category, agency_code, support_modality
             FROM rsa_list_rows WHERE month = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(month)
        .bind(after_seq as i64)
        .bind(limit)
        .fetch_all(self.database())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RsaRow {
                    seq: r.try_get::<i64, _>("seq")? as u64,
                    jobseeker_number: r.try_get("jobseeker_number")?,
                    first_name: r.try_get("first_name")?,
                    last_name: r.try_get("last_name")?,
                    birth_date: r.try_get("birth_date")?,
                    registration_date: r.try_get("registration_date")?,
                    registration_category: r.try_get("registration_category")?,
                    agency_code: r.try_get("agency_code")?,
                    support_modality: r.try_get("support_modality")?,
                })
            })
            .collect()
    }

    /// Whether `agent` holds `scope` now.
    pub async fn habilitated(&self, agent: &str, scope: HabilitationScope) -> Result<bool> {
        Ok(query(
            "SELECT 1 AS one FROM habilitations WHERE agent = $1 AND scope = $2 AND revoked_at IS NULL",
        )
        .bind(agent)
        .bind(scope.code())
        .fetch_optional(self.database())
        .await?
        .is_some())
    }

    pub async fn habilitation_counts(&self) -> Result<Vec<HabilitationCount>> {
        let mut out = vec![];
        for scope in HabilitationScope::ALL {
            let row = query(
                "SELECT
                    (SELECT COUNT(*) FROM habilitations WHERE scope = $1 AND revoked_at IS NULL) AS agents,
                    (SELECT COUNT(*) FROM habilitation_requests WHERE scope = $1 AND resolved_at IS NULL) AS pending",
            )
            .bind(scope.code())
            .fetch_one(self.database())
            .await?;
            out.push(HabilitationCount {
                scope: *scope,
                agents: row.try_get::<i64, _>("agents")? as u32,
                pending_requests: row.try_get::<i64, _>("pending")? as u32,
            });
        }
        Ok(out)
    }
}
