//! Exposes the target Python's version to the code as `cfg(Py_3_N)`, for the
//! few C APIs that exist only on some versions (dict watchers, 3.12+).
//!
//! Stops at once when the target is not Linux: the loop is built on epoll,
//! pidfd and eventfd, and without this check such a build ends in a page of
//! "cannot find function in crate libc" errors instead of one line saying why.

fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" {
        eprintln!(
            "error: ferroloop runs on Linux only (it is built on epoll, eventfd and pidfd); \
             this build targets {target_os:?}"
        );
        std::process::exit(1);
    }
    pyo3_build_config::use_pyo3_cfgs();
}
