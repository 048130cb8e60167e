//! Node configuration and the committee file.
//!
//! Two TOML files configure a member:
//!
//! ```text
//!   node.toml  (one per operator: keys, listen addresses, store, API, logs, sources)
//!      │ node.committee = "committee.toml"   (path relative to node.toml)
//!      ▼
//!   committee.toml  (identical on every member: members, threshold, suites,
//!                    leader seed, round timing, feeds)
//!      │ committee_digest (PROTOCOL.md "Config digest")
//!      ▼
//!   config digest   (carried by every message and report)
//! ```
//!
//! Both files are parsed with `deny_unknown_fields`; every section has
//! defaults except the ones an operator must decide. Durations are strings
//! (`"250ms"`, `"2s"`, `"1m"`). Secrets are never written in the config: the
//! key passphrase comes from an environment variable (`passphrase_env`) or a
//! file (`passphrase_file`).
//!
//! Loading reports every problem it can find, each with the file, line,
//! column, the key and what to do. A syntax or type error stops parsing of
//! that file (TOML can't be reliably read past it); semantic problems (bad
//! threshold, duplicate members, bad peer ids, ...) are all collected.
//! `sibyl config check --config node.toml` runs exactly this validation.
//!
//! Where things are: `diagnostics` (problems with file, line, column, key and
//! hint), `node` (node.toml's sections, defaults and checks), `committee`
//! (committee.toml and the validated committee), `check` (`sibyl config
//! check`); this file keeps durations and `Config::load`, which reads both
//! files and the `[sources]` section together.
//!
//! ## Config digest
//! The digest does not hash the file's bytes (comments and formatting must
//! not split a committee). It is the protocol's
//! `sibyl_aggregator::round::committee::committee_digest` of the validated
//! committee, specified byte for byte in docs/PROTOCOL.md ("Config digest"):
//! threshold, suites, leader seed, round timing, members (index and identity
//! key) and feeds. Members' network addresses are not in it, so moving a
//! host does not change the committee's identity. Two files that say the
//! same thing give the same digest; any change of substance gives another.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use serde::{Deserialize, Serialize};
use sibyl_aggregator::round::message::{MAX_FEEDS, MAX_MEMBERS};
use sibyl_aggregator::{ConfigDigest, FeedId, Suite};
use toml::Spanned;

use crate::keystore::{KeyPaths, Keystore, Passphrase};

mod check;
mod committee;
mod diagnostics;
mod node;

pub use check::*;
pub use committee::*;
pub use diagnostics::*;
pub use node::*;

/// Largest number of feed decimals: prices are i128 and must leave headroom.
pub const MAX_DECIMALS: u8 = 30;

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

/// A duration written as a string: an integer and a unit, `"250ms"`, `"2s"`,
/// `"5m"`, `"1h"`, or a sum like `"1m30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub fn as_millis(&self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The node's one duration grammar, shared with the `[sources]` section.
pub use sibyl_feeds::duration::parse_duration;

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(ConfigDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.as_millis()))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

// ---------------------------------------------------------------------------
// Loading node.toml with its committee
// ---------------------------------------------------------------------------

