//! `understudy._core`: the engine, bound for Python. Thin by design: logic
//! lives in `understudy-core`; this crate converts types and releases the GIL.

use pyo3::prelude::*;

mod errors;
mod heartbeat;
mod ipvs;
mod netif;
mod probe;
mod replication;
mod sync;
mod table;
mod transport;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("SyncError", m.py().get_type::<errors::SyncError>())?;
    m.add("IpvsError", m.py().get_type::<errors::IpvsError>())?;
    m.add_class::<ipvs::IpvsClient>()?;
    m.add("NetifError", m.py().get_type::<errors::NetifError>())?;
    m.add_class::<netif::Netif>()?;
    m.add_class::<netif::LinkMonitor>()?;
    m.add_class::<netif::Announcer>()?;
    m.add_function(wrap_pyfunction!(netif::decode_announcement, m)?)?;
    m.add_class::<sync::Conn>()?;
    m.add_class::<sync::Message>()?;
    m.add_class::<table::ConnTable>()?;
    m.add_class::<table::Checkpoint>()?;
    m.add_class::<transport::SyncReceiver>()?;
    m.add_class::<transport::SyncSender>()?;
    m.add_class::<replication::PrimaryRelay>()?;
    m.add_class::<replication::BackupRelay>()?;
    m.add_class::<heartbeat::HeartbeatEngine>()?;
    m.add_class::<probe::TcpProber>()?;
    m.add_function(wrap_pyfunction!(sync::decode, m)?)?;
    m.add_function(wrap_pyfunction!(sync::decode_many, m)?)?;
    m.add_function(wrap_pyfunction!(sync::encode, m)?)?;
    m.add_function(wrap_pyfunction!(sync::encode_message, m)?)?;
    m.add_function(wrap_pyfunction!(sync::error_reasons, m)?)?;
    m.add_function(wrap_pyfunction!(sync::skip_reasons, m)?)?;
    Ok(())
}
