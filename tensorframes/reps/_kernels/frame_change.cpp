// The frame change of message passing as one pass over the edges (CPU).
//
// For every edge e:  out[e] = rho(rel_e) x[src[e]],  with rel_e one of
//   mode 0: rel[e]                          (per-edge relative frames given),
//   mode 1: R_dst[dst[e]] R_src[src[e]]^T   (node frames),
//   mode 2: R_dst[dst[e]]                    (world-frame input carried into the target's frame).
// rho is given as a plan of blocks (tensorframes/reps/_kernel.py builds it from a Reps):
//   ID   identity (0e, 0n),               SIGN  sign(det rel) (Irreps 0o),
//   DET  det(rel) (TensorReps 0p),         D1    rel (Irreps l=1; flag: times sign(det)),
//   D2   D^2(rel), the quadratic polynomial of tensorframes/reps/_wigner.py (closed form; its
//        derivative from the same polynomial given as terms (p, q, k, c): D2[k] += c rel_p
//        rel_q) (flag: times sign(det)),
//   T1   rel v (TensorReps order 1; flag: times det),  T2  rel X rel^T (order 2; flag: times det).
// The backward computes rho(rel)^T g per edge, accumulated into the sources' rows (one
// accumulator per thread, summed by the caller), and the gradient of the loss with respect to
// rel_e (the caller chains it to the node frames). The caller owns every large buffer (each
// backward thread allocates one tile of 32 rows). Only plain C++17 and std::thread: no torch
// headers, so it compiles in seconds.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#endif

