//! `passerelle audit verify`: checks an institution's audit log offline,
//! from its database, and against the heads its partner keeps of it (read
//! from the partner's database), naming the first record that differs.

use passerelle_boundary::audit::verify_chain;
use passerelle_storage::audit::AuditLog;
use passerelle_storage::{Database, Schema};

/// What the verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub records: usize,
    /// The first record that does not chain; `None` when the chain holds.
    pub first_broken_seq: Option<i64>,
    /// Heads of this log the partner keeps.
    pub anchors_checked: usize,
    /// The first anchored record whose hash here differs from the partner's.
    pub first_differing_seq: Option<i64>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.first_broken_seq.is_none() && self.first_differing_seq.is_none()
    }
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.first_broken_seq {
            None => writeln!(f, "{} records: the chain holds.", self.records)?,
            Some(seq) => writeln!(
                f,
                "{} records: the chain breaks at record {seq} (changed, removed or inserted).",
                self.records
            )?,
        }
        match (self.anchors_checked, self.first_differing_seq) {
            (0, _) => writeln!(f, "No head of this log kept by the partner was given."),
            (n, None) => writeln!(f, "{n} heads kept by the partner: all match."),
            (n, Some(seq)) => writeln!(
                f,
                "{n} heads kept by the partner: record {seq} differs from the head the partner received (the log was rewritten from there or before)."
            ),
        }
    }
}

async fn open(url: &str) -> anyhow::Result<AuditLog> {
    let db = Database::connect(url, Schema::Institution, 2).await?;
    Ok(AuditLog::new(db))
}

/// Verifies the log in `database`, and against the anchors kept in
/// `partner_database` when given.
pub async fn verify(
    database: &str,
    partner_database: Option<&str>,
) -> anyhow::Result<Verification> {
    let log = open(database).await?;
    let records = log.records().await?;
    let first_broken_seq = verify_chain(&records).err();
    let (anchors_checked, first_differing_seq) = match partner_database {
        None => (0, None),
        Some(url) => {
            let partner = open(url).await?;
            let anchors = partner.partner_anchors().await?;
            partner.close().await;
            let seqs: Vec<i64> = anchors.iter().map(|a| a.seq).collect();
            let held = log.hashes_at(&seqs).await?;
            let anchors: Vec<(i64, String)> =
                anchors.into_iter().map(|a| (a.seq, a.hash)).collect();
            (
                anchors.len(),
                passerelle_rights::audit::first_differing_anchor(&anchors, &held),
            )
        }
    };
    log.close().await;
    Ok(Verification {
        records: records.len(),
        first_broken_seq,
        anchors_checked,
        first_differing_seq,
    })
}
