//! The kernel battery: every ISA's kernels against the scalar twin, on random data, one block, odd
//! block counts, zero scales and extreme values. Levels the CPU lacks are skipped (and said so).
//!
//! Tolerances: activation quantization must produce identical blocks on every ISA (all round half
//! to even). In the dot products the integer part of each block is exact on every ISA; only the
//! float steps differ (scale products, FMA, the order lanes are summed in, and integer offsets
//! folded into lanes before the float conversion), so results must agree with an f64 sum of the
//! same per-block terms to within (blocks + 2) · 2⁻²³ of the summed magnitudes of every product
//! and offset that enters a lane.

use half::f16;
use qgpt::kernels::{Isa, Kernels};
use qgpt::quant::{
    BlockQ4_0, BlockQ4_1, BlockQ6K, BlockQ8Act, BlockQ8K, BlockQ8Quad, BlockQ8_0, BlockQ8x4,
    BlockW16, GgmlType, W16Source,
};
use qgpt::sampling::Rng;

/// Values of the block-scale regimes the battery mixes: random, zero, tiny, large.
fn scale(rng: &mut Rng, zero_every: u64) -> [u8; 2] {
    let r = rng.next_u64();
    let v = match r % zero_every.max(1) {
        0 if zero_every > 0 => 0.0,
        _ => (rng.next_f32() - 0.5) * 0.2,
    };
    f16::from_f32(v).to_le_bytes()
}

fn floats(rng: &mut Rng, n: usize, amp: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * amp).collect()
}

/// Activations: random, plus an all-zero block and a block of ±extremes when there is room.
fn activations(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = floats(rng, n, 3.0);
    if n >= 96 {
        x[32..64].fill(0.0);
        for (i, v) in x[64..96].iter_mut().enumerate() {
            *v = if i % 2 == 0 { 1e4 } else { -1e4 };
        }
    }
    x
}

fn q8_blocks(k: &Kernels, x: &[f32]) -> Vec<BlockQ8Act> {
    let mut b = vec![BlockQ8Act::default(); x.len() / 32];
    (k.quantize_q8)(x, &mut b);
    b
}

fn q8k_blocks(k: &Kernels, x: &[f32]) -> Vec<BlockQ8K> {
    let mut b = vec![BlockQ8K::default(); x.len() / 256];
    (k.quantize_q8k)(x, &mut b);
    b
}

fn f16v(b: [u8; 2]) -> f64 {
    f16::from_le_bytes(b).to_f64()
}

fn check(label: &str, got: f32, terms: &[f64]) {
    let mag: f64 = terms.iter().map(|t| t.abs()).sum();
    check_mag(label, got, terms, mag);
}

fn check_mag(label: &str, got: f32, terms: &[f64], mag: f64) {
    let want: f64 = terms.iter().sum();
    let tol = (terms.len() + 2) as f64 * f32::EPSILON as f64 * mag + 1e-30;
    assert!(
        (got as f64 - want).abs() <= tol,
        "{label}: got {got}, want {want} (|Δ| {:e} > {tol:e})",
        (got as f64 - want).abs()
    );
}

fn nib(qs: &[u8; 16], i: usize) -> i64 {
    (if i < 16 {
        qs[i] & 0x0F
    } else {
        qs[i - 16] >> 4
    }) as i64
}

fn idot(w: impl Fn(usize) -> i64, a: &[i8]) -> i64 {
    a.iter().enumerate().map(|(i, &q)| w(i) * q as i64).sum()
}

/// Block counts: one block, odd counts, a realistic row.
const BLOCKS: [usize; 6] = [1, 3, 4, 7, 33, 96];

/// Weight-quant pattern: random bytes, or the extremes 0x00 / 0xFF / 0x80 / 0x7F.
fn wbytes(rng: &mut Rng, pattern: usize) -> u8 {
    match pattern {
        0 => rng.next_u64() as u8,
        1 => 0x00,
        2 => 0xFF,
        3 => 0x80,
        _ => 0x7F,
    }
}

