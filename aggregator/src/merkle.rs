//! Merkle tree over a report's leaves, with proofs for one feed.
//!
//! ```text
//! leafHash = keccak256(0x00 ‖ abi.encode(leaf))
//! node     = keccak256(0x01 ‖ min(a, b) ‖ max(a, b))     (sorted pair)
//! ```
//!
//! Leaves are in ascending feed-id order. Each level pairs neighbours left to
//! right; an odd node at the end of a level is promoted unchanged. Because
//! pairs are sorted before hashing, a proof is just the list of siblings from
//! the leaf up, and a verifier (Rust or Solidity) folds them without needing
//! left/right bits. The 0x00/0x01 prefixes keep a leaf from ever being
//! mistaken for an inner node. The root of zero leaves is `bytes32(0)`.
//!
//! Building the tree is O(n): n leaf hashes and at most n-1 node hashes.

#![warn(missing_docs)]

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::encoding::encode_leaf;
use crate::report::{PROTOCOL_VERSION, ReportLeaf};
use sha3::{Digest, Keccak256};

/// Domain prefix of a leaf hash.
pub const LEAF_PREFIX: u8 = 0x00;
/// Domain prefix of an inner node hash.
pub const NODE_PREFIX: u8 = 0x01;
pub use crate::report::MAX_LEAVES;
/// Longest possible proof: `ceil(log2(MAX_LEAVES))`.
pub const MAX_PROOF_LEN: usize = 16;

/// `keccak256(0x00 ‖ abi.encode(leaf))`.
pub fn leaf_hash(leaf: &ReportLeaf) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update([LEAF_PREFIX]);
    h.update(encode_leaf(leaf));
    h.finalize().into()
}

/// `keccak256(0x01 ‖ min(a, b) ‖ max(a, b))`.
pub fn node_hash(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Keccak256::new();
    h.update([NODE_PREFIX]);
    h.update(lo);
    h.update(hi);
    h.finalize().into()
}

/// Root over `leaves` (which must already be in ascending feed-id order).
pub fn root(leaves: &[ReportLeaf]) -> [u8; 32] {
    root_of_hashes(leaves.iter().map(leaf_hash).collect())
}

/// Root over precomputed leaf hashes, reducing the level in place.
pub fn root_of_hashes(mut level: Vec<[u8; 32]>) -> [u8; 32] {
    if level.is_empty() {
        return [0u8; 32];
    }
    while level.len() > 1 {
        let next_len = level.len().div_ceil(2);
        for i in 0..next_len {
            level[i] = match level.get(2 * i + 1) {
                Some(right) => node_hash(&level[2 * i], right),
                None => level[2 * i],
            };
        }
        level.truncate(next_len);
    }
    level[0]
}

/// All levels of the tree, leaves first; for producing many proofs at once.
#[derive(Clone, Debug)]
pub struct MerkleTree {
    levels: Vec<Vec<[u8; 32]>>,
}

impl MerkleTree {
    /// The tree over `leaves`, which must already be in ascending feed-id order.
    pub fn new(leaves: &[ReportLeaf]) -> Self {
        Self::from_hashes(leaves.iter().map(leaf_hash).collect())
    }

    /// The tree over precomputed leaf hashes ([`leaf_hash`]), in leaf order.
    pub fn from_hashes(hashes: Vec<[u8; 32]>) -> Self {
        let mut levels = vec![hashes];
        while let Some(last) = levels.last().filter(|l| l.len() > 1) {
            let next = last
                .chunks(2)
                .map(|pair| match pair {
                    [a, b] => node_hash(a, b),
                    [a] => *a,
                    _ => unreachable!("chunks(2) yields one or two items"),
                })
                .collect();
            levels.push(next);
        }
        Self { levels }
    }

    /// Number of leaves.
    pub fn leaf_count(&self) -> usize {
        self.levels[0].len()
    }

