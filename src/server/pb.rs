//! The generated gRPC types and stubs of `proto/qgpt/v1/generation.proto` (package `qgpt.v1`).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("qgpt.v1");

/// The encoded descriptor set of the API, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/qgpt_descriptor.bin"));
