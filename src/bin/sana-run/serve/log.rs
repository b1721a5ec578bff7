//! Structured logs: one JSON object per line on stderr (stdout carries only the bound address), each with its time.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Writes `fields` as one line, with `ts` (Unix time in seconds).
pub fn line(fields: &Map<String, Value>) {
    let mut line = Map::new();
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    line.insert("ts".into(), Value::from(ts));
    line.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    eprintln!("{}", Value::Object(line));
}

/// An event line: `{"ts", "event": name, …fields}`.
pub fn event(name: &str, fields: Value) {
    let mut line = Map::new();
    line.insert("event".into(), Value::from(name));
    if let Value::Object(f) = fields {
        line.extend(f);
    }
    self::line(&line);
}
