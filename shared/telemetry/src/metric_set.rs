//! [`metric_set!`](crate::metric_set): a service's metrics as one table.

/// Declares a service's metrics struct from one table: each field with its type, how it is
/// created, and the name and help text it is registered under in [`Metrics`](crate::Metrics).
/// It also writes `new(registry: &Metrics) -> Self`, which creates every series and
/// registers a clone of each, in the order of the table (the order of `/metrics`).
///
/// A series is thus declared in one place: a field cannot be added without its registration,
/// and the services do not each write the same create-then-register code.
///
/// ```
/// use p2piano_telemetry::prometheus_client::metrics::counter::Counter;
///
/// p2piano_telemetry::metric_set! {
///     /// The example's metrics.
///     #[derive(Clone)]
///     pub struct ExampleMetrics {
///         /// `p2piano_example_jobs_total`.
///         pub jobs: Counter = Counter::default() => ("example_jobs", "Jobs done"),
///     }
/// }
///
/// let registry = p2piano_telemetry::Metrics::new("p2piano");
/// let m = ExampleMetrics::new(&registry);
/// m.jobs.inc();
/// assert!(registry.render().contains("p2piano_example_jobs_total 1"));
/// ```
#[macro_export]
macro_rules! metric_set {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field_vis:vis $field:ident : $ty:ty = $init:expr => ($series:literal, $help:literal)
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[$field_meta])*
                $field_vis $field: $ty,
            )*
        }

        impl $name {
            /// Creates the series and registers them in `registry`, each under its name
            /// and help text, in the order they are declared.
            $vis fn new(registry: &$crate::Metrics) -> Self {
                let m = Self {
                    $($field: $init,)*
                };
                $(registry.register($series, $help, m.$field.clone());)*
                m
            }
        }
    };
}
