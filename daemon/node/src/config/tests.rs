use super::*;

fn peer(i: u8) -> String {
    let kp = libp2p_identity::Keypair::ed25519_from_bytes([i; 32]).expect("32 bytes");
    kp.public().to_peer_id().to_base58()
}

fn committee_src(n: u8, t: u16) -> String {
    let mut s = format!(
        "threshold = {t}\nsuites = [\"ed25519\"]\nleader_seed = 7\n\n[round]\ninterval = \"250ms\"\nobservation_timeout = \"100ms\"\nround_timeout = \"1s\"\n\n"
    );
    for i in 1..=n {
        s += &format!(
            "[[members]]\nindex = {i}\npeer_id = \"{}\"\naddress = \"/ip4/127.0.0.1/tcp/{}\"\n\n",
            peer(i),
            9000 + u16::from(i)
        );
    }
    s += "[[feeds]]\nid = \"BTC-USD\"\ndecimals = 8\ndeviation_bps = 50\nheartbeat = \"60s\"\n\n";
    s += "[[feeds]]\nid = \"ETH-USD\"\ndecimals = 8\n";
    s
}

fn parse(src: &str) -> Result<Committee, ConfigError> {
    Committee::parse(Path::new("committee.toml"), src)
}

fn problems(src: &str) -> Vec<Problem> {
    match parse(src) {
        Ok(_) => panic!("expected problems"),
        Err(e) => e.problems().to_vec(),
    }
}

#[test]
fn valid_committee_parses_with_defaults() {
    let c = parse(&committee_src(4, 3)).expect("valid");
    assert_eq!(c.n(), 4);
    assert_eq!(c.threshold, 3);
    assert_eq!(c.max_faulty(), 1);
    assert_eq!(c.round.interval_ms, 250);
    assert_eq!(c.round.max_clock_skew_ms, 2000);
    assert_eq!(c.feeds[1].deviation_bps, 50);
    assert_eq!(c.feeds[1].heartbeat_ms, 60_000);
    assert_eq!(c.members[2].index, 3);
    let kp = libp2p_identity::Keypair::ed25519_from_bytes([3; 32]).unwrap();
    let pk = kp.public().try_into_ed25519().unwrap().to_bytes();
    assert_eq!(c.members[2].identity_key, pk);
}

#[test]
fn digest_ignores_formatting_but_not_substance() {
    let src = committee_src(4, 3);
    let a = parse(&src).unwrap();
    let reformatted = format!("# a comment\n\n{}", src.replace(" = ", "="));
    assert_eq!(a.digest, parse(&reformatted).unwrap().digest);
    // Member order in the file doesn't matter either.
    let b = parse(&committee_src(4, 3).replace("leader_seed = 7", "leader_seed = 8")).unwrap();
    assert_ne!(a.digest, b.digest);
    let c = parse(&src.replace(
        "decimals = 8\ndeviation_bps = 50",
        "decimals = 9\ndeviation_bps = 50",
    ))
    .unwrap();
    assert_ne!(a.digest, c.digest);
    // A member moving to another host keeps the committee's identity.
    let moved = parse(&src.replacen("127.0.0.1", "127.0.0.9", 1)).unwrap();
    assert_ne!(a.members, moved.members);
    assert_eq!(a.digest, moved.digest);
}

#[test]
fn syntax_error_has_line_and_column() {
    let src = committee_src(4, 3).replace("leader_seed = 7", "leader_seed = = 7");
    let ps = problems(&src);
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].line, 3, "{ps:?}");
    assert!(ps[0].col > 1);
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let src = committee_src(4, 3).replace("[round]\n", "[round]\nintervall = \"1s\"\n");
    let ps = problems(&src);
    assert_eq!(ps.len(), 1);
    assert!(ps[0].message.contains("intervall"), "{}", ps[0]);
    assert_eq!(ps[0].line, 6, "{}", ps[0]);
    assert!(ps[0].hint.contains("spelling"));
}

#[test]
fn wrong_type_and_bad_duration_are_located() {
    let ps = problems(&committee_src(4, 3).replace("threshold = 3", "threshold = \"three\""));
    assert_eq!(ps[0].line, 1);
    let ps = problems(&committee_src(4, 3).replace("\"250ms\"", "\"250 bananas\""));
    assert!(ps[0].message.contains("not a duration"), "{}", ps[0]);
    assert_eq!(ps[0].line, 6);
}

