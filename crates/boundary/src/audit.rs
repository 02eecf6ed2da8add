//! The audit record of every crossing and every denial. Values are never
//! recorded: only who, on behalf of which case, why, on which basis, which
//! fields and categories, and the decision. Records form a hash chain, so a
//! changed or removed record breaks every hash after it.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use passerelle_domain::{DataCategory, Institution, LegalBasis, Purpose, Role};
use serde::{Deserialize, Serialize};

use crate::identity::Caller;
use sha2::{Digest, Sha256};

/// The hash the first record of a log chains from.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allowed,
    Denied,
}

/// Which way the data went, seen from the institution keeping this log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Data arrived from, or was served to, a caller of this service.
    Inbound,
    /// This service sent data to another institution.
    Outbound,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub direction: Direction,
    /// The agent or service acting; `None` when the caller could not be identified.
    pub agent: Option<String>,
    pub agent_institution: Option<Institution>,
    pub agent_role: Option<Role>,
    /// The other institution of the crossing.
    pub counterpart: Option<Institution>,
    /// Wire path of the RPC.
    pub method: String,
    pub case_id: Option<passerelle_domain::CaseId>,
    pub purpose: Option<Purpose>,
    pub legal_basis: Option<LegalBasis>,
    pub consent_id: Option<passerelle_domain::ConsentId>,
    pub categories: BTreeSet<DataCategory>,
    /// Field paths that crossed (never their values).
    pub fields: Vec<String>,
    pub decision: Decision,
    pub reason: Option<String>,
}

/// A stored entry with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    /// The canonical JSON the hash covers.
    pub entry_json: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    /// A call coming in through `method` from `caller` (`None`: not
    /// identified), allowed and carrying nothing until the caller of this
    /// says otherwise.
    pub fn inbound(at: DateTime<Utc>, caller: Option<&Caller>, method: &str) -> Self {
        AuditEntry {
            at,
            direction: Direction::Inbound,
            agent: caller.map(|c| c.agent.clone()),
            agent_institution: caller.map(|c| c.institution),
            agent_role: caller.map(|c| c.role),
            counterpart: caller.map(|c| c.institution),
            method: method.to_owned(),
            case_id: None,
            purpose: None,
            legal_basis: None,
            consent_id: None,
            categories: BTreeSet::new(),
            fields: vec![],
            decision: Decision::Allowed,
            reason: None,
        }
    }

    /// The canonical text that is hashed and stored.
    pub fn canonical_json(&self) -> String {
        // Struct fields serialise in declaration order and sets are ordered:
        // the same entry always gives the same text.
        serde_json::to_string(self).unwrap_or_default()
    }
}

pub fn chain_hash(prev_hash: &str, entry_json: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(entry_json.as_bytes());
    hex::encode(hasher.finalize())
}

/// Checks a log from its first record; returns the sequence number of the
/// first record that does not chain.
pub fn verify_chain(records: &[AuditRecord]) -> Result<(), i64> {
    let mut prev = GENESIS_HASH.to_owned();
    for record in records {
        if record.prev_hash != prev || chain_hash(&prev, &record.entry_json) != record.hash {
            return Err(record.seq);
        }
        prev = record.hash.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(method: &str) -> AuditEntry {
        AuditEntry {
            at: DateTime::from_timestamp(1_700_000_000, 0).expect("valid"),
            direction: Direction::Inbound,
            agent: Some("svc".into()),
            agent_institution: Some(Institution::Social),
            agent_role: Some(Role::Service),
            counterpart: Some(Institution::Social),
            method: method.into(),
            case_id: Some("k".into()),
            purpose: Some(Purpose::Referral),
            legal_basis: Some(LegalBasis::Consent),
            consent_id: Some("c".into()),
            categories: [DataCategory::Identity].into(),
            fields: vec!["referral.person.first_name".into()],
            decision: Decision::Allowed,
            reason: None,
        }
    }

    fn chain(entries: &[AuditEntry]) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let json = e.canonical_json();
                let hash = chain_hash(&prev, &json);
                let r = AuditRecord {
                    seq: i as i64 + 1,
                    entry_json: json,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                r
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let records = chain(&[entry("/a"), entry("/b"), entry("/c")]);
        assert_eq!(verify_chain(&records), Ok(()));
    }

    #[test]
    fn editing_or_removing_a_record_is_detected() {
        let mut records = chain(&[entry("/a"), entry("/b"), entry("/c")]);
        records[1].entry_json = records[1].entry_json.replace("allowed", "denied");
        assert_eq!(verify_chain(&records), Err(2));

        let mut records = chain(&[entry("/a"), entry("/b"), entry("/c")]);
        records.remove(1);
        assert_eq!(verify_chain(&records), Err(3));
    }

    #[test]
    fn the_entry_holds_field_names_not_values() {
        let json = entry("/a").canonical_json();
        assert!(json.contains("referral.person.first_name"));
    }
}
