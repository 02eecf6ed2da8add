//! Verifying an audit log against the heads its partner keeps of it: a log
//! rewritten from some record on (hashes recomputed, so its own chain still
//! verifies) no longer matches the head the partner received before.

/// The first anchored record whose hash in the log differs from the head
/// the partner kept (or that the log no longer holds); `None` when all match.
pub fn first_differing_anchor(
    anchors: &[(i64, String)],
    held: &[(i64, Option<String>)],
) -> Option<i64> {
    let mut differing: Vec<i64> = anchors
        .iter()
        .filter(|(seq, hash)| {
            held.iter()
                .find(|(s, _)| s == seq)
                .and_then(|(_, h)| h.as_deref())
                != Some(hash.as_str())
        })
        .map(|(seq, _)| *seq)
        .collect();
    differing.sort_unstable();
    differing.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_first_anchor_the_log_no_longer_matches() {
        let anchors = vec![
            (3, "c".to_owned()),
            (7, "g".to_owned()),
            (9, "i".to_owned()),
        ];
        let intact = vec![
            (3, Some("c".into())),
            (7, Some("g".into())),
            (9, Some("i".into())),
        ];
        assert_eq!(first_differing_anchor(&anchors, &intact), None);
        let rewritten = vec![
            (3, Some("c".into())),
            (7, Some("x".into())),
            (9, Some("y".into())),
        ];
        assert_eq!(first_differing_anchor(&anchors, &rewritten), Some(7));
        let truncated = vec![(3, Some("c".into())), (7, Some("g".into())), (9, None)];
        assert_eq!(first_differing_anchor(&anchors, &truncated), Some(9));
        assert_eq!(first_differing_anchor(&[], &intact), None);
    }
}
