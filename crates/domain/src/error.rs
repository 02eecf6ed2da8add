use std::fmt;

/// Input that does not hold, naming the field at fault (as the API spells it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the field path, so nested conversions name the full path.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

/// Everything the domain can refuse. Each service maps these to gRPC codes once.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("invalid {0}")]
    Invalid(#[from] FieldError),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is valid but the case is not in a state that allows it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A limit of the agreement is reached: a portfolio, a yearly quota.
    #[error("{0}")]
    LimitReached(String),
    /// The boundary refused: no consent, wrong purpose, not allowed.
    #[error("{0}")]
    PermissionDenied(String),
    /// The idempotency key was already used for a different request.
    #[error("idempotency key already used for a different request")]
    IdempotencyConflict,
    /// The service is busy (its database is locked by other writers): the
    /// same call, retried after a pause, will go through.
    #[error("{0}")]
    Unavailable(String),
    /// Storage or another dependency failed; details are logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl DomainError {
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        DomainError::Internal(Box::new(e))
    }
}