#[test]
fn band_and_jump_bounds_are_parsed_checked_and_in_the_digest() {
    let plain = parse(&committee_src(4, 3)).unwrap();
    // Defaults: jumps over 10 % and confidences over 2 % are flagged, no band.
    let p = plain.feeds[0].policy;
    assert_eq!((p.band_min, p.band_max), (None, None));
    assert_eq!((p.max_jump_bps, p.max_confidence_bps), (1_000, 200));
    let banded = committee_src(4, 3).replacen(
        "heartbeat = \"60s\"\n",
        "heartbeat = \"60s\"\nband_min = \"0.5\"\nband_max = \"250000\"\nmax_jump_bps = 0\n",
        1,
    );
    let c = parse(&banded).expect("valid bounds");
    let p = c.feeds[0].policy;
    assert_eq!(p.band_min, Some(50_000_000)); // 0.5 at 8 decimals
    assert_eq!(p.band_max, Some(25_000_000_000_000));
    assert_eq!(p.max_jump_bps, 0);
    assert_ne!(c.digest, plain.digest, "members must agree on the bounds");
    // Refused: more decimals than the feed has, a band upside down, a bound over 1000 %.
    let ps = problems(&banded.replacen("\"0.5\"", "\"0.000000001\"", 1));
    assert_eq!(ps[0].key, "feeds[0].band_min", "{ps:?}");
    assert!(ps[0].message.contains("at most 8 decimals"), "{}", ps[0]);
    let ps = problems(&banded.replacen("\"250000\"", "\"0.4\"", 1));
    assert_eq!(ps[0].key, "feeds[0].band_max", "{ps:?}");
    let ps = problems(&banded.replacen("max_jump_bps = 0", "max_jump_bps = 100001", 1));
    assert_eq!(ps[0].key, "feeds[0].max_jump_bps", "{ps:?}");
    assert!(ps.iter().all(|p| p.line > 0), "{ps:?}");
}

#[test]
fn fixed_point_prices_parse_exactly() {
    assert_eq!(committee::parse_fixed("1.25", 2), Some(125));
    assert_eq!(committee::parse_fixed("-3", 4), Some(-30_000));
    assert_eq!(committee::parse_fixed("1.255", 2), None);
    assert_eq!(committee::parse_fixed("1e5", 2), None);
    assert_eq!(committee::parse_fixed(".5", 2), None);
    assert_eq!(committee::parse_fixed("", 2), None);
    assert_eq!(
        committee::parse_fixed("99999999999999999999999999999999999999999", 8),
        None
    );
}

#[test]
fn missing_required_key() {
    let ps = problems(&committee_src(4, 3).replace("threshold = 3\n", ""));
    assert!(ps[0].message.contains("threshold"), "{}", ps[0]);
}

#[test]
fn all_semantic_problems_are_listed() {
    let src = committee_src(4, 4)
        .replacen(&peer(2), "not-a-peer", 1)
        .replacen("/ip4/127.0.0.1/tcp/9003", "/ip4/127.0.0.1/tcp/9001", 1)
        .replacen("id = \"ETH-USD\"", "id = \"eth-usd\"", 1)
        .replacen("deviation_bps = 50", "deviation_bps = 0", 1);
    let ps = problems(&src);
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"threshold"), "{keys:?}");
    assert!(keys.contains(&"members[1].peer_id"), "{keys:?}");
    assert!(keys.contains(&"members[2].address"), "{keys:?}");
    assert!(keys.contains(&"feeds[1].id"), "{keys:?}");
    assert!(keys.contains(&"feeds[0].deviation_bps"), "{keys:?}");
    assert!(ps.iter().all(|p| p.line > 0), "{ps:?}");
    let t = ps.iter().find(|p| p.key == "threshold").unwrap();
    assert!(t.message.contains("3..=3"), "{t}");
}

