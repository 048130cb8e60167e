//! The signing-ledger interchange: moving a member to a new host without
//! ever signing a round twice (lighthouse's slashing-protection interchange,
//! for rounds). `sibyl ledger export` writes the ledger as JSON and, unless
//! told to keep it, retires the source in the same transaction: a fence row
//! makes its ledger refuse every later round, so nothing the old host could
//! still sign is missing from the file. `sibyl ledger import` merges a file
//! into a data directory's ledger and never lowers what it holds.
//!
//! ```json
//! { "format": "sibyl-ledger-interchange", "version": 1,
//!   "config_digest": "<hex, 32 bytes>", "exported_at_ms": 1700000000000,
//!   "signing": [ { "round": 41, "digest": "<hex>", "recorded_at_ms": 0 } ],
//!   "last_observed_round": 42 }
//! ```

use super::{Db, i64_of, u64_of};
use crate::store::{SigningDigest, StoreError};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use sibyl_aggregator::Round;

/// `format` of an interchange file.
pub const LEDGER_FORMAT: &str = "sibyl-ledger-interchange";
/// `version` this build writes and reads.
pub const LEDGER_VERSION: u32 = 1;
/// The round of the fence row that retires a ledger (`i64::MAX`, the largest
/// round SQLite stores): every round is below it, so every signing is refused.
pub const RETIRED_ROUND: Round = i64::MAX as Round;

/// One signed round in the interchange file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRound {
    pub round: Round,
    /// Hex of the 32-byte digest signed in that round.
    pub digest: String,
    pub recorded_at_ms: u64,
}

/// A member's ledgers as one JSON document (docs/OPERATOR.md, "Moving a
/// member to a new host").
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerInterchange {
    pub format: String,
    pub version: u32,
    /// Hex of the committee's config digest: the file imports only into a
    /// member of the same committee.
    pub config_digest: String,
    pub exported_at_ms: u64,
    /// Every round the member signed, ascending (the newest alone is what
    /// protects; the rest is the record).
    pub signing: Vec<SignedRound>,
    /// The newest round the member sent an observation for
    /// (`DATA_DIR/observed-round`).
    pub last_observed_round: Option<Round>,
}

impl LedgerInterchange {
    /// The newest signed round in the file.
    pub fn newest_signed(&self) -> Option<Round> {
        self.signing.iter().map(|s| s.round).max()
    }
}

/// Why an interchange file cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum LedgerImportError {
    #[error(
        "not a ledger interchange file (format {format:?}, version {version}); expected format {LEDGER_FORMAT:?}, version {LEDGER_VERSION}"
    )]
    Format { format: String, version: u32 },
    #[error(
        "the file belongs to committee {file} but this member's committee is {ours}; import it on a member of the same committee"
    )]
    Committee { file: String, ours: String },
    #[error("the file is damaged: {0}")]
    Invalid(String),
    #[error(
        "this data directory's ledger was retired by `sibyl ledger export`: it must never sign again; import into a new data directory"
    )]
    Retired,
    #[error(
        "the file is older than this ledger: its newest signed round is {file:?}, this ledger already holds round {ours}; importing it cannot protect anything. Export again from the member's newest data directory"
    )]
    Older { file: Option<Round>, ours: Round },
    #[error(
        "this ledger already holds signed rounds (up to {ours}): importing into a ledger in use could hide that the member signed on two hosts. Import into a new data directory, or pass --merge if you know both ledgers belong to this member"
    )]
    InUse { ours: Round },
    #[error(
        "round {round} was signed with two different digests ({ours} here, {file} in the file): this member already signed the round twice on two hosts; find out how before it signs again"
    )]
    Conflict {
        round: Round,
        ours: String,
        file: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for LedgerImportError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerImportError::Store(e.into())
    }
}

/// What an import changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportSummary {
    /// Rows added to the signing ledger.
    pub added: usize,
    /// Rows already there with the same digest.
    pub already: usize,
    /// The ledger's newest round after the import.
    pub newest: Option<Round>,
}

fn digest_of(hex_str: &str, round: Round) -> Result<SigningDigest, LedgerImportError> {
    hex::decode(hex_str)
        .ok()
        .and_then(|b| <SigningDigest>::try_from(b.as_slice()).ok())
        .ok_or_else(|| {
            LedgerImportError::Invalid(format!(
                "round {round}: digest {hex_str:?} is not 32 bytes of hex"
            ))
        })
}

