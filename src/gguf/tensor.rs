//! Tensor infos and typed views into the mapped file.

use crate::quant::GgmlType;

/// ggml allows at most four dimensions.
pub const MAX_DIMS: usize = 4;

/// One entry of the GGUF tensor-info table, validated against the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_qkv.weight`.
    pub name: String,
    /// ggml dims: `dims[0]` is the contiguous row length.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the file (already checked to lie inside it).
    pub file_offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of values.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row length (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims[0]
    }

    /// Number of rows (product of `dims[1..]`).
    pub fn n_rows(&self) -> u64 {
        self.dims[1..].iter().product()
    }

    /// Shape as `[a, b]`, for messages.
    pub fn shape_string(&self) -> String {
        format_shape(&self.dims)
    }
}

/// Formats dims as `[a, b, c]`.
pub fn format_shape(dims: &[u64]) -> String {
    let parts: Vec<String> = dims.iter().map(u64::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// A tensor's info and its bytes, borrowed from the mapped file.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// The tensor's validated info.
    pub info: &'a TensorInfo,
    /// Exactly `info.n_bytes` bytes.
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Bytes of row `r` (rows are `dims[0]` values long).
    pub fn row(&self, r: usize) -> &'a [u8] {
        let row_bytes = self.data.len() / self.info.n_rows() as usize;
        &self.data[r * row_bytes..(r + 1) * row_bytes]
    }
}