fn check_quantize(k: &Kernels) {
    let s = Kernels::scalar();
    let mut rng = Rng::new(11);
    for nb in BLOCKS {
        let x = activations(&mut rng, nb * 256);
        assert_eq!(
            q8_blocks(k, &x),
            q8_blocks(&s, &x),
            "{} quantize_q8, {nb}×8 blocks",
            k.isa
        );
        assert_eq!(
            q8k_blocks(k, &x),
            q8k_blocks(&s, &x),
            "{} quantize_q8k, {nb} blocks",
            k.isa
        );
    }
    // Exact halves: x · id lands on .5 for these values, where round-half-even matters.
    let mut x: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
    x[0] = 127.0;
    assert_eq!(
        q8_blocks(k, &x),
        q8_blocks(&s, &x),
        "{} quantize_q8 on halves",
        k.isa
    );
    // Non-finite activations (a model file can hold anything): infinities give the scalar bytes;
    // with NaN the scale may differ, but the stored sum is always the sum of the stored quants.
    let mut x = activations(&mut rng, 256);
    x[3] = f32::INFINITY;
    x[40] = f32::NEG_INFINITY;
    assert_eq!(
        q8_blocks(k, &x),
        q8_blocks(&s, &x),
        "{} quantize_q8 on ±inf",
        k.isa
    );
    // A block so small that its scale is subnormal and the inverse scale infinite.
    let tiny: Vec<f32> = (0..32).map(|i| (i as f32 - 15.5) * 1e-39).collect();
    assert_eq!(
        q8_blocks(k, &tiny),
        q8_blocks(&s, &tiny),
        "{} quantize_q8, subnormal scale",
        k.isa
    );
    for at in [0, 7, 31, 100, 255] {
        let mut y = x.clone();
        y[at] = f32::NAN;
        for b in q8_blocks(k, &y) {
            let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
            assert_eq!(b.isum, sum, "{} quantize_q8 with NaN at {at}", k.isa);
        }
    }
}

fn check_q8_0(k: &Kernels) {
    let mut rng = Rng::new(1);
    for nb in BLOCKS {
        for pattern in 0..5 {
            let w: Vec<BlockQ8_0> = (0..nb)
                .map(|_| BlockQ8_0 {
                    d: scale(&mut rng, 5),
                    qs: std::array::from_fn(|_| wbytes(&mut rng, pattern) as i8),
                })
                .collect();
            let a = q8_blocks(&Kernels::scalar(), &activations(&mut rng, nb * 32));
            let terms: Vec<f64> = w
                .iter()
                .zip(&a)
                .map(|(w, a)| f16v(w.d) * a.d as f64 * idot(|i| w.qs[i] as i64, &a.qs) as f64)
                .collect();
            let label = format!("{} dot_q8_0 nb={nb} pattern={pattern}", k.isa);
            check(&label, (k.dot_q8_0)(&w, &a), &terms);
        }
    }
}

fn check_q4_0(k: &Kernels) {
    let mut rng = Rng::new(2);
    for nb in BLOCKS {
        for pattern in 0..5 {
            let w: Vec<BlockQ4_0> = (0..nb)
                .map(|_| BlockQ4_0 {
                    d: scale(&mut rng, 5),
                    qs: std::array::from_fn(|_| wbytes(&mut rng, pattern)),
                })
                .collect();
            let a = q8_blocks(&Kernels::scalar(), &activations(&mut rng, nb * 32));
            let terms: Vec<f64> = w
                .iter()
                .zip(&a)
                .map(|(w, a)| f16v(w.d) * a.d as f64 * idot(|i| nib(&w.qs, i) - 8, &a.qs) as f64)
                .collect();
            // Kernels may compute Σ n·a and the −8·Σa offset separately before scaling.
            let mag: f64 = w
                .iter()
                .zip(&a)
                .map(|(w, a)| {
                    let abs: i64 = (0..32)
                        .map(|i| (nib(&w.qs, i) * a.qs[i] as i64).abs())
                        .sum();
                    let off: i64 = a.qs.iter().map(|&q| 8 * (q as i64).abs()).sum();
                    (f16v(w.d) * a.d as f64).abs() * (abs + off) as f64
                })
                .sum();
            let label = format!("{} dot_q4_0 nb={nb} pattern={pattern}", k.isa);
            check_mag(&label, (k.dot_q4_0)(&w, &a), &terms, mag);
        }
    }
}

