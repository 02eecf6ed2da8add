//! The one mapping from domain errors to gRPC status codes.

use passerelle_domain::{DomainError, FieldError};
use passerelle_storage::StoreError;
use tonic::{Code, Status};

/// Wraps a domain error on its way out of a handler.
#[derive(Debug)]
pub struct AppError(pub DomainError);

impl From<DomainError> for AppError {
    fn from(e: DomainError) -> Self {
        AppError(e)
    }
}

impl From<FieldError> for AppError {
    fn from(e: FieldError) -> Self {
        AppError(DomainError::Invalid(e))
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(why) => AppError(DomainError::FailedPrecondition(why)),
            e if e.is_busy() => {
                tracing::warn!(error = %e, "database busy; the caller is told to retry");
                AppError(DomainError::Unavailable(
                    "the service is busy: retry the same call after a pause".into(),
                ))
            }
            e => AppError(DomainError::internal(e)),
        }
    }
}

impl From<AppError> for Status {
    fn from(AppError(e): AppError) -> Self {
        match e {
            // The field path is the client's own vocabulary: safe to return.
            DomainError::Invalid(f) => {
                Status::invalid_argument(format!("{}: {}", f.field, f.reason))
            }
            DomainError::NotFound(what) => Status::not_found(format!("{what} not found")),
            DomainError::FailedPrecondition(why) => Status::failed_precondition(why),
            // Retrying will not help until a place frees or the limit is raised.
            DomainError::LimitReached(why) => Status::resource_exhausted(why),
            DomainError::PermissionDenied(why) => Status::permission_denied(why),
            // Integrators retry UNAVAILABLE with backoff; INTERNAL they do not.
            DomainError::Unavailable(why) => Status::unavailable(why),
            DomainError::IdempotencyConflict => {
                Status::invalid_argument("idempotency_key: already used for a different request")
            }
            DomainError::Internal(source) => {
                // Details go to the log, never to the caller.
                tracing::error!(error = %source, "internal error");
                Status::new(Code::Internal, "internal error")
            }
        }
    }
}

/// Prefixes a field error with the request field it came from.
pub fn within(parent: &'static str) -> impl Fn(FieldError) -> AppError {
    move |e| AppError::from(e.within(parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_never_reach_the_caller() {
        let status = Status::from(AppError(DomainError::internal(std::io::Error::other(
            "password=hunter2 at db-7",
        ))));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn invalid_input_names_the_field() {
        let status = Status::from(AppError::from(FieldError::new(
            "referral.person.birth_date",
            "is not a date",
        )));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("referral.person.birth_date"));
    }
}
