//! Pull payloads: what a protocol submits to SibylFeed in its own
//! transaction.
//!
//! ```text
//!   GET /v1/feeds/{id}/update            GET /v1/feeds/update?ids=BTC-USD,ETH-USD
//!        │                                     │
//!        └── per feed: latest stored value ─► its signed report (needs a
//!            secp256k1-evm signature) ─► group feeds by report ─► per report:
//!            header, signature (groupKeyX, R, z), leaves + Merkle proofs,
//!            and ready `submitFeeds(...)` calldata
//! ```
//!
//! Feeds whose latest values sit in different reports need one `submitFeeds`
//! call per report (each call carries one signed header), so the batch form
//! answers a list of updates, oldest report first.

use super::{ApiError, ApiState};
use alloy_sol_types::SolCall;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use sibyl_aggregator::{FeedId, Round, SignedReport, digest, encoding, merkle};
use sibyl_chain::abi::{self, AbiError, EvmGroupKey, ProvenLeaf, SUBMIT_FEEDS_SIGNATURE};
use std::collections::BTreeMap;

/// Most feeds one batch request may name.
pub const MAX_BATCH_FEEDS: usize = 256;

/// What the API needs to build pull payloads: the committee's secp256k1-evm
/// group key, and where the feed contract lives (informational).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvmPull {
    pub group_key: EvmGroupKey,
    /// SibylFeed's address, `0x...`, if the node knows it (`[chain]`).
    pub contract: Option<String>,
    pub chain_id: Option<u64>,
}

/// What the API needs for pull payloads: `None` when the committee does not
/// sign with secp256k1-evm.
pub fn pull_config(
    config: &sibyl_node::config::Config,
    keys: &sibyl_aggregator::verify::GroupKeys,
) -> anyhow::Result<Option<EvmPull>> {
    let Some(key) = &keys.secp256k1_evm else {
        return Ok(None);
    };
    let group_key = sibyl_chain::evm_group_key(key)?;
    let chain = config.node.chain.as_ref();
    Ok(Some(EvmPull {
        group_key,
        contract: chain.map(|c| c.contract.get_ref().to_lowercase()),
        chain_id: chain.map(|c| c.chain_id),
    }))
}

fn hex0x(bytes: impl AsRef<[u8]>) -> String {
    format!("0x{}", hex::encode(bytes))
}

#[derive(Serialize)]
struct HeaderJson {
    version: u8,
    config_digest: String,
    round: Round,
    timestamp_ms: u64,
    merkle_root: String,
    margin_root: String,
}

#[derive(Serialize)]
struct SignatureJson {
    suite: &'static str,
    /// The FROST signature as stored: compressed R (33 bytes) then z.
    raw: String,
    group_key_x: String,
    rx: String,
    ry: String,
    z: String,
}

#[derive(Serialize)]
struct LeafJson {
    feed_id: String,
    feed_id_bytes32: String,
    price: String,
    confidence: String,
    num_observations: u16,
    observed_at_ms: u64,
    bid: String,
    ask: String,
    venues: u16,
    status: u8,
    flags: u16,
    ema: String,
    ema_confidence: String,
    volatility: String,
    leaf_index: usize,
    leaf_count: usize,
    leaf_abi: String,
    leaf_hash: String,
    /// Sibling hashes from the leaf up.
    proof: Vec<String>,
}

/// One `submitFeeds` call: everything in it, and the calldata itself.
#[derive(Serialize)]
struct Update {
    round: Round,
    timestamp_ms: u64,
    feeds: Vec<String>,
    contract: Option<String>,
    chain_id: Option<u64>,
    function: &'static str,
    selector: String,
    calldata: String,
    /// The same header, signature, leaves and proofs as the packed pull
    /// payload (`abi::pull_payload`): the argument of SibylFeed.updateFeeds and
    /// of the SibylPull consumer library, about half of `calldata`'s bytes.
    payload: String,
    header: HeaderJson,
    header_abi: String,
    digest: String,
    signature: SignatureJson,
    leaves: Vec<LeafJson>,
}

