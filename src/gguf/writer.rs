//! Writing GGUF v3: the header (metadata and tensor infos) is laid out up front from the tensors'
//! names, shapes and types, then tensor data is streamed in order, each tensor padded to the
//! alignment. The layout matches what gguf-py and ggml write: little-endian, u64 counts and string
//! lengths, data offsets relative to the aligned start of the data section.

use std::io::{self, Write};

use super::value::{Array, Value};
use crate::quant::GgmlType;

/// One tensor to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// GGUF name, e.g. `blk.0.attn_qkv.weight`.
    pub name: String,
    /// ggml dims: `dims[0]` is the contiguous row length.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
}

impl TensorEntry {
    /// Row length (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims[0]
    }

    /// Number of rows (product of `dims[1..]`).
    pub fn n_rows(&self) -> u64 {
        self.dims[1..].iter().product()
    }

    /// Bytes of data, or an error when the row is not a whole number of blocks of the type.
    pub fn n_bytes(&self) -> io::Result<u64> {
        self.ty
            .row_bytes(self.row_len())
            .and_then(|r| r.checked_mul(self.n_rows()))
            .ok_or_else(|| {
                invalid(format!(
                    "tensor {}: rows of {} values are not whole {} blocks",
                    self.name,
                    self.row_len(),
                    self.ty
                ))
            })
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The encoded header and where each tensor's data goes.
#[derive(Debug)]
pub struct Layout {
    /// Magic, version, counts, metadata, tensor infos and the padding up to the data section.
    pub header: Vec<u8>,
    /// Data size of each tensor, in order.
    pub sizes: Vec<u64>,
    /// Alignment of every tensor's data.
    pub alignment: u64,
    /// Total file size.
    pub file_size: u64,
}

fn pad(n: u64, alignment: u64) -> u64 {
    n.div_ceil(alignment) * alignment - n
}

/// Lays out a GGUF v3 file holding `metadata` (in this order) and `tensors` (in this order).
pub fn layout(
    metadata: &[(String, Value)],
    tensors: &[TensorEntry],
    alignment: u64,
) -> io::Result<Layout> {
    if !alignment.is_power_of_two() {
        return Err(invalid(format!(
            "alignment {alignment} is not a power of two"
        )));
    }
    let mut h = Vec::new();
    h.extend_from_slice(b"GGUF");
    h.extend_from_slice(&3u32.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    h.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut h, key);
        h.extend_from_slice(&tag(value).to_le_bytes());
        put_value(&mut h, value);
    }
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in tensors {
        if t.dims.is_empty() || t.dims.len() > super::MAX_DIMS {
            return Err(invalid(format!("tensor {}: {} dims", t.name, t.dims.len())));
        }
        let size = t.n_bytes()?;
        put_str(&mut h, &t.name);
        h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            h.extend_from_slice(&d.to_le_bytes());
        }
        h.extend_from_slice(&t.ty.id().to_le_bytes());
        h.extend_from_slice(&offset.to_le_bytes());
        sizes.push(size);
        offset += size + pad(size, alignment);
    }
    h.resize(h.len() + pad(h.len() as u64, alignment) as usize, 0);
    let file_size = h.len() as u64 + offset;
    Ok(Layout {
        header: h,
        sizes,
        alignment,
        file_size,
    })
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn tag(v: &Value) -> u32 {
    v.value_type().tag()
}

