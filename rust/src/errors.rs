//! The one place engine errors become Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::PyErr;
use understudy_core::ipvs;
use understudy_core::netif;
use understudy_core::wire::sync::EncodeError;

create_exception!(_core, SyncError, PyValueError, "A message or connection that cannot be encoded.");
create_exception!(_core, IpvsError, PyOSError, "The kernel refused an IPVS operation, or IPVS is unavailable.");
create_exception!(_core, NetifError, PyOSError, "An interface or address operation failed.");

/// `IpvsError(errno, "add service tcp 10.0.0.1:80: exists")`.
pub fn ipvs_error(e: ipvs::Error) -> PyErr {
    match e.errno() {
        Some(errno) => IpvsError::new_err((errno, e.to_string())),
        None => IpvsError::new_err(e.to_string()),
    }
}

pub fn encode_error(e: EncodeError) -> PyErr {
    SyncError::new_err(e.to_string())
}

pub fn bad_address(text: &str) -> PyErr {
    PyValueError::new_err(format!("not an IP address: {text:?}"))
}

pub fn bad_version(version: u8) -> PyErr {
    PyValueError::new_err(format!("sync version must be 0 or 1, not {version}"))
}

/// A socket failure, naming what was being done: `OSError(errno, "what: reason")`.
pub fn os_error(what: &str, e: std::io::Error) -> PyErr {
    pyo3::exceptions::PyOSError::new_err((e.raw_os_error().unwrap_or(0), format!("{what}: {e}")))
}

/// `NetifError(errno, "no such interface: \"eth9\"")`.
pub fn netif_error(e: netif::Error) -> PyErr {
    match e.errno() {
        Some(errno) => NetifError::new_err((errno, e.to_string())),
        None => NetifError::new_err(e.to_string()),
    }
}