fn check_q4_1(k: &Kernels) {
    let mut rng = Rng::new(3);
    for nb in BLOCKS {
        for pattern in 0..5 {
            let w: Vec<BlockQ4_1> = (0..nb)
                .map(|_| BlockQ4_1 {
                    d: scale(&mut rng, 5),
                    m: scale(&mut rng, 4),
                    qs: std::array::from_fn(|_| wbytes(&mut rng, pattern)),
                })
                .collect();
            let a = q8_blocks(&Kernels::scalar(), &activations(&mut rng, nb * 32));
            let mut terms = Vec::new();
            for (w, a) in w.iter().zip(&a) {
                terms.push(f16v(w.d) * a.d as f64 * idot(|i| nib(&w.qs, i), &a.qs) as f64);
                terms.push(f16v(w.m) * a.d as f64 * a.isum as f64);
            }
            let label = format!("{} dot_q4_1 nb={nb} pattern={pattern}", k.isa);
            check(&label, (k.dot_q4_1)(&w, &a), &terms);
        }
    }
}

/// Per-block terms of Σ dequant(w)·dequant(a) for Q8_0 and Q4_0 rows, and the magnitude of what
/// enters the lanes (products plus the offsets the multi-row kernels fold in: 128·Σ|w| or
/// 128·Σ|a| for Q8_0 tiles, 8·Σ|a| for Q4_0).
fn q8_0_terms(w: &[BlockQ8_0], a: &[BlockQ8Act]) -> (Vec<f64>, f64) {
    let mut mag = 0.0;
    let terms = w
        .iter()
        .zip(a)
        .map(|(w, a)| {
            let d = f16v(w.d) * a.d as f64;
            let abs: i64 = (0..32)
                .map(|i| (w.qs[i] as i64 * a.qs[i] as i64).abs())
                .sum();
            let off: i64 = (0..32)
                .map(|i| 128 * ((w.qs[i] as i64).abs() + (a.qs[i] as i64).abs()))
                .sum();
            mag += d.abs() * (abs + off) as f64;
            d * idot(|i| w.qs[i] as i64, &a.qs) as f64
        })
        .collect();
    (terms, mag)
}

fn q4_0_terms(w: &[BlockQ4_0], a: &[BlockQ8Act]) -> (Vec<f64>, f64) {
    let mut mag = 0.0;
    let terms = w
        .iter()
        .zip(a)
        .map(|(w, a)| {
            let d = f16v(w.d) * a.d as f64;
            let abs: i64 = (0..32)
                .map(|i| (nib(&w.qs, i) * a.qs[i] as i64).abs())
                .sum();
            let off: i64 = a.qs.iter().map(|&q| 8 * (q as i64).abs()).sum();
            mag += d.abs() * (abs + off) as f64;
            d * idot(|i| nib(&w.qs, i) - 8, &a.qs) as f64
        })
        .collect();
    (terms, mag)
}

fn q4_1_terms(w: &[BlockQ4_1], a: &[BlockQ8Act]) -> (Vec<f64>, f64) {
    let mut mag = 0.0;
    let mut terms = Vec::new();
    for (w, a) in w.iter().zip(a) {
        let d = f16v(w.d) * a.d as f64;
        let m = f16v(w.m) * a.d as f64;
        let abs: i64 = (0..32)
            .map(|i| (nib(&w.qs, i) * a.qs[i] as i64).abs())
            .sum();
        let asum: i64 = a.qs.iter().map(|&q| (q as i64).abs()).sum();
        mag += d.abs() * abs as f64 + m.abs() * asum as f64;
        terms.push(d * idot(|i| nib(&w.qs, i), &a.qs) as f64);
        terms.push(m * a.isum as f64);
    }
    (terms, mag)
}

