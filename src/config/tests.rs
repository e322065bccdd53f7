//! Config parsing and validation: errors name the field and the line.

use super::*;

const MIN: &str =
    "backends:\n  - { name: a, url: \"http://127.0.0.1:9\", protocol: openai }\nrouting: {}\n";

#[test]
fn embedded_default_is_valid() {
    let c = Config::embedded_default();
    assert_eq!(c.backends.len(), 2);
    assert_eq!(c.routing.rules.len(), 3);
}

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::parse(MIN).unwrap();
    assert_eq!(c.listen.address, "127.0.0.1:8080");
    assert_eq!(c.routing.strategy, super::Algorithm::Adaptive);
    assert_eq!(c.routing.max_attempts, 2);
    assert_eq!(c.backends[0].value.weight, 1);
}

#[test]
fn unknown_field_is_an_error_with_its_line() {
    let text = MIN.replace(
        "routing: {}",
        "routing:\n  strategy: round-robin\n  stratgey: x",
    );
    let e = Config::parse(&text).unwrap_err().to_string();
    assert!(e.contains("stratgey"), "{e}");
    assert!(e.contains("line 5") || e.contains("5:"), "{e}");
}

#[test]
fn unknown_backend_in_a_rule_names_field_and_line() {
    let text = MIN.replace(
        "routing: {}",
        "routing:\n  rules:\n    - name: r1\n      route:\n        backend: [a, nope]\n",
    );
    let e = Config::parse(&text).unwrap_err().to_string();
    assert!(e.contains("routing.rules[0].route.backend"), "{e}");
    assert!(e.contains("unknown backend `nope`"), "{e}");
    assert!(e.contains("line 7"), "{e}");
}

#[test]
fn bad_url_names_field_and_line() {
    let text = "backends:\n  - name: a\n    protocol: openai\n    url: \"ftp://x\"\nrouting: {}\n";
    let e = Config::parse(text).unwrap_err().to_string();
    assert!(e.contains("backends[0].url") && e.contains("line 4"), "{e}");
}

#[test]
fn wrong_type_and_bad_enum_are_reported() {
    let e = Config::parse(&MIN.replace("routing: {}", "routing: { strategy: fastest }"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("fastest") || e.contains("variant"), "{e}");
    let e = Config::parse(&MIN.replace("protocol: openai", "protocol: gemini"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("gemini") || e.contains("variant"), "{e}");
}

#[test]
fn duplicates_and_ranges_are_rejected() {
    let dup = "backends:\n  - { name: a, url: \"http://h:1\", protocol: openai }\n  - { name: a, url: \"http://h:2\", protocol: openai }\nrouting: {}\n";
    let e = Config::parse(dup).unwrap_err().to_string();
    assert!(
        e.contains("backends[1].name") && e.contains("line 3"),
        "{e}"
    );
    let w = MIN.replace(
        "routing: {}",
        "routing:\n  rules:\n    - { name: r, route: { backend: a, weight: 0 } }\n",
    );
    assert!(
        Config::parse(&w)
            .unwrap_err()
            .to_string()
            .contains("weight")
    );
    let keys =
        format!("{MIN}tenants:\n  - {{ id: x, keys: [sk-1] }}\n  - {{ id: y, keys: [sk-1] }}\n");
    assert!(
        Config::parse(&keys)
            .unwrap_err()
            .to_string()
            .contains("tenants[1].keys")
    );
}

#[test]
fn every_shipped_config_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster");
    let mut n = 0;
    for sub in ["examples", "local", "nodes"] {
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "yaml") {
                // Valid as shipped, given the secrets it names (checked by `api_keys_named_by_env_must_be_set`).
                let text = std::fs::read_to_string(&p).unwrap();
                Config::parse_with_env(&text, &|_| true)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
    }
    assert!(
        n >= 8,
        "expected example and node configs under {}",
        root.display()
    );
}

#[test]
fn api_keys_named_by_env_must_be_set() {
    let yaml = "backends:\n  - { name: a, url: \"http://x:1\", protocol: openai, api_key_env: UP_KEY }\ntenants:\n  - { id: t, key_envs: [T_KEY] }\nrouting: {}\n";
    let err = Config::parse_with_env(yaml, &|_| false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("backends[0].api_key_env") && err.contains("UP_KEY"),
        "{err}"
    );
    assert!(err.contains("line 2"), "{err}");
    let err = Config::parse_with_env(yaml, &|v| v == "UP_KEY")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tenants[0].key_envs") && err.contains("T_KEY"),
        "{err}"
    );
    assert!(Config::parse_with_env(yaml, &|_| true).is_ok());
}