fn put_value(h: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => h.push(*x),
        Value::I8(x) => h.push(*x as u8),
        Value::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => h.push(u8::from(*x)),
        Value::String(s) => put_str(h, s),
        Value::Array(a) => put_array(h, a),
        Value::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(h: &mut Vec<u8>, a: &Array) {
    h.extend_from_slice(&a.element_type().tag().to_le_bytes());
    h.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr, $f:expr) => {
            for x in $v {
                #[allow(clippy::redundant_closure_call)]
                $f(h, x);
            }
        };
    }
    match a {
        Array::U8(v) => h.extend_from_slice(v),
        Array::I8(v) => each!(v, |h: &mut Vec<u8>, x: &i8| h.push(*x as u8)),
        Array::U16(v) => each!(v, |h: &mut Vec<u8>, x: &u16| h
            .extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => each!(v, |h: &mut Vec<u8>, x: &i16| h
            .extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => each!(v, |h: &mut Vec<u8>, x: &u32| h
            .extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => each!(v, |h: &mut Vec<u8>, x: &i32| h
            .extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => each!(v, |h: &mut Vec<u8>, x: &f32| h
            .extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => each!(v, |h: &mut Vec<u8>, x: &bool| h.push(u8::from(*x))),
        Array::String(v) => each!(v, |h: &mut Vec<u8>, x: &String| put_str(h, x)),
        Array::U64(v) => each!(v, |h: &mut Vec<u8>, x: &u64| h
            .extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => each!(v, |h: &mut Vec<u8>, x: &i64| h
            .extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => each!(v, |h: &mut Vec<u8>, x: &f64| h
            .extend_from_slice(&x.to_le_bytes())),
        Array::Array(v) => each!(v, put_array),
    }
}

/// Streams a laid-out file: `begin` writes the header, then each tensor's bytes arrive through
/// `write` (in any number of pieces) and `end_tensor` checks its size and pads it.
pub struct GgufWriter<W: Write> {
    out: W,
    layout: Layout,
    tensor: usize,
    written: u64,
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header of `layout` to `out`.
    pub fn begin(mut out: W, layout: Layout) -> io::Result<Self> {
        out.write_all(&layout.header)?;
        Ok(Self {
            out,
            layout,
            tensor: 0,
            written: 0,
        })
    }

    /// Appends bytes of the current tensor.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let size = *self
            .layout
            .sizes
            .get(self.tensor)
            .ok_or_else(|| invalid("data written after the last tensor".to_owned()))?;
        if self.written + bytes.len() as u64 > size {
            return Err(invalid(format!(
                "tensor {}: more than its {size} bytes written",
                self.tensor
            )));
        }
        self.written += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    /// Ends the current tensor: it must be complete; pads to the alignment.
    pub fn end_tensor(&mut self) -> io::Result<()> {
        let size = self.layout.sizes[self.tensor];
        if self.written != size {
            return Err(invalid(format!(
                "tensor {}: {} of its {size} bytes written",
                self.tensor, self.written
            )));
        }
        let zeros = [0u8; 64];
        let mut p = pad(size, self.layout.alignment) as usize;
        while p > 0 {
            let n = p.min(zeros.len());
            self.out.write_all(&zeros[..n])?;
            p -= n;
        }
        self.tensor += 1;
        self.written = 0;
        Ok(())
    }

    /// Checks that every tensor was written and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if self.tensor != self.layout.sizes.len() {
            return Err(invalid(format!(
                "{} of {} tensors written",
                self.tensor,
                self.layout.sizes.len()
            )));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;

    #[test]
    fn written_file_reads_back() {
        let meta = vec![
            (
                "general.architecture".to_owned(),
                Value::String("gpt2".into()),
            ),
            ("a.u32".to_owned(), Value::U32(7)),
            ("a.f32".to_owned(), Value::F32(1e-5)),
            ("a.bool".to_owned(), Value::Bool(true)),
            (
                "a.strings".to_owned(),
                Value::Array(Array::String(vec!["x".into(), "yz".into()])),
            ),
            ("a.i32s".to_owned(), Value::Array(Array::I32(vec![-1, 2]))),
        ];
        let tensors = vec![
            TensorEntry {
                name: "t.bias".into(),
                dims: vec![3],
                ty: GgmlType::F32,
            },
            TensorEntry {
                name: "t.weight".into(),
                dims: vec![32, 2],
                ty: GgmlType::Q8_0,
            },
        ];
        let layout = layout(&meta, &tensors, 32).unwrap();
        let size = layout.file_size;
        let mut w = GgufWriter::begin(Vec::new(), layout).unwrap();
        w.write(&[1u8; 12]).unwrap();
        w.end_tensor().unwrap();
        w.write(&[2u8; 30]).unwrap();
        assert!(w.end_tensor().is_err(), "a short tensor is refused");
        w.write(&[2u8; 38]).unwrap();
        assert!(w.write(&[0]).is_err(), "an overlong tensor is refused");
        w.end_tensor().unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() as u64, size);
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.metadata(), &meta[..]);
        assert_eq!(f.tensors()[1].dims, vec![32, 2]);
        assert_eq!(f.tensor("t.bias").unwrap().data, &[1u8; 12]);
        assert_eq!(f.tensor("t.weight").unwrap().data, &[2u8; 68]);
        assert_eq!(f.data_offset() % 32, 0);
    }

    #[test]
    fn partial_blocks_are_refused() {
        let t = TensorEntry {
            name: "w".into(),
            dims: vec![31, 2],
            ty: GgmlType::Q4_0,
        };
        assert!(layout(&[], &[t], 32).is_err());
    }
}
