//! The resource directory's store, in the hosting institution's database.
//! Every write records who and when in `directory_history`, in the same
//! transaction.

use crate::sql::{Conn, Row, query};
use chrono::{DateTime, Utc};
use passerelle_domain::directory::{Candidate, Service, Structure, looks_sensitive};

use crate::institution::{InstitutionStore, Tx};
use crate::{Result, StoreError, from_json, from_micros, json, to_micros};

/// A named contact point of an office.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactPoint {
    pub office_code: String,
    pub name: String,
    pub phone: String,
    pub email: String,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

/// One line of a record's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub action: String,
    pub changed_by: String,
    pub changed_at: DateTime<Utc>,
}

/// A service found, with its sensitivity.
#[derive(Debug, Clone)]
pub struct Found {
    pub candidate: Candidate,
    pub sensitive: bool,
}

impl Tx {
    /// Writes structures and services (new or replacing), each with its
    /// history line. A service whose structure is in neither the batch nor
    /// the store is refused.
    pub async fn upsert_directory(
        &mut self,
        structures: &[Structure],
        services: &[(Service, Option<bool>)],
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let tx = self.db();
        for s in structures {
            let body = json(s)?;
            query(
                "INSERT INTO directory_structures (id, body, updated_by, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_by = excluded.updated_by,
                    updated_at = excluded.updated_at",
            )
            .bind(&s.id)
            .bind(&body)
            .bind(by)
            .bind(to_micros(at))
            .execute(&mut *tx)
            .await?;
            history(tx, "structures", &s.id, "upsert", Some(&body), by, at).await?;
        }
        for (service, sensitive) in services {
            // The batch's own structures first: an import reads none back.
            let structure = match structures.iter().find(|s| s.id == service.structure_id) {
                Some(known) => Some(known.clone()),
                None => query("SELECT body FROM directory_structures WHERE id = $1")
                    .bind(&service.structure_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| from_json::<Structure>(&r.try_get::<String, _>("body")?))
                    .transpose()?,
            };
            let Some(structure) = structure else {
                return Err(StoreError::Conflict(format!(
                    "service {}: structure {} is unknown",
                    service.id, service.structure_id
                )));
            };
            // An explicit flag wins; otherwise the words decide.
            let sensitive = sensitive.unwrap_or_else(|| looks_sensitive(service, Some(&structure)));
            let body = json(service)?;
            query(
                "INSERT INTO directory_services (id, structure_id, body, sensitive, updated_by, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET structure_id = excluded.structure_id, body = excluded.body,
                    sensitive = excluded.sensitive, updated_by = excluded.updated_by,
                    updated_at = excluded.updated_at",
            )
            .bind(&service.id)
            .bind(&service.structure_id)
            .bind(&body)
            .bind(i64::from(sensitive))
            .bind(by)
            .bind(to_micros(at))
            .execute(&mut *tx)
            .await?;
            history(tx, "services", &service.id, "upsert", Some(&body), by, at).await?;
        }
        Ok(())
    }

    pub async fn delete_service(&mut self, id: &str, by: &str, at: DateTime<Utc>) -> Result<bool> {
        let gone = query("DELETE FROM directory_services WHERE id = $1")
            .bind(id)
            .execute(self.db())
            .await?
            > 0;
        if gone {
            history(self.db(), "services", id, "delete", None, by, at).await?;
        }
        Ok(gone)
    }

    /// The service as stored, for a rights check before it is replaced.
    pub async fn stored_service(&mut self, id: &str) -> Result<Option<Service>> {
        let row = query("SELECT body FROM directory_services WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db())
            .await?;
        row.map(|r| from_json(&r.try_get::<String, _>("body")?))
            .transpose()
    }

    pub async fn set_contact_point(&mut self, c: &ContactPoint) -> Result<()> {
        query(
            "INSERT INTO directory_contact_points (office_code, name, phone, email, updated_by, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (office_code) DO UPDATE SET name = excluded.name, phone = excluded.phone,
                email = excluded.email, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        )
        .bind(&c.office_code)
        .bind(&c.name)
        .bind(&c.phone)
        .bind(&c.email)
        .bind(&c.updated_by)
        .bind(to_micros(c.updated_at))
        .execute(self.db())
        .await?;
        let body = json(&serde_json::json!({
            "name": c.name, "phone": c.phone, "email": c.email
        }))?;
        history(
            self.db(),
            "contact_points",
            &c.office_code,
            "upsert",
            Some(&body),
            &c.updated_by,
            c.updated_at,
        )
        .await?;
        Ok(())
    }
}

impl InstitutionStore {
    pub async fn directory_service(&self, id: &str) -> Result<Option<Found>> {
        let row = query(
            "SELECT s.body, s.sensitive, st.body AS structure_body FROM directory_services s
             LEFT JOIN directory_structures st ON st.id = s.structure_id WHERE s.id = $1",
        )
        .bind(id)
        .fetch_optional(self.database())
        .await?;
        row.as_ref().map(found).transpose()
    }

