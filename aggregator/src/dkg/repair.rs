//! Repairing a member that lost its key shares (`sibyl repair`): FROST's
//! repairable threshold scheme (frost-core `keys::repairable`), as a sans-io
//! state machine like the DKG's. `t` helpers, each holding its own share,
//! give the lost member back *its* share of the *same* group key: nothing
//! changes on chain, no share moves, and no helper learns anything about
//! the lost share or any other helper's.
//!
//! ```text
//!   lost member                 helper h (each of t)                other helpers
//!   Request{nonce} ───────────► part1: one delta per helper ──Delta──► (and theirs to h)
//!                               t deltas in: part2 = sigma
//!   ◄──────────── Sigma{sigma, public key package}
//!   t sigmas: part3; the share must match the group's record of
//!   its verifying share; stored ──Done──► every helper stops
//! ```
//!
//! Every message goes point to point over the committee's authenticated,
//! encrypted transport (a delta or sigma is a secret), and carries the
//! committee digest, the lost member, and the lost member's fresh nonce for
//! this run: a restarted lost member starts a new run, and helpers follow
//! the newest one (deltas of an older run never mix in). The lost member
//! takes the group's public key package from its own file when it still
//! has one, and otherwise only when every helper sent the same bytes. A
//! repaired share that does not match that package's verifying share for
//! the member (a helper sent a wrong value) is refused: nothing is stored,
//! and the run can be repeated with other helpers.

use std::collections::{BTreeMap, BTreeSet};

use frost_core::Ciphersuite;
use frost_core::keys::repairable::{
    Delta, Sigma, repair_share_part1, repair_share_part2, repair_share_part3,
};
use frost_core::keys::{KeyPackage, PublicKeyPackage};
use rand_core::{CryptoRng, RngCore};

use super::ceremony::ident;
use super::{DkgError, Input, RefreshKeys};
use crate::report::{ConfigDigest, Suite};

type Ed = frost_ed25519::Ed25519Sha512;
type Evm = frost_secp256k1_evm::Secp256K1Keccak256;

const MAGIC: &[u8; 4] = b"SRPR";
const VERSION: u8 = 1;
const KIND_REQUEST: u8 = 1;
const KIND_DELTA: u8 = 2;
const KIND_SIGMA: u8 = 3;
const KIND_DONE: u8 = 4;
const KIND_ABORT: u8 = 5;
/// Largest serialized public key package accepted (n ≤ 255 members: a
/// verifying share and identifier per member, plus the group key).
const MAX_PKP_BYTES: usize = 64 * 1024;

/// One member's side of a repair.
#[derive(Clone, Debug)]
pub struct RepairConfig {
    /// The committee digest (every message is bound to it).
    pub digest: ConfigDigest,
    /// This member's index.
    pub me: u16,
    /// The member whose shares are repaired.
    pub lost: u16,
    /// The `t` helpers (the lost member excluded).
    pub helpers: BTreeSet<u16>,
    /// The suites repaired, each in full.
    pub suites: Vec<Suite>,
    /// Re-send what the other side still waits for after this long.
    pub resend_interval_ms: u64,
    /// The run fails this long after [`Input::Start`].
    pub timeout_ms: u64,
}

/// What this member brings.
pub enum RepairRole {
    /// A helper: its own key packages (and the group's public key packages).
    Helper(Box<RefreshKeys>),
    /// The lost member, with the group's public key packages it still has.
    Lost(Box<LostKeys>),
}

/// The group's public key packages the lost member still has, if any
/// (public files; `None` for a suite whose file is gone too).
#[derive(Default)]
pub struct LostKeys {
    pub ed25519: Option<PublicKeyPackage<Ed>>,
    pub secp256k1_evm: Option<PublicKeyPackage<Evm>>,
    /// A member joining (`sibyl repair --new-committee`): its identifier has
    /// no share in the group's public key package yet. Its share is made
    /// like a repaired one and checked against the verifying share
    /// interpolated from the group's ([`enrolled`]).
    pub enrol: bool,
}

/// The group's public key package with a verifying share for `id` too:
/// `Y_id = sum over the first t members j of lambda_j(id) * Y_j` (the
/// verifying shares are points of one degree t-1 polynomial in the
/// exponent, so any t of them give the same point). Deterministic: every
/// member extends its copy to the same package. Unchanged if `id` has a
/// share already.
pub fn enrolled<C: Ciphersuite>(
    pkp: &PublicKeyPackage<C>,
    id: frost_core::Identifier<C>,
) -> Result<PublicKeyPackage<C>, DkgError> {
    if pkp.verifying_shares().contains_key(&id) {
        return Ok(pkp.clone());
    }
    let t = pkp
        .min_signers()
        .ok_or_else(|| DkgError::Params("the public key package names no threshold".into()))?;
    let basis: BTreeSet<frost_core::Identifier<C>> = pkp
        .verifying_shares()
        .keys()
        .take(usize::from(t))
        .copied()
        .collect();
    if basis.len() != usize::from(t) {
        return Err(DkgError::Params(format!(
            "the public key package holds {} verifying shares, fewer than its threshold {t}",
            basis.len()
        )));
    }
    let mut point = <C::Group as frost_core::Group>::identity();
    for j in &basis {
        let lambda =
            frost_core::compute_lagrange_coefficient(&basis, Some(id), *j).map_err(frost)?;
        point = point + pkp.verifying_shares()[j].to_element() * lambda;
    }
    let mut shares = pkp.verifying_shares().clone();
    shares.insert(id, frost_core::keys::VerifyingShare::new(point));
    Ok(PublicKeyPackage::new(shares, *pkp.verifying_key(), Some(t)))
}

/// What the machine asks the driver to do, in order.
pub enum RepairOutput {
    Send {
        to: u16,
        bytes: Vec<u8>,
    },
    Progress(String),
    /// The lost member's repaired keys: store them, then go on handling
    /// (the `Done` messages to the helpers follow this output). Once.
    Repaired(Box<RefreshKeys>),
    /// A helper's part is over: the lost member stored its keys. Once.
    Helped,
    /// The repair failed; nothing is stored. Once.
    Failed(DkgError),
}

impl std::fmt::Debug for RepairOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepairOutput::Send { to, bytes } => write!(f, "Send(to {to}, {} bytes)", bytes.len()),
            RepairOutput::Progress(l) => write!(f, "Progress({l})"),
            RepairOutput::Repaired(k) => write!(f, "Repaired({k:?})"),
            RepairOutput::Helped => f.write_str("Helped"),
            RepairOutput::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

/// A length as `u16` (every length here is bounded far below; a larger one
/// encodes as `u16::MAX`, which the decoder refuses).
fn len16(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes()
}

fn suite_byte(s: Suite) -> u8 {
    match s {
        Suite::Ed25519 => 0,
        Suite::Secp256k1Evm => 1,
    }
}

fn suite_of(b: u8) -> Option<Suite> {
    match b {
        0 => Some(Suite::Ed25519),
        1 => Some(Suite::Secp256k1Evm),
        _ => None,
    }
}