namespace {

enum Kind : int64_t { ID = 0, SIGN = 1, DET = 2, D1 = 3, D2 = 4, T1 = 5, T2 = 6 };
constexpr int kBlockFields = 5;  // start, mul, n, kind, flag

template <class F>
void parallel_for(int64_t n, int nthreads, F f) {
  if (nthreads <= 1 || n < 2) {
    f(0, int64_t(0), n);
    return;
  }
  const int64_t step = (n + nthreads - 1) / nthreads;
  std::vector<std::thread> pool;
  for (int t = 1; t < nthreads; ++t) {
    const int64_t b = std::min(n, t * step), e = std::min(n, (t + 1) * step);
    try {
      pool.emplace_back(f, t, b, e);
    } catch (...) {  // no thread to be had: run the range here (its own accumulator slot t)
      f(t, b, e);
    }
  }
  f(0, int64_t(0), std::min(n, step));
  for (auto& th : pool) th.join();
}

template <typename T, int d>
struct Edge {
  T r[d * d];   // rel, row-major
  T det = 1;    // det(rel) (when needed)
  T sign = 1;   // sign(det(rel))
  T D2[25];     // D^2(rel) (when needed)
};

template <typename T, int d>
inline T det_of(const T* r) {
  if constexpr (d == 2) {
    return r[0] * r[3] - r[1] * r[2];
  } else {
    return r[0] * (r[4] * r[8] - r[5] * r[7]) - r[1] * (r[3] * r[8] - r[5] * r[6]) +
           r[2] * (r[3] * r[7] - r[4] * r[6]);
  }
}

// d det / d rel (the cofactor matrix), row-major
template <typename T, int d>
inline void cofactor(const T* r, T* c) {
  if constexpr (d == 2) {
    c[0] = r[3]; c[1] = -r[2]; c[2] = -r[1]; c[3] = r[0];
  } else {
    c[0] = r[4] * r[8] - r[5] * r[7];
    c[1] = r[5] * r[6] - r[3] * r[8];
    c[2] = r[3] * r[7] - r[4] * r[6];
    c[3] = r[2] * r[7] - r[1] * r[8];
    c[4] = r[0] * r[8] - r[2] * r[6];
    c[5] = r[1] * r[6] - r[0] * r[7];
    c[6] = r[1] * r[5] - r[2] * r[4];
    c[7] = r[2] * r[3] - r[0] * r[5];
    c[8] = r[0] * r[4] - r[1] * r[3];
  }
}

// D^2(R) in e3nn's basis, the closed form of tensorframes/reps/_wigner.py::_wigner_D2 (the same
// quadratic polynomial as the (p, q, k, c) terms, which the backward differentiates): with c_k
// the columns of R, D[:, 0] = B(c0, c2), D[:, 1] = B(c0, c1), D[:, 3] = B(c1, c2),
// D[:, 2] = Y2(c1) / sqrt(5), D[:, 4] = (Y2(c2) - Y2(c0)) / sqrt(15). D row-major (5 x 5).
template <typename T>
inline void d2_closed_form(const T* r, T* D) {
  const T s = T(0.57735026918962576451);  // sqrt(5 / 15)
  const T c0x = r[0], c1x = r[1], c2x = r[2];
  const T c0y = r[3], c1y = r[4], c2y = r[5];
  const T c0z = r[6], c1z = r[7], c2z = r[8];
  auto pair = [&](int col, T ux, T uy, T uz, T vx, T vy, T vz) {
    D[0 * 5 + col] = ux * vz + uz * vx;
    D[1 * 5 + col] = ux * vy + uy * vx;
    D[2 * 5 + col] = s * (2 * uy * vy - ux * vx - uz * vz);
    D[3 * 5 + col] = uy * vz + uz * vy;
    D[4 * 5 + col] = uz * vz - ux * vx;
  };
  pair(0, c0x, c0y, c0z, c2x, c2y, c2z);
  pair(1, c0x, c0y, c0z, c1x, c1y, c1z);
  pair(3, c1x, c1y, c1z, c2x, c2y, c2z);
  const T is = 1 / s;
  D[0 * 5 + 2] = is * c1x * c1z;
  D[1 * 5 + 2] = is * c1x * c1y;
  D[2 * 5 + 2] = c1y * c1y - T(0.5) * (c1x * c1x + c1z * c1z);
  D[3 * 5 + 2] = is * c1y * c1z;
  D[4 * 5 + 2] = (T(0.5) * is) * (c1z * c1z - c1x * c1x);
  D[0 * 5 + 4] = c2x * c2z - c0x * c0z;
  D[1 * 5 + 4] = c2x * c2y - c0x * c0y;
  D[2 * 5 + 4] = s * ((c2y * c2y - c0y * c0y) -
                      T(0.5) * (c2x * c2x + c2z * c2z - c0x * c0x - c0z * c0z));
  D[3 * 5 + 4] = c2y * c2z - c0y * c0z;
  D[4 * 5 + 4] = T(0.5) * ((c2z * c2z - c2x * c2x) - (c0z * c0z - c0x * c0x));
}

struct Args {
  const void* x; int64_t D; int64_t N;
  const int64_t* src; const int64_t* dst; int64_t E;
  const void* R_src; const void* R_dst; const void* rel; int64_t mode;
  const int64_t* blocks; int64_t nblocks;
  const int32_t* terms; const void* coef; int64_t nterms;
  int64_t need_det, need_d2;
};

inline void prefetch_row(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off);
}

template <typename T, int d>
inline void load_edge(const Args& a, int64_t e, Edge<T, d>& w) {
  const T* Rs = static_cast<const T*>(a.R_src);
  const T* Rd = static_cast<const T*>(a.R_dst);
  if (a.mode == 0) {
    std::memcpy(w.r, static_cast<const T*>(a.rel) + e * d * d, sizeof(T) * d * d);
  } else if (a.mode == 2) {
    std::memcpy(w.r, Rd + a.dst[e] * d * d, sizeof(T) * d * d);
  } else {
    const T* A = Rd + a.dst[e] * d * d;
    const T* B = Rs + a.src[e] * d * d;
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) {
        T s = 0;
        for (int k = 0; k < d; ++k) s += A[i * d + k] * B[j * d + k];
        w.r[i * d + j] = s;
      }
  }
  if (a.need_det) {
    w.det = det_of<T, d>(w.r);
    w.sign = w.det < 0 ? T(-1) : T(1);
  }
  if constexpr (d == 3) {
    if (a.need_d2) d2_closed_form(w.r, w.D2);
  }
}

