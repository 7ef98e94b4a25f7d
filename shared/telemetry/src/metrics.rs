//! One service's Prometheus registry.

use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry, Unit};

/// A Prometheus registry shared by one service's metrics, rendered at `/metrics`.
///
/// Cheap to clone (clones share the registry), so that every component can register its
/// own metrics on the handle it was given; no global registry. prometheus-client metrics are
/// handles too: register a clone and keep the original to update it.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Metrics {
    /// An empty registry whose metric names all start with `prefix_` (`p2piano`), so that
    /// the service's metrics are easy to find; an empty prefix adds nothing.
    pub fn new(prefix: &str) -> Self {
        let registry = if prefix.is_empty() {
            Registry::default()
        } else {
            Registry::with_prefix(prefix)
        };
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
        }
    }

    /// Registers `metric` as `<prefix>_<name>` with its help text. Counters are rendered
    /// with the OpenMetrics `_total` suffix, so `name` should not end with it.
    pub fn register<M: Metric>(&self, name: &str, help: &str, metric: M) {
        self.lock().register(name, help, metric);
    }

    /// Registers `metric` with a unit (`seconds`, `bytes`), which OpenMetrics appends to the
    /// name; for latency histograms and sizes.
    pub fn register_with_unit<M: Metric>(&self, name: &str, help: &str, unit: Unit, metric: M) {
        self.lock().register_with_unit(name, help, unit, metric);
    }

    /// Registers a counter whose value is read from `read` when the metrics are rendered:
    /// for totals another component already keeps (the bus's dropped messages), so that
    /// nothing has to copy them into a counter as they change.
    pub fn register_counter_fn(
        &self,
        name: &str,
        help: &str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.register(
            name,
            help,
            CounterFn {
                read: Arc::new(read),
            },
        );
    }

    /// Exports the bus's count of messages dropped because a subscriber fell behind, as
    /// `p2piano_bus_dropped_messages_total`: every service registers it, so that a slow
    /// consumer shows on a dashboard instead of only in the bus's own memory.
    pub fn report_bus(&self, bus: &p2piano_bus::Bus) {
        let bus = bus.clone();
        self.register_counter_fn(
            "bus_dropped_messages",
            "Messages the bus dropped because a subscriber's queue was full",
            move || bus.dropped_messages(),
        );
    }

    /// The current values in the OpenMetrics text format, ending with `# EOF`, as served at
    /// `/metrics`.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; the registry's metrics encode infallibly.
        if let Err(err) = encode(&mut text, &self.lock()) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        text
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while registering leaves the registry usable; keep serving metrics.
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A counter read at render time ([`Metrics::register_counter_fn`]).
#[derive(Clone)]
struct CounterFn {
    read: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for CounterFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterFn").finish_non_exhaustive()
    }
}

impl EncodeMetric for CounterFn {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&(self.read)(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn empty_prefix_adds_nothing() {
        let metrics = Metrics::new("");
        let counter = Counter::<u64>::default();
        metrics.register("plain", "No prefix.", counter.clone());
        counter.inc();
        assert!(
            metrics.render().contains("\nplain_total 1\n"),
            "{}",
            metrics.render()
        );
    }

    #[test]
    fn a_counter_fn_is_read_at_render_time() {
        let metrics = Metrics::new("p");
        let value = Arc::new(std::sync::atomic::AtomicU64::new(3));
        let read = value.clone();
        metrics.register_counter_fn("dropped", "Dropped.", move || {
            read.load(std::sync::atomic::Ordering::Relaxed)
        });
        assert!(metrics.render().contains("\np_dropped_total 3\n"));
        value.store(5, std::sync::atomic::Ordering::Relaxed);
        assert!(metrics.render().contains("\np_dropped_total 5\n"));
    }
}
