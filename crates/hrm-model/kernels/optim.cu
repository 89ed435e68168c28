// Element-wise optimizer kernels of hrm-model's CUDA path (compiled to PTX by ../build.rs under
// the `cuda` feature and loaded by src/cuda.rs).
//
// AdamATan2 (adam-atan2 0.0.3, as used by sapientinc/HRM:pretrain.py; spec §4.2) split into three
// in-place passes so that each writes exactly one buffer (candle's in-place ops mutate one
// tensor): the first moment, the second moment, then the parameter. The arithmetic is the CPU
// path's (src/optim.rs) operation for operation, in f32:
//   m = fma(a1, g, fma(-a1, m, m))
//   v = fma(a2, g*g, fma(-a2, v, v))
//   p = fma(-step_size, atan2(m, sqrt(v) / c2), p * wd_alpha)
// atan2 is the CPU path's `atan2_nonneg_x` (Cephes' atanf reduction and polynomial, relative
// error < 2e-7; the denominator is never negative), written with the same operations in the same
// order. Built with --fmad=false so that nvcc contracts nothing beyond the explicit fmaf calls,
// and with IEEE sqrt and division (no fast-math): the GPU update is bit-identical to the CPU's.

// src/optim.rs `atan2_nonneg_x`, operation for operation.
__device__ __forceinline__ float atan2_nonneg_x(float y, float x) {
    const float ay = fabsf(y);
    const float t = (ay == 0.0f) ? 0.0f : ay / x;
    const bool big = t > 2.4142136f;   // tan(3pi/8)
    const bool mid = t > 0.41421357f;  // tan(pi/8)
    float y0, z;
    if (big) {
        y0 = 1.57079632679489661923f;  // f32 pi/2
        z = -1.0f / t;
    } else if (mid) {
        y0 = 0.78539816339744830962f;  // f32 pi/4
        z = (t - 1.0f) / (t + 1.0f);
    } else {
        y0 = 0.0f;
        z = t;
    }
    const float zz = z * z;
    const float poly =
        ((8.0537445e-2f * zz - 1.3877686e-1f) * zz + 1.9977711e-1f) * zz - 3.3332949e-1f;
    const float r = y0 + (poly * zz * z + z);
    return copysignf(r, y);
}

extern "C" __global__ void hrm_adam_first_moment(float *m, const float *g, float a1,
                                                 unsigned long long n) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        const float mi = m[i];
        m[i] = fmaf(a1, g[i], fmaf(-a1, mi, mi));
    }
}

extern "C" __global__ void hrm_adam_second_moment(float *v, const float *g, float a2,
                                                  unsigned long long n) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        const float gi = g[i];
        const float vi = v[i];
        const float g2 = gi * gi;
        v[i] = fmaf(a2, g2, fmaf(-a2, vi, vi));
    }
}

extern "C" __global__ void hrm_adam_param(float *p, const float *m, const float *v,
                                          float wd_alpha, float step_size, float c2,
                                          unsigned long long n) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        const float decayed = p[i] * wd_alpha;
        const float denom = sqrtf(v[i]) / c2;
        const float angle = atan2_nonneg_x(m[i], denom);
        p[i] = fmaf(-step_size, angle, decayed);
    }
}