// y_u = s M v_u for u < mul, M (n x n) row-major (n a compile-time constant). The innermost
// loop runs over u (stride n): the compiler vectorises it across the multiplicity.
template <typename T, int n>
inline void matvec(const T* M, int64_t mul, T s, const T* v, T* y) {  // in place allowed
  T Ms[n * n];
  for (int i = 0; i < n * n; ++i) Ms[i] = s * M[i];
  for (int64_t u = 0; u < mul; ++u) {
    T vu[n];
    for (int b = 0; b < n; ++b) vu[b] = v[u * n + b];
    for (int a = 0; a < n; ++a) {
      T acc = 0;
      for (int b = 0; b < n; ++b) acc += Ms[a * n + b] * vu[b];
      y[u * n + a] = acc;
    }
  }
}

// y_u += s M^T g_u
template <typename T, int n>
inline void matvec_t_add(const T* M, int64_t mul, T s, const T* __restrict g, T* __restrict y) {
  T Ms[n * n];
  for (int i = 0; i < n * n; ++i) Ms[i] = s * M[i];
  for (int64_t u = 0; u < mul; ++u) {
    T gu[n];
    for (int a = 0; a < n; ++a) gu[a] = g[u * n + a];
    for (int b = 0; b < n; ++b) {
      T acc = 0;
      for (int a = 0; a < n; ++a) acc += Ms[a * n + b] * gu[a];
      y[u * n + b] += acc;
    }
  }
}

// Y = s R X R^T per d x d tensor (in place allowed: X is read before Y is written)
template <typename T, int d>
inline void sandwich(const T* R, int64_t mul, T s, const T* X, T* Y) {
  for (int64_t u = 0; u < mul; ++u, X += d * d, Y += d * d) {
    T t[d * d];  // X R^T
    for (int c = 0; c < d; ++c)
      for (int b = 0; b < d; ++b) {
        T acc = 0;
        for (int k = 0; k < d; ++k) acc += X[c * d + k] * R[b * d + k];
        t[c * d + b] = acc;
      }
    for (int a = 0; a < d; ++a)
      for (int b = 0; b < d; ++b) {
        T acc = 0;
        for (int c = 0; c < d; ++c) acc += R[a * d + c] * t[c * d + b];
        Y[a * d + b] = s * acc;
      }
  }
}

// Edges per tile. Forward: the tile's rows are first gathered (plain row copies with no
// dependency between edges, so the memory system serves many at once, as in index_select),
// then transformed in place while they sit in L1/L2. Backward: the tile's rho^T g rows are
// computed into a small buffer while the accumulator rows they go to are prefetched, then added.
// (A loop doing everything per edge left each edge's cache misses exposed: 2-3x slower.)
constexpr int64_t kTile = 32;

template <typename T, int d>
void forward(const Args& a, T* out, int nthreads) {
  const T* x = static_cast<const T*>(a.x);
  const int64_t D = a.D;
  parallel_for(a.E, nthreads, [&](int, int64_t e0, int64_t e1) {
    Edge<T, d> w[kTile];
    for (int64_t t0 = e0; t0 < e1; t0 += kTile) {
      const int64_t te = std::min(kTile, e1 - t0);
      for (int64_t k = 0; k < te; ++k)
        std::memcpy(out + (t0 + k) * D, x + a.src[t0 + k] * D, sizeof(T) * D);
      for (int64_t k = 0; k < te; ++k) load_edge<T, d>(a, t0 + k, w[k]);
      for (int64_t k = 0; k < te; ++k) {
        const Edge<T, d>& we = w[k];
        T* y = out + (t0 + k) * D;
        for (int64_t b = 0; b < a.nblocks; ++b) {
          const int64_t* blk = a.blocks + kBlockFields * b;
          const int64_t start = blk[0], mul = blk[1], n = blk[2], kind = blk[3], flag = blk[4];
          T* yb = y + start;
          const int64_t len = mul * n;
          switch (kind) {
            case ID: break;
            case SIGN: for (int64_t i = 0; i < len; ++i) yb[i] *= we.sign; break;
            case DET: for (int64_t i = 0; i < len; ++i) yb[i] *= we.det; break;
            case D1: matvec<T, d>(we.r, mul, flag ? we.sign : T(1), yb, yb); break;
            case D2: matvec<T, 5>(we.D2, mul, flag ? we.sign : T(1), yb, yb); break;
            case T1: matvec<T, d>(we.r, mul, flag ? we.det : T(1), yb, yb); break;
            case T2: sandwich<T, d>(we.r, mul, flag ? we.det : T(1), yb, yb); break;
          }
        }
      }
    }
  });
}