    /// The root, the same as [`root`]: `bytes32(0)` for zero leaves.
    pub fn root(&self) -> [u8; 32] {
        match self.levels.last().and_then(|l| l.first()) {
            Some(r) if self.leaf_count() > 0 => *r,
            _ => [0u8; 32],
        }
    }

    /// The proof for leaf `index`: [`MerkleError::IndexOutOfRange`] past the last leaf,
    /// [`MerkleError::TooManyLeaves`] above [`MAX_LEAVES`].
    pub fn proof(&self, index: usize) -> Result<MerkleProof, MerkleError> {
        let count = self.leaf_count();
        if index >= count {
            return Err(MerkleError::IndexOutOfRange { index, count });
        }
        if count > MAX_LEAVES {
            return Err(MerkleError::TooManyLeaves { count });
        }
        let mut siblings = Vec::new();
        let mut i = index;
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(s) = level.get(i ^ 1) {
                siblings.push(*s);
            }
            i /= 2;
        }
        // Both below MAX_LEAVES (checked above), so they fit.
        let too_many = |_| MerkleError::TooManyLeaves { count };
        Ok(MerkleProof {
            leaf_index: u32::try_from(index).map_err(too_many)?,
            leaf_count: u32::try_from(count).map_err(too_many)?,
            siblings,
        })
    }
}

/// The proof for `leaves[index]`. Builds the whole tree: to prove many
/// leaves of one report, build a [`MerkleTree`] once instead.
pub fn proof(leaves: &[ReportLeaf], index: usize) -> Result<MerkleProof, MerkleError> {
    MerkleTree::new(leaves).proof(index)
}

/// Checks that `leaf_hash` is in the tree with `root`. The proof's position
/// fields must be consistent with its number of siblings.
pub fn verify_proof(leaf_hash: &[u8; 32], proof: &MerkleProof, root: &[u8; 32]) -> bool {
    if proof.leaf_index >= proof.leaf_count || proof.leaf_count as usize > MAX_LEAVES {
        return false;
    }
    if proof_len(proof.leaf_index, proof.leaf_count) != proof.siblings.len() {
        return false;
    }
    let computed = proof
        .siblings
        .iter()
        .fold(*leaf_hash, |acc, s| node_hash(&acc, s));
    computed == *root
}

/// Number of siblings on the path of leaf `index` in a tree of `count` leaves
/// (levels where the node is promoted contribute none).
pub fn proof_len(index: u32, count: u32) -> usize {
    let (mut i, mut n, mut len) = (index, count, 0);
    while n > 1 {
        if !(i == n - 1 && n % 2 == 1) {
            len += 1;
        }
        i /= 2;
        n = n.div_ceil(2);
    }
    len
}

/// Inclusion proof of one leaf.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MerkleProof {
    /// Position of the leaf in the report (feed-id order).
    pub leaf_index: u32,
    /// Number of leaves in the report.
    pub leaf_count: u32,
    /// Sibling hashes from the leaf level up.
    #[serde(with = "hex_list")]
    pub siblings: Vec<[u8; 32]>,
}

/// Why a proof cannot be produced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The leaf index is not below the number of leaves.
    #[error("leaf index {index} is out of range for a report of {count} leaves")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// Number of leaves in the tree.
        count: usize,
    },
    /// The tree has more than [`MAX_LEAVES`] leaves, more than a report may hold.
    #[error("a report holds at most {MAX_LEAVES} leaves, this one has {count}")]
    TooManyLeaves {
        /// Number of leaves in the tree.
        count: usize,
    },
}

/// Wire form: `u8 version ‖ u32 leafIndex ‖ u32 leafCount ‖ u32 n ‖ n × bytes32`.
impl Encode for MerkleProof {
    fn encode(&self, w: &mut Writer) {
        w.u8(PROTOCOL_VERSION)
            .u32(self.leaf_index)
            .u32(self.leaf_count)
            .seq(self.siblings.iter(), |w, s| {
                w.bytes32(s);
            });
    }
}

