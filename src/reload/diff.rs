//! What a new config may change live, as pure functions: the fields that need a restart (the
//! listener and its drain, TLS on or off, the node's identity, the whole `cluster:` section: its
//! id, gossip address, keys and Redis; a tenant's spend budget added or changed), and what carries
//! over by name (for the log and tests).

use crate::config::Config;
use std::collections::BTreeSet;

/// Fields whose change only a restart applies, in file order; empty: the new config can be
/// swapped in.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |field: &str, changed: bool| {
        if changed {
            out.push(field.to_string());
        }
    };
    check("node.id", old.node.id != new.node.id);
    check("node.log_json", old.node.log_json != new.node.log_json);
    check("listen.address", old.listen.address != new.listen.address);
    check(
        "listen.tls",
        old.listen.tls.is_some() != new.listen.tls.is_some(),
    );
    check(
        "listen.max_header_bytes",
        old.listen.max_header_bytes != new.listen.max_header_bytes,
    );
    check(
        "listen.drain_grace_ms",
        old.listen.drain_grace_ms != new.listen.drain_grace_ms,
    );
    check("admin.listen", old.admin.listen != new.admin.listen);
    check(
        "observe",
        format!("{:?}", old.observe) != format!("{:?}", new.observe),
    );
    // Spend budgets are planned once at start (their Redis keys and fallback shares): a budget
    // added, changed or removed needs a restart; a tenant removed with its budget is simply never
    // asked again.
    let budget = |c: &Config, id: &str| {
        c.tenants
            .iter()
            .find(|o| o.value.id == id)
            .and_then(|o| o.value.budget.as_ref().map(|b| format!("{b:?}")))
    };
    for t in &new.tenants {
        let id = &t.value.id;
        check(
            &format!("tenants[{id}].budget"),
            budget(old, id) != budget(new, id),
        );
    }
    if let (Some(a), Some(b)) = (&old.cluster, &new.cluster) {
        for (field, x, y) in [
            ("cluster.cluster_id", &a.cluster_id, &b.cluster_id),
            ("cluster.gossip_listen", &a.gossip_listen, &b.gossip_listen),
        ] {
            check(field, x != y);
        }
        check("cluster.advertise", a.advertise != b.advertise);
        check("cluster.seeds", a.seeds != b.seeds);
        check(
            "cluster.gossip_interval_ms",
            a.gossip_interval_ms != b.gossip_interval_ms,
        );
        check("cluster.dead_after_ms", a.dead_after_ms != b.dead_after_ms);
        check("cluster.secret_env", a.secret_env != b.secret_env);
        check("cluster.insecure", a.insecure != b.insecure);
        check(
            "cluster.max_cooldown_ms",
            a.max_cooldown_ms != b.max_cooldown_ms,
        );
        check(
            "cluster.redis",
            format!("{:?}", a.redis) != format!("{:?}", b.redis),
        );
    } else {
        check("cluster", old.cluster.is_some() != new.cluster.is_some());
    }
    out
}

/// What a reload does by name: names kept (their state carries over), added and removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub kept: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Changes {
    fn of<'a>(old: impl Iterator<Item = &'a str>, new: impl Iterator<Item = &'a str>) -> Changes {
        let old: BTreeSet<&str> = old.collect();
        let new: BTreeSet<&str> = new.collect();
        let names = |s: BTreeSet<&&str>| s.into_iter().map(|n| n.to_string()).collect();
        Changes {
            kept: names(old.intersection(&new).collect()),
            added: names(new.difference(&old).collect()),
            removed: names(old.difference(&new).collect()),
        }
    }
}

/// Backends by name: a kept backend carries its health, ejection, cooldown, EWMAs, adaptive
/// limit, in-flight count and quota; a removed one drains what is in flight on it.
pub fn backends(old: &Config, new: &Config) -> Changes {
    Changes::of(
        old.backends.iter().map(|b| b.value.name.as_str()),
        new.backends.iter().map(|b| b.value.name.as_str()),
    )
}