/// Four-row and 4 × 4 kernels against the per-pair terms, on the same patterns as single rows.
fn check_multi(k: &Kernels) {
    let mut rng = Rng::new(6);
    for nb in BLOCKS {
        for pattern in 0..5 {
            let rows8 = q8_0_rows(&mut rng, 4, nb, pattern);
            let rows4 = q4_0_rows(&mut rng, 4, nb, pattern);
            let acts: Vec<Vec<BlockQ8Act>> = (0..4)
                .map(|_| q8_blocks(&Kernels::scalar(), &activations(&mut rng, nb * 32)))
                .collect();
            let rows41 = q4_1_rows(&mut rng, 4, nb, pattern);
            let w41: [&[BlockQ4_1]; 4] = std::array::from_fn(|r| rows41[r].as_slice());
            let w8: [&[BlockQ8_0]; 4] = std::array::from_fn(|r| rows8[r].as_slice());
            let w4: [&[BlockQ4_0]; 4] = std::array::from_fn(|r| rows4[r].as_slice());
            let a: [&[BlockQ8Act]; 4] = std::array::from_fn(|c| acts[c].as_slice());
            let tile8 = (k.gemm4x4_q8_0)(w8, a);
            let tile4 = (k.gemm4x4_q4_0)(w4, a);
            let tile41 = (k.gemm4x4_q4_1)(w41, a);
            for c in 0..4 {
                let col8 = (k.dot4_q8_0)(w8, a[c]);
                let col4 = (k.dot4_q4_0)(w4, a[c]);
                let col41 = (k.dot4_q4_1)(w41, a[c]);
                for r in 0..4 {
                    let label = format!("{} nb={nb} pattern={pattern} [{r}][{c}]", k.isa);
                    let (t8, m8) = q8_0_terms(w8[r], a[c]);
                    check_mag(&format!("{label} dot4_q8_0"), col8[r], &t8, m8);
                    check_mag(&format!("{label} gemm4x4_q8_0"), tile8[r][c], &t8, m8);
                    let (t4, m4) = q4_0_terms(w4[r], a[c]);
                    check_mag(&format!("{label} dot4_q4_0"), col4[r], &t4, m4);
                    check_mag(&format!("{label} gemm4x4_q4_0"), tile4[r][c], &t4, m4);
                    let (t41, m41) = q4_1_terms(w41[r], a[c]);
                    check_mag(&format!("{label} dot4_q4_1"), col41[r], &t41, m41);
                    check_mag(&format!("{label} gemm4x4_q4_1"), tile41[r][c], &t41, m41);
                }
            }
        }
    }
}

/// `n` random weight rows of `nb` blocks in `pattern`, built by `block(d, m, byte)`.
fn weight_rows<W>(
    rng: &mut Rng,
    n: usize,
    nb: usize,
    pattern: usize,
    block: impl Fn([u8; 2], [u8; 2], &mut dyn FnMut() -> u8) -> W,
) -> Vec<Vec<W>> {
    (0..n)
        .map(|_| {
            (0..nb)
                .map(|_| {
                    let (d, m) = (scale(rng, 5), scale(rng, 4));
                    block(d, m, &mut || wbytes(rng, pattern))
                })
                .collect()
        })
        .collect()
}

fn q8_0_rows(rng: &mut Rng, n: usize, nb: usize, pattern: usize) -> Vec<Vec<BlockQ8_0>> {
    weight_rows(rng, n, nb, pattern, |d, _, b| BlockQ8_0 {
        d,
        qs: std::array::from_fn(|_| b() as i8),
    })
}

fn q4_0_rows(rng: &mut Rng, n: usize, nb: usize, pattern: usize) -> Vec<Vec<BlockQ4_0>> {
    weight_rows(rng, n, nb, pattern, |d, _, b| BlockQ4_0 {
        d,
        qs: std::array::from_fn(|_| b()),
    })
}

