//! A run's results: a human-readable summary on stdout and one JSON line (appended to
//! `--json PATH`, or printed when PATH is `-`) with every number, for the bench script.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// Version of the JSON line's layout.
pub const SCHEMA: u32 = 1;

/// A new latency histogram (microseconds, 3 significant digits, growing as needed).
pub fn histogram() -> Histogram<u64> {
    Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
}

/// Adds `from` into `into` (both from [`histogram`], so this cannot fail).
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    let _ = into.add(from);
}

/// The percentiles of a latency histogram in microseconds (`p50`, `p90`, `p99`, `p999`,
/// `max`, `mean`, `count`).
pub fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// One run's parameters and results, in the order they were added.
#[derive(Debug)]
pub struct Report {
    scenario: String,
    label: Option<String>,
    targets: Vec<String>,
    params: Vec<(String, Value)>,
    results: Vec<(String, Value)>,
}

/// Rounds a rate or a ratio for the report (3 decimals).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    /// An empty report for `scenario` against `targets`.
    pub fn new(scenario: &str, label: Option<String>, targets: Vec<String>) -> Self {
        Self {
            scenario: scenario.to_owned(),
            label,
            targets,
            params: Vec::new(),
            results: Vec::new(),
        }
    }

    /// Records a parameter of the run.
    pub fn param(&mut self, key: &str, v: impl Into<Value>) {
        self.params.push((key.to_owned(), v.into()));
    }

    /// Records a result (an `f64` is rounded to 3 decimals; NaN and infinities become null).
    pub fn set(&mut self, key: &str, v: impl Into<Value>) {
        let v = match v.into() {
            Value::Number(n) if n.is_f64() => n.as_f64().map_or(Value::Null, |f| json!(round3(f))),
            other => other,
        };
        self.results.push((key.to_owned(), v));
    }

    /// Records an optional result (null when absent).
    pub fn set_opt<T: Into<Value>>(&mut self, key: &str, v: Option<T>) {
        self.set(key, v.map_or(Value::Null, Into::into));
    }

    /// Records a latency histogram's percentiles (microseconds) under `key`.
    pub fn latency(&mut self, key: &str, h: &Histogram<u64>) {
        self.results.push((key.to_owned(), latency_json(h)));
    }

    /// A result by key.
    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.results.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The JSON object of the run.
    pub fn to_json(&self) -> Value {
        let obj = |pairs: &[(String, Value)]| {
            Value::Object(pairs.iter().cloned().collect::<Map<String, Value>>())
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        json!({
            "schema": SCHEMA,
            "scenario": self.scenario,
            "label": self.label,
            "targets": self.targets,
            "timestamp": ts,
            "params": obj(&self.params),
            "results": obj(&self.results),
        })
    }

    /// The human-readable summary.
    pub fn summary(&self) -> String {
        let mut out = format!("== loadgen {}", self.scenario);
        if let Some(l) = &self.label {
            out.push_str(&format!(" [{l}]"));
        }
        out.push_str(&format!(" against {}\n", self.targets.join(", ")));
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .collect();
        out.push_str(&format!("   {}\n", params.join(" ")));
        let width = self.results.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &self.results {
            out.push_str(&format!("   {k:<width$}  {}\n", plain(v)));
        }
        out
    }

    /// Prints the summary and writes the JSON line where asked.
    pub fn emit(&self, json_path: Option<&Path>) -> std::io::Result<()> {
        print!("{}", self.summary());
        let line = self.to_json().to_string();
        match json_path {
            None => {}
            Some(p) if p == Path::new("-") => println!("{line}"),
            Some(p) => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?;
                writeln!(f, "{line}")?;
            }
        }
        std::io::stdout().flush()
    }
}

/// A value as a person reads it: strings bare, objects as `k=v` lists.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_histogram() {
        let mut h = histogram();
        assert_eq!(latency_json(&h), json!({"count": 0}));
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let j = latency_json(&h);
        assert_eq!(j["count"], 1000);
        assert_eq!(j["p50"], 500);
        assert_eq!(j["max"], 1000);
        let mut m = histogram();
        merge(&mut m, &h);
        merge(&mut m, &h);
        assert_eq!(m.len(), 2000);
    }

    #[test]
    fn json_and_summary_hold_everything() {
        let mut r = Report::new("fanout", Some("ref".into()), vec!["http://a:1".into()]);
        r.param("rooms", 2);
        r.set("delivered_per_s", 12.34567);
        r.set("nan", f64::NAN);
        r.set_opt::<u64>("rss_kib", None);
        r.latency("latency_us", &histogram());
        let j = r.to_json();
        assert_eq!(j["scenario"], "fanout");
        assert_eq!(j["params"]["rooms"], 2);
        assert_eq!(j["results"]["delivered_per_s"], 12.346);
        assert!(j["results"]["nan"].is_null());
        assert!(j["results"]["rss_kib"].is_null());
        assert_eq!(r.get("latency_us"), Some(&json!({"count": 0})));
        let s = r.summary();
        assert!(s.contains("fanout [ref]") && s.contains("rooms=2"), "{s}");
        assert!(s.contains("delivered_per_s  12.346"), "{s}");
    }

    #[test]
    fn json_lines_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        let r = Report::new("idle", None, vec![]);
        r.emit(Some(&path)).unwrap();
        r.emit(Some(&path)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["scenario"], "idle");
        }
    }
}