template <typename T, int d>
void backward(const Args& a, const T* g, T* gx, T* grel, int nthreads) {
  const T* x = static_cast<const T*>(a.x);
  const T* coef = static_cast<const T*>(a.coef);
  const int64_t D = a.D;
  parallel_for(a.E, nthreads, [&](int t, int64_t e0, int64_t e1) {
    Edge<T, d> ws[kTile];
    std::vector<T> buf(gx ? kTile * D : 0);  // the tile's rho^T g rows, then scattered
    T* acc = gx ? gx + int64_t(t) * a.N * D : nullptr;
    for (int64_t t0 = e0; t0 < e1; t0 += kTile) {
      const int64_t te = std::min(kTile, e1 - t0);
      for (int64_t k = 0; k < te; ++k) {
        if (acc) prefetch_row(acc + a.src[t0 + k] * D, sizeof(T) * D);
        if (grel) prefetch_row(x + a.src[t0 + k] * D, sizeof(T) * D);
        load_edge<T, d>(a, t0 + k, ws[k]);
      }
      if (acc) std::fill(buf.begin(), buf.begin() + te * D, T(0));
      for (int64_t k = 0; k < te; ++k) {
        const int64_t e = t0 + k;
        const Edge<T, d>& w = ws[k];
        const T* xs = x + a.src[e] * D;
        const T* ge = g + e * D;
        T* gxs = acc ? buf.data() + k * D : nullptr;
        T G[d * d] = {};   // dL/drel, direct terms
        T Gd2[25] = {};    // dL/dD2 (sign included)
        T gdet = 0;        // dL/ddet
        for (int64_t b = 0; b < a.nblocks; ++b) {
          const int64_t* blk = a.blocks + kBlockFields * b;
          const int64_t start = blk[0], mul = blk[1], n = blk[2], kind = blk[3], flag = blk[4];
          const T* v = xs + start;
          const T* gb = ge + start;
          T* gv = gxs ? gxs + start : nullptr;
          const int64_t len = mul * n;
          switch (kind) {
            case ID:
              if (gv) for (int64_t i = 0; i < len; ++i) gv[i] += gb[i];
              break;
            case SIGN:
              if (gv) for (int64_t i = 0; i < len; ++i) gv[i] += w.sign * gb[i];
              break;
            case DET:
              if (gv) for (int64_t i = 0; i < len; ++i) gv[i] += w.det * gb[i];
              if (grel) for (int64_t i = 0; i < len; ++i) gdet += gb[i] * v[i];
              break;
            case D1:
            case T1: {
              const bool pseudo = kind == T1 && flag;
              const T s = flag ? (kind == D1 ? w.sign : w.det) : T(1);
              if (gv) matvec_t_add<T, d>(w.r, mul, s, gb, gv);
              if (grel) {
                for (int64_t u = 0; u < mul; ++u)
                  for (int i = 0; i < d; ++i) {
                    const T gi = s * gb[u * d + i];
                    for (int j = 0; j < d; ++j) G[i * d + j] += gi * v[u * d + j];
                  }
                if (pseudo) {  // y = det (rel v): dL/ddet = <g, rel v>
                  for (int64_t u = 0; u < mul; ++u)
                    for (int i = 0; i < d; ++i) {
                      T rv = 0;
                      for (int j = 0; j < d; ++j) rv += w.r[i * d + j] * v[u * d + j];
                      gdet += gb[u * d + i] * rv;
                    }
                }
              }
              break;
            }
            case D2: {
              if constexpr (d == 3) {
                const T s = flag ? w.sign : T(1);
                if (gv) matvec_t_add<T, 5>(w.D2, mul, s, gb, gv);
                if (grel)
                  for (int64_t u = 0; u < mul; ++u)
                    for (int i = 0; i < 5; ++i) {
                      const T gi = s * gb[u * 5 + i];
                      for (int j = 0; j < 5; ++j) Gd2[i * 5 + j] += gi * v[u * 5 + j];
                    }
              }
              break;
            }
            case T2: {
              const T s = flag ? w.det : T(1);
              for (int64_t u = 0; u < mul; ++u) {
                const T* X = v + u * d * d;
                const T* Gy = gb + u * d * d;
                if (gv) {  // gX += s R^T Gy R
                  T tmp[d * d];
                  for (int c = 0; c < d; ++c)
                    for (int b2 = 0; b2 < d; ++b2) {
                      T acc2 = 0;
                      for (int k = 0; k < d; ++k) acc2 += w.r[k * d + c] * Gy[k * d + b2];
                      tmp[c * d + b2] = acc2;  // R^T Gy
                    }
                  for (int c = 0; c < d; ++c)
                    for (int e2 = 0; e2 < d; ++e2) {
                      T acc2 = 0;
                      for (int b2 = 0; b2 < d; ++b2) acc2 += tmp[c * d + b2] * w.r[b2 * d + e2];
                      gv[u * d * d + c * d + e2] += s * acc2;
                    }
                }
                if (grel) {
                  // dL/dR = s (Gy R X^T + Gy^T R X); with a pseudo-tensor also <Gy, R X R^T> ddet
                  T RX[d * d], RXt[d * d];
                  for (int i = 0; i < d; ++i)
                    for (int j = 0; j < d; ++j) {
                      T p = 0, q = 0;
                      for (int k = 0; k < d; ++k) {
                        p += w.r[i * d + k] * X[k * d + j];   // (R X)[i, j]
                        q += w.r[i * d + k] * X[j * d + k];   // (R X^T)[i, j]
                      }
                      RX[i * d + j] = p;
                      RXt[i * d + j] = q;
                    }
                  for (int i = 0; i < d; ++i)
                    for (int j = 0; j < d; ++j) {
                      T acc2 = 0;
                      for (int k = 0; k < d; ++k)
                        acc2 += Gy[i * d + k] * RXt[k * d + j] + Gy[k * d + i] * RX[k * d + j];
                      G[i * d + j] += s * acc2;
                    }
                  if (flag) {
                    for (int i = 0; i < d; ++i)
                      for (int j = 0; j < d; ++j) {
                        T acc2 = 0;  // (R X R^T)[i, j] = sum_k RX[i, k] R[j, k]
                        for (int k = 0; k < d; ++k) acc2 += RX[i * d + k] * w.r[j * d + k];
                        gdet += Gy[i * d + j] * acc2;
                      }
                  }
                }
              }
              break;
            }
          }
        }
        if (grel) {
          if constexpr (d == 3) {
            if (a.need_d2)
              for (int64_t t2 = 0; t2 < a.nterms; ++t2) {
                const int32_t* pqk = a.terms + 3 * t2;
                const T c = coef[t2] * Gd2[pqk[2]];
                G[pqk[0]] += c * w.r[pqk[1]];
                G[pqk[1]] += c * w.r[pqk[0]];
              }
          }
          if (gdet != 0) {
            T cof[d * d];
            cofactor<T, d>(w.r, cof);
            for (int i = 0; i < d * d; ++i) G[i] += gdet * cof[i];
          }
          std::memcpy(grel + e * d * d, G, sizeof(T) * d * d);
        }
      }
      if (acc)
        for (int64_t k = 0; k < te; ++k) {
          T* row = acc + a.src[t0 + k] * D;
          const T* from = buf.data() + k * D;
          for (int64_t i = 0; i < D; ++i) row[i] += from[i];
        }
    }
  });
}

