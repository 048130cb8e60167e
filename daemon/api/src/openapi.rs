//! The OpenAPI 3.1 document served at `/v1/openapi.json`, written by hand next
//! to the routes. A test checks that it lists exactly [`super::ROUTES`].

use serde_json::{Value, json};

fn error_response(desc: &str) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn json_response(desc: &str, schema: Value) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": schema } } })
}

fn feed_id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true,
            "description": "Feed id, e.g. `BTC-USD`",
            "schema": { "type": "string", "pattern": "^[A-Z0-9._-]{1,32}$" } })
}

fn query(name: &str, desc: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": desc, "schema": schema })
}

/// Request amounts: decimal strings in units (`"0.5"`).
const DECIMAL_PATTERN: &str = "^-?[0-9]+(\\.[0-9]+)?$";
/// Every fixed-point value in a response, on the feed and the margin routes:
/// the integer as a string of digits (`margin::fixed`).
const FIXED_PATTERN: &str = "^-?[0-9]+$";

/// A fixed-point value in a response, `decimals` decimals.
fn fixed_schema(what: &str, decimals: u32) -> Value {
    json!({ "type": "string", "pattern": FIXED_PATTERN,
            "description": format!("{what}: fixed-point integer as a string, {decimals} decimals (`value / 10^{decimals}`)") })
}

fn money_schema() -> Value {
    fixed_schema("money in USD", crate::margin::DECIMALS.money)
}

/// A request amount in units.
fn decimal_schema(what: &str) -> Value {
    json!({ "type": "string", "pattern": DECIMAL_PATTERN,
            "description": format!("{what}: exact decimal string in units (e.g. `\"0.5\"`)") })
}

fn nullable(schema: &Value) -> Value {
    let mut s = schema.clone();
    s["type"] = json!(["string", "null"]);
    s
}

fn account_param() -> Value {
    json!({ "name": "account", "in": "path", "required": true,
            "description": "Account id", "schema": { "type": "integer", "minimum": 0 } })
}

fn transfer_body() -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": {
        "type": "object", "required": ["amount"], "additionalProperties": false,
        "properties": {
          "asset": { "type": "string", "default": "USD", "description": "`USD` (cash) or a configured collateral asset" },
          "amount": { "type": "string", "pattern": DECIMAL_PATTERN,
                      "description": "exact decimal string: 6 decimals for USD, 8 for other assets" } } } } } })
}

/// Responses of every margin command.
fn command_responses() -> Value {
    json!({
      "200": json_response("applied and stored: its events and the account's cross health after", json!({ "$ref": "#/components/schemas/CommandResult" })),
      "201": json_response("account created", json!({ "$ref": "#/components/schemas/CommandResult" })),
      "400": error_response("malformed JSON, amount or size (not a decimal string, too many decimals, out of range), not positive, arithmetic overflow"),
      "401": error_response("missing or wrong bearer token"),
      "403": error_response("no admin token configured"),
      "404": error_response("unknown account, market, asset, or no such position"),
      "409": error_response("account exists, the market's price guard is up, no price yet, market closed, margin mode conflict"),
      "413": error_response("the command is more than 4,096 bytes as JSON (`command_too_large`)"),
      "422": error_response("insufficient margin or balance, closing more than held"),
      "503": error_response("no margin engine; `busy`: 1,024 commands of this member wait for ordering"),
      "504": error_response("`not_ordered`: no signed report carried the command within 30 s; it is withdrawn")
    })
}

/// Responses of `POST /v1/margin/signed`: a command's, with the signature
/// errors in place of the bearer token's.
fn signed_responses() -> Value {
    let mut r = command_responses();
    if let Some(m) = r.as_object_mut() {
        m.insert("400".into(), error_response("malformed envelope (`bad_envelope`, naming the field), a signed text that is not a command (`bad_command`), a command for another account than the envelope's (`account_mismatch`), an owner key that is not an Ed25519 key (`invalid_owner_key`), or the command's own 400s"));
        m.insert(
            "401".into(),
            error_response(
                "`bad_signature`: the signature does not verify under the account's owner key",
            ),
        );
        m.insert("403".into(), error_response("`no_owner`: the account has no owner key (operator-managed); `not_signable`: deposits, insurance funding and configuration are operator commands"));
        m.insert("409".into(), error_response("`stale_nonce`: the nonce is not above the account's (the message gives the current one); or the command's own 409s"));
        m.insert("503".into(), error_response("no margin engine; `busy`: 1,024 commands of this member wait for ordering; `no_committee_key`: this engine was started without its committee's group key and takes no signed command"));
    }
    r
}

