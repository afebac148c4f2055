//! The TOML config: defaults, a full file, overrides, and errors that name the key and the value.

#![allow(clippy::unwrap_used)]

use corecast_engine::config::{Config, ConfigError, MergePolicy};

fn error_of(text: &str) -> String {
    match Config::from_toml_str(text) {
        Ok(config) => panic!("`{text}` must be refused, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn set(pairs: &[&str]) -> Result<Config, ConfigError> {
    let overrides: Vec<(String, String)> = pairs
        .iter()
        .map(|p| Config::parse_override(p).unwrap())
        .collect();
    Config::load(None, &overrides)
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let config = Config::from_toml_str("").unwrap();
    assert_eq!(config.partition_count, 271);
    assert_eq!(config.shards, None);
    assert_eq!(config.backups.backup_count, 1);
    assert_eq!(config.backups.async_backup_count, 0);
    assert_eq!(config.network.bind.to_string(), "127.0.0.1:5701");
    assert_eq!(config.cluster_name, "dev");
    assert!(config.services.is_empty());
}

#[test]
fn a_full_file_with_services_and_properties_parses() {
    let config = Config::from_toml_str(
        r#"
        cluster-name = "prod"
        partition-count = 1021
        shards = 3
        [network]
        bind = "10.0.0.5:6000"
        seeds = ["10.0.0.6:6000"]
        [backups]
        backup-count = 2
        async-backup-count = 1
        [[services]]
        name = "counter"
        properties = { someproperty = 10 }
        [[services]]
        name = "kv"
        enabled = false
        "#,
    )
    .unwrap();
    assert_eq!(
        (config.partition_count, config.shards, config.shard_count()),
        (1021, Some(3), 3)
    );
    assert_eq!(config.network.bind.port(), 6000);
    assert_eq!(config.network.seeds, ["10.0.0.6:6000"]);
    assert_eq!(
        (
            config.backups.backup_count,
            config.backups.async_backup_count
        ),
        (2, 1)
    );
    let counter = config.service("counter").unwrap();
    assert!(counter.enabled);
    assert_eq!(
        counter.properties.get::<i64>("someproperty").unwrap(),
        Some(10)
    );
    assert_eq!(counter.properties.get::<i64>("absent").unwrap(), None);
    assert!(!config.service("kv").unwrap().enabled);
}

#[test]
fn an_unknown_key_is_named() {
    let text = error_of("partition-cuont = 10");
    assert!(text.contains("partition-cuont"), "{text}");
    let text = error_of("[network]\nbindd = \"127.0.0.1:1\"");
    assert!(text.contains("bindd"), "{text}");
}

#[test]
fn a_value_of_the_wrong_type_names_key_and_value() {
    let text = error_of("partition-count = \"many\"");
    assert!(
        text.contains("partition-count") && text.contains("many"),
        "{text}"
    );
    let text = error_of("[network]\nbind = \"not an address\"");
    assert!(
        text.contains("bind") && text.contains("not an address"),
        "{text}"
    );
}

#[test]
fn out_of_range_values_are_invalid_with_key_and_value() {
    for (text, key, value) in [
        ("partition-count = 0", "partition-count", "0"),
        ("shards = 0", "shards", "0"),
        ("[backups]\nbackup-count = 7", "backups.backup-count", "7"),
        (
            "[backups]\nbackup-count = 4\nasync-backup-count = 3",
            "backups.async-backup-count",
            "3",
        ),
        ("io-memory-kib = 8", "io-memory-kib", "8"),
        ("cluster-name = \"\"", "cluster-name", "\"\""),
        (
            "[[services]]\nname = \"kv\"\nbackup-count = 9",
            "services[0].backup-count",
            "9",
        ),
        (
            "[[services]]\nname = \"kv\"\nbackup-count = 5\nasync-backup-count = 2",
            "services[0].async-backup-count",
            "2",
        ),
        (
            "[[services]]\nname = \"kv\"\n[[services.objects]]\nname = \"m\"\nasync-backup-count = 6",
            "services[0].objects[0].async-backup-count",
            "6",
        ),
        (
            "[backups]\nfailpoint-drop-backups-percent = 101",
            "backups.failpoint-drop-backups-percent",
            "101",
        ),
        ("[migration]\nchunk-kib = 0", "migration.chunk-kib", "0"),
        (
            "[network]\nmax-frame-kib = 1024\n[migration]\nchunk-kib = 2048",
            "migration.chunk-kib",
            "2048",
        ),
        ("[network]\nmax-queued-kib = 0", "network.max-queued-kib", "0"),
        (
            "[network]\nmax-queued-kib = 40000",
            "network.max-queued-kib",
            "40000",
        ),
        (
            "[network]\nmax-pending-acks = 0",
            "network.max-pending-acks",
            "0",
        ),
        (
            "[network]\npoll-wait-micros = 5000",
            "network.poll-wait-micros",
            "5000",
        ),
        (
            "[network]\npoll-spin-micros = 5000",
            "network.poll-spin-micros",
            "5000",
        ),
        (
            "[network]\npoll-busy-micros = 5000",
            "network.poll-busy-micros",
            "5000",
        ),
        (
            "[split-brain]\nprobe-interval-millis = 50",
            "split-brain.probe-interval-millis",
            "50",
        ),
        ("[migration]\nwindow = 0", "migration.window", "0"),
        ("[migration]\ntimeout-millis = 0", "migration.timeout-millis", "0"),
    ] {
        match Config::from_toml_str(text) {
            Err(e @ ConfigError::Invalid { .. }) => {
                let shown = e.to_string();
                assert!(
                    shown.contains(key) && shown.contains(value),
                    "`{text}` gave: {shown}"
                );
            }
            other => panic!("`{text}` must be Invalid, got {other:?}"),
        }
    }
}

#[test]
fn command_line_overrides_reach_every_section() {
    let config = set(&[
        "partition-count=13",
        "network.bind=127.0.0.1:6000",
        "backups.backup-count=2",
        "cluster-name=blue",
        "migration.parallel=3",
    ])
    .unwrap();
    assert_eq!(config.migration.parallel, 3);
    assert_eq!(config.partition_count, 13);
    assert_eq!(config.network.bind.port(), 6000);
    assert_eq!(config.backups.backup_count, 2);
    assert_eq!(config.cluster_name, "blue");
}

#[test]
fn bad_overrides_are_refused_and_named() {
    assert!(matches!(
        Config::parse_override("nokey"),
        Err(ConfigError::Override { .. })
    ));
    assert!(matches!(
        Config::parse_override("=3"),
        Err(ConfigError::Override { .. })
    ));
    let unknown = set(&["partiton-count=3"]).unwrap_err().to_string();
    assert!(unknown.contains("partiton-count"), "{unknown}");
    let through = set(&["cluster-name.x=1"]).unwrap_err().to_string();
    assert!(through.contains("cluster-name"), "{through}");
    let invalid = set(&["shards=0"]).unwrap_err().to_string();
    assert!(invalid.contains("shards"), "{invalid}");
}

#[test]
fn a_service_declared_twice_is_refused() {
    let text = error_of("[[services]]\nname = \"counter\"\n[[services]]\nname = \"counter\"");
    assert!(text.contains("counter") && text.contains("twice"), "{text}");
}

#[test]
fn a_property_of_the_wrong_type_names_the_property() {
    let config =
        Config::from_toml_str("[[services]]\nname = \"c\"\nproperties = { limit = \"ten\" }")
            .unwrap();
    let err = config.services[0]
        .properties
        .get::<i64>("limit")
        .unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { .. }));
    assert!(err.to_string().contains("properties.limit"), "{err}");
    assert_eq!(config.services[0].properties.get_str("limit"), Some("ten"));
}