template <typename T>
int dispatch_forward(const Args& a, int d, void* out, int nthreads) {
  if (d == 3) forward<T, 3>(a, static_cast<T*>(out), nthreads);
  else if (d == 2) forward<T, 2>(a, static_cast<T*>(out), nthreads);
  else return 1;
  return 0;
}

template <typename T>
int dispatch_backward(const Args& a, int d, const void* g, void* gx, void* grel, int nthreads) {
  if (d == 3)
    backward<T, 3>(a, static_cast<const T*>(g), static_cast<T*>(gx), static_cast<T*>(grel),
                   nthreads);
  else if (d == 2)
    backward<T, 2>(a, static_cast<const T*>(g), static_cast<T*>(gx), static_cast<T*>(grel),
                   nthreads);
  else return 1;
  return 0;
}

}  // namespace

extern "C" {

// ABI version: tensorframes/reps/_kernel.py refuses a library that reports another one.
int tf_kernel_version() { return 1; }

// Ask for transparent huge pages on the 2 MiB-aligned interior of a fresh, untouched buffer.
// A new output of tens of MB otherwise costs one page fault per 4 KiB on first write, more than
// the frame change itself (measured: 70 ms single-threaded for 77 MB); with THP in "madvise"
// mode (the common default) one fault maps 2 MiB. A hint only: returns madvise's result.
int tf_advise_huge_pages(void* p, int64_t bytes) {
#ifdef MADV_HUGEPAGE
  const uintptr_t huge = uintptr_t(1) << 21;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + huge - 1) & ~(huge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + uintptr_t(bytes)) & ~(huge - 1);
  if (end <= begin) return 0;
  return madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p; (void)bytes;
  return 0;
#endif
}

