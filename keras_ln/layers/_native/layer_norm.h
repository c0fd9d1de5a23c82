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
      1, std::min<int64_t>({kMaxShards, by_size, rows / kRowBlock}));
}

// Two RowMeans of one pass: the sums of a(j) and b(j) over j < n, for
// element-wise functions a and b of the element index, each in RowMean's
// order exactly (the same lanes, folds and tail), so each equals the
// RowMean of its values bit for bit; one sweep over the row instead of
// two, with no intermediate row written. `chunk(j, L)` returns the pair of
// fixed-size (L) arrays (a, b) at j; `scalar(j)` the pair of scalars.
template <typename T, typename Chunk, typename Scalar>
std::pair<T, T> RowMeans2(int64_t n, const Chunk& chunk, const Scalar& scalar) {
  using Lanes = Eigen::Array<T, kMeanLanes, 1>;
  Lanes la = Lanes::Zero(), lb = Lanes::Zero();
  int64_t j = 0;
  for (; j + kMeanLanes <= n; j += kMeanLanes) {
    const auto ab = chunk(j, std::integral_constant<int, kMeanLanes>());
    la += ab.first;
    lb += ab.second;
  }
  if (j + kMeanLanes / 2 <= n) {
    const auto ab = chunk(j, std::integral_constant<int, kMeanLanes / 2>());
    la.template head<kMeanLanes / 2>() += ab.first;
    lb.template head<kMeanLanes / 2>() += ab.second;
    j += kMeanLanes / 2;
  }
  T sa = FoldMeanLanes(la), sb = FoldMeanLanes(lb);
  for (; j < n; ++j) {
    const auto ab = scalar(j);
    sa += ab.first;
    sb += ab.second;
  }
  return {sa / T(n), sb / T(n)};
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
  for (int64_t i = r0; i < r1; ++i) {
    const T* x = X + i * F;
    CRow<T> xv(x, F);
    const T m1 = M1[i] = RowMean(xv);
    const auto [dm, d2] = RowMeans2<T>(
        F,
        [&](int64_t j, auto L) {
          using A = Eigen::Array<T, decltype(L)::value, 1>;
          const A d = Eigen::Map<const A>(x + j) - m1;
          return std::make_pair(d, A(d.square()));
        },
        [&](int64_t j) {
          const T d = x[j] - m1;
          return std::make_pair(d, d * d);
        });
    DM[i] = dm;
    const T var = std::max(d2 - dm * dm, T(0));
    const T r = R[i] = T(1) / std::sqrt(var + eps);
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

// Rows [r0, r1) of the backward pass: DX, and this shard's parts of
// dgamma (sg) and dbeta (sb), added to. g may be null. Three sweeps over
// a row, each recomputing xhat as the forward computed it (the same bits):
// the column sums; the two row means of g and g * xhat together; dx.
template <typename T>
void LayerNormBackwardRows(const T* DY, const T* X, const T* stats,
                           const T* g, int64_t n, int64_t F, int64_t r0,
                           int64_t r1, T* DX, T* sg, T* sb) {
  const T *M1 = stats, *DM = stats + n, *R = stats + 2 * n;
  for (int64_t i = r0; i < r1; ++i) {
    const T *x = X + i * F, *dy = DY + i * F;
    const T m1 = M1[i], dm = DM[i], r = R[i];
    // The column sums, in one sweep (element-wise: their order is the
    // rows', whatever the vector width).
    {
      CRow<T> d(dy, F);
      const auto xh = ((CRow<T>(x, F) - m1) - dm) * r;
      Row<T>(sg, F) += d * xh;
      Row<T>(sb, F) += d;
    }
    const auto [mg, mgx] = RowMeans2<T>(
        F,
        [&](int64_t j, auto L) {
          using A = Eigen::Array<T, decltype(L)::value, 1>;
          const A xh = ((Eigen::Map<const A>(x + j) - m1) - dm) * r;
          const A d = Eigen::Map<const A>(dy + j);
          const A gv = g ? A(d * Eigen::Map<const A>(g + j)) : d;
          return std::make_pair(gv, A(gv * xh));
        },
        [&](int64_t j) {
          const T xh = ((x[j] - m1) - dm) * r;
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