#[test]
fn threshold_bounds_follow_fault_model() {
    // n = 7: f = 2, t in 2f + 1 ..= n - f = 5..=5. Below 2f + 1, two
    // signer sets need not share an honest member: f faulty members could
    // get two different reports signed in one round.
    for t in [2, 3, 4] {
        let ps = problems(&committee_src(7, t));
        let p = ps.iter().find(|p| p.key == "threshold").expect("refused");
        assert!(p.message.contains("outside 5..=5"), "{p}");
    }
    assert!(parse(&committee_src(7, 5)).is_ok());
    assert!(parse(&committee_src(7, 6)).is_err());
    // n = 4: 3 only.
    assert!(parse(&committee_src(4, 2)).is_err());
    assert!(parse(&committee_src(4, 3)).is_ok());
    // n = 1: f = 0, t = 1.
    assert!(parse(&committee_src(1, 1)).is_ok());
}

#[test]
fn duplicate_members_and_indices() {
    let src = committee_src(4, 3)
        .replacen("index = 4", "index = 2", 1)
        .replacen(&peer(3), &peer(1), 1);
    let ps = problems(&src);
    assert!(
        ps.iter()
            .any(|p| p.key == "members[3].index" && p.message.contains("members[1]")),
        "{ps:?}"
    );
    assert!(ps.iter().any(|p| p.key == "members[2].peer_id"), "{ps:?}");
}

#[test]
fn non_ed25519_peer_id_is_refused() {
    // A PeerId whose multihash does not inline an Ed25519 public key.
    let other = PeerId::random().to_base58();
    let ps = problems(&committee_src(4, 3).replacen(&peer(1), &other, 1));
    assert!(ps[0].message.contains("Ed25519"), "{}", ps[0]);
}

#[test]
fn round_timing_and_heartbeat_checks() {
    let src = committee_src(4, 3)
        .replace("round_timeout = \"1s\"", "round_timeout = \"50ms\"")
        .replace("heartbeat = \"60s\"", "heartbeat = \"100ms\"");
    let ps = problems(&src);
    assert!(ps.iter().any(|p| p.key == "round.round_timeout"), "{ps:?}");
    assert!(ps.iter().any(|p| p.key == "feeds[0].heartbeat"), "{ps:?}");
}

#[test]
fn empty_committee() {
    let ps = problems("threshold = 1\n");
    assert!(ps.iter().any(|p| p.key == "members"));
    assert!(ps.iter().any(|p| p.key == "feeds"));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
    for bad in ["", "ms", "10", "1.5s", "-1s", "1d", "99999999999999999999h"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

fn write_pair(dir: &Path, node: &str) -> PathBuf {
    std::fs::write(dir.join("committee.toml"), committee_src(4, 3)).unwrap();
    let p = dir.join("node.toml");
    std::fs::write(&p, node).unwrap();
    p
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sibyl-config-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn node_config_loads_with_defaults_and_resolves_paths() {
    let d = tempdir("ok");
    let p = write_pair(
        &d,
        "[node]\ncommittee = \"committee.toml\"\n\n[keys]\npassphrase_env = \"SIBYL_TEST_PASS_UNSET\"\n",
    );
    let c = Config::load(&p).expect("valid");
    assert_eq!(c.db_path(), d.join("data").join("sibyl.db"));
    assert_eq!(c.identity_path(), d.join("keys/identity.key"));
    assert_eq!(c.api_listen().port(), 8080);
    assert_eq!(c.node.log.format, LogFormat::Auto);
    assert_eq!(c.node.store.ledger_sync, crate::store::LedgerSync::Normal);
    assert!(matches!(
        c.passphrase(),
        Err(PassphraseError::EnvMissing(_))
    ));
}

#[test]
fn passphrase_from_file() {
    let d = tempdir("pass");
    std::fs::write(d.join("pass"), "hunter2\n").unwrap();
    let p = write_pair(
        &d,
        "[node]\ncommittee = \"committee.toml\"\n[keys]\npassphrase_file = \"pass\"\n",
    );
    let c = Config::load(&p).unwrap();
    assert_eq!(c.passphrase().unwrap(), "hunter2");
}

#[test]
fn node_config_problems_are_all_listed_with_committee_problems() {
    let d = tempdir("bad");
    std::fs::write(d.join("committee.toml"), committee_src(4, 9)).unwrap();
    let p = d.join("node.toml");
    std::fs::write(
        &p,
        "[node]\ncommittee = \"committee.toml\"\n[keys]\npassphrase_env = \"A B\"\npassphrase_file = \"x\"\n[api]\nlisten = \"localhost\"\n[net]\nlisten = \"/ip4/1.2.3.4/udp/9\"\n[log]\nlevel = \"info,,=[\"\n",
    )
    .unwrap();
    let e = Config::load(&p).unwrap_err();
    let ps = e.problems();
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"keys.passphrase_env"), "{keys:?}");
    assert!(keys.contains(&"api.listen"), "{keys:?}");
    assert!(keys.contains(&"net.listen"), "{keys:?}");
    assert!(keys.contains(&"threshold"), "{keys:?}");
    let api = ps.iter().find(|p| p.key == "api.listen").unwrap();
    assert_eq!(
        (api.line, api.file.ends_with("node.toml")),
        (7, true),
        "{api}"
    );
    // The rendered error names file and line.
    let text = e.to_string();
    assert!(text.contains("node.toml:7:"), "{text}");
}

#[test]
fn missing_committee_file_points_at_the_key() {
    let d = tempdir("nocommittee");
    let p = d.join("node.toml");
    std::fs::write(
        &p,
        "[node]\ncommittee = \"nope.toml\"\n[keys]\npassphrase_env = \"X\"\n",
    )
    .unwrap();
    let ps = Config::load(&p).unwrap_err().problems().to_vec();
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].key, "node.committee");
    assert_eq!(ps[0].line, 2);
}

