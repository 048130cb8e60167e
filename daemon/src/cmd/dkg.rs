//! `sibyl dkg`: the ceremony and its command live in `sibyl_node::dkg`,
//! beside the network it runs over.

pub use sibyl_node::dkg::{DkgArgs, command};

/// `sibyl refresh`: new shares of the same group key (`sibyl_node::refresh`).
pub use sibyl_node::refresh::RefreshArgs;

/// `sibyl refresh`: offline (`sibyl_node::refresh::command`) or, with
/// `--live`, inside the running committee ([`live_refresh`]).
pub fn refresh_command(args: RefreshArgs) -> anyhow::Result<()> {
    if args.live {
        live_refresh(&args)
    } else {
        sibyl_node::refresh::command(args)
    }
}

/// `sibyl refresh --live`: `POST /v1/node/keys/refresh` at this member's
/// API (its admin token from node.toml), then its `refresh` status until
/// the refresh switched or failed.
fn live_refresh(args: &RefreshArgs) -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    let config = sibyl_node::config::Config::load(&args.config)?;
    let timeout = sibyl_node::config::parse_duration(&args.timeout)
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let token = config
        .admin_token()
        .context("cannot read the admin token")?
        .context("node.toml sets no [api] admin_token_file or admin_token_env: the refresh route needs it")?;
    let api = format!("http://{}", config.api_listen());
    let status = |what: &str| -> anyhow::Result<serde_json::Value> {
        let body = crate::cmd::devnet::http_get(&format!("{api}/v1/node/status"))
            .with_context(|| format!("{what}: is `sibyl run` up on {api}?"))?;
        let v: serde_json::Value = serde_json::from_str(&body).context("status JSON")?;
        v.get("refresh")
            .cloned()
            .filter(|r| !r.is_null())
            .context("this member runs no in-node refresh")
    };
    let before = status("before")?;
    let count = |r: &serde_json::Value, k: &str| r[k].as_u64().unwrap_or(0);
    let body = crate::cmd::devnet::http_post(&format!("{api}/v1/node/keys/refresh"), &token)?;
    eprintln!("refresh: started at {api} ({body})");
    let deadline = std::time::Instant::now() + timeout;
    let mut said = String::new();
    loop {
        let r = status("following the refresh")?;
        let line = format!(
            "refresh: run {}, {}{}",
            r["run"],
            r["phase"].as_str().unwrap_or("?"),
            match r["waiting_for"].as_array() {
                Some(w) if !w.is_empty() => format!(", waiting for member(s) {w:?}"),
                _ => String::new(),
            }
        );
        if line != said {
            eprintln!("{line}");
            said = line;
        }
        if count(&r, "completed") > count(&before, "completed") {
            println!(
                "switched to key set {}: every member holds a new share of the same group key",
                r["key_set"].as_str().unwrap_or("?")
            );
            return Ok(());
        }
        if count(&r, "failed") > count(&before, "failed") {
            bail!(
                "the refresh failed: {}{}; the old shares keep signing and the member retries by itself",
                r["last_error"].as_str().unwrap_or("(no reason)"),
                r["culprit"]
                    .as_u64()
                    .map(|m| format!(" (member {m} at fault)"))
                    .unwrap_or_default()
            );
        }
        if std::time::Instant::now() > deadline {
            bail!("the refresh did not finish within {}", args.timeout);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// `sibyl repair`: a lost member's own shares back from t helpers
/// (`sibyl_node::repair`).
pub use sibyl_node::repair::{RepairArgs, command as repair_command};
