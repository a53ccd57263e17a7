//! A tower layer around the whole gRPC server that counts and times every call by service,
//! method and status code — refusals by the auth interceptor and unknown methods included.
//!
//! A call's code is the `grpc-status` of its trailers (or of its headers, for an answer that is
//! only headers). A stream is timed until its trailers; one whose body is dropped before them
//! (the client went away) counts as CANCELLED.

use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};

/// The methods qgpt serves, as (service, method); anything else is labelled "unknown".
const METHODS: &[(&str, &str)] = &[
    ("qgpt.v1.TextGeneration", "GenerateStream"),
    ("qgpt.v1.TextGeneration", "Generate"),
    ("qgpt.v1.TextGeneration", "Tokenize"),
    ("qgpt.v1.TextGeneration", "Detokenize"),
    ("qgpt.v1.TextGeneration", "GetModelInfo"),
    ("qgpt.v1.TextGeneration", "GetServerStatus"),
    ("grpc.health.v1.Health", "Check"),
    ("grpc.health.v1.Health", "Watch"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
    ),
];

/// The (service, method) labels of a request path `/service/method`.
fn labels(path: &str) -> (&'static str, &'static str) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    METHODS
        .iter()
        .find(|(s, m)| *s == service && *m == method)
        .copied()
        .unwrap_or(("unknown", "unknown"))
}

/// The gRPC code in `headers`' `grpc-status`, if any.
fn status(headers: &HeaderMap) -> Option<Code> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(i32::from_str(v).ok()?))
}

/// Wraps a service in [`Observe`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner }
    }
}

/// Records each call's end (see the module comment).
#[derive(Debug, Clone)]
pub(super) struct Observe<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Observe<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (service, method) = labels(req.uri().path());
        // Owned by the future from the start: dropped before an answer (the client left during
        // a unary call, or tonic's timeout fired), it counts the call as CANCELLED.
        let mut call = Call {
            service,
            method,
            started: Instant::now(),
            done: false,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = match fut.await {
                Ok(res) => res,
                Err(e) => {
                    call.end(Code::Unknown);
                    return Err(e);
                }
            };
            if let Some(code) = status(res.headers()) {
                call.end(code); // trailers-only answer: the call is over
            }
            Ok(res.map(|body| Observed { call, body }))
        })
    }
}

/// One call in flight.
#[derive(Debug)]
struct Call {
    service: &'static str,
    method: &'static str,
    started: Instant,
    done: bool,
}

impl Call {
    fn end(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            crate::metrics::grpc_call(self.service, self.method, code, self.took());
        }
    }

    fn took(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The body went away before its trailers: the client cancelled or the connection broke.
        self.end(Code::Cancelled);
    }
}

/// A response body that records its call's end when the trailers pass.
#[derive(Debug)]
pub(super) struct Observed<B> {
    // Dropped first (fields drop in order): the call is counted before the body's drop lets
    // the engine see the client gone.
    call: Call,
    body: B,
}

impl<B: Body + Unpin> Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status) {
                    this.call.end(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.end(Code::Internal),
            // Ended without trailers: not a complete gRPC answer.
            Poll::Ready(None) => this.call.end(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_closed_label_sets() {
        assert_eq!(
            labels("/qgpt.v1.TextGeneration/GenerateStream"),
            ("qgpt.v1.TextGeneration", "GenerateStream")
        );
        assert_eq!(
            labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        for other in [
            "/",
            "",
            "/qgpt.v1.TextGeneration/Nope",
            "/x/y/z",
            "/evil\u{0}/a",
        ] {
            assert_eq!(labels(other), ("unknown", "unknown"), "{other:?}");
        }
    }

    #[test]
    fn status_reads_grpc_status() {
        let mut h = HeaderMap::new();
        assert_eq!(status(&h), None);
        h.insert("grpc-status", "8".parse().unwrap());
        assert_eq!(status(&h), Some(Code::ResourceExhausted));
        h.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(status(&h), None);
    }
}
