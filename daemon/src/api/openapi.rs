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

/// The whole document.
pub fn document() -> Value {
    let int = json!({ "type": "integer", "minimum": 0 });
    let dec_string = json!({ "type": "string", "pattern": "^-?[0-9]+$",
                             "description": "fixed-point integer as a decimal string" });
    let mut doc = json!({
      "openapi": "3.1.0",
      "info": {
        "title": "Sibyl oracle node API",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Signed price reports of a Sibyl committee: latest values with Merkle proofs for pull consumers, history and candles, a live stream, committee health. Prices are fixed-point integers (`value / 10^decimals`) as decimal strings. Errors are `{\"error\": {\"code\", \"message\"}}`."
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
            "400": error_response("malformed round"),
            "404": error_response("no report stored for that round") } } },
        "/v1/stream": { "get": {
          "summary": "Server-Sent Events: one `report` event per new signed report (data: {round, timestamp_ms, leaves}); `lagged` if the client fell behind",
          "parameters": [ query("feeds", "comma-separated feed ids; only their leaves are sent", json!({"type": "string"})) ],
          "responses": {
            "200": { "description": "event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
            "404": error_response("unknown feed in the filter"),
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
            "num_observations": int, "observed_at_ms": int } },
          "Point": { "type": "object", "properties": {
            "feed_id": { "type": "string" }, "round": int, "timestamp_ms": int,
            "price": dec_string, "confidence": dec_string, "num_observations": int, "observed_at_ms": int } },
          "Candle": { "type": "object", "properties": {
            "start_ms": int, "open": dec_string, "high": dec_string, "low": dec_string,
            "close": dec_string, "count": int } },
          "MerkleProof": { "type": "object", "properties": {
            "leaf_index": int, "leaf_count": int,
            "siblings": { "type": "array", "items": { "type": "string", "description": "hex bytes32" } } } },
          "SignedReport": { "type": "object", "properties": {
            "header": { "type": "object", "properties": {
              "version": int, "config_digest": { "type": "string" }, "round": int,
              "timestamp_ms": int, "merkle_root": { "type": "string" } } },
            "leaves": { "type": "array", "items": { "type": "object", "properties": {
              "feed_id": { "type": "string" }, "price": { "type": "integer" }, "confidence": { "type": "integer" },
              "num_observations": int, "observed_at_ms": int } } },
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
