//! TEMPORARY shim until fmt lands merkle.
use crate::report::ReportLeaf;
pub fn root(leaves: &[ReportLeaf]) -> [u8; 32] {
    use sha3::{Digest, Keccak256};
    let mut h = Keccak256::new();
    for l in leaves {
        h.update(l.feed_id.to_bytes32());
        h.update(l.price.to_be_bytes());
        h.update(l.confidence.to_be_bytes());
        h.update(l.num_observations.to_be_bytes());
        h.update(l.observed_at_ms.to_be_bytes());
    }
    h.finalize().into()
}
