//! The resource directory (axe 1), served by the institution that hosts it
//! (the Département's service by default). The Département's coordinators
//! administer everything; the employment side's co-administer the
//! employment-training sheets where the agreement says so. Every write keeps
//! who and when, and takes an idempotency key like every mutating RPC.

use chrono::{DateTime, Utc};
use passerelle_boundary::Caller;
use passerelle_contract::v1;
use passerelle_contract::v1::directory_service_server::DirectoryService;
use std::sync::Arc;

use passerelle_domain::directory::{
    Prepared, Rejection, SearchQuery, Service, Structure, parse_records,
};
use passerelle_domain::{DomainError, FieldError, Institution, Network};
use passerelle_storage::directory::{ContactPoint, Found};
use tokio::sync::RwLock;
use tonic::{Request, Response, Status};

use passerelle_domain::Clock;
use passerelle_domain::agreement::Agreement;
use passerelle_runtime::idempotency::{self, Call, local};
use passerelle_runtime::{AppError, Ready};
use passerelle_storage::InstitutionStore;
use passerelle_storage::institution::Tx;
use serde::Serialize;
use serde::de::DeserializeOwned;

type Result<T> = std::result::Result<T, AppError>;

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// One service in the search index.
#[derive(Debug)]
pub struct Entry {
    prepared: Prepared,
    sensitive: bool,
}

/// The search index and the directory version it was built at.
type IndexCache = Arc<RwLock<Option<(i64, Arc<Vec<Entry>>)>>>;

/// The directory as the hosting institution keeps it.
#[derive(Debug, Clone)]
pub struct Directory {
    store: InstitutionStore,
    clock: Arc<dyn Clock>,
    /// Who may administer what comes from the agreement.
    agreement: Arc<Agreement>,
    /// The search index, rebuilt when the directory changes.
    index: IndexCache,
}

/// A service state that hosts the directory.
pub trait HostsDirectory: Send + Sync + 'static {
    fn directory(&self) -> &Directory;
}

/// What an import took and what it did not.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    pub structures: u32,
    pub services: u32,
    pub rejected: Vec<Rejection>,
}

/// One page of search results.
#[derive(Debug)]
pub struct Page {
    pub hits: Vec<(Found, u32)>,
    pub next_offset: Option<usize>,
    pub total: usize,
}

fn denied(why: impl Into<String>) -> AppError {
    AppError(DomainError::PermissionDenied(why.into()))
}

