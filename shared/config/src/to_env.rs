//! The way back: the environment that makes a process load a given configuration.
//!
//! A deployment planned in code (the cluster builder) can run its services as tasks of one
//! process or as `p2piano <role>` processes. For the latter each service's [`Config`] is
//! handed to its process as environment variables, written here from the same table that
//! loading reads ([`crate::vars::VARS`]), so that a setting cannot be planned one way and
//! loaded another.

use figment::Figment;
use figment::providers::Serialized;
use figment::value::Value;

use crate::Config;
use crate::vars::{Kind, VARS};

impl Config {
    /// Every variable of this configuration, named and written as [`Config::load`] reads
    /// them: loading the result (and nothing else) gives this configuration back, save an
    /// empty list, which the environment cannot say (empty means unset: the default). An
    /// unset optional setting is written empty, which loads as unset even over a TOML file.
    /// Secrets are in clear text: the result is for a child process's environment, never
    /// for a log.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let figment = Figment::from(Serialized::defaults(self));
        VARS.iter()
            .filter_map(|var| {
                let text = match figment.find_value(var.key) {
                    Ok(value) => render(&value, var.kind),
                    Err(_) => String::new(),
                };
                let unset_means_default = text.is_empty() && var.kind != Kind::OptionalText;
                (!unset_means_default).then_some((var.env, text))
            })
            .collect()
    }
}

/// One value as the environment writes it: lists comma-separated, the rest as text.
fn render(value: &Value, kind: Kind) -> String {
    match value {
        Value::String(_, s) => s.clone(),
        Value::Char(_, c) => c.to_string(),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => n
            .to_u128()
            .map(|n| n.to_string())
            .or_else(|| n.to_i128().map(|n| n.to_string()))
            .or_else(|| n.to_f64().map(|n| n.to_string()))
            .unwrap_or_default(),
        Value::Empty(..) => String::new(),
        Value::Array(_, items) if kind == Kind::List => items
            .iter()
            .map(|v| render(v, Kind::Text))
            .collect::<Vec<_>>()
            .join(","),
        Value::Array(..) | Value::Dict(..) => String::new(),
    }
}