impl Db {
    /// The signing ledger as an interchange document (the fence excluded);
    /// with `retire`, the fence is written in the same exclusive transaction,
    /// so this ledger signs nothing after what the document holds.
    /// `config_digest` and `last_observed_round` come from the caller (the
    /// node's config and observation record).
    pub fn export_ledger(
        &mut self,
        config_digest: &[u8; 32],
        last_observed_round: Option<Round>,
        retire: bool,
        now_ms: u64,
    ) -> Result<(LedgerInterchange, bool), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)?;
        let fence = i64_of(RETIRED_ROUND, "round")?;
        let was_retired: bool = tx
            .query_row(
                "SELECT count(*) FROM signing_ledger WHERE round = ?1",
                [fence],
                |r| r.get::<_, i64>(0),
            )
            .map(|c| c > 0)?;
        let mut signing = Vec::new();
        {
            let mut stmt = tx.prepare(
                "SELECT round, digest, recorded_at_ms FROM signing_ledger WHERE round < ?1 ORDER BY round",
            )?;
            let mut rows = stmt.query([fence])?;
            while let Some(row) = rows.next()? {
                let round: i64 = row.get(0)?;
                let digest: Vec<u8> = row.get(1)?;
                let at: i64 = row.get(2)?;
                signing.push(SignedRound {
                    round: u64_of(round, "round")?,
                    digest: hex::encode(digest),
                    recorded_at_ms: u64_of(at, "timestamp")?,
                });
            }
        }
        if retire && !was_retired {
            tx.execute(
                "INSERT INTO signing_ledger (round, digest, recorded_at_ms) VALUES (?1, ?2, ?3)",
                params![fence, &[0xffu8; 32][..], i64_of(now_ms, "timestamp")?],
            )?;
        }
        tx.commit()?;
        Ok((
            LedgerInterchange {
                format: LEDGER_FORMAT.into(),
                version: LEDGER_VERSION,
                config_digest: hex::encode(config_digest),
                exported_at_ms: now_ms,
                signing,
                last_observed_round,
            },
            was_retired,
        ))
    }

    /// Whether `sibyl ledger export` retired this ledger.
    pub fn ledger_retired(&self) -> Result<bool, StoreError> {
        let fence = i64_of(RETIRED_ROUND, "round")?;
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM signing_ledger WHERE round = ?1",
                [fence],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Merge `file` into the signing ledger in one exclusive transaction.
    /// Refused: another committee's file, a retired ledger, a file older
    /// than the ledger, a ledger that already holds rounds (unless `merge`),
    /// a round with two digests. Never removes or lowers anything.
    pub fn import_ledger(
        &mut self,
        file: &LedgerInterchange,
        config_digest: &[u8; 32],
        merge: bool,
    ) -> Result<ImportSummary, LedgerImportError> {
        if file.format != LEDGER_FORMAT || file.version != LEDGER_VERSION {
            return Err(LedgerImportError::Format {
                format: file.format.clone(),
                version: file.version,
            });
        }
        let ours = hex::encode(config_digest);
        if !file.config_digest.eq_ignore_ascii_case(&ours) {
            return Err(LedgerImportError::Committee {
                file: file.config_digest.clone(),
                ours,
            });
        }
        let mut rows = Vec::with_capacity(file.signing.len());
        for s in &file.signing {
            if s.round >= RETIRED_ROUND {
                return Err(LedgerImportError::Invalid(format!(
                    "round {} is out of range",
                    s.round
                )));
            }
            rows.push((
                i64_of(s.round, "round")?,
                digest_of(&s.digest, s.round)?,
                i64_of(s.recorded_at_ms, "timestamp")?,
            ));
        }
        if rows.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(LedgerImportError::Invalid(
                "signed rounds are not strictly ascending".into(),
            ));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)?;
        let newest: Option<i64> =
            tx.query_row("SELECT max(round) FROM signing_ledger", [], |r| r.get(0))?;
        if let Some(n) = newest {
            let n = u64_of(n, "round")?;
            if n == RETIRED_ROUND {
                return Err(LedgerImportError::Retired);
            }
            if file.newest_signed().is_none_or(|f| f < n) {
                return Err(LedgerImportError::Older {
                    file: file.newest_signed(),
                    ours: n,
                });
            }
            if !merge {
                return Err(LedgerImportError::InUse { ours: n });
            }
        }
        let (mut added, mut already) = (0, 0);
        for (round, digest, at) in rows {
            let have: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT digest FROM signing_ledger WHERE round = ?1",
                    [round],
                    |r| r.get(0),
                )
                .optional()?;
            match have {
                Some(d) if d == digest => already += 1,
                Some(d) => {
                    return Err(LedgerImportError::Conflict {
                        round: u64_of(round, "round")?,
                        ours: hex::encode(d),
                        file: hex::encode(digest),
                    });
                }
                None => {
                    tx.execute(
                        "INSERT INTO signing_ledger (round, digest, recorded_at_ms) VALUES (?1, ?2, ?3)",
                        params![round, &digest[..], at],
                    )?;
                    added += 1;
                }
            }
        }
        let newest: Option<i64> =
            tx.query_row("SELECT max(round) FROM signing_ledger", [], |r| r.get(0))?;
        tx.commit()?;
        Ok(ImportSummary {
            added,
            already,
            newest: newest.map(|n| u64_of(n, "round")).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SigningRecord;

    const DIGEST: [u8; 32] = [7; 32];

    fn db(dir: &tempfile::TempDir, name: &str) -> Db {
        Db::open(&dir.path().join(name)).expect("open")
    }

    #[test]
    fn export_retires_and_import_refuses_what_would_sign_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut old = db(&dir, "old.db");
        for r in [3u64, 5, 9] {
            assert_eq!(
                old.record_signing(r, &[r as u8; 32], 1).expect("record"),
                SigningRecord::Recorded
            );
        }
        let (file, was) = old
            .export_ledger(&DIGEST, Some(10), true, 2)
            .expect("export");
        assert!(!was);
        assert_eq!(file.newest_signed(), Some(9));
        assert_eq!(file.signing.len(), 3);
        // The retired ledger refuses every later round; exporting again gives
        // the same rounds (the fence is not in the file).
        assert!(old.ledger_retired().expect("read"));
        assert!(matches!(
            old.record_signing(10, &[1; 32], 3),
            Err(StoreError::NotSafeToSign { .. })
        ));
        let (again, was) = old
            .export_ledger(&DIGEST, Some(10), true, 4)
            .expect("export");
        assert!(was);
        assert_eq!(again.signing, file.signing);
        // It survives JSON.
        let json = serde_json::to_string_pretty(&file).expect("json");
        let file: LedgerInterchange = serde_json::from_str(&json).expect("parse");

        let mut new = db(&dir, "new.db");
        let s = new.import_ledger(&file, &DIGEST, false).expect("import");
        assert_eq!((s.added, s.already, s.newest), (3, 0, Some(9)));
        // Rounds at or before the newest imported one are refused; later ones sign.
        for r in [3u64, 8, 9] {
            assert!(
                matches!(
                    new.record_signing(r, &[0xee; 32], 5),
                    Err(StoreError::NotSafeToSign { .. })
                ),
                "round {r}"
            );
        }
        assert_eq!(
            new.record_signing(11, &[11; 32], 5).expect("record"),
            SigningRecord::Recorded
        );
        // Importing the (now older) file again is refused, even with --merge.
        assert!(matches!(
            new.import_ledger(&file, &DIGEST, true),
            Err(LedgerImportError::Older { ours: 11, .. })
        ));
        // Into the retired ledger: refused.
        assert!(matches!(
            old.import_ledger(&file, &DIGEST, true),
            Err(LedgerImportError::Retired)
        ));
        // Another committee: refused.
        let mut other = db(&dir, "other.db");
        assert!(matches!(
            other.import_ledger(&file, &[8; 32], false),
            Err(LedgerImportError::Committee { .. })
        ));
        // A ledger in use needs --merge; a round signed with two digests
        // is reported, not merged.
        other.record_signing(5, &[0xaa; 32], 1).expect("record");
        assert!(matches!(
            other.import_ledger(&file, &DIGEST, false),
            Err(LedgerImportError::InUse { ours: 5 })
        ));
        assert!(matches!(
            other.import_ledger(&file, &DIGEST, true),
            Err(LedgerImportError::Conflict { round: 5, .. })
        ));
        // Nothing of the failed merge was written.
        assert_eq!(other.last_signed().expect("read").map(|l| l.0), Some(5));
    }

    #[test]
    fn damaged_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut new = db(&dir, "new.db");
        let good = LedgerInterchange {
            format: LEDGER_FORMAT.into(),
            version: LEDGER_VERSION,
            config_digest: hex::encode(DIGEST),
            exported_at_ms: 0,
            signing: vec![
                SignedRound {
                    round: 2,
                    digest: hex::encode([1u8; 32]),
                    recorded_at_ms: 0,
                },
                SignedRound {
                    round: 4,
                    digest: hex::encode([2u8; 32]),
                    recorded_at_ms: 0,
                },
            ],
            last_observed_round: None,
        };
        let mut unordered = good.clone();
        unordered.signing.reverse();
        let mut short = good.clone();
        short.signing[0].digest = "abcd".into();
        let mut version = good.clone();
        version.version = 9;
        for bad in [unordered, short] {
            assert!(matches!(
                new.import_ledger(&bad, &DIGEST, false),
                Err(LedgerImportError::Invalid(_))
            ));
        }
        assert!(matches!(
            new.import_ledger(&version, &DIGEST, false),
            Err(LedgerImportError::Format { .. })
        ));
        assert_eq!(new.last_signed().expect("read"), None);
        assert!(new.import_ledger(&good, &DIGEST, false).is_ok());
    }
}