// dtype: 0 float32, 1 float64. Returns 0 on success, 1 on an unsupported d / dtype.
int tf_frame_change_forward(int dtype, int d, const void* x, int64_t D, int64_t N,
                            const int64_t* src, const int64_t* dst, int64_t E,
                            const void* R_src, const void* R_dst, const void* rel, int64_t mode,
                            const int64_t* blocks, int64_t nblocks, const int32_t* terms,
                            const void* coef, int64_t nterms, int64_t need_det, int64_t need_d2,
                            void* out, int nthreads) {
  Args a{x, D, N, src, dst, E, R_src, R_dst, rel, mode, blocks, nblocks, terms, coef, nterms,
         need_det, need_d2};
  if (dtype == 0) return dispatch_forward<float>(a, d, out, nthreads);
  if (dtype == 1) return dispatch_forward<double>(a, d, out, nthreads);
  return 1;
}

// gx: nthreads accumulators of (N, D), zeroed by the caller (or null); grel: (E, d, d) or null.
int tf_frame_change_backward(int dtype, int d, const void* x, int64_t D, int64_t N,
                             const int64_t* src, const int64_t* dst, int64_t E,
                             const void* R_src, const void* R_dst, const void* rel, int64_t mode,
                             const int64_t* blocks, int64_t nblocks, const int32_t* terms,
                             const void* coef, int64_t nterms, int64_t need_det, int64_t need_d2,
                             const void* g, void* gx, void* grel, int nthreads) {
  Args a{x, D, N, src, dst, E, R_src, R_dst, rel, mode, blocks, nblocks, terms, coef, nterms,
         need_det, need_d2};
  if (dtype == 0) return dispatch_backward<float>(a, d, g, gx, grel, nthreads);
  if (dtype == 1) return dispatch_backward<double>(a, d, g, gx, grel, nthreads);
  return 1;
}

}  // extern "C"