#[test]
fn unknown_section_in_node_config() {
    let d = tempdir("unknown");
    let p = write_pair(
        &d,
        "[node]\ncommittee = \"committee.toml\"\n[keys]\npassphrase_env = \"X\"\n[nett]\nlisten = \"x\"\n",
    );
    let ps = Config::load(&p).unwrap_err().problems().to_vec();
    assert!(ps[0].message.contains("nett"), "{}", ps[0]);
    assert_eq!(ps[0].line, 5, "{}", ps[0]);
}

#[test]
fn ledger_sync_takes_normal_or_full_and_names_a_bad_value() {
    let d = tempdir("ledger-sync");
    let base = "[node]\ncommittee = \"committee.toml\"\n[keys]\npassphrase_env = \"X\"\n[store]\n";
    let p = write_pair(&d, &format!("{base}ledger_sync = \"full\"\n"));
    let c = Config::load(&p).expect("valid");
    assert_eq!(c.node.store.ledger_sync, crate::store::LedgerSync::Full);
    let p = write_pair(&d, &format!("{base}ledger_sync = \"sometimes\"\n"));
    let ps = Config::load(&p).unwrap_err().problems().to_vec();
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0].line, 6, "{}", ps[0]);
    assert!(
        ps[0].message.contains("sometimes") && ps[0].message.contains("full"),
        "{}",
        ps[0]
    );
}

#[test]
fn background_nice_defaults_to_10_and_a_bad_value_is_named_with_its_line() {
    let d = tempdir("nice");
    let keys = "[keys]\npassphrase_env = \"X\"\n";
    let p = write_pair(
        &d,
        &format!("[node]\ncommittee = \"committee.toml\"\n{keys}"),
    );
    assert_eq!(
        *Config::load(&p)
            .expect("valid")
            .node
            .node
            .background_nice
            .get_ref(),
        10
    );
    let p = write_pair(
        &d,
        &format!("[node]\ncommittee = \"committee.toml\"\nbackground_nice = 20\n{keys}"),
    );
    let ps = Config::load(&p).unwrap_err().problems().to_vec();
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0].key, "node.background_nice");
    assert_eq!(ps[0].line, 3, "{}", ps[0]);
    assert!(ps[0].message.contains("20"), "{}", ps[0]);
}

#[test]
fn deploy_examples_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
    let c = Config::load(&root.join("node.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.committee.n() >= 4);
}

#[test]
fn admin_token_and_chain_section() {
    let d = tempdir("chain");
    std::fs::write(d.join("token"), "s3cret\n").unwrap();
    let p = write_pair(
        &d,
        "[node]\ncommittee = \"committee.toml\"\n[keys]\npassphrase_env = \"X\"\n[api]\nadmin_token_file = \"token\"\n[chain]\nrpc_url = \"http://127.0.0.1:8545\"\nchain_id = 31337\ncontract = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\ntransmitter_key_file = \"k\"\n",
    );
    let c = Config::load(&p).expect("valid");
    assert_eq!(c.admin_token().unwrap().as_deref(), Some("s3cret"));
    assert_eq!(c.node.chain.as_ref().unwrap().chain_id, 31337);

    let p = write_pair(
        &d,
        "[node]\ncommittee = \"committee.toml\"\n[keys]\npassphrase_env = \"X\"\n[chain]\nrpc_url = \"ws://x\"\nchain_id = 0\ncontract = \"0x12\"\ntransmitter_key_file = \"k\"\n",
    );
    let ps = Config::load(&p).unwrap_err().problems().to_vec();
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["chain.rpc_url", "chain.contract", "chain.chain_id"],
        "{ps:?}"
    );
    assert_eq!(ps[0].line, 6);
    assert_eq!(ps[1].line, 8);
}