/// A decoded repair message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairMessage {
    Request {
        helpers: BTreeSet<u16>,
    },
    Delta {
        suite: Suite,
        delta: Vec<u8>,
    },
    Sigma {
        suite: Suite,
        sigma: Vec<u8>,
        public_key_package: Vec<u8>,
    },
    Done,
    /// The repaired member gave up (its reason), so helpers stop too.
    Abort {
        reason: String,
    },
}

/// `MAGIC | VERSION | digest | lost u16 | nonce | kind | body`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairEnvelope {
    pub digest: ConfigDigest,
    pub lost: u16,
    pub nonce: [u8; 32],
    pub message: RepairMessage,
}

/// Whether `bytes` are a repair message (the driver routes by it).
pub fn is_repair_message(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

impl RepairEnvelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.digest.0);
        out.extend_from_slice(&self.lost.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        match &self.message {
            RepairMessage::Request { helpers } => {
                out.push(KIND_REQUEST);
                out.extend_from_slice(&len16(helpers.len()));
                for h in helpers {
                    out.extend_from_slice(&h.to_be_bytes());
                }
            }
            RepairMessage::Delta { suite, delta } => {
                out.push(KIND_DELTA);
                out.push(suite_byte(*suite));
                out.extend_from_slice(&len16(delta.len()));
                out.extend_from_slice(delta);
            }
            RepairMessage::Sigma {
                suite,
                sigma,
                public_key_package,
            } => {
                out.push(KIND_SIGMA);
                out.push(suite_byte(*suite));
                out.extend_from_slice(&len16(sigma.len()));
                out.extend_from_slice(sigma);
                out.extend_from_slice(
                    &u32::try_from(public_key_package.len())
                        .unwrap_or(u32::MAX)
                        .to_be_bytes(),
                );
                out.extend_from_slice(public_key_package);
            }
            RepairMessage::Done => out.push(KIND_DONE),
            RepairMessage::Abort { reason } => {
                out.push(KIND_ABORT);
                let mut end = reason.len().min(512);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                let r = &reason.as_bytes()[..end];
                out.extend_from_slice(&len16(r.len()));
                out.extend_from_slice(r);
            }
        }
        out
    }

    /// Decodes one message; every error says what is wrong and where.
    pub fn decode(bytes: &[u8]) -> Result<RepairEnvelope, String> {
        let mut at = 0usize;
        let mut take = |n: usize, what: &str| -> Result<&[u8], String> {
            let end = at
                .checked_add(n)
                .filter(|e| *e <= bytes.len())
                .ok_or_else(|| format!("truncated at byte {at}: {what} needs {n} bytes"))?;
            let s = &bytes[at..end];
            at = end;
            Ok(s)
        };
        if take(4, "magic")? != MAGIC {
            return Err("not a repair message (magic)".into());
        }
        let version = take(1, "version")?[0];
        if version != VERSION {
            return Err(format!(
                "repair message version {version}, expected {VERSION}"
            ));
        }
        let digest = ConfigDigest(take(32, "config digest")?.try_into().unwrap_or([0; 32]));
        let lost = u16::from_be_bytes(take(2, "lost member")?.try_into().unwrap_or([0; 2]));
        let nonce: [u8; 32] = take(32, "nonce")?.try_into().unwrap_or([0; 32]);
        let kind = take(1, "kind")?[0];
        let u16_at = |s: &[u8]| u16::from_be_bytes(s.try_into().unwrap_or([0; 2]));
        let message = match kind {
            KIND_REQUEST => {
                let n = u16_at(take(2, "helper count")?);
                if n > 1024 {
                    return Err(format!("{n} helpers"));
                }
                let mut helpers = BTreeSet::new();
                for _ in 0..n {
                    helpers.insert(u16_at(take(2, "helper")?));
                }
                RepairMessage::Request { helpers }
            }
            KIND_DELTA | KIND_SIGMA => {
                let suite_b = take(1, "suite")?[0];
                let suite = suite_of(suite_b).ok_or_else(|| format!("unknown suite {suite_b}"))?;
                let len = usize::from(u16_at(take(2, "scalar length")?));
                let scalar = take(len, "scalar")?.to_vec();
                if kind == KIND_DELTA {
                    RepairMessage::Delta {
                        suite,
                        delta: scalar,
                    }
                } else {
                    let len = u32::from_be_bytes(
                        take(4, "public key package length")?
                            .try_into()
                            .unwrap_or([0; 4]),
                    ) as usize;
                    if len > MAX_PKP_BYTES {
                        return Err(format!(
                            "public key package of {len} bytes (at most {MAX_PKP_BYTES})"
                        ));
                    }
                    RepairMessage::Sigma {
                        suite,
                        sigma: scalar,
                        public_key_package: take(len, "public key package")?.to_vec(),
                    }
                }
            }
            KIND_DONE => RepairMessage::Done,
            KIND_ABORT => {
                let len = usize::from(u16_at(take(2, "reason length")?));
                if len > 512 {
                    return Err(format!("a reason of {len} bytes (at most 512)"));
                }
                RepairMessage::Abort {
                    reason: String::from_utf8(take(len, "reason")?.to_vec())
                        .map_err(|_| "the reason is not UTF-8".to_string())?,
                }
            }
            other => return Err(format!("unknown repair message kind {other}")),
        };
        if at != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - at));
        }
        Ok(RepairEnvelope {
            digest,
            lost,
            nonce,
            message,
        })
    }
}

fn frost<E: std::fmt::Display>(e: E) -> DkgError {
    DkgError::Frost(e.to_string())
}

/// A helper's state for one suite in the current run.
struct Helping<C: Ciphersuite> {
    key: KeyPackage<C>,
    pkp_bytes: Vec<u8>,
    /// Serialized deltas for the other helpers (this run).
    out: BTreeMap<u16, Vec<u8>>,
    /// Deltas received (this helper's own included).
    got: BTreeMap<u16, Delta<C>>,
    sigma: Option<Vec<u8>>,
}

impl<C: Ciphersuite> Helping<C> {
    fn new(key: KeyPackage<C>, pkp: PublicKeyPackage<C>) -> Result<Self, DkgError> {
        let pkp_bytes = pkp.serialize().map_err(frost)?;
        Ok(Helping {
            key,
            pkp_bytes,
            out: BTreeMap::new(),
            got: BTreeMap::new(),
            sigma: None,
        })
    }