fn abi_error(e: AbiError) -> ApiError {
    match e {
        AbiError::NoEvmSignature { .. } => ApiError::not_found("no_evm_signature", e.to_string()),
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "payload_failed",
            format!("cannot build the pull payload: {e}"),
        ),
    }
}

fn evm(st: &ApiState) -> Result<&EvmPull, ApiError> {
    st.inner.config.evm.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "no_evm_suite",
            "this node's reports carry no secp256k1-evm signature, so there is no on-chain payload; \
             list \"secp256k1-evm\" in the committee file's `suites` (alone or with \"ed25519\": \
             a committee signs every report with each suite it lists) and give the members its keys",
        )
    })
}

fn build(report: &SignedReport, feeds: &[FeedId], evm: &EvmPull) -> Result<Update, ApiError> {
    let (call, proven) = abi::submit_feeds(report, &evm.group_key, feeds).map_err(abi_error)?;
    let (sig, raw) = abi::signature(report, &evm.group_key).map_err(abi_error)?;
    let h = &report.header;
    let count = report.leaves.len();
    let leaves = proven
        .iter()
        .map(|ProvenLeaf { index, leaf, proof }| LeafJson {
            feed_id: leaf.feed_id.to_string(),
            feed_id_bytes32: hex0x(leaf.feed_id.to_bytes32()),
            price: leaf.price.to_string(),
            confidence: leaf.confidence.to_string(),
            num_observations: leaf.num_observations,
            observed_at_ms: leaf.observed_at_ms,
            bid: leaf.bid.to_string(),
            ask: leaf.ask.to_string(),
            venues: leaf.venues,
            status: leaf.status.as_u8(),
            flags: leaf.flags,
            ema: leaf.ema.to_string(),
            ema_confidence: leaf.ema_confidence.to_string(),
            volatility: leaf.volatility.to_string(),
            leaf_index: *index,
            leaf_count: count,
            leaf_abi: hex0x(encoding::encode_leaf(leaf)),
            leaf_hash: hex0x(merkle::leaf_hash(leaf)),
            proof: proof.iter().map(hex0x).collect(),
        })
        .collect();
    let calldata = call.abi_encode();
    let payload = abi::pull_payload(report, &evm.group_key, &proven).map_err(abi_error)?;
    Ok(Update {
        round: h.round,
        timestamp_ms: h.timestamp_ms,
        feeds: feeds.iter().map(ToString::to_string).collect(),
        contract: evm.contract.clone(),
        chain_id: evm.chain_id,
        function: SUBMIT_FEEDS_SIGNATURE,
        selector: hex0x(abi::submitFeedsCall::SELECTOR),
        calldata: hex0x(&calldata),
        payload: hex0x(&payload),
        header: HeaderJson {
            version: h.version,
            config_digest: hex0x(h.config_digest.0),
            round: h.round,
            timestamp_ms: h.timestamp_ms,
            merkle_root: hex0x(h.merkle_root),
            margin_root: hex0x(h.margin_root),
        },
        header_abi: hex0x(encoding::encode_header(h)),
        digest: hex0x(digest::header_digest(h)),
        signature: SignatureJson {
            suite: "secp256k1-evm",
            raw: hex0x(&raw.0),
            group_key_x: hex0x(sig.groupKeyX.to_be_bytes::<32>()),
            rx: hex0x(sig.rx.to_be_bytes::<32>()),
            ry: hex0x(sig.ry.to_be_bytes::<32>()),
            z: hex0x(sig.z.to_be_bytes::<32>()),
        },
        leaves,
    })
}

/// Parses each id and checks that the node knows it (configured or stored).
async fn known_feeds(st: &ApiState, ids: &[&str]) -> Result<Vec<FeedId>, ApiError> {
    let mut feeds = Vec::with_capacity(ids.len());
    for id in ids {
        let feed = FeedId::new(*id)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_feed_id", format!("{e}")))?;
        feeds.push(feed);
    }
    let configured = &st.inner.config.feeds;
    let unconfigured: Vec<FeedId> = feeds
        .iter()
        .filter(|f| !configured.contains_key(f))
        .cloned()
        .collect();
    for f in unconfigured {
        if !st.inner.store.has_feed(f.clone()).await? {
            return Err(ApiError::not_found(
                "unknown_feed",
                format!(
                    "unknown feed {:?}; GET /v1/feeds lists the feeds this node serves",
                    f.as_str()
                ),
            ));
        }
    }
    Ok(feeds)
}

