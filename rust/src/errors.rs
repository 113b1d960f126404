//! The one place engine errors become Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::PyErr;
use understudy_core::wire::sync::EncodeError;

create_exception!(_core, SyncError, PyValueError, "A message or connection that cannot be encoded.");

pub fn encode_error(e: EncodeError) -> PyErr {
    SyncError::new_err(e.to_string())
}

pub fn bad_address(text: &str) -> PyErr {
    PyValueError::new_err(format!("not an IP address: {text:?}"))
}

pub fn bad_version(version: u8) -> PyErr {
    PyValueError::new_err(format!("sync version must be 0 or 1, not {version}"))
}