    /// The deltas of a run. Their randomness is derived from this helper's
    /// secret share and the run (committee, member repaired, its nonce,
    /// the helpers), as RFC 6979 derives nonces: a helper killed and
    /// restarted within a run sends the very deltas it sent before, so the
    /// sums the other helpers made with its first ones still add up. A new
    /// run (new nonce) gets new randomness.
    fn start(
        &mut self,
        me: u16,
        helpers: &BTreeSet<u16>,
        lost: u16,
        digest: &ConfigDigest,
        nonce: &[u8; 32],
    ) -> Result<(), DkgError> {
        use rand_core::SeedableRng;
        use sha3::Digest;
        let ids = helpers
            .iter()
            .map(|h| ident::<C>(*h))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seed = sha3::Sha3_256::new();
        seed.update(b"sibyl/repair-deltas/v1");
        seed.update(C::ID.as_bytes());
        seed.update(self.key.signing_share().serialize());
        seed.update(digest.0);
        seed.update(lost.to_be_bytes());
        seed.update(nonce);
        for h in helpers {
            seed.update(h.to_be_bytes());
        }
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed.finalize().into());
        let deltas =
            repair_share_part1(&ids, &self.key, &mut rng, ident::<C>(lost)?).map_err(frost)?;
        self.out.clear();
        self.got.clear();
        self.sigma = None;
        for h in helpers {
            let d = deltas
                .get(&ident::<C>(*h)?)
                .ok_or_else(|| DkgError::Frost(format!("no delta for helper {h}")))?;
            if *h == me {
                self.got.insert(me, *d);
            } else {
                self.out.insert(*h, d.serialize());
            }
        }
        Ok(())
    }

    /// Takes helper `from`'s delta; `Err` names it when it does not decode.
    fn delta(&mut self, from: u16, bytes: &[u8]) -> Result<(), DkgError> {
        let d = Delta::<C>::deserialize(bytes).map_err(|e| DkgError::BadMessage {
            member: from,
            phase: super::Phase::Round2,
            reason: format!("delta: {e}"),
        })?;
        self.got.entry(from).or_insert(d);
        Ok(())
    }

    /// The sigma, once every helper's delta is in.
    fn sigma(&mut self, helpers: &BTreeSet<u16>) -> Option<&Vec<u8>> {
        if self.sigma.is_none() && helpers.iter().all(|h| self.got.contains_key(h)) {
            let deltas: Vec<Delta<C>> = self.got.values().cloned().collect();
            self.sigma = Some(repair_share_part2(&deltas).serialize());
        }
        self.sigma.as_ref()
    }
}

/// The lost member's state for one suite.
struct Recovering<C: Ciphersuite> {
    known: Option<PublicKeyPackage<C>>,
    /// A joining member: the package gets its verifying share (interpolated).
    enrol: bool,
    /// Per helper: (sigma, the public key package bytes it sent).
    got: BTreeMap<u16, (Sigma<C>, Vec<u8>)>,
    result: Option<(KeyPackage<C>, PublicKeyPackage<C>)>,
}

impl<C: Ciphersuite> Recovering<C> {
    fn new(known: Option<PublicKeyPackage<C>>, enrol: bool) -> Self {
        Recovering {
            known,
            enrol,
            got: BTreeMap::new(),
            result: None,
        }
    }

    fn sigma(&mut self, from: u16, sigma: &[u8], pkp: &[u8]) -> Result<(), DkgError> {
        let s = Sigma::<C>::deserialize(sigma).map_err(|e| DkgError::BadMessage {
            member: from,
            phase: super::Phase::Round2,
            reason: format!("sigma: {e}"),
        })?;
        self.got.entry(from).or_insert((s, pkp.to_vec()));
        Ok(())
    }

    /// With every helper's sigma: the repaired key package, checked against
    /// the group's verifying share for `lost`.
    fn finish(
        &mut self,
        suite: Suite,
        lost: u16,
        helpers: &BTreeSet<u16>,
    ) -> Option<Result<(), DkgError>> {
        if self.result.is_some() || !helpers.iter().all(|h| self.got.contains_key(h)) {
            return None;
        }
        Some(self.recover(suite, lost, helpers))
    }

    fn recover(
        &mut self,
        suite: Suite,
        lost: u16,
        helpers: &BTreeSet<u16>,
    ) -> Result<(), DkgError> {
        let pkp = match &self.known {
            Some(known) => {
                let mine = known.serialize().map_err(frost)?;
                if let Some((h, _)) = self.got.iter().find(|(_, (_, p))| *p != mine) {
                    return Err(DkgError::Mismatch { member: *h });
                }
                known.clone()
            }
            None => {
                let mut by_bytes: BTreeMap<&Vec<u8>, Vec<u16>> = BTreeMap::new();
                for (h, (_, p)) in &self.got {
                    by_bytes.entry(p).or_default().push(*h);
                }
                if by_bytes.len() != 1 {
                    let groups: Vec<Vec<u16>> = by_bytes.into_values().collect();
                    return Err(DkgError::Params(format!(
                        "{suite:?}: the helpers sent different public key packages (members grouped by the package they sent: {groups:?}) and this member has none of its own to tell which is right; restore its public key package file (it is public: any member's copy) and rerun"
                    )));
                }
                let bytes = by_bytes.into_keys().next().cloned().unwrap_or_default();
                PublicKeyPackage::<C>::deserialize(&bytes).map_err(|e| DkgError::BadMessage {
                    member: *helpers.first().unwrap_or(&0),
                    phase: super::Phase::Round2,
                    reason: format!("public key package: {e}"),
                })?
            }
        };
        let id = ident::<C>(lost)?;
        let pkp = if self.enrol {
            // The joining member's verifying share is interpolated from the
            // others' here, whether or not the helpers (re-bound already)
            // sent a package that has one.
            let mut shares = pkp.verifying_shares().clone();
            shares.remove(&id);
            let others = PublicKeyPackage::new(shares, *pkp.verifying_key(), pkp.min_signers());
            let extended = enrolled(&others, id)?;
            if pkp.verifying_shares().contains_key(&id) && extended != pkp {
                return Err(DkgError::Params(format!(
                    "{suite:?}: the helpers' public key package gives member {lost} a verifying share other than the one the others' interpolate to"
                )));
            }
            extended
        } else {
            pkp
        };
        let expected = *pkp.verifying_shares().get(&id).ok_or_else(|| {
            DkgError::Params(format!(
                "{suite:?}: the group's public key package has no share for member {lost} (a member joining is added with --new-committee)"
            ))
        })?;
        let sigmas: Vec<Sigma<C>> = helpers
            .iter()
            .filter_map(|h| self.got.get(h).map(|(s, _)| *s))
            .collect();
        let key = repair_share_part3(&sigmas, id, &pkp).map_err(frost)?;
        if *key.verifying_share() != expected {
            return Err(DkgError::Frost(format!(
                "{suite:?}: the repaired share does not match member {lost}'s verifying share in the group's public key package: one of the helpers {helpers:?} sent a wrong value; nothing was stored; rerun, with other helpers if it repeats"
            )));
        }
        self.result = Some((key, pkp));
        Ok(())
    }
}

enum Side {
    Helper {
        ed: Option<Box<Helping<Ed>>>,
        evm: Option<Box<Helping<Evm>>>,
        /// Deltas of a run not begun here yet: (from, suite) -> (nonce, bytes).
        early: BTreeMap<(u16, Suite), ([u8; 32], Vec<u8>)>,
    },
    Lost {
        ed: Option<Box<Recovering<Ed>>>,
        evm: Option<Box<Recovering<Evm>>>,
    },
}

