//! The run's result as one JSON object (written by hand: one flat object needs no library).

use std::fmt::Write;
use std::time::Duration;

use crate::run::{Config, Outcome};

pub fn json(cfg: &Config, out: &Outcome) -> String {
    let secs = out.elapsed.as_secs_f64();
    let us = |d: Option<Duration>| d.map_or("null".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e6));
    let rate = if secs > 0.0 { out.requests as f64 / secs } else { 0.0 };
    let seconds = |d: Option<Duration>| d.map_or("null".into(), |d| format!("{:.4}", d.as_secs_f64()));
    let cpu_per_req = match out.server_cpu {
        Some(d) if out.requests > 0 => format!("{:.3}", d.as_secs_f64() * 1e6 / out.requests as f64),
        _ => "null".into(),
    };
    let messages: Vec<String> = out.messages.iter().map(|m| string(m)).collect();
    let h = &out.latency;
    let mut s = String::new();
    let _ = write!(
        s,
        concat!(
            "{{\"mode\": {}, \"target\": {}, \"tls\": {}, \"reconnect\": {}, ",
            "\"connections\": {}, \"size\": {}, ",
            "\"warmup_s\": {}, \"requests_limit\": {}, \"duration_s\": {:.4}, \"requests\": {}, ",
            "\"requests_per_s\": {:.1}, \"latency_us\": {{\"p50\": {}, \"p99\": {}, \"p99.9\": {}, ",
            "\"mean\": {}, \"max\": {}}}, \"server_cpu_s\": {}, \"server_cpu_us_per_request\": {}, ",
            "\"client_cpu_s\": {}, ",
            "\"errors\": {}, \"error_messages\": [{}]}}"
        ),
        string(&cfg.mode.to_string()),
        string(&cfg.target.to_string()),
        out.tls.as_deref().map_or("null".into(), string),
        cfg.reconnect,
        cfg.connections,
        cfg.size,
        if cfg.requests.is_some() {
            0.0
        } else {
            cfg.warmup.as_secs_f64()
        },
        cfg.requests.map_or("null".into(), |n| n.to_string()),
        secs,
        out.requests,
        rate,
        us(h.percentile(0.50)),
        us(h.percentile(0.99)),
        us(h.percentile(0.999)),
        us(h.mean()),
        us(h.max()),
        seconds(out.server_cpu),
        cpu_per_req,
        seconds(out.client_cpu),
        out.errors,
        messages.join(", "),
    );
    s
}

/// A JSON string literal.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(string("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\u0001é""#);
    }
}
