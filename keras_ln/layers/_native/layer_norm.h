// The arithmetic of LayerNormalization's native passes, a shard of rows at
// a time (the ops, their formulas and their shards: layer_norm_ops.cc).

#ifndef KERAS_LN_LAYERS_NATIVE_LAYER_NORM_H_
#define KERAS_LN_LAYERS_NATIVE_LAYER_NORM_H_

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

// Two RowMeans of one pass: the sums of a(j) and b(j) over j < n, for
// element-wise functions a and b of the element index, each in RowMean's
// order exactly (the same lanes, folds and tail), so each equals the
// RowMean of its values bit for bit; one sweep over the row instead of
// two, with no intermediate row written. `add(j, L, la, lb)` adds the
// fixed-size (L) arrays a and b at j to la and lb, the first L of the
// lanes (MeanLanes::Add, in place: returned by value in a pair, they went
// through the stack in an AVX2 build); `scalar(j)` returns the pair of
// scalars.
template <typename T, typename Add, typename Scalar>
std::pair<T, T> RowMeans2(int64_t n, const Add& add, const Scalar& scalar) {
  MeanLanes<T> la, lb;
  int64_t j = 0;
  for (; j + kMeanLanes <= n; j += kMeanLanes)
    add(j, std::integral_constant<int, kMeanLanes>(), la, lb);
  if (j + kMeanLanes / 2 <= n) {
    add(j, std::integral_constant<int, kMeanLanes / 2>(), la, lb);
    j += kMeanLanes / 2;
  }
  T sa = la.Fold(), sb = lb.Fold();
  for (; j < n; ++j) {
    const auto ab = scalar(j);
    sa += ab.first;
    sb += ab.second;
  }
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

// Rows [r0, r1) of the forward pass of the (n, F) matrix X: Y, and each
// row's m1, dm and rstd in stats (3, n). g and b may be null (no scale or
// offset). Three sweeps over a row: m1; dm and mean(d^2) together
// (RowMeans2); y. The operations and their order are those of the
// formulas in layer_norm_ops.cc, element by element (no fused
// multiply-adds: -ffp-contract=off).
template <typename T>
void LayerNormForwardRows(const T* X, const T* g, const T* b, T eps,
                          int64_t n, int64_t F, int64_t r0, int64_t r1,
                          T* Y, T* stats) {
  T *M1 = stats, *DM = stats + n, *R = stats + 2 * n;
  const int64_t block = PhaseRows<T>(F);
  for (int64_t i0 = r0; i0 < r1; i0 += block) {
    const int64_t i1 = std::min(r1, i0 + block);
    for (int64_t i = i0; i < i1; ++i) M1[i] = RowMean(CRow<T>(X + i * F, F));
    for (int64_t i = i0; i < i1; ++i) {
      const T* x = X + i * F;
      const T m1 = M1[i];
      const auto [dm, d2] = RowMeans2<T>(
          F,
          [&](int64_t j, auto L, auto& la, auto& lb) {
            constexpr int kL = decltype(L)::value;
            using A = Eigen::Array<T, kL, 1>;
            const A d = Eigen::Map<const A>(x + j) - m1;
            la.template Add<kL>(d);
            lb.template Add<kL>(d.square());
          },
          [&](int64_t j) {
            const T d = x[j] - m1;
            return std::make_pair(d, d * d);
          });
      DM[i] = dm;
      const T var = std::max(d2 - dm * dm, T(0));
      R[i] = T(1) / std::sqrt(var + eps);
    }
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
template <typename T>
void LayerNormBackwardRows(const T* DY, const T* X, const T* stats,
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
        [&](int64_t j, auto L, auto& la, auto& lb) {
          constexpr int kL = decltype(L)::value;
          using A = Eigen::Array<T, kL, 1>;
          const A xh = ((Eigen::Map<const A>(x + j) - m1) - dm) * r;
          const A d = Eigen::Map<const A>(dy + j);
          Eigen::Map<A>(sg + j) += d * xh;
          Eigen::Map<A>(sb + j) += d;
          const A gv = g ? A(d * Eigen::Map<const A>(g + j)) : d;
          la.template Add<kL>(gv);
          lb.template Add<kL>(gv * xh);
        },
        [&](int64_t j) {
          const T xh = ((x[j] - m1) - dm) * r;
          sg[j] += dy[j] * xh;
          sb[j] += dy[j];
          const T gv = g ? dy[j] * g[j] : dy[j];
          return std::make_pair(gv, gv * xh);
        });
    const auto xh = ((CRow<T>(x, F) - m1) - dm) * r;
    Row<T> dx(DX + i * F, F);
    if (g)
      dx = r * ((CRow<T>(dy, F) * CRow<T>(g, F) - mg) - xh * mgx);
    else
      dx = r * ((CRow<T>(dy, F) - mg) - xh * mgx);
  }
}

}  // namespace
}  // namespace keras_ln

#endif  // KERAS_LN_LAYERS_NATIVE_LAYER_NORM_H_