fn q4_1_rows(rng: &mut Rng, n: usize, nb: usize, pattern: usize) -> Vec<Vec<BlockQ4_1>> {
    weight_rows(rng, n, nb, pattern, |d, m, b| BlockQ4_1 {
        d,
        m,
        qs: std::array::from_fn(|_| b()),
    })
}

/// The per-pair terms of a weight type (see `q8_0_terms`).
type Terms<W> = fn(&[W], &[BlockQ8Act]) -> (Vec<f64>, f64);

/// Panels (4 weight rows × 1..4 groups of 4 interleaved activation rows, the last group short)
/// and 16 × 8 tiles over regrouped weights (the last columns padded with zero rows), against the
/// per-pair terms.
fn check_batched<W: W16Source>(
    k: &Kernels,
    ty: GgmlType,
    rows: &[Vec<W>],
    acts: &[Vec<BlockQ8Act>],
    panel: Option<qgpt::kernels::GemmPanelFn<W>>,
    terms: Terms<W>,
    label: &str,
) {
    let nb = acts[0].len();
    let offset = BlockQ8x4::offset(ty).expect("panel type");
    if let Some(panel) = panel {
        let w: [&[W]; 4] = std::array::from_fn(|r| rows[r].as_slice());
        for groups in 1..=4 {
            // The last group holds fewer than four rows when the activations run out.
            let packed: Vec<Vec<BlockQ8x4>> = (0..groups)
                .map(|g| {
                    let cols: Vec<&[BlockQ8Act]> = acts
                        .iter()
                        .skip(4 * g)
                        .take(4)
                        .map(|a| a.as_slice())
                        .collect();
                    let mut p = vec![BlockQ8x4::default(); nb];
                    BlockQ8x4::pack(&cols, offset, &mut p);
                    p
                })
                .collect();
            let ga: Vec<&[BlockQ8x4]> = packed.iter().map(|p| p.as_slice()).collect();
            let mut out = [[f32::NAN; 16]; 4];
            panel(w, &ga, &mut out);
            for (r, o) in out.iter().enumerate() {
                for (j, &v) in o.iter().enumerate().take(4 * groups) {
                    let want = match acts.get(j) {
                        Some(a) => terms(w[r], a),
                        None => (vec![0.0], 0.0),
                    };
                    check_mag(
                        &format!("{label} panel g={groups} [{r}][{j}]"),
                        v,
                        &want.0,
                        want.1,
                    );
                }
                assert!(
                    o[4 * groups..].iter().all(|v| v.is_nan()),
                    "{label}: wrote past its groups"
                );
            }
        }
    }
    if let Some(gemm) = k.gemm16 {
        let w: [&[W]; 16] = std::array::from_fn(|r| rows[r].as_slice());
        let mut p = vec![BlockW16::default(); nb];
        BlockW16::pack(w, &mut p);
        let zeros = vec![BlockQ8Act::default(); nb];
        let cols: [&[BlockQ8Act]; 8] =
            std::array::from_fn(|c| acts.get(c).map_or(zeros.as_slice(), |a| a.as_slice()));
        let mut out = [[f32::NAN; 16]; 8];
        gemm(W::KIND, &p, cols, &mut out);
        for (c, o) in out.iter().enumerate() {
            for (r, &v) in o.iter().enumerate() {
                let (t, m) = terms(w[r], cols[c]);
                check_mag(&format!("{label} gemm16 [{c}][{r}]"), v, &t, m);
            }
        }
    }
}

