//! The `[webhooks]` section of the config file and its `ISSUER_WEBHOOK_*` variables (docs/webhooks.md).

use std::time::Duration;

use serde::Deserialize;

use super::{parse_setting_duration, ConfigError};
use crate::net::Cidr;
use crate::service::WebhookSettings;

/// The `[webhooks]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhooksFile {
    deliver: Option<bool>,
    retry_base: Option<String>,
    timeout: Option<String>,
    allow_networks: Option<Vec<String>>,
    deny_networks: Option<Vec<String>>,
}

fn invalid(name: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name: name.into(), message: message.into() }
}

/// A duration with milliseconds allowed (`250ms`), else as every other duration setting.
fn parse_fine_duration(name: &str, value: &str) -> Result<Duration, ConfigError> {
    match value.trim().strip_suffix("ms") {
        Some(ms) => ms
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| invalid(name, format!("`{value}` is not a duration such as 250ms, 10s or 1m"))),
        None => parse_setting_duration(name, value).map(Duration::from_secs),
    }
}

fn parse_networks<'a>(name: &str, items: impl Iterator<Item = &'a str>) -> Result<Vec<Cidr>, ConfigError> {
    items.map(|s| s.trim()).filter(|s| !s.is_empty()).map(|s| s.parse::<Cidr>().map_err(|m| invalid(name, m))).collect()
}

fn parse_switch(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        other => Err(invalid(name, format!("`{other}` is not on or off"))),
    }
}

pub(super) fn apply_file(settings: &mut WebhookSettings, file: WebhooksFile) -> Result<(), ConfigError> {
    if let Some(d) = file.deliver {
        settings.deliver = d;
    }
    if let Some(d) = file.retry_base {
        settings.retry_base = parse_fine_duration("webhooks.retry_base", &d)?;
    }
    if let Some(d) = file.timeout {
        settings.timeout = parse_fine_duration("webhooks.timeout", &d)?;
    }
    if let Some(list) = file.allow_networks {
        settings.networks.allow = parse_networks("webhooks.allow_networks", list.iter().map(String::as_str))?;
    }
    if let Some(list) = file.deny_networks {
        settings.networks.deny = parse_networks("webhooks.deny_networks", list.iter().map(String::as_str))?;
    }
    Ok(())
}

pub(super) fn apply_env(
    settings: &mut WebhookSettings,
    get: impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(v) = get("ISSUER_WEBHOOK_DELIVERY") {
        settings.deliver = parse_switch("ISSUER_WEBHOOK_DELIVERY", &v)?;
    }
    if let Some(v) = get("ISSUER_WEBHOOK_RETRY_BASE") {
        settings.retry_base = parse_fine_duration("ISSUER_WEBHOOK_RETRY_BASE", &v)?;
    }
    if let Some(v) = get("ISSUER_WEBHOOK_TIMEOUT") {
        settings.timeout = parse_fine_duration("ISSUER_WEBHOOK_TIMEOUT", &v)?;
    }
    if let Some(v) = get("ISSUER_WEBHOOK_ALLOW_NETWORKS") {
        settings.networks.allow = parse_networks("ISSUER_WEBHOOK_ALLOW_NETWORKS", v.split(','))?;
    }
    if let Some(v) = get("ISSUER_WEBHOOK_DENY_NETWORKS") {
        settings.networks.deny = parse_networks("ISSUER_WEBHOOK_DENY_NETWORKS", v.split(','))?;
    }
    Ok(())
}

pub(super) fn check(settings: &WebhookSettings) -> Result<(), ConfigError> {
    if settings.retry_base < Duration::from_millis(10) || settings.retry_base > Duration::from_secs(3600) {
        return Err(invalid("webhooks.retry_base", "must be between 10ms and 1h"));
    }
    if settings.timeout < Duration::from_millis(100) || settings.timeout > Duration::from_secs(60) {
        return Err(invalid("webhooks.timeout", "must be between 100ms and 60s"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn env_settings_parse_and_bad_values_are_named() {
        let mut s = WebhookSettings::default();
        let env = |name: &str| match name {
            "ISSUER_WEBHOOK_RETRY_BASE" => Some("200ms".to_string()),
            "ISSUER_WEBHOOK_TIMEOUT" => Some("2s".to_string()),
            "ISSUER_WEBHOOK_DELIVERY" => Some("off".to_string()),
            "ISSUER_WEBHOOK_ALLOW_NETWORKS" => Some("127.0.0.0/8, ::1".to_string()),
            _ => None,
        };
        apply_env(&mut s, env).unwrap();
        assert_eq!((s.retry_base, s.timeout, s.deliver), (Duration::from_millis(200), Duration::from_secs(2), false));
        assert_eq!(s.networks.allow.len(), 2);
        check(&s).unwrap();
        let err = apply_env(&mut s, |n| (n == "ISSUER_WEBHOOK_DENY_NETWORKS").then(|| "10.0.0.0/40".into()));
        assert!(err.unwrap_err().to_string().contains("ISSUER_WEBHOOK_DENY_NETWORKS"));
        s.retry_base = Duration::from_millis(1);
        assert!(check(&s).is_err());
    }
}
