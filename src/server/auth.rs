//! Optional bearer-token authentication of the generation service: every call must carry
//! `authorization: Bearer <token>`; others get UNAUTHENTICATED. Health and reflection stay open
//! (Kubernetes probes send no credentials).

use std::sync::Arc;

use tonic::{Request, Status};

/// The interceptor: checks the token when one is configured, in time independent of where the
/// given token first differs.
#[derive(Clone, Default)]
pub(super) struct BearerAuth {
    token: Option<Arc<[u8]>>,
}

impl BearerAuth {
    /// Requires `token`, or nothing when `None`.
    pub fn new(token: Option<&str>) -> Self {
        Self {
            token: token.map(|t| Arc::from(t.as_bytes())),
        }
    }
}

/// Equality without an early exit on the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(want) = &self.token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(t) if same(t.as_bytes(), want) => Ok(req),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated(
                "missing credentials: send `authorization: Bearer <token>`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn call(auth: &mut BearerAuth, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut req = Request::new(());
        if let Some(h) = header {
            req.metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        auth.call(req).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn checks_the_bearer_token_only_when_configured() {
        let mut open = BearerAuth::new(None);
        assert_eq!(call(&mut open, None), Ok(()));
        let mut auth = BearerAuth::new(Some("s3cret"));
        assert_eq!(call(&mut auth, Some("Bearer s3cret")), Ok(()));
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            assert_eq!(
                call(&mut auth, bad),
                Err(tonic::Code::Unauthenticated),
                "{bad:?}"
            );
        }
    }
}