/// The kernels over interleaved activations or regrouped weights, where the level has them.
fn check_interleaved(k: &Kernels) {
    let mut rng = Rng::new(8);
    for nb in BLOCKS {
        for pattern in 0..5 {
            // 14 activation rows: three full groups and a short one; 16 weight rows.
            let acts: Vec<Vec<BlockQ8Act>> = (0..14)
                .map(|_| q8_blocks(&Kernels::scalar(), &activations(&mut rng, nb * 32)))
                .collect();
            let label = format!("{} nb={nb} pattern={pattern}", k.isa);
            let r8 = q8_0_rows(&mut rng, 16, nb, pattern);
            let l8 = format!("{label} q8_0");
            check_batched(k, GgmlType::Q8_0, &r8, &acts, k.panel_q8_0, q8_0_terms, &l8);
            if let Some(g) = k.gemm16_rows_q8_0 {
                // One to four groups of eight activation rows (zero rows past the fourteen).
                let slab: Vec<BlockQ8_0> = r8.iter().flatten().copied().collect();
                let zeros = vec![BlockQ8Act::default(); nb];
                let col = |c: usize| acts.get(c).map_or(zeros.as_slice(), |a| a.as_slice());
                for groups in 1..=4 {
                    let a: Vec<BlockQ8Act> =
                        (0..8 * groups).flat_map(|c| col(c).to_vec()).collect();
                    let mut out = vec![[[f32::NAN; 16]; 8]; groups];
                    g(&slab, nb, &a, &mut out);
                    for (c, o) in out.iter().flatten().enumerate() {
                        for (r, &v) in o.iter().enumerate() {
                            let (t, m) = q8_0_terms(&r8[r], col(c));
                            let l = format!("{l8} gemm16_rows groups={groups} [{c}][{r}]");
                            check_mag(&l, v, &t, m);
                        }
                    }
                }
            }
            let r4 = q4_0_rows(&mut rng, 16, nb, pattern);
            let l4 = format!("{label} q4_0");
            check_batched(k, GgmlType::Q4_0, &r4, &acts, k.panel_q4_0, q4_0_terms, &l4);
            let r41 = q4_1_rows(&mut rng, 16, nb, pattern);
            let l41 = format!("{label} q4_1");
            check_batched(
                k,
                GgmlType::Q4_1,
                &r41,
                &acts,
                k.panel_q4_1,
                q4_1_terms,
                &l41,
            );
            if let (Some(quad), 0) = (k.dot_q4_0_quad, nb % 4) {
                let mut q = vec![BlockQ8Quad::default(); nb / 4];
                BlockQ8Quad::pack(&acts[0], 8, &mut q);
                for (r, w) in r4.iter().enumerate() {
                    let (t, m) = q4_0_terms(w, &acts[0]);
                    check_mag(&format!("{label} dot_q4_0_quad [{r}]"), quad(w, &q), &t, m);
                }
            }
        }
    }
}

/// GELU against the scalar twin (the standard library's tanh) on a sweep from −20 to 20, the
/// extremes and the non-finite values. The fast forms use a polynomial exponential (relative
/// error below 2·10⁻⁷) and a division; with the twin's own rounding, results agree within
/// 4·10⁻⁷·min(|x|, 100) + 10⁻⁹ (past |x| = 10 both are x or 0).
fn check_gelu(k: &Kernels) {
    let mut x: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 1e-4).collect();
    x.extend([
        1e-30, -1e-30, 0.0, -0.0, 50.0, -50.0, 1e4, -1e4, 3e38, -3e38,
    ]);
    let mut want = x.clone();
    qgpt::kernels::scalar::gelu(&mut want);
    let mut got = x.clone();
    (k.gelu)(&mut got);
    for ((&x, &g), &w) in x.iter().zip(&got).zip(&want) {
        let tol = 4e-7 * x.abs().min(100.0) + 1e-9;
        assert!((g - w).abs() <= tol, "{} gelu({x}) = {g}, want {w}", k.isa);
    }
    let mut special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    (k.gelu)(&mut special);
    assert!(special[0].is_nan(), "{} gelu(NaN)", k.isa);
    assert_eq!(special[1], f32::INFINITY, "{} gelu(inf)", k.isa);
    // The twin computes −∞ · 0 = NaN here; the limit is 0.
    assert!(
        special[2] == 0.0 || special[2].is_nan(),
        "{} gelu(-inf) = {}",
        k.isa,
        special[2]
    );
}