/// Everything `sibyl run` needs from the two files, with paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeConfig,
    pub committee: Committee,
    pub node_path: PathBuf,
    pub committee_path: PathBuf,
    /// Directory of node.toml; relative paths are resolved against it.
    pub base_dir: PathBuf,
    /// Settings that load but do not do what they seem to (a committee feed
    /// with no source, suites this build does not sign with): `config check`
    /// prints them, `run` logs them at start.
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Reads node.toml and the committee file it names, validating both.
    /// All problems of both files are returned together.
    pub fn load(node_path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(node_path).map_err(|source| ConfigError::Read {
            path: node_path.to_path_buf(),
            source,
        })?;
        let base_dir = node_path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let (node, mut problems) = NodeConfig::parse_with_problems(node_path, &src);
        let Some(mut node) = node else {
            // node.toml does not parse: still check the committee file it
            // names, so one run reports the mistakes of both files.
            if let Some(name) = committee_name_in(&src)
                && let Err(ConfigError::Invalid(ps)) = Committee::load(&base_dir.join(name))
            {
                problems.extend(ps);
            }
            return Err(ConfigError::Invalid(problems));
        };

        let committee_path = base_dir.join(node.node.committee.get_ref());
        let committee = match Committee::load(&committee_path) {
            Ok(c) => Some(c),
            Err(ConfigError::Invalid(ps)) => {
                problems.extend(ps);
                None
            }
            Err(ConfigError::Read { source, .. }) => {
                let (line, col) = line_col(&src, node.node.committee.span().start);
                problems.push(Problem {
                    file: node_path.to_path_buf(),
                    line,
                    col,
                    key: "node.committee".into(),
                    message: format!(
                        "cannot read committee file {}: {source}",
                        committee_path.display()
                    ),
                    hint: "the path is relative to node.toml's directory".into(),
                });
                None
            }
        };
        // Feed decimals are stated once, in the committee file: the sources take them from it.
        if let (Some(c), Some(sources)) = (&committee, node.sources.take()) {
            let decimals = c
                .feeds
                .iter()
                .map(|f| (f.id.as_str().to_string(), u32::from(f.decimals)))
                .collect();
            let sources = sources.with_decimals(decimals);
            let mut report = Report::new(node_path, &src);
            report_sources(sources.decimals_problems(), &mut report);
            problems.extend(report.problems);
            node.sources = Some(sources);
        }
        match committee {
            Some(committee) if problems.is_empty() => {
                let warnings = std::fs::read_to_string(&committee_path)
                    .map(|csrc| committee_warnings(&committee, &committee_path, &csrc, &node))
                    .unwrap_or_default();
                Ok(Config {
                    node,
                    committee,
                    node_path: node_path.to_path_buf(),
                    committee_path,
                    base_dir,
                    warnings,
                })
            }
            _ => Err(ConfigError::Invalid(problems)),
        }
    }

    /// `node.toml`'s text-level location of a key (line and column), for
    /// problems found after loading (keys, passphrase).
    pub(crate) fn node_problem(
        &self,
        key: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Problem {
        let src = std::fs::read_to_string(&self.node_path).unwrap_or_default();
        let mut report = Report::new(&self.node_path, &src);
        report.at(sibyl_feeds::config::locate(&src, key), key, message, hint);
        report.problems.remove(0)
    }

    /// Resolves a path from node.toml against node.toml's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.base_dir.join(p)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.node.node.data_dir)
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join(&self.node.store.path)
    }

    /// The observation record (`DATA_DIR/observed-round`).
    pub fn observed_round_path(&self) -> PathBuf {
        self.data_dir().join("observed-round")
    }

    pub fn identity_path(&self) -> PathBuf {
        self.resolve(&self.node.keys.identity)
    }

    pub fn key_package_path(&self) -> PathBuf {
        self.resolve(&self.node.keys.key_package)
    }

    pub fn public_key_package_path(&self) -> PathBuf {
        self.resolve(&self.node.keys.public_key_package)
    }

    /// The API's socket address (validated at load).
    pub fn api_listen(&self) -> std::net::SocketAddr {
        self.node
            .api
            .listen
            .get_ref()
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    /// Reads the key passphrase from the configured environment variable or file.
    /// The passphrase is never logged or put in an error.
    pub fn passphrase(&self) -> Result<String, PassphraseError> {
        let keys = &self.node.keys;
        if let Some(var) = &keys.passphrase_env {
            return std::env::var(var.get_ref())
                .map_err(|_| PassphraseError::EnvMissing(var.get_ref().clone()));
        }
        if let Some(file) = &keys.passphrase_file {
            let path = self.resolve(file.get_ref());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| PassphraseError::File(path.clone(), e))?;
            let line = text.lines().next().unwrap_or("").to_string();
            if line.is_empty() {
                return Err(PassphraseError::Empty(path));
            }
            return Ok(line);
        }
        Err(PassphraseError::NotConfigured)
    }
}

impl Config {
    /// The key files named in node.toml's `[keys]` section.
    pub fn keystore(&self) -> Keystore {
        Keystore::with_paths(KeyPaths {
            identity: self.identity_path(),
            key_package: self.key_package_path(),
            public_key_package: self.public_key_package_path(),
        })
    }

