//! ferroloop's native core: a single-threaded epoll event loop that runs
//! asyncio's callbacks, timers and I/O readiness handlers.
//!
//! The Python package (`python/ferroloop`) subclasses [`loop_core::LoopCore`]
//! into `ferroloop.Loop`. Everything that runs per event, per callback or per
//! byte is here; once-per-call orchestration is Python. See
//! `docs/architecture.md`.

mod errors;
mod gil_cell;
mod handles;
mod loop_core;
mod panic_guard;
mod py;
mod sock_ops;
mod sys;
mod transport;

use pyo3::prelude::*;

// `gil_used = true`: the core is not free-threading safe. `GilCell`, handle
// recycling by reference count and borrowed dict references all assume that
// one thread at a time runs it, so on a free-threaded build importing the
// module re-enables the GIL (PyO3 would otherwise declare it GIL-free).
#[pymodule(gil_used = true)]
fn _ferroloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<loop_core::LoopCore>()?;
    loop_core::install_raw_methods(m.py())?;
    m.add_class::<handles::Handle>()?;
    handles::install_traverse(m.py());
    m.add_class::<handles::TimerHandle>()?;
    m.add_class::<transport::socket::SocketTransportCore>()?;
    m.add_class::<transport::table::TransportTable>()?;
    m.add_class::<transport::tls::TlsPump>()?;
    m.add_class::<transport::pipe::ReadPipeTransportCore>()?;
    m.add_class::<transport::pipe::WritePipeTransportCore>()?;
    m.add_function(wrap_pyfunction!(loop_core::poll_window::poll_window, m)?)?;
    m.add_function(wrap_pyfunction!(sys::features::kernel_features, m)?)?;
    m.add_function(wrap_pyfunction!(panic_guard::_inject_panic, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