impl Decode for MerkleProof {
    const WHAT: &'static str = "merkle proof";
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(PROTOCOL_VERSION)?;
        let at = r.position();
        let leaf_index = r.u32("proof leaf index")?;
        let leaf_count = r.u32("proof leaf count")?;
        if leaf_count as usize > MAX_LEAVES {
            return Err(DecodeError::TooLong {
                what: "proof leaf count",
                at: at + 4,
                len: leaf_count.into(),
                max: MAX_LEAVES as u64,
            });
        }
        if leaf_index >= leaf_count {
            return Err(DecodeError::Invalid {
                what: "proof leaf index",
                at,
                reason: format!("index {leaf_index} is not below the leaf count {leaf_count}"),
            });
        }
        let siblings_at = r.position();
        let siblings = r.seq("proof siblings", MAX_PROOF_LEN, 32, |r| {
            r.bytes32("proof sibling")
        })?;
        let expected = proof_len(leaf_index, leaf_count);
        if siblings.len() != expected {
            return Err(DecodeError::Invalid {
                what: "proof siblings",
                at: siblings_at,
                reason: format!(
                    "leaf {leaf_index} of {leaf_count} needs {expected} siblings, got {}",
                    siblings.len()
                ),
            });
        }
        Ok(Self {
            leaf_index,
            leaf_count,
            siblings,
        })
    }
}

