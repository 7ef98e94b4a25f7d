//! Installing the global tracing subscriber.

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::util::SubscriberInitExt;

use crate::guard::TelemetryGuard;
use crate::{TelemetryError, TelemetryOptions, otlp, propagation, subscriber};

/// Installs the global tracing subscriber: an `EnvFilter` from `opts.level`, text or JSON
/// output on stdout, and, when `opts.otlp_endpoint` is set, an OpenTelemetry layer exporting
/// spans as OTLP/HTTP protobuf to `<endpoint>/v1/traces` through a batch processor on the
/// tokio runtime, with `service.name = opts.service_name`. Also installs the W3C
/// TraceContext propagator globally, which [`crate::inject_context`] and
/// [`crate::set_parent_from`] use.
///
/// Keep the returned guard until the end of `main`: dropping it flushes the spans still
/// buffered. Export needs a multi-threaded tokio runtime to be running (the default of
/// `#[tokio::main]`). Calling this again, or after something else installed a global
/// subscriber, changes nothing and returns a guard that does nothing
/// ([`TelemetryGuard::is_installed`] is false); a bad filter is reported either way.
pub fn init(opts: TelemetryOptions) -> Result<TelemetryGuard, TelemetryError> {
    // Checked before anything else, so that a bad filter is reported even when telemetry
    // is installed already.
    let hint = subscriber::filter(&opts.level)?.max_level_hint();
    propagation::install_propagator();
    if tracing::dispatcher::has_been_set() {
        return Ok(TelemetryGuard::inactive());
    }

    let endpoint = opts
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|endpoint| !endpoint.is_empty());
    let provider = endpoint
        .map(|endpoint| otlp::tracer_provider(&opts.service_name, endpoint))
        .transpose()?;
    let tracer = provider
        .as_ref()
        .map(|provider| provider.tracer(opts.service_name.clone()));

    let guard = TelemetryGuard::installed(provider.clone());
    match subscriber::subscriber(&opts.level, opts.json, tracer)?.try_init() {
        Ok(()) => {
            log::set_max_level(log_level(hint));
            if let Some(provider) = provider {
                opentelemetry::global::set_tracer_provider(provider);
            }
            Ok(guard)
        }
        // Lost a race with another installer: flush the unused provider (via the guard's
        // drop) and behave as a repeated call.
        Err(_) => {
            drop(guard);
            Ok(TelemetryGuard::inactive())
        }
    }
}

/// The `log` crate's level for the filter's most verbose level. The subscriber forwards
/// `log` records (tungstenite's, mio's) to tracing and lets `log` accept every level, so a
/// per-frame `trace!` of a dependency would be built into an event only to be filtered
/// away: about 5 % of a busy edge's CPU. With the level set, `log` drops it at its own
/// first check.
fn log_level(hint: Option<tracing::level_filters::LevelFilter>) -> log::LevelFilter {
    use tracing::level_filters::LevelFilter;
    match hint {
        Some(LevelFilter::OFF) => log::LevelFilter::Off,
        Some(LevelFilter::ERROR) => log::LevelFilter::Error,
        Some(LevelFilter::WARN) => log::LevelFilter::Warn,
        Some(LevelFilter::INFO) => log::LevelFilter::Info,
        Some(LevelFilter::DEBUG) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_records_are_cut_at_the_filters_level() {
        let level = |f: &str| log_level(subscriber::filter(f).unwrap().max_level_hint());
        assert_eq!(level("warn"), log::LevelFilter::Warn);
        assert_eq!(level("info"), log::LevelFilter::Info);
        assert_eq!(level("info,tungstenite=trace"), log::LevelFilter::Trace);
        assert_eq!(level("off"), log::LevelFilter::Off);
    }
}
