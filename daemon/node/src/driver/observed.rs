//! The observation ledger: the newest round this member sent an observation
//! for, made durable before the observation leaves the process
//! ([`sibyl_aggregator::round::Action::RecordObservation`]). A restarted
//! member resumes after it, so it never sends two different observations for
//! one round.
//!
//! One 16-byte record (round, and a check word) overwritten in place and
//! `fdatasync`ed: a single sector write, cheaper than a SQLite transaction.
//! The driver records the next round ahead of time, off the round's critical
//! path (recording a round early only means a member that crashes sits that
//! round out). A record that fails its check (a torn write)
//! is reported as an error, never silently read as "nothing observed".

use sibyl_aggregator::Round;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const CHECK: u64 = 0x5159_4c4f_4253_5631; // "SIBYLOBSV1"-ish

/// An observation ledger file, open for writing.
pub struct ObservationLedger {
    file: File,
    path: PathBuf,
    last: Option<Round>,
}

#[derive(Debug, thiserror::Error)]
pub enum ObservedError {
    #[error("cannot use the observation ledger {}: {source}; check the data directory's permissions and free space", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the observation ledger {} is damaged; to be safe, delete it only after the committee has moved past the round shown in the signing ledger", .0.display())]
    Damaged(PathBuf),
    #[error(
        "the observation ledger's writer failed earlier (a panic while writing); restart the node"
    )]
    Poisoned,
}

impl ObservationLedger {
    /// Opens (creating if missing) the ledger at `path` and reads its round.
    pub fn open(path: &Path) -> Result<Self, ObservedError> {
        let io = |source| ObservedError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(io)?;
        let last = match buf.len() {
            0 => None,
            16 => {
                let round = u64::from_le_bytes(
                    buf[..8]
                        .try_into()
                        .map_err(|_| ObservedError::Damaged(path.into()))?,
                );
                let check = u64::from_le_bytes(
                    buf[8..]
                        .try_into()
                        .map_err(|_| ObservedError::Damaged(path.into()))?,
                );
                if check != round ^ CHECK {
                    return Err(ObservedError::Damaged(path.into()));
                }
                Some(round)
            }
            _ => return Err(ObservedError::Damaged(path.into())),
        };
        Ok(Self {
            file,
            path: path.to_path_buf(),
            last,
        })
    }

    /// The newest round recorded.
    pub fn last(&self) -> Option<Round> {
        self.last
    }

    /// Durably records `round` (a no-op unless it is newer).
    pub fn record(&mut self, round: Round) -> Result<(), ObservedError> {
        if self.last.is_some_and(|r| r >= round) {
            return Ok(());
        }
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(&round.to_le_bytes());
        buf[8..].copy_from_slice(&(round ^ CHECK).to_le_bytes());
        let io = |source| ObservedError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.last = Some(round);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("observed");
        let mut l = ObservationLedger::open(&p).unwrap();
        assert_eq!(l.last(), None);
        l.record(5).unwrap();
        l.record(3).unwrap();
        assert_eq!(l.last(), Some(5));
        drop(l);
        let mut l = ObservationLedger::open(&p).unwrap();
        assert_eq!(l.last(), Some(5));
        l.record(9).unwrap();
        assert_eq!(ObservationLedger::open(&p).unwrap().last(), Some(9));
    }

    #[test]
    fn a_damaged_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("observed");
        std::fs::write(&p, [1u8; 16]).unwrap();
        assert!(matches!(
            ObservationLedger::open(&p),
            Err(ObservedError::Damaged(_))
        ));
        std::fs::write(&p, [1u8; 5]).unwrap();
        assert!(matches!(
            ObservationLedger::open(&p),
            Err(ObservedError::Damaged(_))
        ));
    }
}