#[test]
fn a_config_file_is_read_and_a_missing_one_is_named() {
    let path = std::env::temp_dir().join(format!("corecast-config-{}.toml", std::process::id()));
    std::fs::write(&path, "partition-count = 31\n").unwrap();
    let loaded = Config::load(Some(&path), &[("shards".into(), "2".into())]);
    std::fs::remove_file(&path).unwrap();
    let config = loaded.unwrap();
    assert_eq!((config.partition_count, config.shards), (31, Some(2)));
    let missing = std::path::Path::new("/nonexistent/corecast.toml");
    let err = Config::load(Some(missing), &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(
        err.to_string().contains("/nonexistent/corecast.toml"),
        "{err}"
    );
}

#[test]
fn backup_policies_resolve_per_service_and_per_object() {
    let config = Config::from_toml_str(
        r#"
        [backups]
        backup-count = 1
        [[services]]
        name = "kv"
        async-backup-count = 1
        read-backup-data = true
        [[services.objects]]
        name = "orders"
        backup-count = 3
        "#,
    )
    .unwrap();
    let p = config.policy("counter", None);
    assert_eq!((p.sync, p.async_, p.read_backup_data), (1, 0, false));
    let p = config.policy("kv", None);
    assert_eq!((p.sync, p.async_, p.read_backup_data), (1, 1, true));
    let p = config.policy("kv", Some("orders"));
    assert_eq!((p.sync, p.async_, p.read_backup_data), (3, 1, true));
    assert_eq!(
        config.policy("kv", Some("other")),
        config.policy("kv", None)
    );
    // The table keeps the owner plus the most backups anything asks for.
    assert_eq!(config.replica_slots(), 5);
    assert_eq!(Config::default().replica_slots(), 2);
    let unknown = Config::from_toml_str("[[services]]\nname = \"kv\"\nbackups = 2");
    assert!(unknown.is_err(), "unknown keys in a service are refused");
}

#[test]
fn merge_policies_resolve_per_object_then_service_then_default_and_unknown_ones_are_named() {
    let config = Config::from_toml_str(
        r#"
        [split-brain]
        merge-policy = "latest-update"
        [[services]]
        name = "map"
        merge-policy = "higher-hits"
        [[services.objects]]
        name = "sessions"
        merge-policy = "pass-through"
        [[services]]
        name = "atomic"
        "#,
    )
    .unwrap();
    assert_eq!(
        config.merge_policy("map", Some("sessions")),
        MergePolicy::PassThrough
    );
    assert_eq!(
        config.merge_policy("map", Some("other")),
        MergePolicy::HigherHits
    );
    assert_eq!(
        config.merge_policy("atomic", None),
        MergePolicy::LatestUpdate
    );
    assert_eq!(
        Config::from_toml_str("").unwrap().merge_policy("map", None),
        MergePolicy::PutIfAbsent
    );
    for p in [
        MergePolicy::PassThrough,
        MergePolicy::PutIfAbsent,
        MergePolicy::HigherHits,
        MergePolicy::LatestUpdate,
        MergePolicy::Discard,
    ] {
        assert_eq!(MergePolicy::from_wire(p.to_wire()), Some(p), "{}", p.name());
    }
    assert_eq!(MergePolicy::from_wire(200), None);
    let e = error_of("[split-brain]\nmerge-policy = \"newest\"");
    assert!(e.contains("merge-policy") && e.contains("newest"), "{e}");
    let e = set(&["split-brain.merge-policy=bogus"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn a_merge_policy_decides_between_two_entries_as_hazelcasts_does() {
    use corecast_engine::config::EntryStats;
    let old = EntryStats {
        hits: 1,
        updated_millis: 100,
    };
    let new_hot = EntryStats {
        hits: 9,
        updated_millis: 200,
    };
    let p = |p: MergePolicy, m, e| p.merging_wins(m, e);
    assert!(p(MergePolicy::PassThrough, old, Some(new_hot)));
    assert!(!p(MergePolicy::PutIfAbsent, new_hot, Some(old)));
    assert!(p(MergePolicy::PutIfAbsent, old, None));
    assert!(p(MergePolicy::HigherHits, new_hot, Some(old)));
    assert!(!p(MergePolicy::HigherHits, old, Some(new_hot)));
    assert!(
        !p(MergePolicy::HigherHits, old, Some(old)),
        "a tie keeps the existing"
    );
    assert!(p(MergePolicy::LatestUpdate, new_hot, Some(old)));
    assert!(!p(MergePolicy::LatestUpdate, old, Some(new_hot)));
    assert!(!p(MergePolicy::Discard, new_hot, Some(old)));
    assert!(!p(MergePolicy::Discard, new_hot, None));
}
