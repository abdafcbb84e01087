//! weft's logs: human text (the default) or, with `--log-format json`,
//! one JSON object per line for log pipelines. In JSON, weft's status lines,
//! guest output and step and instance events are events too, with the
//! workflow, instance, step and attempt as fields; `RUST_LOG` filters them
//! (default: warnings, plus guest output, status lines and instance ends).

use std::sync::atomic::{AtomicBool, Ordering};

/// How logs are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Lines for people (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Whether logs are JSON.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Targets of the events weft writes in JSON only, where the text format
/// prints lines of its own.
pub mod target {
    /// A line the guest printed.
    pub const GUEST: &str = "weft::guest";
    /// A status line (`Listening`, `Complete instance …`).
    pub const STATUS: &str = "weft::status";
}

/// Sets up logging to stderr in `format`, and OpenTelemetry traces when
/// the environment asks for them ([`crate::otel`]).
pub fn init(format: LogFormat) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    let default = match format {
        LogFormat::Text => "warn",
        LogFormat::Json => "warn,weft::guest=info,weft::status=info,weft::instance=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(crate::otel::layer())
        .init();
}