mod hex_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|h| format!("0x{}", hex::encode(h)))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s.trim_start_matches("0x"), &mut out)
                    .map_err(serde::de::Error::custom)?;
                Ok(out)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::FeedId;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<ReportLeaf> {
        (0..n)
            .map(|i| {
                ReportLeaf::basic(
                    FeedId::new(format!("F{i:05}")).unwrap(),
                    i as i128 * 1000 - 7,
                    i as u128,
                    3,
                    1_700_000_000_000 + i as u64,
                )
            })
            .collect()
    }

    /// The textbook recursive definition, to check the in-place reduction against.
    fn reference_root(hashes: &[[u8; 32]]) -> [u8; 32] {
        match hashes.len() {
            0 => [0; 32],
            1 => hashes[0],
            _ => {
                let next: Vec<_> = hashes
                    .chunks(2)
                    .map(|c| {
                        if c.len() == 2 {
                            node_hash(&c[0], &c[1])
                        } else {
                            c[0]
                        }
                    })
                    .collect();
                reference_root(&next)
            }
        }
    }

    #[test]
    fn small_trees_by_hand() {
        let l = leaves(3);
        let h: Vec<_> = l.iter().map(leaf_hash).collect();
        assert_eq!(root(&[]), [0; 32]);
        assert_eq!(root(&l[..1]), h[0]);
        assert_eq!(root(&l[..2]), node_hash(&h[0], &h[1]));
        assert_eq!(node_hash(&h[0], &h[1]), node_hash(&h[1], &h[0]));
        // Odd node promoted unchanged, then paired.
        assert_eq!(root(&l), node_hash(&node_hash(&h[0], &h[1]), &h[2]));
        let p = proof(&l, 2).unwrap();
        assert_eq!(p.siblings, vec![node_hash(&h[0], &h[1])]);
        assert!(verify_proof(&h[2], &p, &root(&l)));
    }

    #[test]
    fn leaf_and_node_domains_differ() {
        let l = leaves(2);
        let enc = encode_leaf(&l[0]);
        let mut prefixed = vec![LEAF_PREFIX];
        prefixed.extend_from_slice(&enc);
        let expected: [u8; 32] = Keccak256::digest(&prefixed).into();
        assert_eq!(leaf_hash(&l[0]), expected);
        let plain: [u8; 32] = Keccak256::digest(enc).into();
        assert_ne!(leaf_hash(&l[0]), plain);
        // An inner node over the same 64 bytes as two words never equals the
        // leaf-prefixed hash of those bytes.
        let h0 = leaf_hash(&l[0]);
        let h1 = leaf_hash(&l[1]);
        let mut as_leaf = vec![LEAF_PREFIX];
        as_leaf.extend_from_slice(h0.min(h1).as_slice());
        as_leaf.extend_from_slice(h0.max(h1).as_slice());
        let as_leaf: [u8; 32] = Keccak256::digest(&as_leaf).into();
        assert_ne!(node_hash(&h0, &h1), as_leaf);
    }

    #[test]
    fn every_proof_verifies_and_tampering_fails() {
        for n in [1usize, 2, 3, 5, 8, 13, 33] {
            let l = leaves(n);
            let tree = MerkleTree::new(&l);
            let r = root(&l);
            assert_eq!(tree.root(), r);
            for (i, leaf) in l.iter().enumerate() {
                let p = tree.proof(i).unwrap();
                assert_eq!(p.siblings.len(), proof_len(i as u32, n as u32));
                let h = leaf_hash(leaf);
                assert!(verify_proof(&h, &p, &r), "n={n} i={i}");
                let mut bad = leaf.clone();
                bad.price += 1;
                assert!(!verify_proof(&leaf_hash(&bad), &p, &r));
                if let Some(first) = p.siblings.first() {
                    let mut q = p.clone();
                    q.siblings[0] = {
                        let mut s = *first;
                        s[0] ^= 1;
                        s
                    };
                    assert!(!verify_proof(&h, &q, &r));
                    let mut short = p.clone();
                    short.siblings.pop();
                    assert!(!verify_proof(&h, &short, &r));
                }
            }
            assert_eq!(
                tree.proof(n),
                Err(MerkleError::IndexOutOfRange { index: n, count: n })
            );
        }
    }

    #[test]
    fn proof_decoder_rejects_bad_input() {
        let l = leaves(5);
        let p = proof(&l, 1).unwrap();
        let bytes = p.to_bytes();
        assert_eq!(MerkleProof::from_bytes(&bytes).unwrap(), p);
        let mut v = bytes.clone();
        v[0] = 9;
        assert_eq!(
            MerkleProof::from_bytes(&v).unwrap_err(),
            DecodeError::WrongVersion {
                got: 9,
                expected: PROTOCOL_VERSION
            }
        );
        let mut big = bytes.clone();
        big[5..9].copy_from_slice(&(MAX_LEAVES as u32 + 1).to_be_bytes());
        assert!(matches!(
            MerkleProof::from_bytes(&big),
            Err(DecodeError::TooLong { .. })
        ));
        let mut idx = bytes.clone();
        idx[1..5].copy_from_slice(&5u32.to_be_bytes());
        assert!(matches!(
            MerkleProof::from_bytes(&idx),
            Err(DecodeError::Invalid {
                what: "proof leaf index",
                ..
            })
        ));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            MerkleProof::from_bytes(&extra),
            Err(DecodeError::TrailingBytes { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(matches!(
                MerkleProof::from_bytes(&bytes[..cut]),
                Err(DecodeError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn max_size_tree_has_max_proof_len() {
        assert_eq!(proof_len(0, MAX_LEAVES as u32), MAX_PROOF_LEN);
        assert_eq!(
            proof_len(MAX_LEAVES as u32 - 1, MAX_LEAVES as u32),
            MAX_PROOF_LEN
        );
    }

    proptest! {
        #[test]
        fn root_matches_reference(n in 0usize..70) {
            let l = leaves(n);
            let h: Vec<_> = l.iter().map(leaf_hash).collect();
            prop_assert_eq!(root(&l), reference_root(&h));
            prop_assert_eq!(MerkleTree::new(&l).root(), reference_root(&h));
        }

        #[test]
        fn proof_roundtrips(n in 1usize..200, i in any::<prop::sample::Index>()) {
            let l = leaves(n);
            let i = i.index(n);
            let p = proof(&l, i).unwrap();
            prop_assert_eq!(MerkleProof::from_bytes(&p.to_bytes()).unwrap(), p);
        }
    }
}