    /// The passphrase `[keys]` points at, as a key passphrase (the errors
    /// of [`Config::passphrase`]; an empty one is "not configured").
    pub fn key_passphrase(&self) -> Result<Passphrase, PassphraseError> {
        let p = self.passphrase()?;
        Passphrase::new(p).map_err(|_| PassphraseError::NotConfigured)
    }

    /// The key passphrase `[keys]` names (environment or file), with the
    /// keystore's own errors (what `sibyl run` and `config check` print).
    pub fn read_key_passphrase(&self) -> anyhow::Result<Passphrase> {
        let keys = &self.node.keys;
        if let Some(var) = &keys.passphrase_env {
            return Ok(Passphrase::from_env(var.get_ref())?);
        }
        if let Some(file) = &keys.passphrase_file {
            return Ok(Passphrase::from_file(&self.resolve(file.get_ref()))?);
        }
        anyhow::bail!(
            "no key passphrase configured; set keys.passphrase_env or keys.passphrase_file in node.toml"
        )
    }
}

impl Config {
    /// The admin token, if one is configured. `Ok(None)`: admin endpoints are disabled.
    pub fn admin_token(&self) -> Result<Option<String>, PassphraseError> {
        let api = &self.node.api;
        if let Some(var) = &api.admin_token_env {
            return std::env::var(var.get_ref())
                .map(Some)
                .map_err(|_| PassphraseError::EnvMissing(var.get_ref().clone()));
        }
        if let Some(file) = &api.admin_token_file {
            let path = self.resolve(file.get_ref());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| PassphraseError::File(path.clone(), e))?;
            let line = text.lines().next().unwrap_or("").trim().to_string();
            if line.is_empty() {
                return Err(PassphraseError::Empty(path));
            }
            return Ok(Some(line));
        }
        Ok(None)
    }
}

/// The committee file named by `[node] committee = "..."` in a node.toml
/// that does not parse as a whole (a line scan; `None` if not found).
fn committee_name_in(src: &str) -> Option<String> {
    let mut in_node = false;
    for line in src.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_node = line == "[node]";
            continue;
        }
        if !in_node {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() == "committee" {
            let value = value.split('#').next().unwrap_or("").trim();
            let name = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))?;
            return Some(name.to_string());
        }
    }
    None
}

/// What loads but does not do what the files say: each committee feed with
/// no source in `[sources]` (never observed, so never published).
fn committee_warnings(
    committee: &Committee,
    committee_path: &Path,
    csrc: &str,
    node: &NodeConfig,
) -> Vec<Problem> {
    let mut report = Report::new(committee_path, csrc);
    if let Some(sources) = &node.sources {
        let observed: BTreeSet<&str> = sources.feeds.iter().map(|f| f.id.as_str()).collect();
        // The feeds in the file's order, to name each one's line.
        let order: Vec<String> = toml::from_str::<toml::Table>(csrc)
            .ok()
            .and_then(|t| t.get("feeds").and_then(|f| f.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .map(|f| {
                f.get("id")
                    .and_then(|i| i.as_str())
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        for feed in &committee.feeds {
            let id = feed.id.as_str();
            if observed.contains(id) {
                continue;
            }
            let key = match order.iter().position(|f| f == id) {
                Some(i) => format!("feeds[{i}].id"),
                None => "feeds".to_string(),
            };
            report.at(
                sibyl_feeds::config::locate(csrc, &key),
                key,
                format!(
                    "committee feed {id} has no source in node.toml's [sources]: this member never observes it, and a feed no member observes is never published"
                ),
                format!(
                    "add a [[sources.feeds]] table with id = \"{id}\" (docs/SOURCES.md), or remove the feed from the committee file with the other operators"
                ),
            );
        }
    }
    report.problems
}

/// A secret (key passphrase or admin token) could not be read. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum PassphraseError {
    #[error(
        "environment variable {0} (named in node.toml) is not set; export it before starting the node"
    )]
    EnvMissing(String),
    #[error("cannot read secret file {} (named in node.toml): {}", .0.display(), .1)]
    File(PathBuf, #[source] std::io::Error),
    #[error("secret file {} (named in node.toml) is empty", .0.display())]
    Empty(PathBuf),
    #[error(
        "no key passphrase configured; set keys.passphrase_env or keys.passphrase_file in node.toml"
    )]
    NotConfigured,
}

#[cfg(test)]
mod tests;