#[test]
fn committee_converts_to_the_protocol_committee() {
    let c = parse(&committee_src(4, 3)).unwrap();
    let p = c.to_protocol().expect("valid protocol committee");
    assert_eq!(p.n(), 4);
    assert_eq!(p.t(), 3);
    assert_eq!(p.f(), 1);
    assert_eq!(*p.config_digest(), c.digest);
    assert_eq!(p.timeouts().round_interval_ms, 250);
    assert_eq!(p.timeouts().observe_ms, 100);
    assert_eq!(p.timeouts().share_ms, 400);
    assert_eq!(p.identity(2).unwrap().to_bytes(), c.members[1].identity_key);
}

/// The `[api]` limits: the three timeouts, then connections, per client,
/// streams, per client.
fn api_limits(a: &ApiSection) -> (Duration, Duration, Duration, (usize, usize, usize, usize)) {
    (
        a.request_timeout.get_ref().0,
        a.header_read_timeout.get_ref().0,
        a.idle_timeout.get_ref().0,
        (
            *a.max_connections.get_ref(),
            *a.max_connections_per_client.get_ref(),
            *a.max_streams.get_ref(),
            *a.max_streams_per_client.get_ref(),
        ),
    )
}

#[test]
fn api_limits_parse_and_are_checked_with_key_and_line() {
    let d = tempdir("api-limits");
    let base = "[node]\ncommittee = \"committee.toml\"\n[keys]\npassphrase_env = \"P\"\n[api]\n";
    let p = write_pair(
        &d,
        &format!(
            "{base}request_timeout = \"5s\"\nheader_read_timeout = \"1s500ms\"\nidle_timeout = \"2m\"\nmax_connections = 500\nmax_connections_per_client = 50\nmax_streams = 100\nmax_streams_per_client = 4\n"
        ),
    );
    let c = Config::load(&p).expect("valid");
    // (sibyl-api's tests check that `ApiLimits::from_config` takes these.)
    let limits = api_limits(&c.node.api);
    assert_eq!(limits.0, Duration::from_secs(5));
    assert_eq!(limits.1, Duration::from_millis(1500));
    assert_eq!(limits.2, Duration::from_secs(120));
    assert_eq!(limits.3, (500, 50, 100, 4));
    // Without the keys: the section's defaults.
    let p = write_pair(&d, base);
    let c = Config::load(&p).expect("valid");
    assert_eq!(api_limits(&c.node.api), api_limits(&ApiSection::default()));

    let p = write_pair(
        &d,
        &format!(
            "{base}idle_timeout = \"0s\"\nmax_connections = 100\nmax_streams = 100\nmax_streams_per_client = 0\nrequest_timeout = \"1000h\"\nmax_connections_per_client = 101\n"
        ),
    );
    let e = Config::load(&p).unwrap_err();
    let at = |key: &str| {
        e.problems()
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.line)
            .unwrap_or_else(|| panic!("no problem for {key}: {e}"))
    };
    assert_eq!(at("api.idle_timeout"), 6);
    assert_eq!(at("api.max_streams"), 8);
    assert_eq!(at("api.max_streams_per_client"), 9);
    assert_eq!(at("api.request_timeout"), 10);
    assert_eq!(at("api.max_connections_per_client"), 11);
    let p = write_pair(&d, &format!("{base}header_read_timeout = \"soon\"\n"));
    let e = Config::load(&p).unwrap_err();
    assert_eq!(e.problems()[0].line, 6, "{e}");
    assert!(e.to_string().contains("not a duration"), "{e}");
}

