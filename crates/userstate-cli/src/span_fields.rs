//! The JSON log format's span fields, written straight as JSON text.
//!
//! `tracing-subscriber`'s JSON formatter formats a span's fields when the span is made, through
//! `JsonFields`: one `serde_json::Value` and one `String` per field, kept in a `BTreeMap`, then
//! serialised. Every HTTP request opens a `request` span, so at tens of thousands of requests a
//! second that was the largest single cost of a request in the server (~11k instructions of
//! ~100k, callgrind, issue 29), although the fields are read only when a line is logged inside
//! the span. [`JsonSpanFields`] writes the same JSON object without the intermediate values.
//! The text differs from `JsonFields`' in key order only (fields in declaration order, not
//! sorted), which no reader sees: the event formatter parses the object back and writes the
//! keys sorted.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// The largest buffer a thread keeps between spans, in bytes.
const MAX_KEPT: usize = 4096;

/// A span's fields as one JSON object, with the values `JsonFields` gives them.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    /// The object is built in a buffer kept per thread and handed to `writer` in one write:
    /// written piece by piece, the span's `String` grew several times and each piece was a
    /// call through `dyn Write`.
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        thread_local! {
            static BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
        }
        let mut format = |buffer: &mut String| {
            buffer.clear();
            let mut visitor = Direct::new(buffer);
            fields.record(&mut visitor);
            let written = visitor.finish().and_then(|()| writer.write_str(buffer));
            // A span with huge fields does not keep its memory in every thread.
            if buffer.capacity() > MAX_KEPT {
                *buffer = String::new();
            }
            written
        };
        // A field's `Debug` that formats another span's fields on this thread finds the
        // buffer taken, and uses its own.
        BUFFER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buffer) => format(&mut buffer),
            Err(_) => format(&mut String::new()),
        })
    }

    /// Fields recorded after the span was made (only the OpenTelemetry case records one):
    /// merged into the object, a later value replacing an earlier one as `JsonFields` does.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let mut added = String::new();
        let mut visitor = Direct::new(&mut added);
        fields.record(&mut visitor);
        visitor.finish()?;
        if current.fields.is_empty() {
            current.fields = added;
            return Ok(());
        }
        let parse = |text: &str| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
                .map_err(|_| fmt::Error)
        };
        let mut merged = parse(&current.fields)?;
        merged.extend(parse(&added)?);
        current.fields = serde_json::Value::Object(merged).to_string();
        Ok(())
    }
}

/// Writes `{"name":value,…}` as the fields are visited.
struct Direct<'a> {
    out: &'a mut String,
    first: bool,
    result: fmt::Result,
}

impl<'a> Direct<'a> {
    fn new(out: &'a mut String) -> Self {
        Self {
            out,
            first: true,
            result: Ok(()),
        }
    }

    /// Writes the key of the next field and hands out the buffer for its value.
    fn key(&mut self, name: &str) -> Result<&mut String, fmt::Error> {
        self.result?;
        self.out.push_str(if self.first { "{\"" } else { ",\"" });
        self.first = false;
        Escaped(&mut *self.out).write_str(name)?;
        self.out.push_str("\":");
        Ok(&mut *self.out)
    }

    /// Writes one field whose value `value` writes.
    fn field(&mut self, name: &str, value: impl FnOnce(&mut String) -> fmt::Result) {
        self.result = self.key(name).and_then(value);
    }

    fn finish(self) -> fmt::Result {
        self.result?;
        self.out.push_str(if self.first { "{}" } else { "}" });
        Ok(())
    }
}

impl Visit for Direct<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json: NaN and the infinities are null.
        let text = serde_json::Value::from(value).to_string();
        self.field(field.name(), |w| w.write_str(&text));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field.name(), |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field.name(), |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field.name(), |w| write!(w, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field.name(), |w| write_json_str(w, |s| s.write_str(value)));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        let text = serde_json::Value::from(value).to_string();
        self.field(field.name(), |w| w.write_str(&text));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // As `JsonFields`: `log.` fields are the `log` crate's metadata, and a raw
        // identifier's field loses its `r#`.
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.field(name, |w| write_json_str(w, |s| write!(s, "{value:?}")));
    }
}

/// Writes a JSON string whose text `text` writes, escaped as serde_json escapes it.
fn write_json_str(
    out: &mut String,
    text: impl FnOnce(&mut Escaped<'_>) -> fmt::Result,
) -> fmt::Result {
    out.push('"');
    text(&mut Escaped(out))?;
    out.push('"');
    Ok(())
}

/// Escapes what is written through it for the inside of a JSON string.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Plain runs are copied whole: most values (ids, routes) have nothing to escape.
        let mut rest = s;
        while let Some(i) = rest
            .bytes()
            .position(|b| b < 0x20 || b == b'"' || b == b'\\')
        {
            self.0.push_str(&rest[..i]);
            match rest.as_bytes()[i] {
                b'"' => self.0.push_str("\\\""),
                b'\\' => self.0.push_str("\\\\"),
                b'\n' => self.0.push_str("\\n"),
                b'\r' => self.0.push_str("\\r"),
                b'\t' => self.0.push_str("\\t"),
                0x08 => self.0.push_str("\\b"),
                0x0c => self.0.push_str("\\f"),
                b => write!(self.0, "\\u{b:04x}")?,
            }
            rest = &rest[i + 1..];
        }
        self.0.push_str(rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::format::JsonFields;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    /// The JSON line logged inside a span with awkward fields, one recorded later.
    fn logged<N>(fields: N) -> serde_json::Value
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let lines = Lines::default();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .fmt_fields(fields)
            .with_writer(lines.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let id = "a\"b\\c\n\u{1}é";
            let span = tracing::info_span!("request", method = "POST", route = "/v2/{x}",
                request_id = %id, n = 7u64, neg = -3i64, ok = true, f = 1.5f64,
                nan = f64::NAN, r#type = ?Some(1), later = tracing::field::Empty);
            span.record("later", "set");
            span.in_scope(|| tracing::info!(status = 400u64, "request not successful"));
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        serde_json::from_str(text.trim()).unwrap()
    }

    #[test]
    fn logs_the_same_lines_as_json_fields() {
        let mut ours = logged(JsonSpanFields);
        let mut theirs = logged(JsonFields::new());
        for line in [&mut ours, &mut theirs] {
            line.as_object_mut().unwrap().remove("timestamp");
        }
        assert_eq!(ours, theirs);
        assert_eq!(ours["span"]["request_id"], "a\"b\\c\n\u{1}é");
        assert_eq!(ours["span"]["later"], "set");
    }
}