/// The latest signed report of each feed, grouped: report round -> (report, its feeds).
async fn latest_reports(
    st: &ApiState,
    feeds: Vec<FeedId>,
) -> Result<BTreeMap<Round, (SignedReport, Vec<FeedId>)>, ApiError> {
    let store = &st.inner.store;
    let mut groups: BTreeMap<Round, (SignedReport, Vec<FeedId>)> = BTreeMap::new();
    for feed in feeds {
        let Some(point) = store.latest(feed.clone()).await? else {
            return Err(ApiError::not_found(
                "no_data",
                format!("feed {feed} has no signed value yet"),
            ));
        };
        if let Some((_, fs)) = groups.get_mut(&point.round) {
            fs.push(feed);
            continue;
        }
        let Some(report) = store.report(point.round).await? else {
            return Err(ApiError::not_found(
                "report_missing",
                format!(
                    "the signed report of round {} (feed {feed}'s latest value) is not stored on this node",
                    point.round
                ),
            ));
        };
        groups.insert(point.round, (report, vec![feed]));
    }
    Ok(groups)
}

/// `GET /v1/feeds/{id}/update`: the `submitFeeds` payload for one feed's latest value.
pub(super) async fn feed_update(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let evm = evm(&st)?.clone();
    let feeds = known_feeds(&st, &[id.as_str()]).await?;
    let groups = latest_reports(&st, feeds).await?;
    let (report, feeds) = groups.into_values().next().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "payload_failed",
            "no report found",
        )
    })?;
    let update = build(&report, &feeds, &evm)?;
    Ok(Json(serde_json::to_value(update).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "payload_failed",
            e.to_string(),
        )
    })?))
}

/// `GET /v1/feeds/update?ids=A,B,...`: one `submitFeeds` payload per report
/// that holds a requested feed's latest value.
pub(super) async fn feeds_update(
    State(st): State<ApiState>,
    q: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(params) =
        q.map_err(|e| ApiError::bad_parameter(format!("malformed query string: {e}")))?;
    if let Some(k) = params.keys().find(|k| k.as_str() != "ids") {
        return Err(ApiError::bad_parameter(format!(
            "unknown parameter `{k}`; this route takes `ids` (comma-separated feed ids)"
        )));
    }
    let evm = evm(&st)?.clone();
    let ids = params.get("ids").map(String::as_str).unwrap_or("");
    let mut list: Vec<&str> = ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        return Err(ApiError::bad_parameter(
            "`ids` is required: comma-separated feed ids, e.g. `?ids=BTC-USD,ETH-USD`",
        ));
    }
    list.sort_unstable();
    list.dedup();
    if list.len() > MAX_BATCH_FEEDS {
        return Err(ApiError::bad_parameter(format!(
            "{} feeds requested, at most {MAX_BATCH_FEEDS} per request",
            list.len()
        )));
    }
    let feeds = known_feeds(&st, &list).await?;
    let groups = latest_reports(&st, feeds).await?;
    let updates = groups
        .values()
        .map(|(report, feeds)| build(report, feeds, &evm))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(serde_json::json!({ "updates": updates })))
}

#[cfg(test)]
mod tests;

