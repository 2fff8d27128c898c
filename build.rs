//! Exposes the target Python's version to the code as `cfg(Py_3_N)`, for the
//! few C APIs that exist only on some versions (dict watchers, 3.12+).

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