/// Tenants by id: a kept tenant keeps its buckets' levels; a removed one's keys stop at once.
pub fn tenants(old: &Config, new: &Config) -> Changes {
    Changes::of(
        old.tenants.iter().map(|t| t.value.id.as_str()),
        new.tenants.iter().map(|t| t.value.id.as_str()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "
listen: { address: 127.0.0.1:8080 }
backends:
  - { name: a, url: http://127.0.0.1:9001, protocol: openai }
  - { name: b, url: http://127.0.0.1:9002, protocol: openai }
tenants:
  - { id: t1, keys: [sk-1], limits: { requests_per_minute: 60 } }
  - { id: t2, keys: [sk-2] }
routing: { default: { backend: [a, b] } }
";

    fn parse(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let c = parse(BASE);
        assert!(restart_needed(&c, &c).is_empty());
        assert_eq!(
            backends(&c, &c),
            Changes {
                kept: vec!["a".into(), "b".into()],
                ..Changes::default()
            }
        );
    }

    #[test]
    fn routes_limits_tenants_and_backends_change_live() {
        let old = parse(BASE);
        let new = parse(
            &BASE
                .replace(
                    "requests_per_minute: 60",
                    "requests_per_minute: 6, burst: 2",
                )
                .replace(
                    "  - { id: t2, keys: [sk-2] }\n",
                    "  - { id: t3, keys: [sk-3] }\n",
                )
                .replace(
                    "  - { name: a, url: http://127.0.0.1:9001, protocol: openai }\n",
                    "  - { name: c, url: http://127.0.0.1:9003, protocol: openai }\n",
                )
                .replace("backend: [a, b]", "backend: [b, c]"),
        );
        assert!(restart_needed(&old, &new).is_empty());
        let b = backends(&old, &new);
        assert_eq!(
            (b.kept, b.added, b.removed),
            (vec!["b".into()], vec!["c".into()], vec!["a".into()])
        );
        let t = tenants(&old, &new);
        assert_eq!(
            (t.kept, t.added, t.removed),
            (vec!["t1".into()], vec!["t3".into()], vec!["t2".into()])
        );
    }

    #[test]
    fn the_listener_and_identity_need_a_restart() {
        let old = parse(BASE);
        let new = parse(
            &BASE
                .replace("127.0.0.1:8080", "127.0.0.1:8081")
                .replace("listen: {", "node: { id: other }\nlisten: {"),
        );
        assert_eq!(restart_needed(&old, &new), ["node.id", "listen.address"]);
    }

    #[test]
    fn a_new_changed_or_removed_budget_needs_a_restart() {
        let old = parse(BASE);
        let new = parse(&BASE.replace(
            "{ id: t2, keys: [sk-2] }",
            "{ id: t2, keys: [sk-2], budget: { usd_per_day: 5 } }",
        ));
        assert_eq!(restart_needed(&old, &new), ["tenants[t2].budget"]);
        assert_eq!(restart_needed(&new, &old), ["tenants[t2].budget"]);
        assert!(restart_needed(&new, &new).is_empty());
        // The tenant removed with its budget: nothing to restart for.
        let gone = parse(&BASE.replace("  - { id: t2, keys: [sk-2] }\n", ""));
        assert!(restart_needed(&new, &gone).is_empty());
    }

    #[test]
    fn the_cluster_section_needs_a_restart() {
        let cluster =
            "cluster: { cluster_id: one, gossip_listen: 127.0.0.1:7946, insecure: true }\n";
        let old = parse(&format!("{BASE}{cluster}"));
        let new = parse(&format!("{BASE}{}", cluster.replace("one", "two")));
        assert_eq!(restart_needed(&old, &new), ["cluster.cluster_id"]);
        let alone = parse(BASE);
        assert_eq!(restart_needed(&old, &alone), ["cluster"]);
        assert!(restart_needed(&old, &old).is_empty());
    }
}