    pub async fn directory_structure(&self, id: &str) -> Result<Option<Structure>> {
        let row = query("SELECT body FROM directory_structures WHERE id = $1")
            .bind(id)
            .fetch_optional(self.database())
            .await?;
        row.map(|r| from_json(&r.try_get::<String, _>("body")?))
            .transpose()
    }

    /// Every service with its structure: what the search index is built from.
    pub async fn directory_services(&self) -> Result<Vec<Found>> {
        let rows = query(
            "SELECT s.body, s.sensitive, st.body AS structure_body FROM directory_services s
             LEFT JOIN directory_structures st ON st.id = s.structure_id ORDER BY s.id",
        )
        .large()
        .fetch_all(self.database())
        .await?;
        rows.iter().map(found).collect()
    }

    /// Changes with every write: a search index built at this version is current.
    pub async fn directory_version(&self) -> Result<i64> {
        query("SELECT version FROM directory_meta WHERE singleton = 1")
            .fetch_one(self.database())
            .await?
            .try_get("version")
    }

    /// The whole directory, in id order, for a data·inclusion export.
    pub async fn directory_export(&self) -> Result<(Vec<Structure>, Vec<Service>)> {
        let pool = self.database();
        let structures = query("SELECT body FROM directory_structures ORDER BY id")
            .large()
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| from_json(&r.try_get::<String, _>("body")?))
            .collect::<Result<_>>()?;
        let services = query("SELECT body FROM directory_services ORDER BY id")
            .large()
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| from_json(&r.try_get::<String, _>("body")?))
            .collect::<Result<_>>()?;
        Ok((structures, services))
    }

    pub async fn directory_history(&self, collection: &str, id: &str) -> Result<Vec<Change>> {
        let rows = query(
            "SELECT action, changed_by, changed_at FROM directory_history
             WHERE collection = $1 AND record_id = $2 ORDER BY id",
        )
        .bind(collection)
        .bind(id)
        .fetch_all(self.database())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Change {
                    action: r.try_get("action")?,
                    changed_by: r.try_get("changed_by")?,
                    changed_at: from_micros(r.try_get("changed_at")?)?,
                })
            })
            .collect()
    }

    pub async fn contact_points(&self) -> Result<Vec<ContactPoint>> {
        let rows = query(
            "SELECT office_code, name, phone, email, updated_by, updated_at
             FROM directory_contact_points ORDER BY office_code",
        )
        .fetch_all(self.database())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ContactPoint {
                    office_code: r.try_get("office_code")?,
                    name: r.try_get("name")?,
                    phone: r.try_get("phone")?,
                    email: r.try_get("email")?,
                    updated_by: r.try_get("updated_by")?,
                    updated_at: from_micros(r.try_get("updated_at")?)?,
                })
            })
            .collect()
    }
}

fn found(row: &Row) -> Result<Found> {
    let structure: Option<String> = row.try_get("structure_body")?;
    Ok(Found {
        candidate: Candidate {
            service: from_json(&row.try_get::<String, _>("body")?)?,
            structure: structure.map(|s| from_json(&s)).transpose()?,
        },
        sensitive: row.try_get::<i64, _>("sensitive")? != 0,
    })
}

async fn history(
    tx: &mut Conn,
    collection: &str,
    id: &str,
    action: &str,
    body: Option<&str>,
    by: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    query(
        "INSERT INTO directory_history (collection, record_id, action, body, changed_by, changed_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(collection)
    .bind(id)
    .bind(action)
    .bind(body.map(str::to_owned))
    .bind(by)
    .bind(to_micros(at))
    .execute(&mut *tx)
    .await?;
    query("UPDATE directory_meta SET version = version + 1 WHERE singleton = 1")
        .execute(&mut *tx)
        .await?;
    Ok(())
}
