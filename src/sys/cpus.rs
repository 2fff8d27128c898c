//! How much CPU this process may use: its affinity mask and its cgroup's
//! CPU quota.

use std::path::Path;
use std::sync::OnceLock;

/// CPUs in this thread's affinity mask (`sched_getaffinity`), or `None` if
/// the kernel would not say (a mask larger than `cpu_set_t`).
pub fn affinity() -> Option<usize> {
    // SAFETY: cpu_set_t is plain data for which all zeroes is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live, writable cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `set` was filled in by the kernel.
    usize::try_from(unsafe { libc::CPU_COUNT(&set) }).ok()
}

/// The tightest CPU quota (in CPUs) of this process's cgroup and its
/// ancestors, and the file that sets it; `None` when no quota applies.
/// Read once per process: the files take tens of microseconds to read, and a
/// loop is created far more often than a container's limits change.
pub fn quota() -> Option<(f64, String)> {
    static QUOTA: OnceLock<Option<(f64, String)>> = OnceLock::new();
    QUOTA
        .get_or_init(|| {
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            quota_v2(&own).or_else(|| quota_v1(&own))
        })
        .clone()
}

/// cgroup v2: `cpu.max` of the cgroup named by the `0::` line, and of each
/// ancestor up to the mount point (a limit anywhere above applies too).
fn quota_v2(own: &str) -> Option<(f64, String)> {
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mut dir = Path::new("/sys/fs/cgroup").join(path.trim().trim_start_matches('/'));
    let mut best: Option<(f64, String)> = None;
    loop {
        let file = dir.join("cpu.max");
        if let Some(cpus) = std::fs::read_to_string(&file).ok().and_then(|t| parse_cpu_max(&t)) {
            if best.as_ref().is_none_or(|(b, _)| cpus < *b) {
                best = Some((cpus, file.display().to_string()));
            }
        }
        if dir == Path::new("/sys/fs/cgroup") || !dir.pop() {
            return best;
        }
    }
}

/// cgroup v1: `cpu.cfs_quota_us / cpu.cfs_period_us` of the `cpu`
/// controller's cgroup, as mounted at `/sys/fs/cgroup/cpu`, else at the
/// mount's root (inside a container, the container's own cgroup).
fn quota_v1(own: &str) -> Option<(f64, String)> {
    let sub = own
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':').skip(1);
            parts.next().zip(parts.next())
        })
        .find(|(controllers, _)| controllers.split(',').any(|c| c == "cpu"))
        .map(|(_, path)| path.trim().trim_start_matches('/').to_string())
        .unwrap_or_default();
    let root = Path::new("/sys/fs/cgroup/cpu");
    for dir in [root.join(&sub), root.to_path_buf()] {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        if let (Some(q), Some(p)) = (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")) {
            return parse_cfs(&q, &p).map(|cpus| (cpus, dir.join("cpu.cfs_quota_us").display().to_string()));
        }
    }
    None
}

/// `cpu.max` holds "$MAX $PERIOD", `max` meaning no limit.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut words = text.split_whitespace();
    let quota = words.next()?;
    let period: f64 = words.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    let quota: f64 = quota.parse().ok()?;
    (period > 0.0).then(|| quota / period)
}

/// v1's quota is -1 for no limit.
fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: i64 = period.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("50000"), Some(0.5));
        assert_eq!(parse_cpu_max("200000 0"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cpu_max("x 100000"), None);
    }

    #[test]
    fn cfs() {
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("50000\n", "100000\n"), Some(0.5));
        assert_eq!(parse_cfs("300000", "100000"), Some(3.0));
        assert_eq!(parse_cfs("", "100000"), None);
    }

    #[test]
    fn the_host_answers() {
        assert!(affinity().is_some_and(|n| n >= 1));
        if let Some((cpus, file)) = quota() {
            assert!(cpus > 0.0, "{file}");
        }
    }
}
