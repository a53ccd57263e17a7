//! The t × n_out output of a batched matmul, written by rayon tasks that each own a disjoint
//! range of weight rows (output columns), so no transposed copy is needed.

/// Shared access to the output; every task writes only the columns of its own weight rows.
pub(super) struct Columns {
    ptr: *mut f32,
    t: usize,
    n_out: usize,
}

// SAFETY: `Columns` is only a way to reach the output from several tasks; every task writes only
// the columns of its own weight rows (the contract of `put` and `put_run`), and the `&mut` borrow
// it was made from outlives the parallel loop (`new` ties it to that borrow).
unsafe impl Sync for Columns {}

impl Columns {
    /// Wraps `out` (t × n_out, row-major by activation row).
    ///
    /// Panics if `out` has another length.
    pub(super) fn new(out: &mut [f32], t: usize, n_out: usize) -> Self {
        assert_eq!(out.len(), t * n_out, "output size");
        Self {
            ptr: out.as_mut_ptr(),
            t,
            n_out,
        }
    }

    /// `out[j][r] = v`.
    ///
    /// # Safety
    /// No other thread reads or writes element (j, r) while the output is shared, and the buffer
    /// given to `new` is still borrowed.
    pub(super) unsafe fn put(&self, j: usize, r: usize, v: f32) {
        assert!(
            j < self.t && r < self.n_out,
            "({j}, {r}) outside the output"
        );
        // SAFETY: in bounds (checked above) of the t × n_out buffer `ptr` points to; the caller
        // guarantees exclusive access to this element.
        unsafe { *self.ptr.add(j * self.n_out + r) = v };
    }

    /// `out[j][r] = v(j) + bias[r]` for every activation row j: one weight row's column, for rows
    /// the tile kernels leave over.
    ///
    /// # Safety
    /// As for [`Columns::put`], for every element written.
    pub(super) unsafe fn put_row(&self, r: usize, bias: Option<&[f32]>, v: impl Fn(usize) -> f32) {
        let b = bias.map_or(0.0, |b| b[r]);
        for j in 0..self.t {
            // SAFETY: the caller's guarantee, for each element.
            unsafe { self.put(j, r, v(j) + b) };
        }
    }

    /// `out[j][r..r + v.len()] = v + bias[r..]`.
    ///
    /// # Safety
    /// As for [`Columns::put`], for every element written.
    pub(super) unsafe fn put_run(&self, j: usize, r: usize, v: &[f32], bias: Option<&[f32]>) {
        assert!(
            j < self.t && r + v.len() <= self.n_out,
            "({j}, {r}..) outside the output"
        );
        // SAFETY: the run lies inside row j of the buffer (checked above); the caller guarantees
        // exclusive access to it.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(self.ptr.add(j * self.n_out + r), v.len()) };
        match bias {
            Some(b) => {
                for ((d, v), b) in dst.iter_mut().zip(v).zip(&b[r..]) {
                    *d = v + b;
                }
            }
            None => dst.copy_from_slice(v),
        }
    }
}

/// The rows of a batch (`width` values each) with zero rows past the last, so that tile kernels
/// always get whole groups of columns.
pub(super) struct Padded<'a, T> {
    x: &'a [T],
    width: usize,
    zeros: Vec<T>,
}

impl<'a, T: Clone + Default> Padded<'a, T> {
    /// `x` cut into rows of `width`.
    pub(super) fn new(x: &'a [T], width: usize) -> Self {
        Self {
            x,
            width,
            zeros: vec![T::default(); width],
        }
    }

    /// Rows in the batch (not counting the padding).
    pub(super) fn len(&self) -> usize {
        self.x.len() / self.width
    }

    /// Row `j`, or zeros past the last row.
    pub(super) fn row(&self, j: usize) -> &[T] {
        if j < self.len() {
            &self.x[j * self.width..(j + 1) * self.width]
        } else {
            &self.zeros
        }
    }

    /// Rows j0..j0 + N.
    pub(super) fn group<const N: usize>(&self, j0: usize) -> [&[T]; N] {
        std::array::from_fn(|c| self.row(j0 + c))
    }
}
