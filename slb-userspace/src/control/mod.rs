//! The control socket: `slb status` and `slb reload` talk to the running
//! agent over a Unix socket, one JSON request and one JSON response per
//! connection.
mod client;
mod protocol;
mod server;

pub use client::{request, ClientError};
pub use protocol::{Request, Response};
pub use server::{serve, ControlError, Pending, Serving};