/// The float GEMM tile against an f64 sum of the same products, for row lengths 1, 37 and 256,
/// with the activations regrouped (equal to the portable regrouping) from a full group of rows
/// and from one padded with zero rows. Tolerance as for the dot products.
fn check_gemm16_f32(k: &Kernels) {
    use qgpt::kernels::gemm_f32::{regroup16_portable, COLS, ROWS};
    let mut rng = Rng::new(11);
    for (n, present) in [(1usize, COLS), (37, COLS - 3), (256, COLS)] {
        let w = floats(&mut rng, n * ROWS, 2.0);
        let xs: Vec<Vec<f32>> = (0..present).map(|_| floats(&mut rng, n, 3.0)).collect();
        let x: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let zeros = vec![0.0f32; n];
        let group = std::array::from_fn(|c| x.get(c).copied().unwrap_or(&zeros));
        let mut packed = vec![f32::NAN; n * COLS];
        (k.regroup16)(group, n, &mut packed);
        let mut want = vec![f32::NAN; n * COLS];
        regroup16_portable(group, n, &mut want);
        assert_eq!(packed, want, "{} regroup16 n={n}", k.isa);
        let mut out = [[f32::NAN; ROWS]; COLS];
        (k.gemm16_f32)(&w, &packed, &mut out);
        for (c, (oc, xc)) in out.iter().zip(group).enumerate() {
            for (r, &o) in oc.iter().enumerate() {
                let terms: Vec<f64> = (0..n)
                    .map(|kk| w[kk * ROWS + r] as f64 * xc[kk] as f64)
                    .collect();
                check(&format!("{} gemm16_f32 n={n} [{c}][{r}]", k.isa), o, &terms);
            }
        }
    }
}

/// Random (or patterned) Q6_K blocks.
fn q6_k_row(rng: &mut Rng, nb: usize, pattern: usize) -> Vec<BlockQ6K> {
    (0..nb)
        .map(|_| BlockQ6K {
            ql: std::array::from_fn(|_| wbytes(rng, pattern)),
            qh: std::array::from_fn(|_| wbytes(rng, pattern)),
            scales: std::array::from_fn(|i| match pattern {
                0 => rng.next_u64() as i8,
                1 => 0,
                2 => 127,
                3 => -128,
                _ => {
                    if i % 2 == 0 {
                        127
                    } else {
                        -128
                    }
                }
            }),
            d: scale(rng, 5),
        })
        .collect()
}

/// Per-block terms of a Q6_K row against Q8_K activations.
fn q6_k_terms(w: &[BlockQ6K], a: &[BlockQ8K]) -> Vec<f64> {
    w.iter()
        .zip(a)
        .map(|(w, a)| {
            let i: i64 = (0..256)
                .map(|i| w.scales[i / 16] as i64 * w.q(i) as i64 * a.qs[i] as i64)
                .sum();
            f16v(w.d) * a.d as f64 * i as f64
        })
        .collect()
}

fn check_q6_k(k: &Kernels) {
    let mut rng = Rng::new(4);
    for nb in [1, 3, 12] {
        for pattern in 0..5 {
            let w = q6_k_row(&mut rng, nb, pattern);
            let a = q8k_blocks(&Kernels::scalar(), &activations(&mut rng, nb * 256));
            let label = format!("{} dot_q6_k nb={nb} pattern={pattern}", k.isa);
            check(&label, (k.dot_q6_k)(&w, &a), &q6_k_terms(&w, &a));
            // Four rows and the 4 × 4 tile against the same per-pair terms.
            let rows: Vec<Vec<BlockQ6K>> =
                (0..4).map(|_| q6_k_row(&mut rng, nb, pattern)).collect();
            let acts: Vec<Vec<BlockQ8K>> = (0..4)
                .map(|_| q8k_blocks(&Kernels::scalar(), &activations(&mut rng, nb * 256)))
                .collect();
            let ws: [&[BlockQ6K]; 4] = std::array::from_fn(|r| rows[r].as_slice());
            let as_: [&[BlockQ8K]; 4] = std::array::from_fn(|c| acts[c].as_slice());
            let tile = (k.gemm4x4_q6_k)(ws, as_);
            for c in 0..4 {
                let col = (k.dot4_q6_k)(ws, as_[c]);
                for r in 0..4 {
                    let t = q6_k_terms(ws[r], as_[c]);
                    let l = format!("{} nb={nb} pattern={pattern} [{r}][{c}]", k.isa);
                    check(&format!("{l} gemm4x4_q6_k"), tile[r][c], &t);
                    check(&format!("{l} dot4_q6_k"), col[r], &t);
                }
            }
        }
    }
}

