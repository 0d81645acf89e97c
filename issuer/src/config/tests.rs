//! The layers of the configuration: defaults, file, environment, flags, and the refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::HashMap;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| map.get(name).cloned()
}

fn write_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn defaults_apply_without_any_layer() {
    let config = Config::load(None, env_of(&[]), Flags::default()).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(config.refresh_interval_secs, 86_400);
    assert_eq!(config.offline_grace_secs, 604_800);
}

#[test]
fn file_overrides_defaults_env_overrides_file_and_flags_override_env() {
    let file = write_file("listen = \"127.0.0.1:1000\"\ndata_dir = \"/from/file\"\nrate_limit_burst = 5\n");
    let config = Config::load(Some(file.path()), env_of(&[]), Flags::default()).unwrap();
    assert_eq!(config.listen.port(), 1000);
    assert_eq!(config.data_dir, PathBuf::from("/from/file"));
    assert_eq!(config.rate_limit_burst, 5);

    let env = env_of(&[("ISSUER_LISTEN", "127.0.0.1:2000"), ("ISSUER_DATA_DIR", "/from/env")]);
    let config = Config::load(Some(file.path()), env, Flags::default()).unwrap();
    assert_eq!(config.listen.port(), 2000);
    assert_eq!(config.data_dir, PathBuf::from("/from/env"));
    assert_eq!(config.rate_limit_burst, 5, "a key only the file sets keeps the file's value");

    let env = env_of(&[("ISSUER_LISTEN", "127.0.0.1:2000"), ("ISSUER_DATA_DIR", "/from/env")]);
    let flags = Flags::new(Some("127.0.0.1:3000".parse().unwrap()), None, None);
    let config = Config::load(Some(file.path()), env, flags).unwrap();
    assert_eq!(config.listen.port(), 3000);
    assert_eq!(config.data_dir, PathBuf::from("/from/env"), "a flag not given leaves the env value");
}

#[test]
fn trusted_proxies_come_from_the_file_or_the_environment_and_bad_addresses_are_refused() {
    let file = write_file("trusted_proxies = [\"10.0.0.5\", \"::1\", \"10.1.2.3/16\"]\n");
    let config = Config::load(Some(file.path()), env_of(&[]), Flags::default()).unwrap();
    let shown: Vec<String> = config.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["10.0.0.5/32", "::1/128", "10.1.0.0/16"], "networks, host bits cleared");
    let env = env_of(&[("ISSUER_TRUSTED_PROXIES", "192.0.2.1, 192.0.2.2")]);
    assert_eq!(Config::load(Some(file.path()), env, Flags::default()).unwrap().trusted_proxies.len(), 2);
    let err = Config::load(None, env_of(&[("ISSUER_TRUSTED_PROXIES", "10.0.0.5,lb.internal")]), Flags::default());
    assert!(err.unwrap_err().to_string().contains("lb.internal"));
    assert!(Config::load(None, env_of(&[]), Flags::default()).unwrap().trusted_proxies.is_empty());
    let err = Config::load(None, env_of(&[("ISSUER_TRUSTED_PROXIES", "10.0.0.0/33")]), Flags::default());
    assert!(err.unwrap_err().to_string().contains("10.0.0.0/33"));
}

