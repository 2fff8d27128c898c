//! The longest poll before blocking a new loop uses (see `spin`), and why.
//!
//! Polling pays off when the peer runs on another CPU while this loop polls.
//! With one CPU in the affinity mask the peer may need this very CPU to
//! answer, so the poll yields it between checks (`spin::Pace::Yield`). Under
//! a cgroup quota below two CPUs a poll spends quota that throttles the whole
//! group, yielding or not, so polling is off by default there.
//! `FERROLOOP_POLL_US` sets the window either way; the affinity sets the pace.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::spin::{Pace, DEFAULT_MAX_NS};
use super::LoopCore;
use crate::sys::cpus;

/// Fewer CPUs than this in the affinity mask make the poll yield between
/// checks; a cgroup quota below this many CPUs turns polling off by default.
const MIN_CPUS: usize = 2;

/// A window, its pace and the reason they were chosen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Window {
    pub max_ns: u64,
    pub pace: Pace,
    pub reason: String,
}

/// The window for a loop created now: `FERROLOOP_POLL_US` if set (empty or
/// blank counts as unset), else the default for the CPUs this process may
/// use. A value that is not a whole number of microseconds from 0 to 1000 is
/// an error, not a silent default: it is a setting someone meant to apply.
pub(crate) fn choose() -> Result<Window, String> {
    let env = std::env::var("FERROLOOP_POLL_US").ok();
    decide(env.as_deref(), cpus::affinity, cpus::quota)
}

fn decide(
    env: Option<&str>,
    affinity: impl FnOnce() -> Option<usize>,
    quota: impl FnOnce() -> Option<(f64, String)>,
) -> Result<Window, String> {
    let cpus = affinity();
    let (pace, paced) = match cpus {
        Some(n) if n < MIN_CPUS => (
            Pace::Yield,
            format!(", yielding between checks: {n} CPU in this process's affinity mask"),
        ),
        _ => (Pace::Spin, String::new()),
    };
    if let Some(v) = env.filter(|v| !v.trim().is_empty()) {
        return match v.trim().parse::<u64>() {
            Ok(us) if us <= 1_000 => Ok(Window {
                max_ns: us * 1_000,
                pace,
                reason: format!("FERROLOOP_POLL_US={us}{paced}"),
            }),
            _ => Err(format!(
                "FERROLOOP_POLL_US must be a whole number of microseconds from 0 to 1000, got {v:?}"
            )),
        };
    }
    let quota = quota();
    if let Some((q, file)) = quota.as_ref().filter(|(q, _)| *q < MIN_CPUS as f64) {
        return Ok(Window {
            max_ns: 0,
            pace,
            reason: format!("default, off: cgroup CPU quota of {q:.2} CPUs ({file})"),
        });
    }
    if pace == Pace::Yield {
        return Ok(Window {
            max_ns: DEFAULT_MAX_NS,
            pace,
            reason: format!("default{paced}"),
        });
    }
    let cpus = cpus.map_or("an unknown number of".to_string(), |n| n.to_string());
    let limit = quota.map_or("no cgroup CPU quota".to_string(), |(q, _)| {
        format!("a cgroup quota of {q:.2}")
    });
    Ok(Window {
        max_ns: DEFAULT_MAX_NS,
        pace,
        reason: format!("default: {cpus} CPUs usable, {limit}"),
    })
}

/// `(microseconds, reason)` for a loop created now; what
/// `python -m ferroloop --info` reports.
#[ferroloop_macros::contained]
#[pyfunction]
pub(crate) fn poll_window() -> PyResult<(u64, String)> {
    let w = choose().map_err(PyValueError::new_err)?;
    Ok((w.max_ns / 1_000, w.reason))
}

#[ferroloop_macros::contained]
#[pymethods]
impl LoopCore {
    /// `(microseconds, reason)`: the longest poll before blocking this loop
    /// uses, chosen when it was created.
    #[getter]
    fn _poll_window(&self, py: Python<'_>) -> (u64, String) {
        let s = self.spinner.borrow(py);
        (s.max_ns() / 1_000, s.reason().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(env: Option<&str>, cpus: Option<usize>, quota: Option<f64>) -> Result<Window, String> {
        decide(env, || cpus, || quota.map(|q| (q, "cpu.max".to_string())))
    }

    #[test]
    fn the_setting_wins() {
        for env in ["0", " 5 ", "1000"] {
            let w = with(Some(env), Some(1), Some(0.5)).unwrap();
            assert_eq!(w.max_ns, env.trim().parse::<u64>().unwrap() * 1_000);
            assert!(w.reason.starts_with("FERROLOOP_POLL_US="), "{}", w.reason);
        }
    }

    #[test]
    fn blank_is_unset() {
        for env in ["", " ", "\t\n"] {
            assert_eq!(with(Some(env), Some(4), None).unwrap().max_ns, DEFAULT_MAX_NS);
        }
    }

    #[test]
    fn bad_settings_are_errors() {
        for env in ["abc", "-1", "2.5", "1001", "20us"] {
            assert!(with(Some(env), Some(4), None).is_err(), "{env}");
        }
    }

    #[test]
    fn yielding_with_one_cpu() {
        let w = with(None, Some(1), None).unwrap();
        assert_eq!((w.max_ns, w.pace), (DEFAULT_MAX_NS, Pace::Yield));
        assert!(
            w.reason.contains("yielding") && w.reason.contains("affinity"),
            "{}",
            w.reason
        );
        let w = with(Some("30"), Some(1), None).unwrap();
        assert_eq!((w.max_ns, w.pace), (30_000, Pace::Yield));
        assert!(w.reason.starts_with("FERROLOOP_POLL_US=30, yielding"), "{}", w.reason);
    }

    #[test]
    fn off_under_a_quota_below_two_cpus() {
        for cpus in [Some(1), Some(8), None] {
            let w = with(None, cpus, Some(1.5)).unwrap();
            assert_eq!(w.max_ns, 0);
            assert!(w.reason.contains("quota"), "{}", w.reason);
        }
    }

    #[test]
    fn on_with_two_cpus_or_more() {
        for (cpus, quota) in [(Some(2), None), (Some(2), Some(2.0)), (None, None)] {
            let w = with(None, cpus, quota).unwrap();
            assert_eq!((w.max_ns, w.pace), (DEFAULT_MAX_NS, Pace::Spin));
        }
    }
}
