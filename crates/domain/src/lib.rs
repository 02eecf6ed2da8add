//! The accompaniment's domain: what a referral, a consent, a diagnosis and a
//! case are, and the rules that move a case along. Nothing here knows about
//! gRPC or SQL; the edges convert into these types.

pub mod agreement;
pub mod bounds;
pub mod case;
pub mod clock;
pub mod consent;
pub mod directory;
pub mod error;
pub mod ids;
pub mod indicators;
pub mod jobseeker;
pub mod orientation;
pub mod outbound;
pub mod person;
pub mod plan;
pub mod rights;
pub mod secrecy;
pub mod statistics;
pub mod terms;
pub mod vocabulary;

pub use case::{
    Case, CaseEntry, CaseEvent, CaseExit, CaseRenewal, CaseState, CheckAnswer, DiagnosisDraft,
    DiagnosisHalf, DueKind, EndOfProcessing, EndOfProcessingReason, ExclusiveOutcome, ExitReason,
    ExitType, Pair, Referent, Referral, ReferralDecision, ReferralDraft, ReferralState,
    SuspensionNotice, Track, Verdict,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use consent::{Consent, ConsentRefusal, ConsentState, Evidence, EvidenceKind, NewConsent};
pub use error::{DomainError, FieldError};
pub use ids::{CaseId, ConsentId};
pub use indicators::{Cell, Dashboard, Indicators, SourceStatus};
pub use outbound::Outbound;
pub use person::{
    Barrier, BarrierCategory, BarrierLevel, Contact, DisabilityDeclaration, EducationLevel,
    EmploymentSummary, Participant, PersonIdentity, Sex,
};
pub use vocabulary::{DataCategory, Institution, LegalBasis, Network, Purpose, Role, Side};
