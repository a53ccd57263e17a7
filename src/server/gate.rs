//! The generation service before and after the model is loaded: until then every call gets
//! UNAVAILABLE (and health says NOT_SERVING).

use std::sync::{Arc, OnceLock};

use tonic::{Request, Response, Status};

use super::pb;
use super::pb::text_generation_server::TextGeneration;
use super::service::Service;
use crate::engine::Event;

/// A service that exists once the model is loaded.
#[derive(Clone, Default)]
pub(super) struct Gate(Arc<OnceLock<Service>>);

impl Gate {
    /// Makes `service` answer from now on.
    pub fn open(&self, service: Service) {
        if self.0.set(service).is_err() {
            unreachable!("the gate opens once");
        }
    }

    fn get(&self) -> Result<&Service, Status> {
        self.0
            .get()
            .ok_or_else(|| Status::unavailable("the model is still loading"))
    }
}

#[tonic::async_trait]
impl TextGeneration for Gate {
    type GenerateStreamStream = tokio_stream::wrappers::ReceiverStream<Event>;

    async fn generate_stream(
        &self,
        r: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStreamStream>, Status> {
        self.get()?.generate_stream(r).await
    }

    async fn generate(
        &self,
        r: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        self.get()?.generate(r).await
    }

    async fn tokenize(
        &self,
        r: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        self.get()?.tokenize(r).await
    }

    async fn detokenize(
        &self,
        r: Request<pb::DetokenizeRequest>,
    ) -> Result<Response<pb::DetokenizeResponse>, Status> {
        self.get()?.detokenize(r).await
    }

    async fn get_model_info(
        &self,
        r: Request<pb::GetModelInfoRequest>,
    ) -> Result<Response<pb::GetModelInfoResponse>, Status> {
        self.get()?.get_model_info(r).await
    }

    async fn get_server_status(
        &self,
        r: Request<pb::GetServerStatusRequest>,
    ) -> Result<Response<pb::GetServerStatusResponse>, Status> {
        self.get()?.get_server_status(r).await
    }
}