#[test]
fn global_ip_rules_come_from_the_file_or_the_environment() {
    let file = write_file("ip_allow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\nip_deny = [\"10.9.9.9\"]\n");
    let config = Config::load(Some(file.path()), env_of(&[]), Flags::default()).unwrap();
    let show = |v: &[crate::net::Cidr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(show(&config.ip_rules.allow), ["10.0.0.0/8", "2001:db8::/32"]);
    assert_eq!(show(&config.ip_rules.deny), ["10.9.9.9/32"]);
    let env = env_of(&[("ISSUER_IP_DENY", "192.0.2.0/24, 198.51.100.7")]);
    let config = Config::load(Some(file.path()), env, Flags::default()).unwrap();
    assert_eq!(show(&config.ip_rules.deny), ["192.0.2.0/24", "198.51.100.7/32"], "the environment replaces the file");
    let err = Config::load(None, env_of(&[("ISSUER_IP_ALLOW", "everyone")]), Flags::default()).unwrap_err();
    assert!(err.to_string().contains("ISSUER_IP_ALLOW") && err.to_string().contains("everyone"), "{err}");
}

#[test]
fn durations_are_read_with_units() {
    let file = write_file("refresh_interval = \"12h\"\noffline_grace = \"2w\"\n");
    let config =
        Config::load(Some(file.path()), env_of(&[("ISSUER_REFRESH_INTERVAL", "90m")]), Flags::default()).unwrap();
    assert_eq!(config.refresh_interval_secs, 90 * 60);
    assert_eq!(config.offline_grace_secs, 14 * 86_400);
    assert_eq!(parse_duration_secs("365d").unwrap(), 365 * 86_400);
    assert_eq!(parse_duration_secs("30").unwrap(), 30);
    assert!(parse_duration_secs("1y").is_err());
    assert!(parse_duration_secs("h").is_err());
    assert!(parse_duration_secs("99999999999999999999d").is_err());
}

#[test]
fn event_retention_is_a_duration_of_at_least_a_day_or_off() {
    assert_eq!(Config::load(None, env_of(&[]), Flags::default()).unwrap().event_retention_secs, Some(400 * 86_400));
    let file = write_file("event_retention = \"90d\"\n");
    let config = Config::load(Some(file.path()), env_of(&[]), Flags::default()).unwrap();
    assert_eq!(config.event_retention_secs, Some(90 * 86_400));
    let env = env_of(&[("ISSUER_EVENT_RETENTION", "off")]);
    assert_eq!(Config::load(Some(file.path()), env, Flags::default()).unwrap().event_retention_secs, None);
    for bad in ["12h", "0", "36501d", "never"] {
        let err = Config::load(None, env_of(&[("ISSUER_EVENT_RETENTION", bad)]), Flags::default()).unwrap_err();
        assert!(err.to_string().contains("EVENT_RETENTION") || err.to_string().contains("event_retention"), "{err}");
    }
}

#[test]
fn token_periods_out_of_range_are_refused() {
    let env = env_of(&[("ISSUER_REFRESH_INTERVAL", "0s")]);
    assert!(Config::load(None, env, Flags::default()).is_err());
    let env = env_of(&[("ISSUER_OFFLINE_GRACE", "100000d")]);
    let err = Config::load(None, env, Flags::default()).unwrap_err();
    assert!(err.to_string().contains("offline_grace"), "{err}");
}

#[test]
fn unknown_file_key_is_refused_with_the_file_named() {
    let file = write_file("listne = \"127.0.0.1:1\"\n");
    let err = Config::load(Some(file.path()), env_of(&[]), Flags::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    assert!(err.to_string().contains(&file.path().display().to_string()), "{err}");
}

#[test]
fn database_pool_size_is_read_and_checked() {
    let file = write_file("database_pool_size = 25\n");
    let config = Config::load(Some(file.path()), env_of(&[]), Flags::default()).unwrap();
    assert_eq!(config.database_pool_size, 25);
    let config =
        Config::load(Some(file.path()), env_of(&[("ISSUER_DATABASE_POOL_SIZE", "4")]), Flags::default()).unwrap();
    assert_eq!(config.database_pool_size, 4);
    let err = Config::load(None, env_of(&[("ISSUER_DATABASE_POOL_SIZE", "0")]), Flags::default()).unwrap_err();
    assert!(err.to_string().contains("database_pool_size"), "{err}");
}

#[test]
fn bad_env_value_names_the_variable() {
    let err = Config::load(None, env_of(&[("ISSUER_RATE_LIMIT_PER_SECOND", "lots")]), Flags::default()).unwrap_err();
    assert!(err.to_string().contains("ISSUER_RATE_LIMIT_PER_SECOND"), "{err}");
}

#[test]
fn admin_token_comes_from_env_and_is_hidden_from_debug() {
    let env = env_of(&[("ISSUER_ADMIN_TOKEN", "s3cret-token"), ("ISSUER_DATABASE_URL", "sqlite://x?pw=hunter2")]);
    let config = Config::load(None, env, Flags::default()).unwrap();
    assert_eq!(config.admin_token.as_ref().unwrap().expose(), "s3cret-token");
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret-token") && !debug.contains("hunter2"), "{debug}");
}

#[test]
fn example_config_parses_to_the_defaults() {
    let file = write_file(Config::example());
    let config = Config::load(Some(file.path()), env_of(&[]), Flags::default()).unwrap();
    assert_eq!(config, Config::default());
}
