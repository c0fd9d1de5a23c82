// The arithmetic of LayerNormalization's native passes, a shard of rows at
// a time (the ops, their formulas and their shards: layer_norm_ops.cc).

#ifndef KERAS_LN_LAYERS_NATIVE_LAYER_NORM_H_
#define KERAS_LN_LAYERS_NATIVE_LAYER_NORM_H_

#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels.h"

namespace keras_ln {
namespace {

// Shards of the rows: one per kShardElements elements, at most kMaxShards,
// whole register blocks (ShardBound); a small input runs on one thread.
constexpr int64_t kShardElements = 1 << 15;

int64_t LayerNormShards(int64_t rows, int64_t features) {
  const int64_t by_size = rows * features / kShardElements;
  return std::max<int64_t>(
      1, std::min<int64_t>({kMaxShards, by_size, rows / kShardRows}));
}

// Two RowSums of one pass: the sums of a(j) and b(j) over j < n, for
// element-wise functions a and b of the element index, each in RowMean's
// order exactly (the same lanes, folds and tail), so each equals the
// RowSum of its values bit for bit; one sweep over the row instead of
// two, with no intermediate row written. `add(j, qa, qb)` adds a and b
// at j, j + 1, ..., j + 7 to qa and qb, a quarter (8 lanes) of each
// MeanLanes: a quarter at a time, the values of a 32-lane step never all
// live in registers at once (as whole 32-lane arrays the backward's
// spilled to the stack in an AVX2 build). The lanes' additions are
// RowSum's, lane for lane. `scalar(j)` returns the pair of scalars.
template <typename T, typename Add, typename Scalar>
std::pair<T, T> RowSums2(int64_t n, const Add& add, const Scalar& scalar) {
  MeanLanes<T> la, lb;
  int64_t j = ForMeanQuarters(n, [&](int64_t at, auto k) {
    constexpr int kQuarter = decltype(k)::value;
    add(at, la.template Quarter<kQuarter>(), lb.template Quarter<kQuarter>());
  });
  T sa = la.Fold(), sb = lb.Fold();
  for (; j < n; ++j) {
    const auto ab = scalar(j);
    sa += ab.first;
    sb += ab.second;
  }
  return {sa, sb};
}

// The two RowMeans of RowSums2's sums.
template <typename T, typename Add, typename Scalar>
std::pair<T, T> RowMeans2(int64_t n, const Add& add, const Scalar& scalar) {
  const auto [sa, sb] = RowSums2<T>(n, add, scalar);
  return {sa / T(n), sb / T(n)};
}

// The forward takes short rows a block at a time, each sweep over all the
// rows of the block before the next sweep: a row's sweeps are one chain
// (its mean, then its spread, then its scale and output), but the rows of
// a block are independent, so the processor overlaps their chains (a
// quarter less time for rows of 64 to 100 floats). Up to kPhaseRows rows
// and kPhaseBytes of input: a block of long rows would no longer stay in
// the first-level cache between its sweeps. Each row's operations and
// their order are those of one row at a time: the same bits.
constexpr int64_t kPhaseRows = 8;
constexpr int64_t kPhaseBytes = 4096;

template <typename T>
int64_t PhaseRows(int64_t features) {
  return std::max<int64_t>(
      1, std::min<int64_t>(kPhaseRows, kPhaseBytes / (features * int64_t(sizeof(T)))));
}

// Correctly rounded square roots of v[0, n), in place: vector instructions
// where the build has them, std::sqrt's bits. (The compiler does not
// vectorize std::sqrt itself, which may set errno; Eigen's AVX-512 square
// root is an approximation refined by Newton steps, not these bits.)
template <typename T>
EIGEN_ALWAYS_INLINE void SqrtInPlace(int64_t n, T* v) {
  int64_t k = 0;
#if defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    for (; k + 8 <= n; k += 8)
      _mm256_storeu_ps(v + k, _mm256_sqrt_ps(_mm256_loadu_ps(v + k)));
  } else if constexpr (std::is_same_v<T, double>) {
    for (; k + 4 <= n; k += 4)
      _mm256_storeu_pd(v + k, _mm256_sqrt_pd(_mm256_loadu_pd(v + k)));
  }
#endif
  for (; k < n; ++k) v[k] = std::sqrt(v[k]);
}

// The scale of each row of a block from its sums of d and d^2: the means
// dm (written to DM) and mean(d^2), rstd = 1 / sqrt(max(mean(d^2) - dm^2,
// 0) + eps) (to R), element-wise over the block's rows: vector divisions
// and square roots (correctly rounded, as the scalar ones: the same bits)
// where one row at a time was a chain of five scalar ones.
template <typename T>
EIGEN_ALWAYS_INLINE void RowScales(int64_t rows, T n, T eps,
                                   const T* __restrict sd,
                                   const T* __restrict sd2,
                                   T* __restrict DM, T* __restrict R) {
  T v[kPhaseRows];
  for (int64_t k = 0; k < rows; ++k) {
    const T dm = sd[k] / n, d2 = sd2[k] / n;
    DM[k] = dm;
    const T u = d2 - dm * dm;
    v[k] = std::max(u, T(0)) + eps;
  }
  SqrtInPlace(rows, v);
  for (int64_t k = 0; k < rows; ++k) R[k] = T(1) / v[k];
}

// Rows [r0, r1) of the forward pass of the (n, F) matrix X: Y, and each
// row's m1, dm and rstd in stats (3, n). g and b may be null (no scale or
// offset). Three sweeps over a row: m1; dm and mean(d^2) together
// (RowSums2); y. The operations and their order are those of the
// formulas in layer_norm_ops.cc, element by element (no fused
// multiply-adds: -ffp-contract=off).
template <typename T>
void LayerNormForwardRows(const T* X, const T* g, const T* b, T eps,
                          int64_t n, int64_t F, int64_t r0, int64_t r1,
                          T* Y, T* stats) {
  T *M1 = stats, *DM = stats + n, *R = stats + 2 * n;
  const int64_t block = PhaseRows<T>(F);
  T sd[kPhaseRows], sd2[kPhaseRows];
  for (int64_t i0 = r0; i0 < r1; i0 += block) {
    const int64_t i1 = std::min(r1, i0 + block);
    for (int64_t i = i0; i < i1; ++i) sd[i - i0] = RowSum(CRow<T>(X + i * F, F));
    for (int64_t i = i0; i < i1; ++i) M1[i] = sd[i - i0] / T(F);
    for (int64_t i = i0; i < i1; ++i) {
      const T* x = X + i * F;
      const T m1 = M1[i];
      std::tie(sd[i - i0], sd2[i - i0]) = RowSums2<T>(
          F,
          [&](int64_t j, auto& qa, auto& qb) {
            using A = Eigen::Array<T, 8, 1>;
            const A d = Eigen::Map<const A>(x + j) - m1;
            qa += d;
            qb += d.square();
          },
          [&](int64_t j) {
            const T d = x[j] - m1;
            return std::make_pair(d, d * d);
          });
    }
    RowScales<T>(i1 - i0, T(F), eps, sd, sd2, DM + i0, R + i0);
    for (int64_t i = i0; i < i1; ++i) {
      CRow<T> xv(X + i * F, F);
      const T m1 = M1[i], dm = DM[i], r = R[i];
      Row<T> yv(Y + i * F, F);
      if (g && b)
        yv = ((xv - m1) - dm) * r * CRow<T>(g, F) + CRow<T>(b, F);
      else if (g)
        yv = ((xv - m1) - dm) * r * CRow<T>(g, F);
      else if (b)
        yv = ((xv - m1) - dm) * r + CRow<T>(b, F);
      else
        yv = ((xv - m1) - dm) * r;
    }
  }
}

// Rows [r0, r1) of the backward pass: DX, and this shard's parts of
// dgamma (sg) and dbeta (sb), added to. g may be null. Two sweeps over a
// row, each recomputing xhat as the forward computed it (the same bits):
// the column sums with the two row means of g and g * xhat; dx.
template <bool kHasGamma, typename T>
void LayerNormBackwardRowsImpl(const T* DY, const T* X, const T* stats,
                               const T* g, int64_t n, int64_t F, int64_t r0,
                               int64_t r1, T* DX, T* sg, T* sb) {
  const T *M1 = stats, *DM = stats + n, *R = stats + 2 * n;
  for (int64_t i = r0; i < r1; ++i) {
    const T *x = X + i * F, *dy = DY + i * F;
    const T m1 = M1[i], dm = DM[i], r = R[i];
    // The row means of g and g * xhat and the column sums (element-wise:
    // their order is the rows', whatever the vector width) in one sweep.
    const auto [mg, mgx] = RowMeans2<T>(
        F,
        [&](int64_t j, auto& qa, auto& qb) {
          using A = Eigen::Array<T, 8, 1>;
          const A xh = ((Eigen::Map<const A>(x + j) - m1) - dm) * r;
          const A d = Eigen::Map<const A>(dy + j);
          Eigen::Map<A>(sg + j) += d * xh;
          Eigen::Map<A>(sb + j) += d;
          A gv;
          if constexpr (kHasGamma)
            gv = d * Eigen::Map<const A>(g + j);
          else
            gv = d;
          qa += gv;
          qb += gv * xh;
        },
        [&](int64_t j) {
          const T xh = ((x[j] - m1) - dm) * r;
          sg[j] += dy[j] * xh;
          sb[j] += dy[j];
          const T gv = kHasGamma ? dy[j] * g[j] : dy[j];
          return std::make_pair(gv, gv * xh);
        });
    const auto xh = ((CRow<T>(x, F) - m1) - dm) * r;
    Row<T> dx(DX + i * F, F);
    if constexpr (kHasGamma)
      dx = r * ((CRow<T>(dy, F) * CRow<T>(g, F) - mg) - xh * mgx);
    else
      dx = r * ((CRow<T>(dy, F) - mg) - xh * mgx);
  }
}

// The branch on the scale taken once, not in every vector of a row.
template <typename T>
void LayerNormBackwardRows(const T* DY, const T* X, const T* stats,
                           const T* g, int64_t n, int64_t F, int64_t r0,
                           int64_t r1, T* DX, T* sg, T* sb) {
  if (g)
    LayerNormBackwardRowsImpl<true>(DY, X, stats, g, n, F, r0, r1, DX, sg, sb);
  else
    LayerNormBackwardRowsImpl<false>(DY, X, stats, g, n, F, r0, r1, DX, sg, sb);
}

}  // namespace
}  // namespace keras_ln

#endif  // KERAS_LN_LAYERS_NATIVE_LAYER_NORM_H_