/// `config check` accepted committees the round protocol refuses (more than
/// 1,024 members or 10,000 feeds), so `sibyl run` failed on a file the check
/// called OK. Found while writing the `committee_file` fuzz oracle (what
/// parses converts with `to_protocol`); random input cannot reach it.
#[test]
fn committee_sizes_beyond_the_round_protocol_are_refused() {
    let members = |n: u16| {
        (1..=n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..2].copy_from_slice(&i.to_be_bytes());
                let kp = libp2p_identity::Keypair::ed25519_from_bytes(seed).expect("32 bytes");
                format!(
                    "[[members]]\nindex = {i}\npeer_id = \"{}\"\naddress = \"/ip4/10.0.{}.{}/tcp/9000\"\n",
                    kp.public().to_peer_id().to_base58(),
                    i / 256,
                    i % 256
                )
            })
            .collect::<String>()
    };
    let feed = |i: usize| format!("[[feeds]]\nid = \"F{i}\"\ndecimals = 8\n");
    let src = |n: u16, feeds: usize| {
        let t = 2 * max_faulty(n) + 1;
        format!(
            "threshold = {t}\n{}{}",
            members(n),
            (0..feeds).map(feed).collect::<String>()
        )
    };
    // At the limits: accepted, and the protocol takes it.
    let c = parse(&src(1024, 2)).unwrap();
    assert_eq!(c.to_protocol().map(|p| p.n()).ok(), Some(1024));
    let c = parse(&src(4, MAX_FEEDS)).unwrap();
    assert_eq!(
        c.to_protocol().map(|p| p.feeds().len()).ok(),
        Some(MAX_FEEDS)
    );
    // One more: refused by the check, naming the key.
    let p = problems(&src(1025, 2));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "members");
    let p = problems(&src(4, MAX_FEEDS + 1));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "feeds");
}