#[test]
fn ejection_probe_and_cap_are_checked_and_defaulted() {
    let c = Config::parse(MIN).unwrap();
    let b = &c.backends[0].value;
    assert_eq!(b.eject_probe(), Some(std::time::Duration::from_secs(1)));
    assert_eq!(b.eject_max(), std::time::Duration::from_secs(80));
    let with = |extra: &str| MIN.replace("protocol: openai", &format!("protocol: openai, {extra}"));
    let c = Config::parse(&with("eject_probe_ms: 0, eject_max_ms: 10000")).unwrap();
    assert_eq!(c.backends[0].value.eject_probe(), None);
    assert_eq!(
        c.backends[0].value.eject_max(),
        std::time::Duration::from_secs(10)
    );
    for (extra, field) in [
        ("eject_max_ms: 9999", "backends[0].eject_max_ms"),
        ("eject_probe_ms: 10", "backends[0].eject_probe_ms"),
    ] {
        let e = Config::parse(&with(extra)).unwrap_err().to_string();
        assert!(e.contains(field) && e.contains("line 2"), "{e}");
    }
    let e = Config::parse(&with("eject_probe: 5"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("eject_probe"), "{e}");
}

#[test]
fn cluster_mode_needs_a_gossip_key_or_an_explicit_insecure() {
    let with = |c: &str| format!("{MIN}cluster:\n  {c}\n");
    let e = Config::parse_with_env(&with("cluster_id: x"), &|_| true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cluster.secret_env") && e.contains("insecure"),
        "{e}"
    );
    let e = Config::parse_with_env(&with("secret_env: GOSSIP_KEY"), &|_| false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cluster.secret_env") && e.contains("GOSSIP_KEY"),
        "{e}"
    );
    let both = with("{ secret_env: K, insecure: true }").replace("cluster:\n  {", "cluster: {");
    let e = Config::parse_with_env(&both, &|_| true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cluster.insecure"), "{e}");
    let c = Config::parse_with_env(&with("secret_env: GOSSIP_KEY"), &|_| true).unwrap();
    assert_eq!(c.cluster.unwrap().max_cooldown_ms, 120_000);
    assert!(Config::parse_with_env(&with("insecure: true"), &|_| false).is_ok());
}

#[test]
fn apis_list_models_and_forward_headers_are_checked() {
    use crate::protocol::Endpoint;
    let c = Config::parse(&MIN.replace(
        "protocol: openai",
        "protocol: openai, apis: [responses], list_models: [m1], forward_headers: [X-Tag]",
    ))
    .unwrap();
    let b = &c.backends[0].value;
    assert!(b.serves_responses() && !b.serves_chat());
    assert!(b.serves_endpoint(Endpoint::Responses, true));
    assert!(
        !b.serves_endpoint(Endpoint::Chat, false),
        "a responses-only backend"
    );
    let c = Config::parse(MIN).unwrap();
    let b = &c.backends[0].value;
    assert!(
        !b.serves_responses() && b.serves_chat(),
        "default: chat only"
    );
    assert!(b.serves_endpoint(Endpoint::Responses, false), "translated");
    assert!(!b.serves_endpoint(Endpoint::Responses, true));
    for (bad, field) in [
        ("protocol: anthropic, apis: [chat]", "backends[0].apis"),
        ("protocol: openai, apis: []", "backends[0].apis"),
        (
            "protocol: openai, list_models: [\"\"]",
            "backends[0].list_models[0]",
        ),
        (
            "protocol: openai, forward_headers: [x-api-key]",
            "backends[0].forward_headers[0]",
        ),
        (
            "protocol: openai, forward_headers: [\"bad header\"]",
            "backends[0].forward_headers[0]",
        ),
    ] {
        let e = Config::parse(&MIN.replace("protocol: openai", bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{bad}: {e}");
    }
}

#[test]
fn the_redis_key_prefix_defaults_to_the_cluster_id_and_tls_files_are_checked() {
    let with = |redis: &str| {
        format!("{MIN}cluster:\n  cluster_id: east\n  insecure: true\n  redis: {{ {redis} }}\n")
    };
    let parse = |redis: &str| Config::parse_with_env(&with(redis), &|_| true);
    let prefix = |c: Config| c.cluster.unwrap().redis.unwrap().key_prefix;
    assert_eq!(prefix(parse("url: \"redis://h:6379\"").unwrap()), "east");
    let c = parse("url: \"redis://u:p@h:6379\", key_prefix: shared").unwrap();
    assert_eq!(prefix(c), "shared");

    let file = std::env::temp_dir().join(format!("sluice-ca-{}.pem", std::process::id()));
    std::fs::write(&file, "not checked here").unwrap();
    let f = file.display();
    let c = parse(&format!("url: \"rediss://h:6380\", ca_file: \"{f}\"")).unwrap();
    assert!(c.cluster.unwrap().redis.unwrap().tls());
    for (redis, field) in [
        (
            format!("url: \"redis://h\", ca_file: \"{f}\""),
            "cluster.redis.ca_file",
        ),
        (
            "url: \"rediss://h\", ca_file: /no/such/ca.pem".into(),
            "cluster.redis.ca_file",
        ),
        (
            format!("url: \"rediss://h\", client_cert_file: \"{f}\""),
            "cluster.redis.client_key_file",
        ),
        (
            "url: \"redis://h\", key_prefix: \"a{b}\"".into(),
            "cluster.redis.key_prefix",
        ),
        ("url: \"http://h\"".into(), "cluster.redis.url"),
    ] {
        let e = parse(&redis).unwrap_err().to_string();
        assert!(e.contains(field), "{redis}: {e}");
    }
    let e = parse("url: \"redis://h\", tls: true")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tls"), "{e}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn admin_listen_is_an_address_apart_from_the_public_one() {
    let c = Config::parse(&format!("{MIN}admin: {{ listen: \"127.0.0.1:9091\" }}\n")).unwrap();
    assert_eq!(
        c.admin.socket_addr().unwrap(),
        Some("127.0.0.1:9091".parse().unwrap())
    );
    assert_eq!(
        Config::parse(MIN).unwrap().admin.socket_addr().unwrap(),
        None
    );
    for (admin, field) in [
        ("{ listen: nowhere }", "admin.listen"),
        ("{ listen: \"127.0.0.1:8080\" }", "admin.listen"),
        ("{ lisen: \"127.0.0.1:1\" }", "lisen"),
    ] {
        let e = Config::parse(&format!("{MIN}admin: {admin}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{admin}: {e}");
    }
}

#[test]
fn redis_modes_take_their_own_fields() {
    use super::RedisMode;
    let with = |redis: &str| {
        format!("{MIN}cluster:\n  cluster_id: east\n  insecure: true\n  redis: {{ {redis} }}\n")
    };
    let parse = |redis: &str| Config::parse_with_env(&with(redis), &|_| true);
    let redis = |c: Config| c.cluster.unwrap().redis.unwrap();
    let single = redis(parse("url: \"redis://h:6379\"").unwrap());
    assert_eq!(single.mode, RedisMode::Single);
    let c = redis(parse("mode: cluster, nodes: [\"redis://a:7000\", \"redis://b:7001\"]").unwrap());
    assert_eq!((c.mode, c.urls().len()), (RedisMode::Cluster, 2));
    let s = redis(
        parse("mode: sentinel, sentinels: [\"rediss://s:26379\"], master_name: primary").unwrap(),
    );
    assert_eq!(s.mode, RedisMode::Sentinel);
    assert!(s.tls());
    for (bad, field) in [
        ("mode: cluster, url: \"redis://h\"", "cluster.redis.url"),
        ("mode: cluster, nodes: []", "cluster.redis.nodes"),
        (
            "nodes: [\"redis://a:1\"], url: \"redis://h\"",
            "cluster.redis.nodes",
        ),
        (
            "mode: cluster, nodes: [\"redis://a:1\", \"rediss://b:2\"]",
            "cluster.redis.nodes[1]",
        ),
        (
            "mode: cluster, nodes: [\"tcp://a:1\"]",
            "cluster.redis.nodes[0]",
        ),
        (
            "mode: sentinel, sentinels: [\"redis://s:1\"]",
            "cluster.redis.master_name",
        ),
        ("mode: sentinel, master_name: p", "cluster.redis.sentinels"),
        (
            "master_name: p, url: \"redis://h\"",
            "cluster.redis.master_name",
        ),
        ("mode: ring, url: \"redis://h\"", "mode"),
    ] {
        let e = parse(bad).unwrap_err().to_string();
        assert!(e.contains(field), "{bad}: {e}");
    }
}
