//! JAX-style truncated LeCun-normal initialisation.
//!
//! Mirrors sapientinc/HRM:models/common.py `trunc_normal_init_` (docs/model.md, "Initialisation"). PyTorch's own
//! `nn.init.trunc_normal_` truncates a normal of scale σ, whose actual std is then smaller than σ;
//! the reference (like JAX) widens the scale by κ = 1.1368 so that the *truncated* distribution has
//! std σ: sample u ~ U(erf(-√2), erf(√2)), x = √2 σκ erfinv(u), clip to ±2σκ.

use rand::Rng;

/// erf(-2/√2): lower bound of the uniform draw.
const A: f64 = -0.954_499_736_103_641_6;
/// φ(2) = (2π)^-½ e^-2, the standard normal density at the truncation point.
const PDF2: f64 = 0.053_990_966_513_188_06;

/// Scale correction κ (= 1.1368472343): the std of N(0,1) truncated at ±2 is 1/κ.
pub fn truncation_correction() -> f64 {
    let z = (-A - A) / 2.0;
    1.0 / (1.0 - (2.0 * PDF2 + 2.0 * PDF2) / z).sqrt()
}

/// Inverse error function on (-1, 1): Giles' single-precision approximation refined by two Newton
/// steps against `libm::erf` (accurate to a few ulps of f64, far beyond what f32 weights need).
pub fn erfinv(y: f64) -> f64 {
    if y <= -1.0 {
        return f64::NEG_INFINITY;
    }
    if y >= 1.0 {
        return f64::INFINITY;
    }
    let w = -((1.0 - y) * (1.0 + y)).ln();
    let mut x = if w < 5.0 {
        let w = w - 2.5;
        let mut p = 2.810_226_36e-08;
        for c in [
            3.432_739_39e-07,
            -3.523_387_7e-06,
            -4.391_506_54e-06,
            0.000_218_580_87,
            -0.001_253_725_03,
            -0.004_177_681_64,
            0.246_640_727,
            1.501_409_41,
        ] {
            p = c + p * w;
        }
        p * y
    } else {
        let w = w.sqrt() - 3.0;
        let mut p = -0.000_200_214_257;
        for c in [
            0.000_100_950_558,
            0.001_349_343_22,
            -0.003_673_428_44,
            0.005_739_507_73,
            -0.007_622_461_3,
            0.009_438_870_47,
            1.001_674_06,
            2.832_976_82,
        ] {
            p = c + p * w;
        }
        p * y
    };
    let two_over_sqrt_pi = 2.0 / std::f64::consts::PI.sqrt();
    for _ in 0..2 {
        let err = libm::erf(x) - y;
        x -= err / (two_over_sqrt_pi * (-x * x).exp());
    }
    x
}

/// `n` samples of the truncated normal whose std is `std` (zeros when `std == 0`).
pub fn trunc_normal(n: usize, std: f64, rng: &mut impl Rng) -> Vec<f32> {
    if std == 0.0 {
        return vec![0.0; n];
    }
    let comp_std = std * truncation_correction();
    let (lo, hi) = (A, -A);
    (0..n)
        .map(|_| {
            let u = lo + (hi - lo) * rng.random::<f64>();
            let x = std::f64::consts::SQRT_2 * comp_std * erfinv(u);
            x.clamp(-2.0 * comp_std, 2.0 * comp_std) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn constants_match_the_spec() {
        assert!((truncation_correction() - 1.136_847_234_338_556_5).abs() < 1e-12);
        assert!((libm::erf(-std::f64::consts::SQRT_2) - A).abs() < 1e-15);
    }

    #[test]
    fn erfinv_inverts_erf() {
        for &x in &[-3.0, -1.2, -0.3, 0.0, 1e-4, 0.7, 2.2, 3.5] {
            let y = libm::erf(x);
            assert!((erfinv(y) - x).abs() < 1e-9 * (1.0 + x.abs()), "x = {x}");
        }
    }

    #[test]
    fn truncated_normal_has_the_requested_std_and_bounds() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let std = 0.044_194_173_824_159_216; // 1/sqrt(512)
        let v = trunc_normal(200_000, std, &mut rng);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 5e-4, "mean {mean}");
        assert!(
            (var.sqrt() / std - 1.0).abs() < 0.01,
            "std {} vs {std}",
            var.sqrt()
        );
        let bound = 2.0 * std * truncation_correction();
        assert!(v.iter().all(|&x| (x as f64).abs() <= bound + 1e-9));
        // the bounds are reached (the clip is active at ±2.2737σ)
        let max = v.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
        assert!(max > 0.99 * bound);
        assert!(trunc_normal(4, 0.0, &mut rng).iter().all(|&x| x == 0.0));
    }
}