/// Found by the `node_config` and `committee_file` fuzz targets: a control
/// character in a comment made toml report an error with an empty message,
/// so `config check` printed `node.toml:7:40: ` and nothing else. The lines
/// are the fuzzers' crashing lines (mutated deploy/examples comments).
#[test]
fn toml_errors_without_words_still_say_what_is_wrong() {
    let node = "[node]\n# The committee file (required). Ident\t\0\0\0 on every member.\ncommittee = \"c.toml\"\n";
    let committee = "threshold = 3\n# are in (lo\u{1}\0\0\0\0\0\0\u{10}ency; a signer that then fails costs the round).\n";
    for (src, col) in [(node, 40), (committee, 13)] {
        let problems = match NodeConfig::parse(Path::new("x.toml"), src) {
            Err(e) if src == node => e.problems().to_vec(),
            _ => problems(src),
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert_eq!((p.line, p.col), (2, col), "{p}");
        assert!(p.message.starts_with("control character U+00"), "{p}");
        assert!(p.hint.contains("control characters"), "{p}");
    }
}

/// Found by the `node_config` fuzz target (a timeout): a `log.level` with a
/// field filter took 14 s in `config check`, since tracing compiles field
/// values into automata. The fuzzer's input, byte for byte.
#[test]
fn log_level_field_filters_are_refused_before_they_are_compiled() {
    let src = std::str::from_utf8(include_bytes!("testdata/fuzz-timeout-log-level.toml")).unwrap();
    let e = NodeConfig::parse(Path::new("node.toml"), src).unwrap_err();
    let p = e
        .problems()
        .iter()
        .find(|p| p.key == "log.level")
        .expect("log.level named");
    assert!(p.message.contains("field filters"), "{p}");
    assert_eq!(p.line, 9, "{p}");
}

#[test]
fn every_syntax_error_is_found_on_its_own_line() {
    let src = "a = 1\nb = = 2\nc = 3\nd = \"open\ne = [1, 2]\n";
    let lines: Vec<usize> = syntax_errors(src)
        .iter()
        .filter_map(|e| e.span())
        .map(|s| line_col(src, s.start).0)
        .collect();
    assert_eq!(lines, vec![2, 4], "{lines:?}");
    assert!(syntax_errors("a = 1\n[t]\nb = \"x\"\n").is_empty());
}

#[test]
fn the_committee_of_a_node_toml_that_does_not_parse_is_found() {
    let src =
        "[keys]\ncommittee = \"wrong.toml\"\n[node]\n# c\ncommittee = \"c.toml\" # here\nx = = 1\n";
    assert_eq!(committee_name_in(src).as_deref(), Some("c.toml"));
    assert_eq!(committee_name_in("[node]\ndata_dir = \"d\"\n"), None);
}

#[test]
fn an_evm_committee_refuses_decimals_the_contract_cannot_store() {
    let evm = committee_src(4, 3).replace("suites = [\"ed25519\"]", "suites = [\"secp256k1-evm\"]");
    // 18 decimals fit SibylFeed's int96 price and uint72 confidence
    parse(&evm.replace(
        "id = \"ETH-USD\"\ndecimals = 8",
        "id = \"ETH-USD\"\ndecimals = 18",
    ))
    .expect("18 decimals on an EVM committee");
    let p = problems(&evm.replace(
        "id = \"ETH-USD\"\ndecimals = 8",
        "id = \"ETH-USD\"\ndecimals = 24",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        format!("{:?}", p[0]).contains("do not fit the EVM contract"),
        "{p:?}"
    );
    // an ed25519-only committee stores nothing on chain: 24 decimals are fine there
    parse(&committee_src(4, 3).replace(
        "id = \"ETH-USD\"\ndecimals = 8",
        "id = \"ETH-USD\"\ndecimals = 24",
    ))
    .expect("24 decimals without secp256k1-evm");
    // a band beyond int96 at 18 decimals
    let wide = evm.replace(
        "id = \"ETH-USD\"\ndecimals = 8",
        "id = \"ETH-USD\"\ndecimals = 18\nband_max = \"100000000000\"",
    );
    let p = problems(&wide);
    assert!(format!("{p:?}").contains("int96"), "{p:?}");
}

#[test]
fn refresh_every_is_a_duration_of_at_least_ten_seconds() {
    let d = tempdir("refresh-every");
    std::fs::write(d.join("pass"), "hunter2\n").unwrap();
    let base = "[node]\ncommittee = \"committee.toml\"\n[keys]\npassphrase_file = \"pass\"\n";
    let p = write_pair(&d, &format!("{base}refresh_every = \"24h\"\n"));
    let c = Config::load(&p).unwrap();
    assert_eq!(
        c.node
            .keys
            .refresh_every
            .as_ref()
            .map(|e| e.get_ref().as_millis()),
        Some(86_400_000)
    );
    let p = write_pair(&d, &format!("{base}refresh_every = \"5s\"\n"));
    let e = Config::load(&p).unwrap_err();
    let p = e
        .problems()
        .iter()
        .find(|p| p.key == "keys.refresh_every")
        .cloned()
        .expect("refresh_every refused");
    assert!(p.message.contains("shorter than 10 s"), "{p:?}");
    let p = write_pair(&d, &format!("{base}refresh_every = \"daily\"\n"));
    assert!(Config::load(&p).is_err());
}

/// `sibyl replay --config` finds the committee key in the member's keystore:
/// its first suite's group key, as the running node derives it; a keystore
/// without the public key package is an error, not a silent `None`.
#[test]
fn the_committee_key_is_read_from_the_keystore() {
    let d = tempdir("committee-key");
    let p = write_pair(
        &d,
        "[node]\ncommittee = \"committee.toml\"\n\n[keys]\npassphrase_env = \"SIBYL_TEST_PASS_UNSET\"\n",
    );
    let c = Config::load(&p).expect("valid");
    let err = crate::replay::configured_committee_key(&c).unwrap_err();
    assert!(format!("{err:#}").contains("frost"), "{err:#}");
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(5);
    let (_, pkp) = frost_ed25519::keys::generate_with_dealer(
        4,
        3,
        frost_ed25519::keys::IdentifierList::Default,
        &mut rng,
    )
    .unwrap();
    c.keystore()
        .write_public_key_package(&c.committee.digest, &pkp)
        .unwrap();
    let want = crate::margin_svc::committee_key(
        &sibyl_aggregator::verify::GroupKeys::new(c.committee.digest)
            .with_ed25519(*pkp.verifying_key()),
    )
    .unwrap();
    assert_eq!(want.as_bytes(), pkp.verifying_key().serialize().unwrap());
    assert_eq!(crate::replay::configured_committee_key(&c).unwrap(), want);
    let _ = std::fs::remove_dir_all(&d);
}
