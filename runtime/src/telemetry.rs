//! One JSON object per log line, W3C trace context, and optional OTLP trace and log
//! export.
//!
//! Each line has `timestamp`, `level`, `message`, and `trace_id`, `user_id` and
//! `ip_address` whenever the enclosing request span knows them, so one request carries
//! one `trace_id` through the proxy's and the backend's logs. When the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, request spans are also
//! exported over OTLP/HTTP, in the same trace as the log lines. When
//! `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` is set (Loki's `/otlp/v1/logs`, say), every line is
//! also exported as an OTLP log record: the same fields as attributes, the level as its
//! severity, `trace_id` as its trace context, and the process's resource (`service.name`
//! plus `OTEL_RESOURCE_ATTRIBUTES`, where Kubernetes puts namespace, pod and container).
//! How Loki indexes them: deploy/grafana/README.md.

use rand::RngCore;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The standard variables that turn OTLP export on (the exporter reads the rest of the
/// `OTEL_EXPORTER_OTLP_*` family itself).
pub const OTLP_ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];

/// Targets of the export machinery itself: their events are written to stdout but not
/// exported, so that an export never logs its way into another export.
const NOT_EXPORTED_TARGETS: [&str; 5] = ["opentelemetry", "reqwest", "hyper", "h2", "tower"];

/// Keeps the exporters alive; dropping it flushes spans and log records still buffered.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    logs: Option<opentelemetry_sdk::logs::SdkLoggerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        crate::stdout_lines::flush();
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
        if let Some(logs) = self.logs.take() {
            let _ = logs.shutdown();
        }
    }
}

/// Installs the JSON logger at `level` (an `EnvFilter` directive such as `info`); with
/// `otlp` true, OTLP/HTTP export of spans as `service`; with `otlp_logs` true (the
/// sidecars set it when `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` is set: logs are not sent to
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, since traces and logs usually go to different places),
/// OTLP/HTTP export of every log line as well.
pub fn init_logging(level: &str, service: &'static str, otlp: bool, otlp_logs: bool) -> Telemetry {
    use opentelemetry::logs::LoggerProvider as _;
    use opentelemetry::trace::TracerProvider as _;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // The resource also takes `OTEL_RESOURCE_ATTRIBUTES` (namespace, pod, container).
    let resource = || opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    let provider = if otlp {
        match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => {
                Some(opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource()).build())
            }
            Err(e) => {
                eprintln!("OTLP trace export is off: {e}");
                None
            }
        }
    } else {
        None
    };
    // The log level filters log lines only: request spans are exported whatever it is.
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)).with_filter(tracing_subscriber::filter::LevelFilter::INFO));
    // Batched on the SDK's own thread, with a bounded queue (`OTEL_BLRP_*`): a slow or
    // absent log endpoint drops records rather than slowing requests.
    let logs = if otlp_logs {
        match opentelemetry_otlp::LogExporter::builder().with_http().build() {
            Ok(exporter) => {
                Some(opentelemetry_sdk::logs::SdkLoggerProvider::builder().with_batch_exporter(exporter).with_resource(resource()).build())
            }
            Err(e) => {
                eprintln!("OTLP log export is off: {e}");
                None
            }
        }
    } else {
        None
    };
    let lines = JsonLines { export: logs.as_ref().map(|p| p.logger(service)) };
    let _ = tracing_subscriber::registry().with(lines.with_filter(filter)).with(otel).try_init();
    Telemetry { provider, logs }
}

