//! TEMPORARY shim until fmt lands digest.
use crate::report::ReportHeader;
pub fn header_digest(h: &ReportHeader) -> [u8; 32] {
    use sha3::{Digest, Keccak256};
    let mut k = Keccak256::new();
    k.update([h.version]);
    k.update(h.config_digest.0);
    k.update(h.round.to_be_bytes());
    k.update(h.timestamp_ms.to_be_bytes());
    k.update(h.merkle_root);
    k.finalize().into()
}
