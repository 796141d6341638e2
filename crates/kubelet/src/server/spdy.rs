//! SPDY/3.1 transport of the remote-command protocol (kubectl before 1.30, and newer ones
//! when a WebSocket upgrade fails).

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use kumo_runtime::ExecSession;

use super::exec::ExecOptions;
use super::{Body, text};

/// Not served yet: answers with a clear error (kubectl ≥ 1.30 uses WebSockets).
pub(crate) fn serve(
    _req: Request<Incoming>,
    _opts: ExecOptions,
    _session: Result<ExecSession, String>,
) -> Response<Body> {
    text(
        StatusCode::BAD_REQUEST,
        "SPDY/3.1 streaming is not supported by this kubelet yet: use a WebSocket client (kubectl 1.30 or newer)",
    )
}