/// Makes `span` part of the W3C trace `trace_id`, as a child of `parent_span_id` (the
/// caller's hop) when there is one. With OTLP off this only costs a context.
pub fn continue_trace(span: &tracing::Span, trace_id: &str, parent_span_id: Option<&str>) {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    // A span no layer records (OTLP off, logs above `info`) has no context to attach to.
    if span.is_disabled() {
        return;
    }
    let (Ok(trace), Ok(parent)) =
        (TraceId::from_hex(trace_id), SpanId::from_hex(parent_span_id.map(str::to_string).unwrap_or_else(random_hex::<8>).as_str()))
    else {
        return;
    };
    let remote = SpanContext::new(trace, parent, TraceFlags::SAMPLED, true, TraceState::default());
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The span id this hop passes on in `traceparent`: the exported span's own id when
/// OTLP is on, so the next hop's span is its child; a fresh one otherwise.
pub fn outgoing_span_id(span: &tracing::Span) -> String {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if span.is_disabled() {
        return random_hex::<8>();
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span_context.span_id().to_string()
    } else {
        random_hex::<8>()
    }
}

/// Writes each event as one JSON line on stdout, merged with its spans' fields, and
/// exports it as an OTLP log record when log export is on.
pub struct JsonLines {
    export: Option<opentelemetry_sdk::logs::SdkLogger>,
}

/// One log line as an OTLP log record: the message is the body, the level the severity,
/// `trace_id` the trace context, every other field an attribute (so `trace_id`, `level`
/// and the request's fields become Loki structured metadata, not labels).
fn export_line(logger: &opentelemetry_sdk::logs::SdkLogger, line: &Map<String, Value>, level: tracing::Level) {
    use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
    let mut record = logger.create_log_record();
    let now = std::time::SystemTime::now();
    record.set_timestamp(now);
    record.set_observed_timestamp(now);
    let (number, text) = match level {
        tracing::Level::ERROR => (Severity::Error, "error"),
        tracing::Level::WARN => (Severity::Warn, "warn"),
        tracing::Level::INFO => (Severity::Info, "info"),
        tracing::Level::DEBUG => (Severity::Debug, "debug"),
        _ => (Severity::Trace, "trace"),
    };
    record.set_severity_number(number);
    record.set_severity_text(text);
    for (key, value) in line {
        match (key.as_str(), value) {
            ("timestamp" | "level", _) => {}
            ("message", Value::String(message)) => record.set_body(AnyValue::from(message.clone())),
            ("trace_id", Value::String(id)) => match TraceId::from_hex(id) {
                Ok(trace) => record.set_trace_context(trace, SpanId::INVALID, Some(TraceFlags::SAMPLED)),
                Err(_) => record.add_attribute("trace_id", id.clone()),
            },
            (_, Value::String(v)) => record.add_attribute(key.clone(), v.clone()),
            (_, Value::Bool(v)) => record.add_attribute(key.clone(), *v),
            (_, Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => record.add_attribute(key.clone(), i),
                (None, Some(f)) => record.add_attribute(key.clone(), f),
                _ => record.add_attribute(key.clone(), n.to_string()),
            },
            (_, Value::Null) => {}
            (_, other) => record.add_attribute(key.clone(), other.to_string()),
        }
    }
    logger.emit(record);
}

#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), Value::from(format!("{value:?}")));
    }
}

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
        line.insert("level".into(), Value::from(event.metadata().level().as_str().to_ascii_lowercase()));
        // Span fields first (outermost to innermost), then the event's own.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<Fields>() {
                    line.extend(fields.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let mut own = Fields::default();
        event.record(&mut own);
        line.extend(own.0);
        line.entry("message").or_insert(Value::from(""));
        line.insert("target".into(), Value::from(event.metadata().target()));
        if let Some(logger) = &self.export {
            let target = event.metadata().target();
            if !NOT_EXPORTED_TARGETS.iter().any(|t| target.starts_with(t)) {
                export_line(logger, &line, *event.metadata().level());
            }
        }
        let mut out = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
        out.push(b'\n');
        crate::stdout_lines::write(&out);
    }
}

/// The trace id and parent span id of a valid W3C `traceparent` header
/// (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn parse_traceparent(header: &str) -> Option<(String, String)> {
    let mut parts = header.trim().split('-');
    let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && hex(parent_id, 16)
        && hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && parent_id.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    valid.then(|| (trace_id.to_string(), parent_id.to_string()))
}

/// A fresh random 128-bit trace id in W3C hex form.
pub fn new_trace_id() -> String {
    random_hex::<16>()
}

/// `N` random bytes in lowercase hex (a trace id is 16, a span id 8).
fn random_hex<const N: usize>() -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; N];
    rand::thread_rng().fill_bytes(&mut bytes);
    let mut hex = String::with_capacity(2 * N);
    for b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_w3c_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = parse_traceparent(tp).unwrap();
        assert_eq!((parsed.0.as_str(), parsed.1.as_str()), ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"));
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn new_trace_ids_are_valid_and_distinct() {
        let a = new_trace_id();
        assert_eq!(a.len(), 32);
        assert!(parse_traceparent(&format!("00-{a}-00f067aa0ba902b7-01")).is_some());
        assert_ne!(a, new_trace_id());
        // A span nothing records still gets a span id of its own to pass on.
        let span = outgoing_span_id(&tracing::Span::none());
        assert!(parse_traceparent(&format!("00-{a}-{span}-01")).is_some(), "{span}");
        assert_ne!(span, outgoing_span_id(&tracing::Span::none()));
    }
}