/// The `/v1/margin/*` paths (apart from [`base_document`], which would
/// exceed the `json!` macro's recursion limit).
fn margin_paths() -> Vec<(&'static str, Value)> {
    let int = json!({ "type": "integer", "minimum": 0 });
    let d = crate::margin::DECIMALS;
    let money = money_schema();
    let qty = fixed_schema("quantity", d.size);
    let price = fixed_schema("price", d.price);
    let size_in = decimal_schema("size");
    let money_in = decimal_schema("money in USD");
    vec![
        (
            "/v1/margin/accounts/{account}",
            json!({ "get": {
          "summary": "An account's cash, collateral and the health of each margin unit (cross pool, isolated positions): equity, initial and maintenance requirements, margin ratio, mode",
          "parameters": [ account_param() ],
          "responses": {
            "200": json_response("account", json!({ "type": "object", "properties": {
                "account": int, "engine_time_ms": int, "cash": money.clone(),
                "collateral": { "type": "array", "items": { "type": "object", "properties": {
                    "asset": { "type": "string" }, "amount": qty.clone() } } },
                "health": { "$ref": "#/components/schemas/Health" },
                "owner": { "type": ["string", "null"], "description": "the owner's Ed25519 public key (hex); null: operator-managed (docs/MARGIN.md, Account keys)" },
                "nonce": { "type": "integer", "minimum": 0, "description": "the last signed-command nonce taken; the next envelope needs a larger one" },
                "units": { "type": "array", "items": { "$ref": "#/components/schemas/MarginUnit" } } } })),
            "400": error_response("malformed account id"),
            "404": error_response("unknown account"),
            "503": error_response("no margin engine") } } }),
        ),
        (
            "/v1/margin/accounts/{account}/positions",
            json!({
          "get": {
            "summary": "An account's positions with entry and mark prices, value, unrealized PnL and Greeks",
            "parameters": [ account_param() ],
            "responses": {
              "200": json_response("positions", json!({ "type": "object", "properties": {
                  "account": int,
                  "positions": { "type": "array", "items": { "$ref": "#/components/schemas/Position" } } } })),
              "400": error_response("malformed account id"),
              "404": error_response("unknown account") } },
          "post": {
            "summary": "Admin: buy or sell `size` at the mark (opens, adds to, reduces or flips a position); refused below initial margin",
            "security": [ { "bearer": [] } ],
            "parameters": [ account_param() ],
            "requestBody": { "required": true, "content": { "application/json": { "schema": {
                "type": "object", "required": ["market", "side", "size"], "additionalProperties": false,
                "properties": {
                  "market": { "type": "string", "example": "BTC-PERP" },
                  "side": { "type": "string", "enum": ["long", "short"] },
                  "size": size_in.clone(),
                  "mode": { "type": "string", "enum": ["cross", "isolated"], "default": "cross" },
                  "isolated_margin": money_in } } } } },
            "responses": command_responses() } }),
        ),
        (
            "/v1/margin/accounts/{account}/greeks",
            json!({ "get": {
          "summary": "An account's Greeks per underlying feed, in total and per margin unit",
          "parameters": [ account_param() ],
          "responses": {
            "200": json_response("greeks", json!({ "type": "object", "properties": {
                "account": int,
                "greeks": { "type": "object", "additionalProperties": { "$ref": "#/components/schemas/Greeks" } },
                "units": { "type": "array", "items": { "type": "object" } } } })),
            "400": error_response("malformed account id"),
            "404": error_response("unknown account") } } }),
        ),
        (
            "/v1/margin/accounts/{account}/proof",
            json!({ "get": {
          "summary": "An account's state with its Merkle proof against this member's margin state root (docs/MARGIN.md, State root). The root is not yet signed by the committee (`signed: false`): it will be carried in the signed report by a later change",
          "parameters": [ account_param() ],
          "responses": {
            "200": json_response("account proof", json!({ "type": "object", "properties": {
                "account": int, "engine_time_ms": int,
                "state": { "type": "object", "properties": {
                    "cash": money.clone(),
                    "collateral": { "type": "object", "additionalProperties": qty.clone() },
                    "positions": { "type": "object", "additionalProperties": { "type": "object", "properties": {
                        "size": qty.clone(), "quote": money.clone(), "isolated_margin": money.clone() } } },
                    "margin_calls": { "type": "array", "items": { "type": "string" } },
                    "liquidation_deferred": { "type": "array", "items": { "type": "string" } } } },
                "leaf_preimage": { "type": "string", "description": "0x-hex AccountState::encode(); leaf = keccak256(0x00 ‖ bytes)" },
                "proof": { "type": "object", "properties": {
                    "slot": int, "count": int,
                    "siblings": { "type": "array", "description": "0x-hex bytes32, from the leaf up: per level of the 4-ary tree the three other children in child order (docs/MARGIN.md, State root)", "items": { "type": "string" } },
                    "globals_hash": { "type": "string" }, "size_bytes": int } },
                "state_root": { "type": "string" },
                "signed": { "type": "boolean" } } })),
            "400": error_response("malformed account id"),
            "404": error_response("unknown account"),
            "503": error_response("no margin engine") } } }),
        ),
        (
            "/v1/margin/at-risk",
            json!({ "get": {
          "summary": "Margin units closest to liquidation, ranked by equity / maintenance (lowest first)",
          "parameters": [ query("limit", "rows (default 20, at most 1000)", int.clone()) ],
          "responses": {
            "200": json_response("ranked units", json!({ "type": "object", "properties": {
                "engine_time_ms": int, "accounts_total": int,
                "units": { "type": "array", "items": { "allOf": [
                  { "$ref": "#/components/schemas/MarginUnit" },
                  { "type": "object", "properties": { "rank": int, "account": int } } ] } } } })),
            "400": error_response("bad `limit` or unknown parameter") } } }),
        ),
        (
            "/v1/margin/liquidations",
            json!({ "get": {
          "summary": "Stored liquidations, newest first, with health before and after, closed slices and the penalty split; page back with `before`",
          "parameters": [ query("limit", "rows (default 50, at most 1000)", int.clone()),
                          query("before", "only events with a smaller sequence number: the previous page's `next_before`", int.clone()) ],
          "responses": {
            "200": json_response("liquidations", json!({ "type": "object", "properties": {
                "liquidations": { "type": "array", "items": { "$ref": "#/components/schemas/Liquidation" } },
                "next_before": { "type": ["integer", "null"] } } })),
            "400": error_response("bad `limit`/`before` or unknown parameter") } } }),
        ),
        (
            "/v1/margin/insurance",
            json!({ "get": {
          "summary": "Insurance fund balance, fees collected and the fund's recent movements",
          "parameters": [ query("limit", "movements (default 20, at most 1000)", int.clone()) ],
          "responses": {
            "200": json_response("fund", json!({ "type": "object", "properties": {
                "balance": money.clone(), "fees": money.clone(), "accounts": int, "engine_time_ms": int,
                "recent": { "type": "array", "items": { "$ref": "#/components/schemas/MarginEvent" } } } })),
            "400": error_response("bad `limit`") } } }),
        ),
        (
            "/v1/margin/markets",
            json!({ "get": {
          "summary": "Markets with marks and requirement rates, feeds with their last price and guard state (why liquidations wait and new risk is refused)",
          "responses": {
            "200": json_response("markets and feeds", json!({ "type": "object", "properties": {
                "decimals": { "type": "object", "description": "the scale of each kind of value on the margin routes",
                              "properties": { "money": int, "price": int, "size": int, "rate": int, "greek": int } },
                "engine_time_ms": int,
                "markets": { "type": "array", "items": { "type": "object", "properties": {
                    "market": { "type": "string" }, "feed": { "type": "string" },
                    "instrument": { "type": "object" },
                    "initial_rate": fixed_schema("rate", d.rate), "maintenance_rate": fixed_schema("rate", d.rate),
                    "mark_price": nullable(&price), "underlying_price": nullable(&price),
                    "settled_price": nullable(&price), "guarded": { "type": "boolean" },
                    "guard": { "oneOf": [ { "$ref": "#/components/schemas/Guard" }, { "type": "null" } ] } } } },
                "feeds": { "type": "array", "items": { "type": "object", "properties": {
                    "feed": { "type": "string" }, "decimals": int, "price": nullable(&price), "confidence": nullable(&price),
                    "timestamp_ms": { "type": ["integer", "null"] }, "round": { "type": ["integer", "null"] },
                    "guard": { "oneOf": [ { "$ref": "#/components/schemas/Guard" }, { "type": "null" } ] } } } } } })) } } }),
        ),
        (
            "/v1/margin/signing",
            json!({ "get": {
          "summary": "What an account owner signs besides its command (docs/MARGIN.md, Account keys): the domain and the committee's group public key, which the signed bytes name so that an envelope is good on this committee's book only. The key is stable across share refresh and resharing",
          "responses": {
            "200": json_response("signing context", json!({ "type": "object", "properties": {
                "domain": { "type": "string", "description": "the signed bytes' first bytes (UTF-8): \"Sibyl margin command v2\"" },
                "committee_key": { "type": "string", "pattern": "^[0-9a-f]{64,66}$", "description": "the committee's group public key, hex: its first suite's (32 bytes for ed25519, 33 compressed for secp256k1-evm)" },
                "signed_bytes": { "type": "string", "description": "the layout in words" } } })),
            "503": error_response("`no_committee_key`: this engine was started without its committee's group key; `margin_disabled`: no margin engine here") } } }),
        ),
        (
            "/v1/margin/accounts",
            json!({ "post": {
          "summary": "Admin: create an account (`account` id optional: default one above the highest; `owner` optional: an Ed25519 public key whose signature its withdrawals and trades then need)",
          "security": [ { "bearer": [] } ],
          "requestBody": { "required": false, "content": { "application/json": { "schema": {
              "type": "object", "additionalProperties": false, "properties": { "account": int,
                "owner": { "type": "string", "pattern": "^(0x)?[0-9a-fA-F]{64}$" } } } } } },
          "responses": command_responses() } }),
        ),
        (
            "/v1/margin/signed",
            json!({ "post": {
          "summary": "A command signed by its account's owner: withdraw, open, close, adjust_isolated_margin, or create_account under the signer's own key. No admin token: the signature authorizes it. Signed bytes: \"Sibyl margin command v2\" ‖ committee key length (1 byte) ‖ committee key (the committee's group public key, from GET /v1/margin/signing) ‖ account (u64 big-endian) ‖ nonce (u64 big-endian) ‖ command (the JSON text as sent), so an envelope is good on one committee's book only; `sibyl margin sign` makes one. Answers like the admin commands once the committee ordered it",
          "requestBody": { "required": true, "content": { "application/json": { "schema": {
              "type": "object", "additionalProperties": false,
              "required": ["account", "nonce", "command", "signature"],
              "properties": {
                "account": int.clone(),
                "nonce": { "type": "integer", "minimum": 1, "description": "above the account's current nonce (GET /v1/margin/accounts/{account})" },
                "command": { "type": "string", "description": "the engine command's JSON text exactly as signed, e.g. {\"withdraw\":{\"account\":40,\"asset\":\"USD\",\"amount\":250000000}} (integers at the engine's scales)" },
                "signature": { "type": "string", "pattern": "^(0x)?[0-9a-fA-F]{128}$", "description": "Ed25519 signature, hex" } } } } } },
          "responses": signed_responses() } }),
        ),
        (
            "/v1/margin/accounts/{account}/deposit",
            json!({ "post": {
          "summary": "Admin: credit cash (`USD`, 6 decimals) or collateral (8 decimals)",
          "security": [ { "bearer": [] } ],
          "parameters": [ account_param() ],
          "requestBody": transfer_body(),
          "responses": command_responses() } }),
        ),
        (
            "/v1/margin/accounts/{account}/withdraw",
            json!({ "post": {
          "summary": "Admin: debit cash or collateral; refused if it would leave the account below initial margin",
          "security": [ { "bearer": [] } ],
          "parameters": [ account_param() ],
          "requestBody": transfer_body(),
          "responses": command_responses() } }),
        ),
        (
            "/v1/margin/accounts/{account}/positions/{market}/close",
            json!({ "post": {
          "summary": "Admin: reduce a position by `size`, or close it when `size` is absent",
          "security": [ { "bearer": [] } ],
          "parameters": [ account_param(),
            { "name": "market", "in": "path", "required": true, "schema": { "type": "string" } } ],
          "requestBody": { "required": false, "content": { "application/json": { "schema": {
              "type": "object", "additionalProperties": false, "properties": { "size": size_in } } } } },
          "responses": command_responses() } }),
        ),
    ]
}