/// Adds the pull routes and the `Update` schema to the OpenAPI document.
pub(super) fn document(doc: &mut serde_json::Value) {
    use serde_json::json;
    let error = |desc: &str| {
        json!({ "description": desc, "content": { "application/json": {
            "schema": { "$ref": "#/components/schemas/Error" } } } })
    };
    let ok = |desc: &str, schema: serde_json::Value| json!({ "description": desc, "content": { "application/json": { "schema": schema } } });
    let int = json!({ "type": "integer", "minimum": 0 });
    let hex = json!({ "type": "string", "pattern": "^0x[0-9a-f]*$" });
    let dec = json!({ "type": "string", "pattern": "^-?[0-9]+$" });
    let single = json!({ "get": {
        "summary": "Pull payload: ready SibylFeed `submitFeeds` calldata for this feed's latest secp256k1-evm signed report, with its signature and Merkle proof",
        "parameters": [ { "name": "id", "in": "path", "required": true,
                          "description": "Feed id, e.g. `BTC-USD`",
                          "schema": { "type": "string", "pattern": "^[A-Z0-9._-]{1,32}$" } } ],
        "responses": {
            "200": ok("one update", json!({ "$ref": "#/components/schemas/Update" })),
            "400": error("malformed feed id"),
            "404": error("unknown feed, no signed value yet (`no_data`), the committee does not sign with secp256k1-evm (`no_evm_suite`), or the feed's latest report lacks that signature (`no_evm_signature`)") } } });
    let batch = json!({ "get": {
        "summary": "Pull payloads for several feeds: one `submitFeeds` call per signed report that holds a requested feed's latest value, oldest report first",
        "parameters": [ { "name": "ids", "in": "query", "required": true,
                          "description": format!("comma-separated feed ids, at most {MAX_BATCH_FEEDS}"),
                          "schema": { "type": "string" } } ],
        "responses": {
            "200": ok("updates", json!({ "type": "object", "properties": {
                "updates": { "type": "array", "items": { "$ref": "#/components/schemas/Update" } } } })),
            "400": error("missing `ids`, malformed feed id, too many feeds, unknown parameter"),
            "404": error("unknown feed, no signed value yet, or no secp256k1-evm signature") } } });
    let header = json!({ "type": "object", "properties": {
        "version": int, "config_digest": hex, "round": int, "timestamp_ms": int, "merkle_root": hex, "margin_root": hex } });
    let signature = json!({ "type": "object", "properties": {
        "suite": { "type": "string" },
        "raw": { "type": "string", "description": "the FROST signature: compressed R (33 bytes) then z" },
        "group_key_x": hex, "rx": hex, "ry": hex, "z": hex } });
    let leaf = json!({ "type": "object", "properties": {
        "feed_id": { "type": "string" }, "feed_id_bytes32": hex,
        "price": dec, "confidence": dec, "num_observations": int, "observed_at_ms": int,
        "bid": dec, "ask": dec, "venues": int,
        "status": { "type": "integer", "description": "0 ok, 1 degraded, 2 stale, 3 halted, 4 market_closed" },
        "flags": { "type": "integer", "description": "bit 0 few_venues, 1 wide_confidence, 2 peg_departed, 3 out_of_band, 4 unconfirmed_jump, 5 stale, 6 halted, 7 market_closed" },
        "ema": dec, "ema_confidence": dec, "volatility": dec,
        "leaf_index": int, "leaf_count": int, "leaf_abi": hex, "leaf_hash": hex,
        "proof": { "type": "array", "items": hex, "description": "sibling hashes from the leaf up" } } });
    let update = json!({ "type": "object",
        "description": "One SibylFeed.submitFeeds call: send `calldata` to `contract` as is, or rebuild it from the fields. Hex is 0x-prefixed.",
        "properties": {
            "round": int, "timestamp_ms": int,
            "feeds": { "type": "array", "items": { "type": "string" } },
            "contract": { "type": ["string", "null"], "description": "SibylFeed's address when the node has a [chain] section" },
            "chain_id": { "type": ["integer", "null"] },
            "function": { "type": "string", "description": "Solidity signature of the function `calldata` calls" },
            "selector": hex, "calldata": hex,
            "payload": { "type": "string", "description": "the packed pull payload (docs/CONTRACTS.md, \"Pull payloads\": header without its root, signature, each leaf at its Rust widths with its proof), the argument of SibylFeed.updateFeeds(bytes) and SibylPull.updateFeeds; about half of calldata's bytes" },
            "header": header, "header_abi": hex,
            "digest": { "type": "string", "description": "the Keccak-256 header digest the committee signed" },
            "signature": signature,
            "leaves": { "type": "array", "items": leaf } } });
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        paths.insert("/v1/feeds/{id}/update".into(), single);
        paths.insert("/v1/feeds/update".into(), batch);
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(|s| s.as_object_mut())
    {
        schemas.insert("Update".into(), update);
    }
}