/// One member's side of a repair (see the module docs).
pub struct Repair {
    cfg: RepairConfig,
    side: Side,
    /// The run: the lost member's nonce (a helper's: the newest it saw).
    nonce: Option<[u8; 32]>,
    started_ms: Option<u64>,
    next_resend_ms: u64,
    finished: bool,
    failed: bool,
}

impl Repair {
    /// Checks the parameters against the keys this member brings.
    pub fn new(cfg: RepairConfig, role: RepairRole) -> Result<Repair, DkgError> {
        if cfg.helpers.contains(&cfg.lost) {
            return Err(DkgError::Params(format!(
                "member {} cannot help repair itself",
                cfg.lost
            )));
        }
        if cfg.suites.is_empty() {
            return Err(DkgError::Params("no suite to repair".into()));
        }
        let wants = |s: Suite| cfg.suites.contains(&s);
        let side = match role {
            RepairRole::Helper(keys) => {
                if !cfg.helpers.contains(&cfg.me) {
                    return Err(DkgError::Params(format!(
                        "member {} is not one of the helpers {:?}",
                        cfg.me, cfg.helpers
                    )));
                }
                let keys = *keys;
                let missing = |s: Suite| {
                    DkgError::Params(format!("this helper has no {s:?} key package to help with"))
                };
                let ed = match (wants(Suite::Ed25519), keys.ed25519) {
                    (true, Some((k, p))) => Some(Box::new(Helping::new(k, p)?)),
                    (true, None) => return Err(missing(Suite::Ed25519)),
                    (false, _) => None,
                };
                let evm = match (wants(Suite::Secp256k1Evm), keys.secp256k1_evm) {
                    (true, Some((k, p))) => Some(Box::new(Helping::new(k, p)?)),
                    (true, None) => return Err(missing(Suite::Secp256k1Evm)),
                    (false, _) => None,
                };
                let t = ed
                    .as_ref()
                    .map(|h| *h.key.min_signers())
                    .or_else(|| evm.as_ref().map(|h| *h.key.min_signers()));
                if let Some(t) = t
                    && cfg.helpers.len() != usize::from(t)
                {
                    return Err(DkgError::Params(format!(
                        "a repair needs exactly t = {t} helpers, not {} ({:?})",
                        cfg.helpers.len(),
                        cfg.helpers
                    )));
                }
                Side::Helper {
                    ed,
                    evm,
                    early: BTreeMap::new(),
                }
            }
            RepairRole::Lost(lost) => {
                let LostKeys {
                    ed25519,
                    secp256k1_evm,
                    enrol,
                } = *lost;
                if cfg.me != cfg.lost {
                    return Err(DkgError::Params(format!(
                        "member {} is repairing member {}'s shares but brings no keys to help",
                        cfg.me, cfg.lost
                    )));
                }
                Side::Lost {
                    ed: wants(Suite::Ed25519).then(|| Box::new(Recovering::new(ed25519, enrol))),
                    evm: wants(Suite::Secp256k1Evm)
                        .then(|| Box::new(Recovering::new(secp256k1_evm, enrol))),
                }
            }
        };
        Ok(Repair {
            cfg,
            side,
            nonce: None,
            started_ms: None,
            next_resend_ms: 0,
            finished: false,
            failed: false,
        })
    }

    /// When the driver should [`Input::Tick`] next.
    pub fn next_wake(&self) -> Option<u64> {
        if self.failed {
            return None;
        }
        let deadline = self.started_ms.map(|s| s + self.cfg.timeout_ms);
        Some(match deadline {
            Some(d) if !self.finished => self.next_resend_ms.min(d),
            _ => self.next_resend_ms,
        })
    }

