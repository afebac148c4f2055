//! The flags every binary shares to load a config: a file, generic `--set KEY=VALUE` overrides,
//! and convenience flags for the keys people change most. Flags win over `--set`, which wins over
//! the file.

use std::path::PathBuf;

use corecast_engine::config::{Config, ConfigError};

/// Where a binary's config comes from. Flatten it into a clap command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// TOML config file (every key optional; see README).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Set any config key, dotted for sections: `--set backups.backup-count=2`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
    /// `cluster-name`.
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// `partition-count`.
    #[arg(long)]
    pub partition_count: Option<u32>,
    /// `shards` (default: one per available core).
    #[arg(long)]
    pub shards: Option<u32>,
    /// `pin-shards = true`.
    #[arg(long)]
    pub pin_shards: bool,
    /// `io-memory-kib`.
    #[arg(long)]
    pub io_memory_kib: Option<u32>,
    /// `spin-before-park-micros`.
    #[arg(long)]
    pub spin_before_park_micros: Option<u64>,
    /// `preempt-timer-micros`.
    #[arg(long)]
    pub preempt_timer_micros: Option<u64>,
    /// `wake-tick-micros`.
    #[arg(long)]
    pub wake_tick_micros: Option<u64>,
    /// `network.bind`, as HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub bind: Option<String>,
    /// `network.seeds`: members to join through, as HOST:PORT,HOST:PORT.
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// `network.secret`: the shared secret members must present to join.
    #[arg(long)]
    pub secret: Option<String>,
    /// `network.metrics-port`: serve Prometheus metrics on this port (0: off).
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// `network.resp-port`: serve the Redis protocol, shard `i` on this port + `i` (0: off).
    #[arg(long)]
    pub resp_port: Option<u16>,
    /// `network.lite`: join, but hold no partitions.
    #[arg(long)]
    pub lite: bool,
    /// `backups.backup-count`.
    #[arg(long)]
    pub backup_count: Option<u8>,
    /// `backups.async-backup-count`.
    #[arg(long)]
    pub async_backup_count: Option<u8>,
}

fn parse_set(arg: &str) -> Result<(String, String), String> {
    Config::parse_override(arg).map_err(|e| e.to_string())
}

impl ConfigArgs {
    /// The config file with every override applied, validated.
    ///
    /// Errors: as [`Config::load`], naming the key and value at fault.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.config.as_deref(), &self.overrides())
    }

    fn overrides(&self) -> Vec<(String, String)> {
        let quoted = |s: &String| format!("{s:?}");
        let flags = [
            ("cluster-name", self.cluster_name.as_ref().map(quoted)),
            (
                "partition-count",
                self.partition_count.map(|v| v.to_string()),
            ),
            ("shards", self.shards.map(|v| v.to_string())),
            ("pin-shards", self.pin_shards.then(|| "true".to_owned())),
            ("io-memory-kib", self.io_memory_kib.map(|v| v.to_string())),
            (
                "spin-before-park-micros",
                self.spin_before_park_micros.map(|v| v.to_string()),
            ),
            (
                "preempt-timer-micros",
                self.preempt_timer_micros.map(|v| v.to_string()),
            ),
            (
                "wake-tick-micros",
                self.wake_tick_micros.map(|v| v.to_string()),
            ),
            ("network.bind", self.bind.as_ref().map(quoted)),
            (
                "network.seeds",
                (!self.seeds.is_empty()).then(|| format!("{:?}", self.seeds)),
            ),
            ("network.secret", self.secret.as_ref().map(quoted)),
            ("network.lite", self.lite.then(|| "true".to_owned())),
            (
                "network.metrics-port",
                self.metrics_port.map(|v| v.to_string()),
            ),
            ("network.resp-port", self.resp_port.map(|v| v.to_string())),
            (
                "backups.backup-count",
                self.backup_count.map(|v| v.to_string()),
            ),
            (
                "backups.async-backup-count",
                self.async_backup_count.map(|v| v.to_string()),
            ),
        ];
        let flags = flags
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?)));
        self.set.iter().cloned().chain(flags).collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConfigArgs,
    }

    #[test]
    fn flags_and_set_overrides_reach_the_config() {
        let cli = Cli::parse_from([
            "x",
            "--shards",
            "3",
            "--set",
            "partition-count=7",
            "--bind",
            "127.0.0.1:6000",
        ]);
        let config = cli.config.load().unwrap();
        assert_eq!(config.shards, Some(3));
        assert_eq!(config.partition_count, 7);
        assert_eq!(config.network.bind.port(), 6000);
    }

    #[test]
    fn a_flag_wins_over_set() {
        let cli = Cli::parse_from(["x", "--set", "shards=5", "--shards", "2"]);
        assert_eq!(cli.config.load().unwrap().shards, Some(2));
    }

    #[test]
    fn a_malformed_set_is_refused_by_the_parser() {
        let err = match Cli::try_parse_from(["x", "--set", "nokey"]) {
            Ok(_) => panic!("`--set nokey` must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("KEY=VALUE"), "{err}");
    }
}