/// Schemas of the margin routes.
fn margin_schemas() -> Vec<(&'static str, Value)> {
    let int = json!({ "type": "integer", "minimum": 0 });
    let d = crate::margin::DECIMALS;
    let money = money_schema();
    let qty = fixed_schema("quantity", d.size);
    let price = fixed_schema("price", d.price);
    let greek = fixed_schema("Greek", d.greek);
    vec![
        (
            "Health",
            json!({ "type": "object", "properties": {
            "equity": money.clone(), "initial": money.clone(), "maintenance": money.clone(),
            "notional": money.clone(),
            "margin_ratio": { "type": ["string", "null"], "pattern": FIXED_PATTERN, "description": "equity / maintenance, fixed-point with 6 decimals; liquidation below 1000000 (1.0)" },
            "portfolio_margin": { "type": "boolean" },
            "status": { "type": "string", "enum": ["healthy", "margin_call", "below_maintenance"] } } }),
        ),
        (
            "MarginUnit",
            json!({ "type": "object", "properties": {
            "mode": { "type": "string", "enum": ["cross", "isolated"] },
            "market": { "type": ["string", "null"], "description": "the isolated position's market" },
            "health": { "$ref": "#/components/schemas/Health" },
            "in_margin_call": { "type": "boolean" }, "liquidation_deferred": { "type": "boolean" } } }),
        ),
        (
            "Greeks",
            json!({ "type": "object", "properties": {
            "delta": greek.clone(), "gamma": greek.clone(), "vega": greek.clone(),
            "theta": greek.clone(), "rho": greek.clone() } }),
        ),
        (
            "Position",
            json!({ "type": "object", "properties": {
            "market": { "type": "string" }, "feed": { "type": "string" }, "instrument": { "type": "object" },
            "side": { "type": "string", "enum": ["long", "short"] }, "size": qty.clone(),
            "mode": { "type": "string", "enum": ["cross", "isolated"] },
            "isolated_margin": nullable(&money),
            "entry_price": nullable(&price), "mark_price": nullable(&price), "underlying_price": nullable(&price),
            "value": nullable(&money), "unrealized_pnl": nullable(&money),
            "greeks": { "$ref": "#/components/schemas/Greeks" } } }),
        ),
        (
            "Guard",
            json!({ "type": "object", "properties": {
            "reason": { "type": "string", "enum": ["no_price", "stale", "confidence_too_wide", "jump"] },
            "message": { "type": "string" } } }),
        ),
        (
            "MarginEvent",
            json!({ "type": "object", "required": ["seq", "at_ms", "kind"], "properties": {
            "seq": int, "at_ms": int, "round": int,
            "kind": { "type": "string", "description": "e.g. filled, deposited, withdrawn, margin_call, liquidated, insurance_fund, bad_debt" } },
            "additionalProperties": true }),
        ),
        (
            "Liquidation",
            json!({ "allOf": [ { "$ref": "#/components/schemas/MarginEvent" }, { "type": "object", "properties": {
            "account": int, "unit": { "type": "object" },
            "liquidation": { "type": "string", "enum": ["partial", "full"] },
            "fraction": { "type": ["string", "null"], "pattern": FIXED_PATTERN, "description": "share of the unit liquidated, fixed-point with 6 decimals" },
            "before": { "$ref": "#/components/schemas/Health" }, "after": { "$ref": "#/components/schemas/Health" },
            "closed": { "type": "array", "items": { "type": "object", "properties": {
              "market": { "type": "string" }, "size": qty.clone(), "price": price.clone() } } },
            "penalty": money.clone(), "to_liquidator": money.clone(), "to_insurance": money.clone(),
            "note": { "type": "string" } } } ] }),
        ),
        (
            "CommandResult",
            json!({ "type": "object", "properties": {
            "account": { "type": ["integer", "null"] },
            "events": { "type": "array", "items": { "$ref": "#/components/schemas/MarginEvent" } },
            "health": { "oneOf": [ { "$ref": "#/components/schemas/Health" }, { "type": "null" } ] } } }),
        ),
    ]
}