    fn envelope(&self, message: RepairMessage) -> Vec<u8> {
        RepairEnvelope {
            digest: self.cfg.digest,
            lost: self.cfg.lost,
            nonce: self.nonce.unwrap_or([0; 32]),
            message,
        }
        .encode()
    }

    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        input: Input,
        rng: &mut R,
    ) -> Vec<RepairOutput> {
        if self.failed {
            return Vec::new();
        }
        let mut out = Vec::new();
        let result = match input {
            Input::Start { .. } => self.start(now, rng, &mut out),
            Input::Connected(_) => Ok(()),
            Input::Message { from, bytes } => self.on_message(from, &bytes, &mut out),
            Input::Tick => self.tick(now, &mut out),
        };
        if let Err(e) = result {
            self.failed = true;
            if let Side::Lost { .. } = self.side
                && self.nonce.is_some()
            {
                // The helpers stop too, blaming nobody for it.
                let abort = self.envelope(RepairMessage::Abort {
                    reason: e.to_string(),
                });
                for h in &self.cfg.helpers {
                    out.push(RepairOutput::Send {
                        to: *h,
                        bytes: abort.clone(),
                    });
                }
            }
            out.push(RepairOutput::Failed(e));
        }
        out
    }

    fn start<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
        out: &mut Vec<RepairOutput>,
    ) -> Result<(), DkgError> {
        self.started_ms = Some(now);
        self.next_resend_ms = now + self.cfg.resend_interval_ms;
        if let Side::Lost { .. } = self.side {
            let mut nonce = [0u8; 32];
            rng.fill_bytes(&mut nonce);
            self.nonce = Some(nonce);
            out.push(RepairOutput::Progress(format!(
                "asking helpers {:?} to repair member {}'s shares",
                self.cfg.helpers, self.cfg.lost
            )));
            self.request(out);
        } else {
            out.push(RepairOutput::Progress(format!(
                "helping member {} (helpers {:?}); waiting for its request",
                self.cfg.lost, self.cfg.helpers
            )));
        }
        Ok(())
    }

    /// The lost member asks every helper whose sigma it still lacks.
    fn request(&self, out: &mut Vec<RepairOutput>) {
        let Side::Lost { ed, evm } = &self.side else {
            return;
        };
        let bytes = self.envelope(RepairMessage::Request {
            helpers: self.cfg.helpers.clone(),
        });
        for h in &self.cfg.helpers {
            let lacks = ed.as_ref().is_some_and(|r| !r.got.contains_key(h))
                || evm.as_ref().is_some_and(|r| !r.got.contains_key(h));
            if lacks {
                out.push(RepairOutput::Send {
                    to: *h,
                    bytes: bytes.clone(),
                });
            }
        }
    }

    fn tick(&mut self, now: u64, out: &mut Vec<RepairOutput>) -> Result<(), DkgError> {
        if let Some(s) = self.started_ms
            && !self.finished
            && now >= s + self.cfg.timeout_ms
        {
            return Err(match self.side {
                // The helpers know why a sigma is missing; this member does not.
                Side::Lost { .. } => DkgError::RepairIncomplete {
                    missing: self.missing(),
                },
                Side::Helper { .. } => DkgError::RepairTimeout {
                    lost: self.cfg.lost,
                    missing: self.missing(),
                },
            });
        }
        if now < self.next_resend_ms {
            return Ok(());
        }
        self.next_resend_ms = now + self.cfg.resend_interval_ms;
        match &self.side {
            Side::Lost { .. } if self.finished => {
                let done = self.envelope(RepairMessage::Done);
                for h in &self.cfg.helpers {
                    out.push(RepairOutput::Send {
                        to: *h,
                        bytes: done.clone(),
                    });
                }
            }
            Side::Lost { .. } => self.request(out),
            Side::Helper { .. } if self.finished || self.nonce.is_none() => {}
            Side::Helper { .. } => self.send_helper_messages(out),
        }
        Ok(())
    }

    /// Whom this member still waits for.
    fn missing(&self) -> Vec<u16> {
        match &self.side {
            Side::Lost { ed, evm } => self
                .cfg
                .helpers
                .iter()
                .copied()
                .filter(|h| {
                    ed.as_ref().is_some_and(|r| !r.got.contains_key(h))
                        || evm.as_ref().is_some_and(|r| !r.got.contains_key(h))
                })
                .collect(),
            Side::Helper { ed, evm, .. } => {
                if self.nonce.is_none() {
                    return vec![self.cfg.lost];
                }
                let mut m: Vec<u16> = self
                    .cfg
                    .helpers
                    .iter()
                    .copied()
                    .filter(|h| {
                        ed.as_ref().is_some_and(|x| !x.got.contains_key(h))
                            || evm.as_ref().is_some_and(|x| !x.got.contains_key(h))
                    })
                    .collect();
                if m.is_empty() {
                    m.push(self.cfg.lost); // its "stored"
                }
                m
            }
        }
    }

    /// A helper's deltas to the other helpers, and its sigma (with the
    /// public key package) to the lost member once it has one.
    fn send_helper_messages(&mut self, out: &mut Vec<RepairOutput>) {
        let helpers = self.cfg.helpers.clone();
        let lost = self.cfg.lost;
        let mut msgs = Vec::new();
        if let Side::Helper { ed, evm, .. } = &mut self.side {
            macro_rules! per_suite {
                ($h:expr, $suite:expr) => {
                    if let Some(h) = $h.as_mut() {
                        for (to, d) in &h.out {
                            msgs.push((
                                *to,
                                RepairMessage::Delta {
                                    suite: $suite,
                                    delta: d.clone(),
                                },
                            ));
                        }
                        let pkp = h.pkp_bytes.clone();
                        if let Some(sigma) = h.sigma(&helpers) {
                            msgs.push((
                                lost,
                                RepairMessage::Sigma {
                                    suite: $suite,
                                    sigma: sigma.clone(),
                                    public_key_package: pkp,
                                },
                            ));
                        }
                    }
                };
            }
            per_suite!(ed, Suite::Ed25519);
            per_suite!(evm, Suite::Secp256k1Evm);
        }
        for (to, m) in msgs {
            out.push(RepairOutput::Send {
                to,
                bytes: self.envelope(m),
            });
        }
    }

    fn on_message(
        &mut self,
        from: u16,
        bytes: &[u8],
        out: &mut Vec<RepairOutput>,
    ) -> Result<(), DkgError> {
        let env = match RepairEnvelope::decode(bytes) {
            Ok(e) => e,
            // Not ours, or garbage from a member: the transport names the
            // sender, but a stray message is no reason to stop a repair.
            Err(_) => return Ok(()),
        };
        if env.digest != self.cfg.digest || env.lost != self.cfg.lost {
            return Ok(()); // another committee's or another member's repair
        }
        match (&mut self.side, env.message) {
            (Side::Helper { .. }, RepairMessage::Request { helpers }) => {
                if from != self.cfg.lost {
                    return Ok(());
                }
                if helpers != self.cfg.helpers {
                    return Err(DkgError::Params(format!(
                        "member {} asks helpers {helpers:?}, this member was told {:?}; run every member's `sibyl repair` with the same --helpers",
                        self.cfg.lost, self.cfg.helpers
                    )));
                }
                if self.finished || self.nonce == Some(env.nonce) {
                    // A repeat: answer with what it may have missed.
                    if !self.finished {
                        self.send_helper_messages(out);
                    }
                    return Ok(());
                }
                self.begin_run(env.nonce, out)
            }
            (Side::Helper { ed, evm, early }, RepairMessage::Delta { suite, delta }) => {
                if !self.cfg.helpers.contains(&from) || from == self.cfg.me || self.finished {
                    return Ok(());
                }
                if self.nonce != Some(env.nonce) {
                    // A run this helper has not seen the request of (yet).
                    early.insert((from, suite), (env.nonce, delta));
                    return Ok(());
                }
                match suite {
                    Suite::Ed25519 => ed.as_mut().map(|h| h.delta(from, &delta)),
                    Suite::Secp256k1Evm => evm.as_mut().map(|h| h.delta(from, &delta)),
                }
                .transpose()?;
                self.after_delta(out);
                Ok(())
            }
            (Side::Helper { .. }, RepairMessage::Abort { reason }) => {
                if from == self.cfg.lost && self.nonce == Some(env.nonce) && !self.finished {
                    return Err(DkgError::RepairAbandoned {
                        member: from,
                        reason,
                    });
                }
                Ok(())
            }
            (Side::Helper { .. }, RepairMessage::Done) => {
                if from == self.cfg.lost && self.nonce == Some(env.nonce) && !self.finished {
                    self.finished = true;
                    out.push(RepairOutput::Progress(format!(
                        "member {} stored its repaired shares",
                        self.cfg.lost
                    )));
                    out.push(RepairOutput::Helped);
                }
                Ok(())
            }
            (
                Side::Lost { ed, evm },
                RepairMessage::Sigma {
                    suite,
                    sigma,
                    public_key_package,
                },
            ) => {
                if !self.cfg.helpers.contains(&from) || self.nonce != Some(env.nonce) {
                    return Ok(());
                }
                if self.finished {
                    out.push(RepairOutput::Send {
                        to: from,
                        bytes: self.envelope(RepairMessage::Done),
                    });
                    return Ok(());
                }
                match suite {
                    Suite::Ed25519 => ed
                        .as_mut()
                        .map(|r| r.sigma(from, &sigma, &public_key_package)),
                    Suite::Secp256k1Evm => evm
                        .as_mut()
                        .map(|r| r.sigma(from, &sigma, &public_key_package)),
                }
                .transpose()?;
                self.after_sigma(out)
            }
            _ => Ok(()),
        }
    }

    fn begin_run(&mut self, nonce: [u8; 32], out: &mut Vec<RepairOutput>) -> Result<(), DkgError> {
        let (me, lost, helpers) = (self.cfg.me, self.cfg.lost, self.cfg.helpers.clone());
        let restarted = self.nonce.is_some();
        self.nonce = Some(nonce);
        let mut early_now = Vec::new();
        if let Side::Helper { ed, evm, early } = &mut self.side {
            let digest = self.cfg.digest;
            if let Some(h) = ed.as_mut() {
                h.start(me, &helpers, lost, &digest, &nonce)?;
            }
            if let Some(h) = evm.as_mut() {
                h.start(me, &helpers, lost, &digest, &nonce)?;
            }
            early.retain(|_, (n, _)| *n == nonce);
            early_now = std::mem::take(early).into_iter().collect();
        }
        out.push(RepairOutput::Progress(format!(
            "member {lost} {}asked for its shares: deltas to the other helpers",
            if restarted { "restarted and " } else { "" }
        )));
        for ((from, suite), (_, delta)) in early_now {
            if let Side::Helper { ed, evm, .. } = &mut self.side {
                match suite {
                    Suite::Ed25519 => ed.as_mut().map(|h| h.delta(from, &delta)),
                    Suite::Secp256k1Evm => evm.as_mut().map(|h| h.delta(from, &delta)),
                }
                .transpose()?;
            }
        }
        self.send_helper_messages(out);
        Ok(())
    }

    /// After a delta: the sigma goes out as soon as it exists.
    fn after_delta(&mut self, out: &mut Vec<RepairOutput>) {
        let helpers = self.cfg.helpers.clone();
        let Side::Helper { ed, evm, .. } = &mut self.side else {
            return;
        };
        let had = ed.as_ref().is_none_or(|h| h.sigma.is_some())
            && evm.as_ref().is_none_or(|h| h.sigma.is_some());
        let ready = ed.as_mut().is_none_or(|h| h.sigma(&helpers).is_some())
            && evm.as_mut().is_none_or(|h| h.sigma(&helpers).is_some());
        if ready && !had {
            out.push(RepairOutput::Progress(format!(
                "every helper's delta in: sigma to member {}",
                self.cfg.lost
            )));
            self.send_helper_messages(out);
        }
    }

    /// After a sigma: with every helper's sigma for every suite, the
    /// repaired keys, then `Done` to every helper.
    fn after_sigma(&mut self, out: &mut Vec<RepairOutput>) -> Result<(), DkgError> {
        let (lost, helpers) = (self.cfg.lost, self.cfg.helpers.clone());
        let Side::Lost { ed, evm } = &mut self.side else {
            return Ok(());
        };
        if let Some(r) = ed.as_mut()
            && let Some(res) = r.finish(Suite::Ed25519, lost, &helpers)
        {
            res?;
            out.push(RepairOutput::Progress(
                "ed25519: share repaired and checked".into(),
            ));
        }
        if let Some(r) = evm.as_mut()
            && let Some(res) = r.finish(Suite::Secp256k1Evm, lost, &helpers)
        {
            res?;
            out.push(RepairOutput::Progress(
                "secp256k1-evm: share repaired and checked".into(),
            ));
        }
        let complete = ed.as_ref().is_none_or(|r| r.result.is_some())
            && evm.as_ref().is_none_or(|r| r.result.is_some());
        if !complete {
            return Ok(());
        }
        let keys = RefreshKeys {
            ed25519: ed.as_ref().and_then(|r| r.result.clone()),
            secp256k1_evm: evm.as_ref().and_then(|r| r.result.clone()),
        };
        self.finished = true;
        out.push(RepairOutput::Repaired(Box::new(keys)));
        let done = self.envelope(RepairMessage::Done);
        for h in &helpers {
            out.push(RepairOutput::Send {
                to: *h,
                bytes: done.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use frost_core::Identifier;
    use frost_core::keys::{IdentifierList, generate_with_dealer};
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};
    use std::collections::VecDeque;

    fn dealt<C: Ciphersuite>(
        n: u16,
        t: u16,
        rng: &mut ChaCha20Rng,
    ) -> (BTreeMap<u16, KeyPackage<C>>, PublicKeyPackage<C>) {
        let (shares, pkp) =
            generate_with_dealer::<C, _>(n, t, IdentifierList::Default, rng).unwrap();
        let keys = (1..=n)
            .map(|i| {
                let id = Identifier::<C>::try_from(i).unwrap();
                (i, KeyPackage::try_from(shares[&id].clone()).unwrap())
            })
            .collect();
        (keys, pkp)
    }

    struct Run {
        machines: BTreeMap<u16, Repair>,
        repaired: Option<RefreshKeys>,
        helped: BTreeSet<u16>,
        failed: BTreeMap<u16, DkgError>,
    }

    /// Every machine, messages delivered in order; `drop_first` messages from
    /// (from, to) are lost, `tamper` edits a message in flight.
    fn run(
        n: u16,
        t: u16,
        lost: u16,
        helpers: &[u16],
        lost_keeps_pkp: bool,
        tamper: impl FnMut(u16, u16, &mut Vec<u8>) -> bool,
        seed: u64,
    ) -> (Run, RefreshKeys) {
        run_with(n, t, lost, helpers, lost_keeps_pkp, tamper, seed, false)
    }

    /// `enrol`: `lost` joins: the keys are dealt to all `n` members, but
    /// everyone's public key package leaves `lost` out (as if it never had
    /// a share), so the returned keys are what the joining member's share
    /// must come out as.
    #[allow(clippy::too_many_arguments)]
    fn run_with(
        n: u16,
        t: u16,
        lost: u16,
        helpers: &[u16],
        lost_keeps_pkp: bool,
        mut tamper: impl FnMut(u16, u16, &mut Vec<u8>) -> bool,
        seed: u64,
        enrol: bool,
    ) -> (Run, RefreshKeys) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (ed_keys, ed_full) = dealt::<Ed>(n, t, &mut rng);
        let (evm_keys, evm_full) = dealt::<Evm>(n, t, &mut rng);
        fn without<C: Ciphersuite>(p: &PublicKeyPackage<C>, lost: u16) -> PublicKeyPackage<C> {
            let mut shares = p.verifying_shares().clone();
            shares.remove(&ident::<C>(lost).unwrap());
            PublicKeyPackage::new(shares, *p.verifying_key(), p.min_signers())
        }
        let (ed_pkp, evm_pkp) = if enrol {
            (without(&ed_full, lost), without(&evm_full, lost))
        } else {
            (ed_full.clone(), evm_full.clone())
        };
        let helpers: BTreeSet<u16> = helpers.iter().copied().collect();
        let cfg = |me: u16| RepairConfig {
            digest: ConfigDigest([7; 32]),
            me,
            lost,
            helpers: helpers.clone(),
            suites: vec![Suite::Ed25519, Suite::Secp256k1Evm],
            resend_interval_ms: 100,
            timeout_ms: 10_000,
        };
        let mut machines = BTreeMap::new();
        for h in &helpers {
            let keys = RefreshKeys {
                ed25519: Some((ed_keys[h].clone(), ed_pkp.clone())),
                secp256k1_evm: Some((evm_keys[h].clone(), evm_pkp.clone())),
            };
            machines.insert(
                *h,
                Repair::new(cfg(*h), RepairRole::Helper(Box::new(keys))).unwrap(),
            );
        }
        let role = RepairRole::Lost(Box::new(LostKeys {
            ed25519: lost_keeps_pkp.then(|| ed_pkp.clone()),
            secp256k1_evm: lost_keeps_pkp.then(|| evm_pkp.clone()),
            enrol,
        }));
        machines.insert(lost, Repair::new(cfg(lost), role).unwrap());
        let mut r = Run {
            machines,
            repaired: None,
            helped: BTreeSet::new(),
            failed: BTreeMap::new(),
        };
        let mut queue: VecDeque<(u16, u16, Vec<u8>)> = VecDeque::new();
        let mut now = 0u64;
        let members: Vec<u16> = r.machines.keys().copied().collect();
        for m in &members {
            let outs = r.machines.get_mut(m).unwrap().handle(
                now,
                Input::Start {
                    connected: BTreeSet::new(),
                },
                &mut rng,
            );
            collect(&mut r, *m, outs, &mut queue);
        }
        for _ in 0..200 {
            while let Some((from, to, mut bytes)) = queue.pop_front() {
                if !tamper(from, to, &mut bytes) {
                    continue;
                }
                let outs = r.machines.get_mut(&to).unwrap().handle(
                    now,
                    Input::Message { from, bytes },
                    &mut rng,
                );
                collect(&mut r, to, outs, &mut queue);
            }
            let over = |m: &u16| {
                r.helped.contains(m)
                    || r.failed.contains_key(m)
                    || (*m == lost && r.repaired.is_some())
            };
            if members.iter().all(over) {
                break;
            }
            now += 100;
            for m in &members {
                let outs = r
                    .machines
                    .get_mut(m)
                    .unwrap()
                    .handle(now, Input::Tick, &mut rng);
                collect(&mut r, *m, outs, &mut queue);
            }
        }
        let original = RefreshKeys {
            ed25519: Some((ed_keys[&lost].clone(), ed_full)),
            secp256k1_evm: Some((evm_keys[&lost].clone(), evm_full)),
        };
        (r, original)
    }

    #[test]
    fn a_joining_member_gets_the_share_the_group_polynomial_gives_it() {
        // Dealt to 5 (t = 3) but member 5 never had its share: helpers 1, 3,
        // 4 give it the share the dealer's polynomial gives identifier 5, and
        // its public key package is the one every member extends its own to.
        for keeps in [true, false] {
            let (r, full) = run_with(5, 3, 5, &[1, 3, 4], keeps, |_, _, _| true, 21, true);
            assert!(r.failed.is_empty(), "{:?}", r.failed);
            let got = r.repaired.expect("enrolled");
            let (k, p) = got.ed25519.unwrap();
            let (fk, fp) = full.ed25519.unwrap();
            assert_eq!(k.signing_share(), fk.signing_share());
            assert_eq!(p, fp, "the interpolated verifying share is the dealt one");
            let stripped = {
                let mut shares = fp.verifying_shares().clone();
                shares.remove(&ident::<Ed>(5).unwrap());
                PublicKeyPackage::new(shares, *fp.verifying_key(), fp.min_signers())
            };
            assert_eq!(enrolled(&stripped, ident::<Ed>(5).unwrap()).unwrap(), fp);
            let (k, p) = got.secp256k1_evm.unwrap();
            let (fk, fp) = full.secp256k1_evm.unwrap();
            assert_eq!(k.signing_share(), fk.signing_share());
            assert_eq!(p, fp);
            assert_eq!(r.helped.len(), 3);
        }
    }

    #[test]
    fn a_restarted_helper_sends_the_same_deltas_within_a_run_and_new_ones_in_the_next() {
        let mut rng = ChaCha20Rng::seed_from_u64(31);
        let (keys, pkp) = dealt::<Ed>(4, 3, &mut rng);
        let helpers: BTreeSet<u16> = [1, 2, 3].into();
        let deltas = |nonce: [u8; 32]| {
            let mut h = Helping::new(keys[&2].clone(), pkp.clone()).unwrap();
            h.start(2, &helpers, 4, &ConfigDigest([7; 32]), &nonce)
                .unwrap();
            h.out
        };
        let first = deltas([1; 32]);
        assert_eq!(first.len(), 2);
        assert_eq!(
            deltas([1; 32]),
            first,
            "killed and restarted in the same run"
        );
        assert_ne!(deltas([2; 32]), first, "a new run");
    }

    #[test]
    fn a_helper_lying_to_a_joining_member_is_caught() {
        // Helper 3 alters its sigma for the joining member 5: the share does
        // not match the interpolated verifying share, nothing is stored.
        let (r, _) = run_with(
            5,
            3,
            5,
            &[1, 2, 3],
            true,
            |from, to, bytes| {
                if from == 3
                    && to == 5
                    && let Ok(mut env) = RepairEnvelope::decode(bytes)
                    && let RepairMessage::Sigma { sigma, .. } = &mut env.message
                {
                    sigma[10] ^= 1;
                    *bytes = env.encode();
                }
                true
            },
            23,
            true,
        );
        assert!(r.repaired.is_none(), "a wrong share was stored");
        assert!(r.failed.contains_key(&5), "{:?}", r.failed.keys());
    }

    fn collect(
        r: &mut Run,
        me: u16,
        outs: Vec<RepairOutput>,
        queue: &mut VecDeque<(u16, u16, Vec<u8>)>,
    ) {
        for o in outs {
            match o {
                RepairOutput::Send { to, bytes } => queue.push_back((me, to, bytes)),
                RepairOutput::Repaired(k) => r.repaired = Some(*k),
                RepairOutput::Helped => {
                    r.helped.insert(me);
                }
                RepairOutput::Failed(e) => {
                    r.failed.insert(me, e);
                }
                RepairOutput::Progress(_) => {}
            }
        }
    }

    #[test]
    fn helpers_give_the_lost_member_back_its_own_shares() {
        for (n, t, lost, helpers) in [
            (4u16, 3u16, 4u16, vec![1u16, 2, 3]),
            (4, 3, 1, vec![2, 3, 4]),
            (7, 5, 3, vec![1, 2, 4, 6, 7]),
        ] {
            for keeps in [true, false] {
                let (r, original) = run(n, t, lost, &helpers, keeps, |_, _, _| true, u64::from(n));
                assert!(r.failed.is_empty(), "{:?}", r.failed);
                let got = r.repaired.expect("repaired");
                let (k, p) = got.ed25519.unwrap();
                let (ok, op) = original.ed25519.unwrap();
                assert_eq!(k.signing_share(), ok.signing_share(), "n {n} lost {lost}");
                assert_eq!(p, op);
                let (k, _) = got.secp256k1_evm.unwrap();
                assert_eq!(
                    k.signing_share(),
                    original.secp256k1_evm.unwrap().0.signing_share()
                );
                assert_eq!(r.helped.len(), helpers.len(), "every helper saw it stored");
            }
        }
    }

    #[test]
    fn a_wrong_delta_is_refused_and_nothing_is_repaired() {
        // Helper 2 sends helper 3 a different (valid) scalar as its delta.
        let (r, _) = run(
            4,
            3,
            4,
            &[1, 2, 3],
            true,
            |from, to, bytes| {
                if from == 2 && to == 3 && bytes[KIND_AT] == KIND_DELTA {
                    let n = bytes.len();
                    bytes[n - 1] ^= 1;
                }
                true
            },
            9,
        );
        assert!(r.repaired.is_none());
        let e = r.failed.get(&4).expect("the lost member refuses");
        assert!(e.to_string().contains("does not match"), "{e}");
    }

    #[test]
    fn a_helper_sending_another_public_key_package_is_named() {
        let (r, _) = run(
            4,
            3,
            4,
            &[1, 2, 3],
            true,
            |from, _to, bytes| {
                if from == 3 && bytes[KIND_AT] == KIND_SIGMA {
                    let n = bytes.len();
                    bytes[n - 1] ^= 1;
                }
                true
            },
            11,
        );
        assert!(r.repaired.is_none());
        assert_eq!(r.failed.get(&4).and_then(DkgError::culprit), Some(3));
    }

    /// Where the kind byte sits: magic, version, digest, lost, nonce.
    const KIND_AT: usize = 4 + 1 + 32 + 2 + 32;

    /// Over 100 seeds: n = 4 or 7, a random lost member and t helpers, one
    /// helper Byzantine in one of six ways. The repaired member stores only
    /// its true share, and no error points at an honest member.
    #[test]
    fn byzantine_helpers_over_100_seeds_never_plant_a_share_or_blame_the_honest() {
        #[derive(Clone, Copy, Debug)]
        enum Byz {
            WrongDelta,
            WrongSigma,
            OtherPackage,
            Withhold,
            OtherNonce,
            Garbage,
        }
        let kinds = [
            Byz::WrongDelta,
            Byz::WrongSigma,
            Byz::OtherPackage,
            Byz::Withhold,
            Byz::OtherNonce,
            Byz::Garbage,
        ];
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        for seed in 0..100u64 {
            let mut pick = ChaCha20Rng::seed_from_u64(seed + 7_000);
            let (n, t) = if seed % 2 == 0 { (4u16, 3u16) } else { (7, 5) };
            let lost = 1 + (pick.next_u32() % u32::from(n)) as u16;
            let mut others: Vec<u16> = (1..=n).filter(|m| *m != lost).collect();
            for i in (1..others.len()).rev() {
                let j = (pick.next_u32() as usize) % (i + 1);
                others.swap(i, j);
            }
            let helpers: Vec<u16> = others[..usize::from(t)].to_vec();
            let byz = helpers[(pick.next_u32() as usize) % helpers.len()];
            let kind = kinds[(seed as usize / 2) % kinds.len()];
            let keeps = pick.next_u32() % 2 == 0;
            let (r, original) = run(
                n,
                t,
                lost,
                &helpers,
                keeps,
                |from, _to, bytes| {
                    if from != byz {
                        return true;
                    }
                    let k = bytes.get(KIND_AT).copied();
                    match kind {
                        Byz::Withhold => return false,
                        Byz::Garbage => *bytes = vec![0x5a; 30],
                        Byz::OtherNonce => bytes[KIND_AT - 1] ^= 1,
                        Byz::WrongDelta if k == Some(KIND_DELTA) => {
                            let n = bytes.len();
                            bytes[n - 1] ^= 1;
                        }
                        Byz::OtherPackage if k == Some(KIND_SIGMA) => {
                            let n = bytes.len();
                            bytes[n - 1] ^= 1;
                        }
                        Byz::WrongSigma if k == Some(KIND_SIGMA) => {
                            // The sigma's last byte: after kind, suite, length.
                            let at = KIND_AT + 1 + 1 + 2 + 31;
                            bytes[at] ^= 1;
                        }
                        _ => {}
                    }
                    true
                },
                seed,
            );
            if let Some(got) = &r.repaired {
                let share = |k: &RefreshKeys| k.ed25519.as_ref().map(|(k, _)| *k.signing_share());
                assert_eq!(
                    share(got),
                    share(&original),
                    "seed {seed} {kind:?}: a wrong share was stored"
                );
            }
            for (m, e) in &r.failed {
                if *m == byz {
                    continue;
                }
                let who = e.suspects();
                assert!(
                    who.iter().all(|w| *w == byz),
                    "seed {seed} {kind:?} (byzantine {byz}, lost {lost}): member {m} suspects {who:?}: {e}"
                );
            }
            let key = format!(
                "{kind:?}: {}",
                if r.repaired.is_some() {
                    "repaired"
                } else {
                    "refused"
                }
            );
            // (A wrong delta can still repair: flipping the last bit of the
            // deltas to two helpers adds +e and -e when the bits differ, and
            // the sum, the share, is right. The check above holds either way.)
            *outcomes.entry(key).or_default() += 1;
        }
        eprintln!("{outcomes:#?}");
    }

    #[test]
    fn parameters_that_cannot_work_are_refused_up_front() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (keys, pkp) = dealt::<Ed>(4, 3, &mut rng);
        let cfg = |me, helpers: &[u16]| RepairConfig {
            digest: ConfigDigest([7; 32]),
            me,
            lost: 4,
            helpers: helpers.iter().copied().collect(),
            suites: vec![Suite::Ed25519],
            resend_interval_ms: 100,
            timeout_ms: 1000,
        };
        let helper = |me: u16| {
            RepairRole::Helper(Box::new(RefreshKeys {
                ed25519: Some((keys[&me].clone(), pkp.clone())),
                secp256k1_evm: None,
            }))
        };
        let e = Repair::new(cfg(1, &[1, 2]), helper(1)).err().unwrap();
        assert!(e.to_string().contains("exactly t = 3 helpers"), "{e}");
        let e = Repair::new(cfg(1, &[1, 2, 4]), helper(1)).err().unwrap();
        assert!(e.to_string().contains("cannot help repair itself"), "{e}");
        let e = Repair::new(cfg(1, &[2, 3, 4]), helper(1)).err().unwrap();
        assert!(e.to_string().contains("cannot help repair itself"), "{e}");
        let e = Repair::new(cfg(1, &[1, 2, 3]), RepairRole::Lost(Box::default()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("brings no keys"), "{e}");
    }

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let env = RepairEnvelope {
            digest: ConfigDigest([1; 32]),
            lost: 4,
            nonce: [2; 32],
            message: RepairMessage::Sigma {
                suite: Suite::Secp256k1Evm,
                sigma: vec![3; 32],
                public_key_package: vec![4; 100],
            },
        };
        let bytes = env.encode();
        assert!(is_repair_message(&bytes));
        assert_eq!(RepairEnvelope::decode(&bytes).unwrap(), env);
        for cut in 0..bytes.len() {
            assert!(
                RepairEnvelope::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(
            RepairEnvelope::decode(&long)
                .unwrap_err()
                .contains("trailing")
        );
        let mut huge = RepairEnvelope {
            message: RepairMessage::Done,
            ..env
        }
        .encode();
        huge.pop();
        huge.extend_from_slice(&[KIND_SIGMA, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(
            RepairEnvelope::decode(&huge)
                .unwrap_err()
                .contains("at most")
        );
    }
}