impl Directory {
    pub fn new(store: InstitutionStore, clock: Arc<dyn Clock>, agreement: Arc<Agreement>) -> Self {
        Directory {
            store,
            clock,
            agreement,
            index: Default::default(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs a write once per idempotency key.
    async fn once<T, F>(&self, call: Call<'_>, op: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: AsyncFnOnce(&mut Tx) -> Result<T>,
    {
        idempotency::once(&self.store, &*self.clock, call, op, || {}).await
    }

    /// Whether `caller` may write `service` (as it will be and as it was).
    fn may_write_service(
        &self,
        caller: &Caller,
        new: Option<&Service>,
        old: Option<&Service>,
    ) -> Result<()> {
        match caller.institution {
            Institution::Social => Ok(()),
            Institution::Emploi
                if self
                    .agreement
                    .directory
                    .employment_coadministers_training_sheets =>
            {
                if [new, old]
                    .into_iter()
                    .flatten()
                    .all(Service::is_employment_training)
                {
                    Ok(())
                } else {
                    Err(denied(
                        "the employment side co-administers the employment-training sheets only",
                    ))
                }
            }
            _ => Err(denied(format!(
                "under agreement {} the Département administers the directory",
                self.agreement.id
            ))),
        }
    }

    pub async fn upsert_structure(&self, call: Call<'_>, structure: Structure) -> Result<()> {
        structure.validate().map_err(|e| e.within("structure"))?;
        let now = self.clock.now();
        self.once(call, async |tx| {
            tx.upsert_directory(
                std::slice::from_ref(&structure),
                &[],
                &call.caller.agent,
                now,
            )
            .await?;
            Ok(())
        })
        .await
    }

    pub async fn upsert_service(
        &self,
        call: Call<'_>,
        service: Service,
        sensitive: Option<bool>,
    ) -> Result<bool> {
        service.validate().map_err(|e| e.within("service"))?;
        let now = self.clock.now();
        self.once(call, async |tx| {
            let old = tx.stored_service(&service.id).await?;
            self.may_write_service(call.caller, Some(&service), old.as_ref())?;
            tx.upsert_directory(
                &[],
                &[(service.clone(), sensitive)],
                &call.caller.agent,
                now,
            )
            .await?;
            Ok(())
        })
        .await?;
        Ok(self
            .store
            .directory_service(&service.id)
            .await?
            .is_some_and(|f| f.sensitive))
    }

    pub async fn delete_directory_service(&self, call: Call<'_>, id: &str) -> Result<()> {
        let now = self.clock.now();
        self.once(call, async |tx| {
            let old = tx
                .stored_service(id)
                .await?
                .ok_or(AppError(DomainError::NotFound("service")))?;
            self.may_write_service(call.caller, None, Some(&old))?;
            tx.delete_service(id, &call.caller.agent, now).await?;
            Ok(())
        })
        .await
    }

    /// Loads data·inclusion arrays: every valid record is written, every
    /// other one reported with its reason.
    pub async fn import_directory(
        &self,
        call: Call<'_>,
        structures_json: &str,
        services_json: &str,
    ) -> Result<ImportReport> {
        let mut report = ImportReport::default();
        let mut structures = vec![];
        for (index, parsed) in parse_records::<Structure>("structures", structures_json)? {
            match parsed.and_then(|s| {
                s.validate().map(|()| s.clone()).map_err(|e| Rejection {
                    collection: "structures".into(),
                    index,
                    id: s.id.clone(),
                    field: e.field,
                    reason: e.reason,
                })
            }) {
                Ok(s) => structures.push(s),
                Err(r) => report.rejected.push(r),
            }
        }
        let mut services = vec![];
        for (index, parsed) in parse_records::<Service>("services", services_json)? {
            let checked = parsed.and_then(|s| {
                let reject = |field: String, reason: String| Rejection {
                    collection: "services".into(),
                    index,
                    id: s.id.clone(),
                    field,
                    reason,
                };
                s.validate().map_err(|e| reject(e.field, e.reason))?;
                Ok(s.clone())
            });
            match checked {
                Ok(s) => services.push((index, s)),
                Err(r) => report.rejected.push(r),
            }
        }
        // A service needs its structure, in this file or already known.
        let mut kept = vec![];
        for (index, s) in services {
            let known = structures.iter().any(|st| st.id == s.structure_id)
                || self
                    .store
                    .directory_structure(&s.structure_id)
                    .await?
                    .is_some();
            if known {
                kept.push((s, None));
            } else {
                report.rejected.push(Rejection {
                    collection: "services".into(),
                    index,
                    id: s.id.clone(),
                    field: "structure_id".into(),
                    reason: format!(
                        "structure {} is in neither the file nor the directory",
                        s.structure_id
                    ),
                });
            }
        }
        report.structures = structures.len() as u32;
        report.services = kept.len() as u32;
        let now = self.clock.now();
        self.once(call, async |tx| {
            tx.upsert_directory(&structures, &kept, &call.caller.agent, now)
                .await?;
            Ok(report.clone())
        })
        .await
    }

    /// The search index at the directory's current version: kept in memory
    /// and rebuilt only after a write (by any replica).
    async fn directory_index(&self) -> Result<Arc<Vec<Entry>>> {
        let version = self.store.directory_version().await?;
        if let Some((built, entries)) = &*self.index.read().await
            && *built == version
        {
            return Ok(entries.clone());
        }
        let entries: Arc<Vec<Entry>> = Arc::new(
            self.store
                .directory_services()
                .await?
                .into_iter()
                .map(|f| Entry {
                    sensitive: f.sensitive,
                    prepared: Prepared::new(f.candidate),
                })
                .collect(),
        );
        *self.index.write().await = Some((version, entries.clone()));
        tracing::info!(version, services = entries.len(), "directory index rebuilt");
        Ok(entries)
    }

    pub async fn search_directory(
        &self,
        query: SearchQuery,
        offset: usize,
        size: usize,
    ) -> Result<Page> {
        let query = query.normalised();
        let index = self.directory_index().await?;
        let mut scored: Vec<(&Entry, u32)> = index
            .iter()
            .filter_map(|e| query.score(&e.prepared).map(|score| (e, score)))
            .collect();
        fn key(e: &Entry) -> (&str, &str) {
            let s = &e.prepared.candidate.service;
            (s.nom.as_str(), s.id.as_str())
        }
        scored.sort_by(|(a, sa), (b, sb)| sb.cmp(sa).then_with(|| key(a).cmp(&key(b))));
        let total = scored.len();
        let hits: Vec<_> = scored
            .into_iter()
            .skip(offset)
            .take(size)
            .map(|(e, score)| {
                (
                    Found {
                        candidate: e.prepared.candidate.clone(),
                        sensitive: e.sensitive,
                    },
                    score,
                )
            })
            .collect();
        let next_offset = (offset + hits.len() < total).then_some(offset + hits.len());
        Ok(Page {
            hits,
            next_offset,
            total,
        })
    }

    /// Each institution names its own offices' contact points; the
    /// Département may name any.
    pub async fn set_contact_point(&self, call: Call<'_>, point: ContactPoint) -> Result<()> {
        let office = self.agreement.office(&point.office_code).ok_or_else(|| {
            AppError::from(FieldError::new(
                "contact_point.office_code",
                format!("is not an office of agreement {}", self.agreement.id),
            ))
        })?;
        if call.caller.institution == Institution::Emploi && office.network() != Network::Emploi {
            return Err(denied(
                "the employment side names its own agencies' contact points",
            ));
        }
        self.once(call, async |tx| {
            tx.set_contact_point(&point).await?;
            Ok(())
        })
        .await
    }
}

/// The directory's gRPC service, answering through the hosting institution's state.
#[derive(Debug)]
pub struct DirectoryApi<H> {
    pub ready: Ready<H>,
}

fn hit(found: &Found, score: u32) -> v1::SearchHit {
    v1::SearchHit {
        service: Some((&found.candidate.service).into()),
        structure: found.candidate.structure.as_ref().map(Into::into),
        sensitive: found.sensitive,
        score,
    }
}

/// A record array in the data·inclusion JSON format.
fn data_inclusion_json<T: Serialize>(records: &[T]) -> std::result::Result<String, Status> {
    serde_json::to_string_pretty(records).map_err(|e| {
        tracing::error!(error = %e, "directory export failed");
        Status::internal("internal error")
    })
}

fn paris_now(now: DateTime<Utc>) -> chrono::NaiveDateTime {
    now.with_timezone(&chrono_tz::Europe::Paris).naive_local()
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    passerelle_contract::convert::timestamp(at)
}

#[tonic::async_trait]
impl<H: HostsDirectory> DirectoryService for DirectoryApi<H> {
    #[tracing::instrument(skip_all, fields(rpc = "SearchServices"))]
    async fn search_services(
        &self,
        request: Request<v1::SearchServicesRequest>,
    ) -> std::result::Result<Response<v1::SearchServicesResponse>, Status> {
        let app = self.ready.get()?.directory();
        let m = request.get_ref();
        let size = match m.page_size {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            _ => {
                return Err(AppError::from(FieldError::new(
                    "page_size",
                    format!("must be at most {MAX_PAGE}"),
                ))
                .into());
            }
        } as usize;
        let offset = if m.page_token.is_empty() {
            0
        } else {
            m.page_token.parse::<usize>().map_err(|_| {
                AppError::from(FieldError::new(
                    "page_token",
                    "is not a token this service gave",
                ))
            })?
        };
        let nonempty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        if let Some(code) = nonempty(&m.code_insee)
            && (code.len() != 5 || !code.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            return Err(
                AppError::from(FieldError::new("code_insee", "must be 5 characters")).into(),
            );
        }
        let query = SearchQuery {
            thematiques: m.thematiques.iter().map(|t| t.trim().to_owned()).collect(),
            publics: m.publics.iter().map(|p| p.trim().to_owned()).collect(),
            code_insee: nonempty(&m.code_insee),
            commune: nonempty(&m.commune),
            text: nonempty(&m.text),
            open_at: m.open_now.then(|| paris_now(app.now())),
        };
        let page = app.search_directory(query, offset, size).await?;
        Ok(Response::new(v1::SearchServicesResponse {
            hits: page.hits.iter().map(|(f, s)| hit(f, *s)).collect(),
            next_page_token: page.next_offset.map(|o| o.to_string()).unwrap_or_default(),
            total: page.total as u32,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetService"))]
    async fn get_service(
        &self,
        request: Request<v1::GetServiceRequest>,
    ) -> std::result::Result<Response<v1::GetServiceResponse>, Status> {
        let app = self.ready.get()?.directory();
        let found = app
            .store
            .directory_service(request.get_ref().id.trim())
            .await
            .map_err(AppError::from)?
            .ok_or(AppError(DomainError::NotFound("service")))?;
        Ok(Response::new(v1::GetServiceResponse {
            hit: Some(hit(&found, 0)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "UpsertStructure"))]
    async fn upsert_structure(
        &self,
        request: Request<v1::UpsertStructureRequest>,
    ) -> std::result::Result<Response<v1::UpsertStructureResponse>, Status> {
        let app = self.ready.get()?.directory();
        let l = local(&request)?;
        let m = request.get_ref();
        let structure = m
            .structure
            .as_ref()
            .ok_or_else(|| AppError::from(FieldError::new("structure", "is required")))?;
        app.upsert_structure(l.call(&m.idempotency_key), structure.into())
            .await?;
        Ok(Response::new(v1::UpsertStructureResponse {}))
    }

    #[tracing::instrument(skip_all, fields(rpc = "UpsertService"))]
    async fn upsert_service(
        &self,
        request: Request<v1::UpsertServiceRequest>,
    ) -> std::result::Result<Response<v1::UpsertServiceResponse>, Status> {
        let app = self.ready.get()?.directory();
        let l = local(&request)?;
        let m = request.get_ref();
        let service = m
            .service
            .as_ref()
            .ok_or_else(|| AppError::from(FieldError::new("service", "is required")))?;
        let sensitive = app
            .upsert_service(l.call(&m.idempotency_key), service.into(), m.sensitive)
            .await?;
        Ok(Response::new(v1::UpsertServiceResponse { sensitive }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DeleteService"))]
    async fn delete_service(
        &self,
        request: Request<v1::DeleteServiceRequest>,
    ) -> std::result::Result<Response<v1::DeleteServiceResponse>, Status> {
        let app = self.ready.get()?.directory();
        let l = local(&request)?;
        let m = request.get_ref();
        app.delete_directory_service(l.call(&m.idempotency_key), m.id.trim())
            .await?;
        Ok(Response::new(v1::DeleteServiceResponse {}))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ImportDataInclusion"))]
    async fn import_data_inclusion(
        &self,
        request: Request<v1::ImportDataInclusionRequest>,
    ) -> std::result::Result<Response<v1::ImportDataInclusionResponse>, Status> {
        let app = self.ready.get()?.directory();
        let l = local(&request)?;
        let m = request.get_ref();
        let report = app
            .import_directory(
                l.call(&m.idempotency_key),
                &m.structures_json,
                &m.services_json,
            )
            .await?;
        tracing::info!(
            structures = report.structures,
            services = report.services,
            rejected = report.rejected.len(),
            "directory imported"
        );
        Ok(Response::new(v1::ImportDataInclusionResponse {
            structures_imported: report.structures,
            services_imported: report.services,
            rejected: report.rejected.iter().map(Into::into).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ExportDataInclusion"))]
    async fn export_data_inclusion(
        &self,
        _request: Request<v1::ExportDataInclusionRequest>,
    ) -> std::result::Result<Response<v1::ExportDataInclusionResponse>, Status> {
        let app = self.ready.get()?.directory();
        let (structures, services) = app.store.directory_export().await.map_err(AppError::from)?;
        Ok(Response::new(v1::ExportDataInclusionResponse {
            structures_json: data_inclusion_json(&structures)?,
            services_json: data_inclusion_json(&services)?,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetHistory"))]
    async fn get_history(
        &self,
        request: Request<v1::GetHistoryRequest>,
    ) -> std::result::Result<Response<v1::GetHistoryResponse>, Status> {
        let app = self.ready.get()?.directory();
        let m = request.get_ref();
        if !["structures", "services", "contact_points"].contains(&m.collection.as_str()) {
            return Err(AppError::from(FieldError::new(
                "collection",
                "must be structures, services or contact_points",
            ))
            .into());
        }
        let changes = app
            .store
            .directory_history(&m.collection, m.id.trim())
            .await
            .map_err(AppError::from)?;
        Ok(Response::new(v1::GetHistoryResponse {
            changes: changes
                .iter()
                .map(|c| v1::DirectoryChange {
                    action: c.action.clone(),
                    changed_by: c.changed_by.clone(),
                    changed_at: Some(timestamp(c.changed_at)),
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SetContactPoint"))]
    async fn set_contact_point(
        &self,
        request: Request<v1::SetContactPointRequest>,
    ) -> std::result::Result<Response<v1::SetContactPointResponse>, Status> {
        let app = self.ready.get()?.directory();
        let l = local(&request)?;
        let m = request.get_ref();
        let p = m
            .contact_point
            .as_ref()
            .ok_or_else(|| AppError::from(FieldError::new("contact_point", "is required")))?;
        let text = |field: &str, value: &str| {
            passerelle_domain::person::required_text(&format!("contact_point.{field}"), value, 200)
                .map_err(AppError::from)
        };
        let point = ContactPoint {
            office_code: text("office_code", &p.office_code)?,
            name: text("name", &p.name)?,
            phone: text("phone", &p.phone)?,
            email: text("email", &p.email)?,
            updated_by: l.caller.agent.clone(),
            updated_at: app.now(),
        };
        app.set_contact_point(l.call(&m.idempotency_key), point)
            .await?;
        Ok(Response::new(v1::SetContactPointResponse {}))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListContactPoints"))]
    async fn list_contact_points(
        &self,
        _request: Request<v1::ListContactPointsRequest>,
    ) -> std::result::Result<Response<v1::ListContactPointsResponse>, Status> {
        let app = self.ready.get()?.directory();
        let points = app.store.contact_points().await.map_err(AppError::from)?;
        let offices_without = app
            .agreement
            .offices
            .iter()
            .filter(|o| !points.iter().any(|p| p.office_code == o.code))
            .map(|o| o.code.clone())
            .collect();
        Ok(Response::new(v1::ListContactPointsResponse {
            contact_points: points
                .iter()
                .map(|p| v1::ContactPoint {
                    office_code: p.office_code.clone(),
                    name: p.name.clone(),
                    phone: p.phone.clone(),
                    email: p.email.clone(),
                    updated_by: p.updated_by.clone(),
                    updated_at: Some(timestamp(p.updated_at)),
                })
                .collect(),
            offices_without,
        }))
    }
}
