//! GetModelInfo's answer, built once at startup.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::pb;
use crate::engine::token_text;
use crate::gguf::{file_type_short_name, Value};
use crate::model::LoadedModel;

/// Describes the loaded model, the kernels and the cache type in use.
pub(super) fn model_info(
    m: &LoadedModel,
    path: Option<&Path>,
    isa: &str,
) -> pb::GetModelInfoResponse {
    let file = m.model.file();
    let c = m.model.config();
    let t = &m.tokenizer;
    let text = |key: &str| {
        file.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut types: BTreeMap<&str, u32> = BTreeMap::new();
    for ti in file.tensors() {
        *types.entry(ti.ty.name()).or_default() += 1;
    }
    let special = [("bos", t.bos()), ("eos", t.eos()), ("eot", t.eot())]
        .into_iter()
        .filter_map(|(role, id)| {
            id.map(|id| pb::SpecialToken {
                role: role.into(),
                id,
                text: token_text(t, id),
            })
        })
        .collect();
    pb::GetModelInfoResponse {
        architecture: text("general.architecture"),
        name: text("general.name"),
        file_name: match path {
            Some(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            None => crate::demo::NAME.to_owned(),
        },
        file_size_bytes: file.len(),
        parameter_count: file.tensors().iter().map(|t| t.n_elements()).sum(),
        file_type: file
            .get("general.file_type")
            .and_then(Value::as_u64)
            .map(|ft| file_type_short_name(ft).to_owned())
            .unwrap_or_default(),
        tensor_types: types
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<HashMap<_, _>>(),
        context_length: c.n_ctx as u32,
        vocab_size: c.n_vocab as u32,
        embedding_length: c.n_embd as u32,
        block_count: c.n_layer as u32,
        head_count: c.n_head as u32,
        feed_forward_length: c.n_ff as u32,
        tokenizer_model: text("tokenizer.ggml.model"),
        tokenizer_pre: t.pre().to_owned(),
        special_tokens: special,
        add_bos: t.add_bos(),
        isa: isa.to_owned(),
        kv_cache_type: m.model.kv_type().name().to_owned(),
        threads: rayon::current_num_threads() as u32,
        server_version: super::VERSION.to_owned(),
        head_count_kv: c.n_head_kv as u32,
        chat_template: m.chat.is_ok(),
    }
}