/// The whole document.
pub fn document() -> Value {
    let mut doc = base_document();
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.extend(margin_paths().into_iter().map(|(k, v)| (k.to_string(), v)));
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.extend(
            margin_schemas()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
    }
    doc
}

fn base_document() -> Value {
    let int = json!({ "type": "integer", "minimum": 0 });
    let status = json!({ "type": "string",
        "enum": ["ok", "degraded", "stale", "halted", "market_closed"],
        "description": "the leaf's status (docs/PROTOCOL.md, \"Status and flags\")" });
    let flag_names = json!({ "type": "array", "items": { "type": "string", "enum": [
        "few_venues", "wide_confidence", "peg_departed", "out_of_band", "unconfirmed_jump",
        "stale", "halted", "market_closed"] } });
    let dec_string = json!({ "type": "string", "pattern": "^-?[0-9]+$",
                             "description": "fixed-point integer as a decimal string" });
    let mut doc = json!({
      "openapi": "3.1.0",
      "info": {
        "title": "Sibyl oracle node API",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Signed price reports of a Sibyl committee: latest values with Merkle proofs for pull consumers, history and candles, a live stream, committee health, and the embedded margin engine (`/v1/margin/*`: account health, positions with Greeks, accounts at risk, liquidations, insurance fund, market guards; commands with the admin bearer token). Every price, amount, rate and Greek in a response is a fixed-point integer as a string of digits (`value / 10^decimals`): feed values with the feed's `decimals`, margin values at the scales `/v1/margin/markets` serves as `decimals` (money 6, prices, sizes and Greeks 8, rates 6); request amounts are decimal strings in units (`\"0.5\"`). Errors are `{\"error\": {\"code\", \"message\"}}`."
      },
      "paths": {
        "/healthz": { "get": {
          "summary": "Liveness: the store answers",
          "responses": { "200": json_response("healthy", json!({"type": "object"})),
                         "503": error_response("the store cannot be read") } } },
        "/metrics": { "get": {
          "summary": "Prometheus / OpenMetrics text exposition",
          "responses": { "200": { "description": "metrics",
            "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } } } } },
        "/v1/feeds": { "get": {
          "summary": "Every feed with its latest signed value",
          "responses": { "200": json_response("feeds", json!({ "type": "object", "properties": {
              "feeds": { "type": "array", "items": { "$ref": "#/components/schemas/FeedValue" } } } })) } } },
        "/v1/feeds/{id}/latest": { "get": {
          "summary": "A feed's latest value with its signed report, signatures and Merkle proof (the pull consumer's payload)",
          "parameters": [ feed_id_param() ],
          "responses": {
            "200": json_response("latest value", json!({ "allOf": [
              { "$ref": "#/components/schemas/FeedValue" },
              { "type": "object", "properties": {
                  "report": { "$ref": "#/components/schemas/SignedReport" },
                  "digest": { "type": "string", "description": "hex Keccak-256 header digest that the committee signed" },
                  "header_abi": { "type": "string", "description": "hex ABI encoding of the header" },
                  "leaf_abi": { "type": "string", "description": "hex ABI encoding of this feed's leaf" },
                  "leaf_index": int,
                  "proof": { "$ref": "#/components/schemas/MerkleProof" },
                  "proof_hex": { "type": "string", "description": "the proof in the canonical binary codec" } } } ] })),
            "400": error_response("malformed feed id"),
            "404": error_response("unknown feed, or no signed value yet") } } },
        "/v1/feeds/{id}/history": { "get": {
          "summary": "Raw points, or candles when `interval` is given, over [from, to), paged",
          "parameters": [ feed_id_param(),
            query("from", "start, ms since the Unix epoch (inclusive; default to - 1h)", int.clone()),
            query("to", "end, ms since the Unix epoch (exclusive; default now)", int.clone()),
            query("interval", "candle width: `1s`, `1m`, `5m`, `1h`, `1d` or ms (1s..30d); omit for raw points", json!({"type": "string"})),
            query("limit", "page size (default 1000 points / 1500 candles, at most 10000)", int.clone()),
            query("cursor", "raw points only: `next_cursor` of the previous page", json!({"type": "string"})) ],
          "responses": {
            "200": json_response("points or candles", json!({ "type": "object", "properties": {
                "feed_id": { "type": "string" }, "from": int, "to": int,
                "points": { "type": "array", "items": { "$ref": "#/components/schemas/Point" } },
                "next_cursor": { "type": ["string", "null"] },
                "interval_ms": int,
                "candles": { "type": "array", "items": { "$ref": "#/components/schemas/Candle" } },
                "next_from": { "type": ["integer", "null"] } } })),
            "400": error_response("malformed number, `from` after `to`, range or page too large, unknown parameter"),
            "404": error_response("unknown feed") } } },
        "/v1/reports/{round}": { "get": {
          "summary": "A signed report by round (or `latest`)",
          "parameters": [ { "name": "round", "in": "path", "required": true,
                            "schema": { "type": "string", "pattern": "^([0-9]+|latest)$" } } ],
          "responses": {
            "200": json_response("report", json!({ "type": "object", "properties": {
                "report": { "$ref": "#/components/schemas/SignedReport" },
                "digest": { "type": "string" }, "header_abi": { "type": "string" } } })),
            "400": error_response("malformed round, or above 2^63-1 (`out_of_range`)"),
            "404": error_response("no report stored for that round") } } },
        "/v1/reports": { "get": {
          "summary": "Signed reports after a round, oldest first (followers catch up here); `next_after` is set when more may follow",
          "parameters": [ query("after", "round; reports with a greater round are returned (absent: from round 0 itself)", json!({"type": "integer", "minimum": 0})),
                          query("limit", "reports per page, 1..=500 (default 100)", json!({"type": "integer", "minimum": 1, "maximum": 500})) ],
          "responses": {
            "200": json_response("reports", json!({ "type": "object", "properties": {
                "reports": { "type": "array", "items": { "type": "object", "properties": {
                    "report": { "$ref": "#/components/schemas/SignedReport" },
                    "digest": { "type": "string" }, "header_abi": { "type": "string" } } } },
                "next_after": { "type": ["integer", "null"] } } })),
            "400": error_response("malformed parameter or `limit` above 500 (`page_too_large`)") } } },
        "/v1/feeds/meta": { "get": {
          "summary": "Feed discovery: each feed's decimals, deviation and heartbeat (committee file) and its newest leaf's venues, status, flags, round, age; `overdue` when nothing came for two heartbeats",
          "responses": { "200": json_response("feeds", json!({ "type": "object" })) } } },
        "/v1/ws": { "get": {
          "summary": "WebSocket report stream: send {\"op\":\"subscribe\",\"feeds\":[...],\"after_round\":R?} / {\"op\":\"unsubscribe\",...}; receives {\"type\":\"report\",...} for subscribed feeds; `lagged` then close code 4008 for a client that fell a queue behind (docs/API.md)",
          "responses": {
            "101": { "description": "switching to the WebSocket protocol" },
            "429": error_response("this client holds `api.max_streams_per_client` streams"),
            "503": error_response("too many open streams") } } },
        "/udf/config": { "get": {
          "summary": "TradingView UDF: datafeed configuration",
          "responses": { "200": json_response("config", json!({ "type": "object" })) } } },
        "/udf/symbols": { "get": {
          "summary": "TradingView UDF: symbol information (symbol = feed id)",
          "parameters": [ query("symbol", "feed id", json!({"type": "string"})) ],
          "responses": { "200": json_response("symbol", json!({ "type": "object" })),
                         "404": error_response("unknown feed") } } },
        "/udf/history": { "get": {
          "summary": "TradingView UDF: bars {s, t, o, h, l, c, v} (prices as numbers in units, times in seconds; buckets without a report are left out)",
          "parameters": [ query("symbol", "feed id", json!({"type": "string"})),
                          query("resolution", "1S, 5S, 15S, minutes (1, 5, 15, 60, 240) or 1D", json!({"type": "string"})),
                          query("from", "seconds since the epoch", json!({"type": "integer"})),
                          query("to", "seconds since the epoch", json!({"type": "integer"})),
                          query("countback", "at most this many bars, the newest", json!({"type": "integer"})) ],
          "responses": { "200": json_response("bars", json!({ "type": "object" })),
                         "400": error_response("bad parameter"), "404": error_response("unknown feed") } } },
        "/v1/stream": { "get": {
          "summary": "Server-Sent Events: one `report` event per new signed report (id: round; data: {round, timestamp_ms, leaves[, signed_report]}); resumes after `Last-Event-ID` (or `last_event_id`) by replaying stored reports first; `lagged` if reports were skipped, or as the last event when the client fell too far behind",
          "parameters": [ query("feeds", "comma-separated feed ids; only their leaves are sent", json!({"type": "string"})),
                          query("signed", "true: each event also carries `signed_report`, the wire-encoded signed report in hex (for followers)", json!({"type": "boolean"})),
                          query("last_event_id", "resume after this round (as the `Last-Event-ID` header)", json!({"type": "integer", "minimum": 0})) ],
          "responses": {
            "200": { "description": "event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
            "404": error_response("unknown feed in the filter"),
            "429": error_response("this client holds `api.max_streams_per_client` streams"),
            "503": error_response("too many open streams") } } },
        "/v1/committee": { "get": {
          "summary": "Committee health: members, connectivity, rounds led and signed, share failures, recent round latency",
          "responses": { "200": json_response("status", json!({ "$ref": "#/components/schemas/CommitteeStatus" })) } } },
        "/v1/openapi.json": { "get": {
          "summary": "This document",
          "responses": { "200": json_response("OpenAPI 3.1", json!({"type": "object"})) } } },
        "/v1/admin/retention": { "post": {
          "summary": "Run one history retention pass now (prune and downsample old points)",
          "security": [ { "bearer": [] } ],
          "requestBody": { "required": false, "content": { "application/json": { "schema": { "type": "object" } } } },
          "responses": {
            "200": json_response("what was removed", json!({ "type": "object", "properties": {
                "deleted": int, "thinned": int, "transactions": int } })),
            "401": error_response("missing or wrong bearer token"),
            "403": error_response("no admin token configured"),
            "413": error_response("body too large") } } }
      },
      "components": {
        "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        "schemas": {
          "Error": { "type": "object", "required": ["error"], "properties": { "error": {
            "type": "object", "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } },
          "FeedValue": { "type": "object", "properties": {
            "feed_id": { "type": "string" }, "decimals": { "type": ["integer", "null"] },
            "round": int, "timestamp_ms": int, "price": dec_string, "confidence": dec_string,
            "num_observations": int, "observed_at_ms": int,
            "bid": { "type": ["string", "null"], "description": "best bid, fixed point; null when unknown" },
            "ask": { "type": ["string", "null"], "description": "best ask, fixed point; null when unknown" },
            "venues": int, "status": status, "flags": flag_names,
            "ema": dec_string, "ema_confidence": dec_string,
            "volatility": { "type": "string", "description": "annualised realised volatility, 9 decimals (1000000000 = 100 %)" } } },
          "Point": { "type": "object", "properties": {
            "feed_id": { "type": "string" }, "round": int, "timestamp_ms": int,
            "price": dec_string, "confidence": dec_string, "num_observations": int, "observed_at_ms": int,
            "bid": dec_string, "ask": dec_string, "venues": int,
            "status": status, "flags": int,
            "ema": dec_string, "ema_confidence": dec_string, "volatility": dec_string } },
          "Candle": { "type": "object", "description": "one bucket; a bucket without a report has `count` 0 and null prices (gaps are never silent)", "properties": {
            "start_ms": int, "open": nullable(&dec_string), "high": nullable(&dec_string), "low": nullable(&dec_string),
            "close": nullable(&dec_string), "count": int } },
          "MerkleProof": { "type": "object", "properties": {
            "leaf_index": int, "leaf_count": int,
            "siblings": { "type": "array", "items": { "type": "string", "description": "hex bytes32" } } } },
          "SignedReport": { "type": "object", "properties": {
            "header": { "type": "object", "properties": {
              "version": int, "config_digest": { "type": "string" }, "round": int,
              "timestamp_ms": int, "merkle_root": { "type": "string" },
              "margin_root": { "type": "string", "description": "commitment to the round's margin commands (all zero: none)" } } },
            "commands": { "type": "array", "description": "margin commands the committee ordered into the round (absent: none)",
              "items": { "type": "object", "properties": { "origin": int, "nonce": int, "body": { "type": "string" } } } },
            "leaves": { "type": "array", "items": { "type": "object", "properties": {
              "feed_id": { "type": "string" }, "price": { "type": "integer" }, "confidence": { "type": "integer" },
              "num_observations": int, "observed_at_ms": int,
              "bid": { "type": "integer" }, "ask": { "type": "integer" }, "venues": int,
              "status": status, "flags": int, "ema": { "type": "integer" },
              "ema_confidence": { "type": "integer" }, "volatility": int } } },
            "signatures": { "type": "object", "description": "suite (`ed25519`, `secp256k1-evm`) to hex signature",
                            "additionalProperties": { "type": "string" } } } },
          "CommitteeStatus": { "type": "object", "properties": {
            "threshold": int, "self_index": int, "current_round": int,
            "last_signed_round": { "type": ["integer", "null"] },
            "recent_round_latency_ms": { "type": "array", "items": int },
            "updated_at_ms": int,
            "members": { "type": "array", "items": { "type": "object", "properties": {
              "index": int, "peer_id": { "type": "string" }, "connected": { "type": "boolean" },
              "last_seen_ms": { "type": ["integer", "null"] }, "rounds_led": int,
              "rounds_signed": int, "share_failures": int } } } } }
        }
      }
    });
    super::pull::document(&mut doc);
    doc
}