fn check_float(k: &Kernels) {
    let mut rng = Rng::new(5);
    for n in [1, 7, 8, 31, 33, 100, 768, 1000] {
        let x = floats(&mut rng, n, 2.0);
        let wf = floats(&mut rng, n, 2.0);
        let w16: Vec<[u8; 2]> = wf.iter().map(|&v| f16::from_f32(v).to_le_bytes()).collect();
        let w32: Vec<[u8; 4]> = wf.iter().map(|v| v.to_le_bytes()).collect();
        let t16: Vec<f64> = w16
            .iter()
            .zip(&x)
            .map(|(&w, &v)| f16v(w) * v as f64)
            .collect();
        let t32: Vec<f64> = wf
            .iter()
            .zip(&x)
            .map(|(&w, &v)| w as f64 * v as f64)
            .collect();
        check(
            &format!("{} dot_f16 n={n}", k.isa),
            (k.dot_f16)(&w16, &x),
            &t16,
        );
        check(
            &format!("{} dot_f32_bytes n={n}", k.isa),
            (k.dot_f32_bytes)(&w32, &x),
            &t32,
        );
        check(
            &format!("{} dot_f32 n={n}", k.isa),
            (k.dot_f32)(&wf, &x),
            &t32,
        );
    }
}

macro_rules! battery {
    ($($module:ident => $isa:expr;)*) => {$(
        mod $module {
            use super::*;

            fn kernels() -> Option<Kernels> {
                let k = Kernels::for_isa($isa);
                if k.is_none() {
                    eprintln!("skipped: this CPU lacks {}", $isa);
                }
                k
            }

            #[test]
            fn quantize_matches_scalar_exactly() {
                if let Some(k) = kernels() { check_quantize(&k) }
            }

            #[test]
            fn dot_q8_0() {
                if let Some(k) = kernels() { check_q8_0(&k) }
            }

            #[test]
            fn dot_q4_0() {
                if let Some(k) = kernels() { check_q4_0(&k) }
            }

            #[test]
            fn dot_q4_1() {
                if let Some(k) = kernels() { check_q4_1(&k) }
            }

            #[test]
            fn dot_q6_k() {
                if let Some(k) = kernels() { check_q6_k(&k) }
            }

            #[test]
            fn four_row_and_tile_kernels() {
                if let Some(k) = kernels() { check_multi(&k) }
            }

            #[test]
            fn panel_quad_and_gemm16_kernels() {
                if let Some(k) = kernels() { check_interleaved(&k) }
            }

            #[test]
            fn float_gemm_tile() {
                if let Some(k) = kernels() { check_gemm16_f32(&k) }
            }

            #[test]
            fn gelu() {
                if let Some(k) = kernels() { check_gelu(&k) }
            }

            #[test]
            fn float_dots() {
                if let Some(k) = kernels() { check_float(&k) }
            }
        }
    )*};
}

battery! {
    scalar => Isa::Scalar;
    avx2 => Isa::Avx2;
    avx512 => Isa::Avx512;
    neon => Isa::Neon;
    neon_dotprod => Isa::NeonDotprod;
}

#[test]
fn the_native_level_is_available() {
    #[cfg(target_arch = "x86_64")]
    assert!(Isa::Avx2.is_available() || !std::is_x86_feature_detected!("avx2"));
    #[cfg(target_arch = "aarch64")]
    assert!(
        Isa::Neon.is_available(),
        "every aarch64 Linux CPU has NEON: the NEON battery must run"
    );
    assert!(Isa::Scalar.is_available());
}
