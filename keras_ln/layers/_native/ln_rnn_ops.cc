// The LN-LSTM, LN-GRU and BatchNormLSTM recurrences as TensorFlow custom
// ops, one op for the whole forward loop and one for the whole
// backward-through-time loop (the optional native part of the TensorFlow
// fast path; see keras_ln/layers/_native/__init__.py), like cuDNN's RNN
// kernels. The BatchNormLSTM ops, whose batch statistics couple the rows,
// are described at their section below; this header describes the LN ops.
//
// Before the loop, as cuDNN does, the input projection x @ W of all time
// steps is one large matrix product, normalized row by row in one pass.
// Each step is then one product, h_{t-1} @ U_c, and one fused pass over
// each batch row: the normalization of the recurrent projection, the gates,
// the cell update and its normalization, the mask blend. The backward pass
// does the whole step's gradient plus the column sums of the norm
// parameters' gradients in one pass per step; the gradients of the
// recurrent kernel and of the input side (x, W and the input norm) are
// large products after the loop. The forward op saves the activations the
// backward op needs (the normalized input projection among them), so the
// backward recomputes nothing.
//
// The batch rows of a recurrence are independent, so both loops run as
// shards of the batch (see NumShards), with no synchronization
// between steps; the products are this file's own kernels (see
// "products").
// Equations: keras_ln/layers/_tf_recurrent_kernels.py.
//
// Conventions shared with the Python side:
// - `r` is h_prev @ U_c with U_c the recurrent kernel centered over its
//   output axis, so its LN needs no mean: rhat = r * rsqrt(mean(r^2) + eps).
// - `xp` = LN(x_t @ W) * gx + bx = xhat * gx + bx, where the caller folds
//   the biases (and, for the LSTM, the recurrent norm's beta) into bx.
// - LSTM: the candidate block is pre-scaled by 2 (in gx, bx and gr) and
//   computed as 2 * sigmoid(.) - 1 = tanh(.), so one sigmoid covers all four
//   blocks.
// - A masked step keeps the states and outputs the previous output (zeros
//   with zero_output), as keras' backend.rnn does.

#define EIGEN_USE_THREADS

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "Eigen/Core"

namespace keras_ln {
namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;

template <typename T>
using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
template <typename T>
using Row = Eigen::Map<Arr<T>>;
template <typename T>
using CRow = Eigen::Map<const Arr<T>>;
// Row-major (rows, columns) blocks: local ones, and views of a buffer with
// a row stride (Blk, CBlk: data, rows, columns, stride).
template <typename T>
using Mat = Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using RowA = Eigen::Array<T, 1, Eigen::Dynamic>;
template <typename T>
using CCol = Eigen::Map<const Arr<T>>;
template <typename T>
struct Blk : Eigen::Map<Mat<T>, 0, Eigen::OuterStride<>> {
  using Base = Eigen::Map<Mat<T>, 0, Eigen::OuterStride<>>;
  Blk(T* p, int64_t rows, int64_t cols, int64_t stride)
      : Base(p, rows, cols, Eigen::OuterStride<>(stride)) {}
  using Base::operator=;
};
template <typename T>
struct CBlk : Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>> {
  using Base = Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>>;
  CBlk(const T* p, int64_t rows, int64_t cols, int64_t stride)
      : Base(p, rows, cols, Eigen::OuterStride<>(stride)) {}
};

// sigmoid(x) = (1 + tanh(x / 2)) / 2: Eigen's vectorized tanh is about
// twice as fast as its logistic, and as accurate in float32.
template <typename Derived>
auto Sigmoid(const Eigen::ArrayBase<Derived>& x) {
  using T = typename Derived::Scalar;
  return (x * T(0.5)).tanh() * T(0.5) + T(0.5);
}

// ------------------------------------------------------------- products
//
// All products are written here rather than called from a BLAS: the
// per-step ones, h_{t-1} @ U_c forward and dr_t @ U_c^T backward, are small
// ((rows, u) @ (u, G)) with a fixed right-hand side, which a BLAS repacks on
// every call (about a third of its time there), and the large ones run
// inside the ops' own shards (below), where a threaded BLAS would compete
// with them for the cores. Register-blocked kernels are written with GCC
// vector extensions, which compile to the widest vectors the build enables
// (AVX-512 where the CPU has it; see __init__.py).
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
constexpr int kRowBlock = 8;  // 8 x 2 accumulators of the 32 registers
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
constexpr int kRowBlock = 4;  // 4 x 2 of 16
#else
constexpr int kVectorBytes = 16;
constexpr int kRowBlock = 4;
#endif

template <typename T>
struct Vectors {
  static constexpr int kLanes = kVectorBytes / sizeof(T);
  static constexpr int kPerTile = 2;  // vectors per row of a register tile
  static constexpr int kPanel = kLanes * kPerTile;  // columns of a tile
  typedef T V __attribute__((vector_size(kVectorBytes)));
  // The same vector at any element-aligned address.
  typedef T VU
      __attribute__((vector_size(kVectorBytes), aligned(sizeof(T))));

  static V Load(const T* p) { return *reinterpret_cast<const VU*>(p); }
  static void Store(T* p, V v) { *reinterpret_cast<VU*>(p) = v; }

  // Loads the first `cols` (< kPanel) elements of p into a zero-padded tile
  // row.
  static void LoadPartial(const T* p, int64_t cols, V out[kPerTile]) {
    T row[kPanel] = {};
    std::copy_n(p, cols, row);
    for (int j = 0; j < kPerTile; ++j) out[j] = Load(row + j * kLanes);
  }

  // Stores acc (+ d, unless null) to the first `cols` columns of c.
  static void StoreRow(const V acc[kPerTile], int64_t cols, const T* d,
                       T* c) {
    if (cols == kPanel) {
      for (int j = 0; j < kPerTile; ++j)
        Store(c + j * kLanes, d ? acc[j] + Load(d + j * kLanes) : acc[j]);
      return;
    }
    T row[kPanel];
    for (int j = 0; j < kPerTile; ++j) Store(row + j * kLanes, acc[j]);
    for (int64_t j = 0; j < cols; ++j) c[j] = d ? row[j] + d[j] : row[j];
  }
};

// Calls tile.template Run<MR>(i) over rows [0, m) in blocks of MR =
// kRowBlock, then 2, then 1.
template <typename Tile>
void ForRowBlocks(int64_t m, const Tile& tile) {
  int64_t i = 0;
  for (; i + kRowBlock <= m; i += kRowBlock) tile.template Run<kRowBlock>(i);
  for (; i + 2 <= m; i += 2) tile.template Run<2>(i);
  if (i < m) tile.template Run<1>(i);
}

// A fixed right-hand side (k, n), packed once into panels of kPanel columns
// (panel q: columns [q * kPanel, q * kPanel + kPanel), row after row,
// zero-padded), for many products a @ B.
template <typename T>
class PackedMatrix {
  using Vec = Vectors<T>;
  using V = typename Vec::V;
  static constexpr int kPanel = Vec::kPanel;

 public:
  // Packs the row-major (k, n) matrix b, or with `trans` the transpose of
  // the row-major (n, k) matrix b.
  PackedMatrix(const T* b, int64_t k, int64_t n, bool trans)
      : k_(k), n_(n), p_((n + kPanel - 1) / kPanel * kPanel * k) {
    for (int64_t q = 0; q * kPanel < n; ++q)
      for (int64_t kk = 0; kk < k; ++kk)
        for (int j = 0; j < kPanel; ++j) {
          const int64_t col = q * kPanel + j;
          p_[(q * k + kk) * kPanel + j] =
              col >= n ? T(0) : trans ? b[col * k + kk] : b[kk * n + col];
        }
  }

  // c (m, n) = a (m, k) @ B, plus d (m, n) unless it is null; all row-major
  // and dense. c must not alias a or d.
  void Multiply(int64_t m, const T* a, T* c, const T* d) const {
    for (int64_t col = 0; col < n_; col += kPanel)
      ForRowBlocks(m, Tile{this, a, c, d, col});
  }

 private:
  struct Tile {
    const PackedMatrix* B;
    const T *a;
    T* c;
    const T* d;
    int64_t col;

    // Rows [i, i + MR) of a times the panel at `col`. The accumulators stay
    // in registers: nothing takes their address.
    template <int MR>
    void Run(int64_t i) const {
      const int64_t k = B->k_, n = B->n_;
      const T* panel = B->p_.data() + col * k;
      const T* ai = a + i * k;
      V acc[MR][Vec::kPerTile];
      for (int r = 0; r < MR; ++r)
        for (int j = 0; j < Vec::kPerTile; ++j) acc[r][j] = V{};
      for (int64_t kk = 0; kk < k; ++kk) {
        V b[Vec::kPerTile];
        for (int j = 0; j < Vec::kPerTile; ++j)
          b[j] = Vec::Load(panel + kk * kPanel + j * Vec::kLanes);
        for (int r = 0; r < MR; ++r) {
          const T s = ai[r * k + kk];
          for (int j = 0; j < Vec::kPerTile; ++j) acc[r][j] += s * b[j];
        }
      }
      const int64_t cols = std::min<int64_t>(kPanel, n - col);
      for (int r = 0; r < MR; ++r)
        Vec::StoreRow(acc[r], cols, d ? d + (i + r) * n + col : nullptr,
                      c + (i + r) * n + col);
    }
  };

  int64_t k_, n_;
  std::vector<T> p_;
};

// One register tile of AddTransposedProduct: rows [i, i + MR) of c, the
// panel of columns at `col`.
template <typename T>
struct TransposedTile {
  using Vec = Vectors<T>;
  using V = typename Vec::V;
  int64_t rows, n, lda, ldb, col;
  const T *a, *b;
  T* c;

  template <int MR>
  void Run(int64_t i) const {
    if (n - col >= Vec::kPanel)
      Accumulate<MR, true>(i);
    else
      Accumulate<MR, false>(i);
  }

 private:
  // Full: the panel has kPanel columns (loads straight from b's rows; in
  // the other case each row is first copied to a padded buffer).
  template <int MR, bool Full>
  void Accumulate(int64_t i) const {
    const int64_t rows = this->rows, lda = this->lda, ldb = this->ldb;
    const int64_t cols = std::min<int64_t>(Vec::kPanel, n - col);
    const T* a = this->a + i;
    const T* b = this->b + col;
    V acc[MR][Vec::kPerTile];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < Vec::kPerTile; ++j) acc[r][j] = V{};
    for (int64_t kk = 0; kk < rows; ++kk) {
      V bv[Vec::kPerTile];
      if (Full) {
        for (int j = 0; j < Vec::kPerTile; ++j)
          bv[j] = Vec::Load(b + kk * ldb + j * Vec::kLanes);
      } else {
        Vec::LoadPartial(b + kk * ldb, cols, bv);
      }
      for (int r = 0; r < MR; ++r) {
        const T s = a[kk * lda + r];
        for (int j = 0; j < Vec::kPerTile; ++j) acc[r][j] += s * bv[j];
      }
    }
    for (int r = 0; r < MR; ++r) {
      T* cr = c + (i + r) * n + col;
      Vec::StoreRow(acc[r], cols, cr, cr);
    }
  }
};

// c (m, n) += a^T @ b over `rows` rows: a (rows, m) and b (rows, n)
// row-major with leading dimensions lda and ldb, c dense. The weight
// gradients (dU = sum h_{t-1}^T dr_t, dW = x^T dxz) are such sums over the
// (time * batch) rows; b needs no packing, its rows are read as they are.
template <typename T>
void AddTransposedProduct(int64_t rows, int64_t m, int64_t n, const T* a,
                          int64_t lda, const T* b, int64_t ldb, T* c) {
  // Blocks of rows small enough for the block of b to stay in cache while
  // every row block of c passes over it.
  constexpr int64_t kRows = 256;
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t nr = std::min(kRows, rows - r0);
    for (int64_t col = 0; col < n; col += Vectors<T>::kPanel)
      ForRowBlocks(m, TransposedTile<T>{nr, n, lda, ldb, col, a + r0 * lda,
                                        b + r0 * ldb, c});
  }
}

// The rows of a recurrence are independent (row b of h_t depends on row b
// of h_{t-1} only), so the loops split the batch into shards that run the
// whole loop over their rows concurrently, with no synchronization between
// steps; the input side and the weight gradients are split the same way
// over their (time * batch) rows. By default (requested = 0, the ops'
// `shards` attribute) the number of shards depends on the row count only,
// never on the machine's thread count: one per kMinShardRows rows, at most
// kMaxShards. The shards are whole register tiles, and sums over them are
// added up in shard order, so the results are the same under any load and
// with any number of threads.
constexpr int64_t kMinShardRows = 16;
constexpr int64_t kMaxShards = 8;

int64_t NumShards(int64_t rows, int64_t requested) {
  if (requested > 0) return requested;
  return std::max<int64_t>(
      1, std::min<int64_t>(kMaxShards, rows / kMinShardRows));
}

// Calls fn(shard, begin, end) for each of the `shards` shards of the rows,
// concurrently.
void ForShards(OpKernelContext* ctx, int64_t rows, int64_t shards,
               const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  auto bound = [&](int64_t s) {
    const int64_t b = (rows * s / shards + kRowBlock - 1) / kRowBlock;
    return std::min(rows, b * kRowBlock);
  };
  if (shards <= 1) {
    fn(0, 0, rows);
    return;
  }
  ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
      shards, tsl::thread::ThreadPool::SchedulingParams::Fixed(1),
      [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) fn(s, bound(s), bound(s + 1));
      });
}

// Each shard's part of a sum (a weight or norm gradient), added up in
// shard order after the shards ran: the same result whatever order they
// finish in. Eigen's vectorized passes over a buffer start with scalar
// steps up to its first aligned element, and a scalar step can round
// differently from a vector one (fused multiply-adds, tanh): so every part
// starts on an EIGEN_MAX_ALIGN_BYTES boundary (Eigen's own allocation, each
// part padded to whole vectors), never on an address malloc happened to
// return.
template <typename T>
struct ShardSums {
  static constexpr int64_t kAlign = EIGEN_MAX_ALIGN_BYTES / sizeof(T);
  int64_t size, stride;
  Arr<T> parts;

  ShardSums(int64_t shards, int64_t size)
      : size(size),
        stride((size + kAlign - 1) / kAlign * kAlign),
        parts(Arr<T>::Zero(shards * stride)) {}
  T* operator[](int64_t shard) { return parts.data() + shard * stride; }
  void Total(T* out) const {
    std::fill_n(out, size, T(0));
    for (int64_t s = 0; s < parts.size(); s += stride)
      for (int64_t i = 0; i < size; ++i) out[i] += parts[s + i];
  }
};

// The input side, for all time steps at once before the recurrent loop (as
// cuDNN does): xz = x @ W over the (time * batch) rows, normalized over its
// G columns, xhat = (xz - mean) * rstd; the steps read xp = xhat * gx + bx.
// The forward saves xhat and each row's rstd; the backward, after
// the loop, takes the gradients of x, W, gx and bx from every step's
// dL/dxp. Both split the rows over the shards.
template <typename T>
struct InputNorm {
  int64_t F, G;
  T eps;
  const T *x, *w, *gx;
  int64_t shards;  // requested, as NumShards takes it

  // From the ops' inputs x (time, batch, F), w (F, G) and gx (G).
  static InputNorm Of(const Tensor& x, const Tensor& w, const Tensor& gx,
                      T eps, int64_t shards) {
    return {x.dim_size(2),      w.dim_size(1),       eps,   x.flat<T>().data(),
            w.flat<T>().data(), gx.flat<T>().data(), shards};
  }

  // xhat (n, G) <- the normalized projection of the n rows of x; rstd (n)
  // <- their 1 / std.
  void Forward(OpKernelContext* ctx, int64_t n, T* xhat, T* rstd) const {
    const PackedMatrix<T> W(w, F, G, false);
    ForShards(ctx, n, NumShards(n, shards), [&](int64_t, int64_t r0,
                                                     int64_t r1) {
      for (int64_t c0 = r0; c0 < r1; c0 += kChunk) {
        const int64_t c1 = std::min(r1, c0 + kChunk);
        W.Multiply(c1 - c0, x + c0 * F, xhat + c0 * G, nullptr);
        for (int64_t i = c0; i < c1; ++i) {
          Row<T> v(xhat + i * G, G);
          const T mu = v.mean();
          rstd[i] = T(1) / std::sqrt((v - mu).square().mean() + eps);
          v = (v - mu) * rstd[i];
        }
      }
    });
  }

  // After a backward loop, over the n = time * batch rows: dz (n, G),
  // dL/dxp; xhat and rstd, saved by the forward. Adds the recurrent kernel's
  // gradient dU (u, G) = sum_t h_{t-1}^T dr_t, with HS the carried states
  // and DR (n, G) every step's dL/dr; DR is then the input side's scratch.
  // Writes dx (n, F), dw (F, G), dgx and dbx (G).
  void Backward(OpKernelContext* ctx, int64_t n, int64_t B, int64_t u,
                const T* h0, const T* HS, T* DR, T* dU, const T* dz,
                const T* xhat, const T* rstd, T* dx, T* dw, T* dgx,
                T* dbx) const {
    const PackedMatrix<T> Wt(w, G, F, true);
    const int64_t parts = NumShards(n, shards);
    ShardSums<T> sdu(parts, u * G), sdw(parts, F * G), sgx(parts, G),
        sbx(parts, G);
    CRow<T> g(gx, G);
    ForShards(ctx, n, parts, [&](int64_t s, int64_t r0, int64_t r1) {
      Arr<T> dxh(G);
      Row<T> sg(sgx[s], G), sb(sbx[s], G);
      for (int64_t c0 = r0; c0 < r1; c0 += kChunk) {
        const int64_t c1 = std::min(r1, c0 + kChunk);
        // dU: rows of the first step pair with h0, the others with the
        // previous step's states.
        const int64_t split = std::min(std::max(c0, B), c1);
        if (split > c0)
          AddTransposedProduct(split - c0, u, G, h0 + c0 * u, u, DR + c0 * G,
                               G, sdu[s]);
        if (c1 > split)
          AddTransposedProduct(c1 - split, u, G, HS + (split - B) * u, u,
                               DR + split * G, G, sdu[s]);
        // dr of these rows is no longer needed: dL/dxz goes there.
        for (int64_t i = c0; i < c1; ++i) {
          CRow<T> d(dz + i * G, G), xh(xhat + i * G, G);
          sg += d * xh;
          sb += d;
          dxh = d * g;
          const T m1 = dxh.mean(), m2 = (dxh * xh).mean();
          Row<T>(DR + i * G, G) = rstd[i] * (dxh - m1 - xh * m2);
        }
        const T* dxz = DR + c0 * G;
        Wt.Multiply(c1 - c0, dxz, dx + c0 * F, nullptr);
        AddTransposedProduct(c1 - c0, F, G, x + c0 * F, F, dxz, G, sdw[s]);
      }
    });
    sdu.Total(dU);
    sdw.Total(dw);
    sgx.Total(dgx);
    sbx.Total(dbx);
  }

 private:
  // Rows per pass: the chunk's (rows, G) block stays in cache from its
  // product to its normalization.
  static constexpr int64_t kChunk = 64;
};

// Common checks of the sequence ops; sets T (time), B (batch), u (units)
// and G (gate width, blocks * u).
void CheckSequence(OpKernelContext* ctx, const Tensor& x, const Tensor& w,
                   const Tensor& h0, const Tensor& kernel, const Tensor& mask,
                   bool masked, int blocks, int64_t* T, int64_t* B,
                   int64_t* u, int64_t* G) {
  OP_REQUIRES(ctx, h0.dims() == 2,
              InvalidArgument("states must be (batch, units), got ",
                              h0.shape().DebugString()));
  *B = h0.dim_size(0);
  *u = h0.dim_size(1);
  *G = blocks * *u;
  OP_REQUIRES(ctx, x.dims() == 3 && x.dim_size(1) == *B,
              InvalidArgument("sequence must be (time, ", *B,
                              ", features), got ", x.shape().DebugString()));
  *T = x.dim_size(0);
  const int64_t F = x.dim_size(2);
  OP_REQUIRES(ctx, w.shape() == TensorShape({F, *G}),
              InvalidArgument("input kernel must be (", F, ", ", *G,
                              "), got ", w.shape().DebugString()));
  OP_REQUIRES(ctx, kernel.shape() == TensorShape({*u, *G}),
              InvalidArgument("kernel must be (", *u, ", ", *G, "), got ",
                              kernel.shape().DebugString()));
  if (masked) {
    OP_REQUIRES(ctx, mask.NumElements() == *T * *B,
                InvalidArgument("mask must have time*batch elements, got ",
                                mask.shape().DebugString()));
  }
}

void CheckShape(OpKernelContext* ctx, const char* name, const Tensor& v,
                const TensorShape& want) {
  OP_REQUIRES(ctx, v.shape() == want,
              InvalidArgument(name, " must be ", want.DebugString(), ", got ",
                              v.shape().DebugString()));
}

// Input i, copied to an aligned buffer where TensorFlow hands over an
// unaligned one (a slice), for the reason given at ShardSums: the rows of
// every buffer then start at the same offsets from an aligned address.
Tensor AlignedInput(OpKernelContext* ctx, int i) {
  const Tensor& t = ctx->input(i);
  if (t.IsAligned() || t.NumElements() == 0) return t;
  Tensor copy;
  const auto status = ctx->allocate_temp(t.dtype(), t.shape(), &copy);
  if (!status.ok()) {
    ctx->SetStatus(status);
    return t;
  }
  std::memcpy(copy.data(), t.data(), t.TotalBytes());
  return copy;
}

// The attributes the four ops share (the forward ops also read epsilon).
class SequenceOp : public OpKernel {
 protected:
  SequenceOp(OpKernelConstruction* c, bool forward) : OpKernel(c) {
    if (forward) OP_REQUIRES_OK(c, c->GetAttr("epsilon", &eps_));
    OP_REQUIRES_OK(c, c->GetAttr("masked", &masked_));
    OP_REQUIRES_OK(c, c->GetAttr("zero_output", &zero_output_));
    OP_REQUIRES_OK(c, c->GetAttr("shards", &shards_));
    OP_REQUIRES(c, shards_ >= 0,
                InvalidArgument("shards must be >= 0, got ", shards_));
  }

  static Tensor Input(OpKernelContext* ctx, int i) {
    return AlignedInput(ctx, i);
  }

  float eps_ = 0;
  bool masked_ = false, zero_output_ = false;
  int64_t shards_ = 0;
};

// ------------------------------------------------------------------ LSTM
//
// Saved per step for the backward: r (B, 4u) = h_prev @ U_c, the gates
// (B, 4u, after the sigmoid) and (B, 2u + 2): chat, tanh(chat * gs + bs),
// rstd_r, rstd_c.

template <typename T>
struct LstmStep {
  int64_t u;
  T eps;
  const T *gx, *bx, *gr, *gs, *bs;
  bool zero_output;

  // One forward step for rows [b0, b1). X (xhat), R: (B, 4u) of this step;
  // H, C, Y: the carried states and the previous output; M: this step's
  // mask or null. Writes the new H, C, Y (HO, CO, YO) and the saved A, S.
  void Forward(int64_t b0, int64_t b1, const T* X, const T* R, const T* H,
               const T* C, const T* Y, const bool* M, T* HO, T* CO, T* YO,
               T* A, T* S) const {
    const int64_t G = 4 * u, W = 2 * u + 2;
    CRow<T> gxv(gx, G), bxv(bx, G), grv(gr, G), gsv(gs, u), bsv(bs, u);
    for (int64_t b = b0; b < b1; ++b) {
      Row<T> ho(HO + b * u, u), co(CO + b * u, u), yo(YO + b * u, u);
      Row<T> a(A + b * G, G), chat(S + b * W, u), th(S + b * W + u, u);
      if (M && !M[b]) {
        ho = CRow<T>(H + b * u, u);
        co = CRow<T>(C + b * u, u);
        if (zero_output)
          yo.setZero();
        else
          yo = CRow<T>(Y + b * u, u);
        a.setZero();
        Row<T>(S + b * W, W).setZero();
        continue;
      }
      CRow<T> rv(R + b * G, G), xv(X + b * G, G), cv(C + b * u, u);
      const T rstd_r = T(1) / std::sqrt(rv.square().mean() + eps);
      a = Sigmoid(xv * gxv + bxv + rv * rstd_r * grv);
      co = a.segment(u, u) * cv +
           a.head(u) * (T(2) * a.segment(2 * u, u) - T(1));
      const T mu = co.mean();
      const T rstd_c = T(1) / std::sqrt((co - mu).square().mean() + eps);
      chat = (co - mu) * rstd_c;
      th = (chat * gsv + bsv).tanh();
      ho = a.tail(u) * th;
      yo = ho;
      S[b * W + 2 * u] = rstd_r;
      S[b * W + 2 * u + 1] = rstd_c;
    }
  }

  // One backward step for rows [b0, b1). In: the saved A, S, R of this
  // step, CP = c_{t-1}, DYS = dL/dy_t, DH = dL/dh_t (all of it), DC, DY
  // (what masked later steps passed back through their outputs). Out: DZ
  // (dL/dxp_t), DR (dL/dr_t), DHS (the part of dL/dh_{t-1} that does not go
  // through r_t), DCO, DYO; adds the norm gradients to sgr, sgs, sbs.
  void Backward(int64_t b0, int64_t b1, const T* A, const T* S, const T* R,
                const T* CP, const T* DYS, const T* DH, const T* DC,
                const T* DY, const bool* M, T* DZ, T* DR, T* DHS, T* DCO,
                T* DYO, T* sgr_out, T* sgs_out, T* sbs_out) const {
    const int64_t G = 4 * u, W = 2 * u + 2;
    CRow<T> grv(gr, G), gsv(gs, u);
    Row<T> sgr(sgr_out, G), sgs(sgs_out, u), sbs(sbs_out, u);
    Arr<T> rhat(G), grh(G), dhn(u), dcn(u), gch(u), dy_tot(u);
    for (int64_t b = b0; b < b1; ++b) {
      Row<T> dzo(DZ + b * G, G), dro(DR + b * G, G);
      Row<T> dhso(DHS + b * u, u), dco(DCO + b * u, u), dyo(DYO + b * u, u);
      CRow<T> dyt(DYS + b * u, u), dcin(DC + b * u, u);
      dhn = CRow<T>(DH + b * u, u);
      if (M) {
        dy_tot = dyt;
        if (!zero_output) dy_tot += CRow<T>(DY + b * u, u);
        if (!M[b]) {
          dzo.setZero();
          dro.setZero();
          dhso = dhn;
          dco = dcin;
          if (zero_output)
            dyo.setZero();
          else
            dyo = dy_tot;
          continue;
        }
        dhn += dy_tot;
      } else {
        dhn += dyt;
      }
      dyo.setZero();
      CRow<T> a(A + b * G, G), rv(R + b * G, G), cp(CP + b * u, u);
      CRow<T> chat(S + b * W, u), th(S + b * W + u, u);
      const T rstd_r = S[b * W + 2 * u], rstd_c = S[b * W + 2 * u + 1];
      dcn = dhn * a.tail(u) * (T(1) - th * th);
      gch = dcn * gsv;
      // dL/dc_t (in dco until it becomes dL/dc_{t-1}).
      dco = dcin + rstd_c * (gch - gch.mean() - chat * (gch * chat).mean());
      dzo.head(u) = dco * (T(2) * a.segment(2 * u, u) - T(1));
      dzo.segment(u, u) = dco * cp;
      dzo.segment(2 * u, u) = T(2) * dco * a.head(u);
      dzo.tail(u) = dhn * th;
      dzo *= a * (T(1) - a);
      rhat = rv * rstd_r;
      grh = dzo * grv;
      dro = rstd_r * (grh - rhat * (grh * rhat).mean());
      dco *= a.segment(u, u);
      dhso.setZero();
      sgr += dzo * rhat;
      sgs += dcn * chat;
      sbs += dcn;
    }
  }
};

REGISTER_OP("KerasLnLstmForward")
    .Input("x: T")       // (time, batch, features)
    .Input("w: T")       // (features, 4u): the input kernel
    .Input("h0: T")      // (batch, u)
    .Input("c0: T")
    .Input("kernel: T")  // (u, 4u): U_c
    .Input("mask: bool")  // (time, batch[, 1]); ignored unless masked
    .Input("gx: T")      // (4u,) input norm gamma
    .Input("bx: T")      // (4u,) input norm beta (+ bias + recurrent beta)
    .Input("gr: T")      // (4u,)
    .Input("gs: T")      // (u,)
    .Input("bs: T")      // (u,)
    .Output("ys: T")     // (time, batch, u)
    .Output("h_last: T")
    .Output("c_last: T")
    .Output("rs: T")     // (time, batch, 4u)  saved for the backward
    .Output("gates: T")  // (time, batch, 4u)
    .Output("saved: T")  // (time, batch, 2u + 2)
    .Output("xrstd: T")  // (time, batch): input norm 1 / std
    .Output("hs: T")     // (time, batch, u): carried states
    .Output("cs: T")
    .Output("xhat: T")   // (time, batch, 4u): the normalized x @ W
    .Attr("T: {float, double}")
    .Attr("epsilon: float")
    .Attr("masked: bool")
    .Attr("zero_output: bool")
    .Attr("shards: int = 0")  // 0: by the row count (see NumShards)
    .SetShapeFn([](InferenceContext* c) {
      auto time = c->Dim(c->input(0), 0);
      auto B = c->Dim(c->input(2), 0);
      auto u = c->Dim(c->input(2), 1);
      DimensionHandle two_u, width, G;
      TF_RETURN_IF_ERROR(c->Multiply(u, 2, &two_u));
      TF_RETURN_IF_ERROR(c->Multiply(u, 4, &G));
      TF_RETURN_IF_ERROR(c->Add(two_u, 2, &width));
      auto narrow = c->MakeShape({time, B, u});
      auto wide = c->MakeShape({time, B, G});
      c->set_output(0, narrow);
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      c->set_output(3, wide);
      c->set_output(4, wide);
      c->set_output(5, c->MakeShape({time, B, width}));
      c->set_output(6, c->MakeShape({time, B}));
      c->set_output(7, narrow);
      c->set_output(8, narrow);
      c->set_output(9, wide);
      return absl::OkStatus();
    });

template <typename T>
class LstmForwardOp : public SequenceOp {
  static constexpr int kXhat = 9;  // the output

 public:
  explicit LstmForwardOp(OpKernelConstruction* c) : SequenceOp(c, true) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = Input(ctx, 0), &w = Input(ctx, 1),
                 &h0 = Input(ctx, 2), &c0 = Input(ctx, 3),
                 &kernel = Input(ctx, 4), &mask = Input(ctx, 5),
                 &gx = Input(ctx, 6), &bx = Input(ctx, 7),
                 &gr = Input(ctx, 8), &gs = Input(ctx, 9),
                 &bs = Input(ctx, 10);
    int64_t Tn, B, u, G;
    CheckSequence(ctx, x, w, h0, kernel, mask, masked_, 4, &Tn, &B, &u,
                  &G);
    if (!ctx->status().ok()) return;
    CheckShape(ctx, "c0", c0, h0.shape());
    CheckShape(ctx, "gx", gx, TensorShape({G}));
    CheckShape(ctx, "bx", bx, TensorShape({G}));
    CheckShape(ctx, "gr", gr, TensorShape({G}));
    CheckShape(ctx, "gs", gs, TensorShape({u}));
    CheckShape(ctx, "bs", bs, TensorShape({u}));
    if (!ctx->status().ok()) return;
    const int64_t W = 2 * u + 2;
    Tensor *ys, *h_last, *c_last, *rs, *gates, *saved, *xrstd, *hs, *cs;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {Tn, B, u}, &ys));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, h0.shape(), &h_last));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, h0.shape(), &c_last));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, {Tn, B, G}, &rs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, {Tn, B, G}, &gates));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, {Tn, B, W}, &saved));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(6, {Tn, B}, &xrstd));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(7, {Tn, B, u}, &hs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(8, {Tn, B, u}, &cs));
    Tensor* xhat;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(kXhat, {Tn, B, G}, &xhat));
    Tensor y0;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(h0.dtype(), h0.shape(), &y0));
    y0.flat<T>().setZero();

    const auto input =
        InputNorm<T>::Of(x, w, gx, static_cast<T>(eps_), shards_);
    const LstmStep<T> step{u,
                           static_cast<T>(eps_),
                           gx.flat<T>().data(),
                           bx.flat<T>().data(),
                           gr.flat<T>().data(),
                           gs.flat<T>().data(),
                           bs.flat<T>().data(),
                           zero_output_};
    const PackedMatrix<T> U(kernel.flat<T>().data(), u, G, false);
    const bool* M = masked_ ? mask.flat<bool>().data() : nullptr;
    T* XH = xhat->flat<T>().data();
    T* XR = xrstd->flat<T>().data();
    input.Forward(ctx, Tn * B, XH, XR);
    T* RS = rs->flat<T>().data();
    T* A = gates->flat<T>().data();
    T* S = saved->flat<T>().data();
    T* YS = ys->flat<T>().data();
    T* HS = hs->flat<T>().data();
    T* CS = cs->flat<T>().data();
    ForShards(ctx, B, NumShards(B, shards_),
              [&](int64_t, int64_t b0, int64_t b1) {
      const T* h = h0.flat<T>().data();
      const T* c = c0.flat<T>().data();
      const T* y = y0.flat<T>().data();
      for (int64_t t = 0; t < Tn; ++t) {
        const int64_t n = t * B;
        T* r = RS + n * G;
        U.Multiply(b1 - b0, h + b0 * u, r + b0 * G, nullptr);
        step.Forward(b0, b1, XH + n * G, r, h, c, y, M ? M + n : nullptr,
                     HS + n * u, CS + n * u, YS + n * u, A + n * G,
                     S + n * W);
        h = HS + n * u;
        c = CS + n * u;
        y = YS + n * u;
      }
    });
    const int64_t last = (Tn - 1) * B * u;
    std::copy_n(Tn ? HS + last : h0.flat<T>().data(), B * u,
                h_last->flat<T>().data());
    std::copy_n(Tn ? CS + last : c0.flat<T>().data(), B * u,
                c_last->flat<T>().data());
  }

};

REGISTER_OP("KerasLnLstmBackward")
    .Input("gates: T")   // (time, batch, 4u): saved by the forward
    .Input("saved: T")   // (time, batch, 2u + 2)
    .Input("rs: T")      // (time, batch, 4u)
    .Input("xrstd: T")   // (time, batch)
    .Input("hs: T")      // (time, batch, u)
    .Input("cs: T")      // (time, batch, u)
    .Input("x: T")       // (time, batch, features)
    .Input("w: T")       // (features, 4u)
    .Input("h0: T")      // (batch, u)
    .Input("c0: T")
    .Input("kernel: T")  // (u, 4u): U_c
    .Input("dys: T")     // (time, batch, u)
    .Input("dh_last: T")  // (batch, u)
    .Input("dc_last: T")
    .Input("mask: bool")
    .Input("gx: T")      // (4u,)
    .Input("gr: T")      // (4u,)
    .Input("gs: T")      // (u,)
    .Input("xhat: T")    // (time, batch, 4u)
    .Output("dx: T")     // (time, batch, features)
    .Output("dw: T")
    .Output("dgx: T")
    .Output("dbx: T")
    .Output("dh0: T")
    .Output("dc0: T")
    .Output("dkernel: T")
    .Output("dgr: T")
    .Output("dgs: T")
    .Output("dbs: T")
    .Attr("T: {float, double}")
    .Attr("masked: bool")
    .Attr("zero_output: bool")
    .Attr("shards: int = 0")  // 0: by the row count (see NumShards)
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(6));
      c->set_output(1, c->input(7));
      c->set_output(2, c->input(15));
      c->set_output(3, c->input(15));
      c->set_output(4, c->input(8));
      c->set_output(5, c->input(8));
      c->set_output(6, c->input(10));
      c->set_output(7, c->input(16));
      c->set_output(8, c->input(17));
      c->set_output(9, c->input(17));
      return absl::OkStatus();
    });

template <typename T>
class LstmBackwardOp : public SequenceOp {
 public:
  explicit LstmBackwardOp(OpKernelConstruction* c) : SequenceOp(c, false) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &gates = Input(ctx, 0), &saved = Input(ctx, 1),
                 &rs = Input(ctx, 2), &xrstd = Input(ctx, 3),
                 &hs = Input(ctx, 4), &cs = Input(ctx, 5),
                 &x = Input(ctx, 6), &w = Input(ctx, 7),
                 &h0 = Input(ctx, 8), &c0 = Input(ctx, 9),
                 &kernel = Input(ctx, 10), &dys = Input(ctx, 11),
                 &dh_last = Input(ctx, 12), &dc_last = Input(ctx, 13),
                 &mask = Input(ctx, 14), &gx = Input(ctx, 15),
                 &gr = Input(ctx, 16), &gs = Input(ctx, 17),
                 &xhat = Input(ctx, 18);
    int64_t Tn, B, u, G;
    CheckSequence(ctx, x, w, h0, kernel, mask, masked_, 4, &Tn, &B, &u,
                  &G);
    if (!ctx->status().ok()) return;
    const int64_t W = 2 * u + 2;
    CheckShape(ctx, "gates", gates, TensorShape({Tn, B, G}));
    CheckShape(ctx, "xhat", xhat, TensorShape({Tn, B, G}));
    CheckShape(ctx, "rs", rs, TensorShape({Tn, B, G}));
    CheckShape(ctx, "saved", saved, TensorShape({Tn, B, W}));
    CheckShape(ctx, "xrstd", xrstd, TensorShape({Tn, B}));
    CheckShape(ctx, "hs", hs, TensorShape({Tn, B, u}));
    CheckShape(ctx, "cs", cs, TensorShape({Tn, B, u}));
    CheckShape(ctx, "dys", dys, TensorShape({Tn, B, u}));
    CheckShape(ctx, "c0", c0, h0.shape());
    CheckShape(ctx, "dh_last", dh_last, h0.shape());
    CheckShape(ctx, "dc_last", dc_last, h0.shape());
    CheckShape(ctx, "gx", gx, TensorShape({G}));
    CheckShape(ctx, "gr", gr, TensorShape({G}));
    CheckShape(ctx, "gs", gs, TensorShape({u}));
    if (!ctx->status().ok()) return;

    Tensor *dx, *dw, *dgx, *dbx, *dh0, *dc0, *dkernel, *dgr, *dgs, *dbs;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, w.shape(), &dw));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gx.shape(), &dgx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, gx.shape(), &dbx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, h0.shape(), &dh0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, h0.shape(), &dc0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(6, kernel.shape(), &dkernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(7, gr.shape(), &dgr));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(8, gs.shape(), &dgs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(9, gs.shape(), &dbs));
    // dr and dL/dxp of every step, for the large products after the loop
    // (dU = sum_t h_{t-1}^T dr_t, and the input side's); double buffers of
    // the carried gradients.
    Tensor dr_all, dz_all, carry;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(gates.dtype(), gates.shape(),
                                           &dr_all));
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_temp(h0.dtype(), {Tn, B, G}, &dz_all));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(h0.dtype(), {6, B, u}, &carry));
    T* DR = dr_all.flat<T>().data();
    T* DZ = dz_all.flat<T>().data();
    T* buf = carry.flat<T>().data();
    const int64_t Bu = B * u;
    T* dh = buf;            // dL/dh_t, all of it
    T* dhs = buf + Bu;      // the part of dL/dh_{t-1} not through r_t
    T* dc[2] = {buf + 2 * Bu, buf + 3 * Bu};
    T* dy[2] = {buf + 4 * Bu, buf + 5 * Bu};
    std::copy_n(dh_last.flat<T>().data(), Bu, dh);
    std::copy_n(dc_last.flat<T>().data(), Bu, dc[0]);
    std::fill_n(dy[0], Bu, T(0));

    const auto input = InputNorm<T>::Of(x, w, gx, T(0), shards_);
    // (The backward step reads neither epsilon nor gx, bx and bs.)
    const LstmStep<T> step{u,       T(0),
                           nullptr, nullptr,
                           gr.flat<T>().data(), gs.flat<T>().data(),
                           nullptr, zero_output_};
    const PackedMatrix<T> Ut(kernel.flat<T>().data(), G, u, true);
    const T* A = gates.flat<T>().data();
    const T* S = saved.flat<T>().data();
    const T* R = rs.flat<T>().data();
    const T* XR = xrstd.flat<T>().data();
    const T* HS = hs.flat<T>().data();
    const T* CS = cs.flat<T>().data();
    const T* DYS = dys.flat<T>().data();
    const bool* M = masked_ ? mask.flat<bool>().data() : nullptr;
    const int64_t shards = NumShards(B, shards_);
    ShardSums<T> sgr(shards, G), sgs(shards, u), sbs(shards, u);
    ForShards(ctx, B, shards, [&](int64_t s, int64_t b0, int64_t b1) {
      int cur = 0;
      for (int64_t t = Tn - 1; t >= 0; --t) {
        const int64_t n = t * B;
        const T* cp = t > 0 ? CS + (n - B) * u : c0.flat<T>().data();
        step.Backward(b0, b1, A + n * G, S + n * W, R + n * G, cp,
                      DYS + n * u, dh, dc[cur], dy[cur],
                      M ? M + n : nullptr, DZ + n * G, DR + n * G, dhs,
                      dc[1 - cur], dy[1 - cur], sgr[s], sgs[s], sbs[s]);
        cur = 1 - cur;
        // dL/dh_{t-1} = dr_t @ U_c^T + the rest.
        Ut.Multiply(b1 - b0, DR + (n + b0) * G, dh + b0 * u, dhs + b0 * u);
      }
    });
    std::copy_n(dh, Bu, dh0->flat<T>().data());
    std::copy_n(dc[Tn % 2], Bu, dc0->flat<T>().data());
    input.Backward(ctx, Tn * B, B, u, h0.flat<T>().data(), HS, DR,
                   dkernel->flat<T>().data(), DZ, xhat.flat<T>().data(), XR,
                   dx->flat<T>().data(),
                   dw->flat<T>().data(), dgx->flat<T>().data(),
                   dbx->flat<T>().data());
    sgr.Total(dgr->flat<T>().data());
    sgs.Total(dgs->flat<T>().data());
    sbs.Total(dbs->flat<T>().data());
  }

};

// ------------------------------------------------------------------- GRU
//
// Saved per step: r (B, 3u) = h_prev @ U_c and (B, 3u + 1): z, the reset
// gate, the candidate n, rstd.

template <typename T>
struct GruStep {
  int64_t u;
  T eps;
  const T *gx, *bx, *gr, *off;
  bool zero_output;

  void Forward(int64_t b0, int64_t b1, const T* X, const T* R, const T* H,
               const T* Y, const bool* M, T* HO, T* YO, T* S) const {
    const int64_t G = 3 * u, W = G + 1;
    CRow<T> gxv(gx, G), bxv(bx, G), grv(gr, G), offv(off, G);
    Arr<T> inner(G), xv(G);
    for (int64_t b = b0; b < b1; ++b) {
      Row<T> ho(HO + b * u, u), yo(YO + b * u, u);
      Row<T> z(S + b * W, u), rr(S + b * W + u, u), n(S + b * W + 2 * u, u);
      CRow<T> hv(H + b * u, u);
      if (M && !M[b]) {
        ho = hv;
        if (zero_output)
          yo.setZero();
        else
          yo = CRow<T>(Y + b * u, u);
        Row<T>(S + b * W, W).setZero();
        continue;
      }
      CRow<T> rv(R + b * G, G);
      xv = CRow<T>(X + b * G, G) * gxv + bxv;
      const T rstd = T(1) / std::sqrt(rv.square().mean() + eps);
      inner = rv * rstd * grv + offv;
      z = Sigmoid(xv.head(u) + inner.head(u));
      rr = Sigmoid(xv.segment(u, u) + inner.segment(u, u));
      n = (xv.tail(u) + rr * inner.tail(u)).tanh();
      ho = z * hv + (T(1) - z) * n;
      yo = ho;
      S[b * W + G] = rstd;
    }
  }

  void Backward(int64_t b0, int64_t b1, const T* S, const T* R, const T* HP,
                const T* DYS, const T* DH, const T* DY, const bool* M,
                T* DX, T* DR, T* DHS, T* DYO, T* sgr_out,
                T* soff_out) const {
    const int64_t G = 3 * u, W = G + 1;
    CRow<T> grv(gr, G), offv(off, G);
    Row<T> sgr(sgr_out, G), soff(soff_out, G);
    Arr<T> rhat(G), din(G), grh(G), dhn(u), dnp(u), dy_tot(u);
    for (int64_t b = b0; b < b1; ++b) {
      Row<T> dxo(DX + b * G, G), dro(DR + b * G, G);
      Row<T> dhso(DHS + b * u, u), dyo(DYO + b * u, u);
      CRow<T> dyt(DYS + b * u, u);
      dhn = CRow<T>(DH + b * u, u);
      if (M) {
        dy_tot = dyt;
        if (!zero_output) dy_tot += CRow<T>(DY + b * u, u);
        if (!M[b]) {
          dxo.setZero();
          dro.setZero();
          dhso = dhn;
          if (zero_output)
            dyo.setZero();
          else
            dyo = dy_tot;
          continue;
        }
        dhn += dy_tot;
      } else {
        dhn += dyt;
      }
      dyo.setZero();
      CRow<T> rv(R + b * G, G), hp(HP + b * u, u);
      CRow<T> z(S + b * W, u), rr(S + b * W + u, u), n(S + b * W + 2 * u, u);
      const T rstd = S[b * W + G];
      rhat = rv * rstd;
      // Gradients of the pre-activations: z, the reset gate, candidate.
      dxo.head(u) = dhn * (hp - n) * z * (T(1) - z);
      dnp = dhn * (T(1) - z) * (T(1) - n * n);
      dxo.segment(u, u) = dnp *
                          (rhat.tail(u) * grv.tail(u) + offv.tail(u)) * rr *
                          (T(1) - rr);
      dxo.tail(u) = dnp;
      din.head(2 * u) = dxo.head(2 * u);
      din.tail(u) = dnp * rr;
      grh = din * grv;
      dro = rstd * (grh - rhat * (grh * rhat).mean());
      dhso = dhn * z;
      sgr += din * rhat;
      soff += din;
    }
  }
};

REGISTER_OP("KerasLnGruForward")
    .Input("x: T")       // (time, batch, features)
    .Input("w: T")       // (features, 3u): the input kernel
    .Input("h0: T")      // (batch, u)
    .Input("kernel: T")  // (u, 3u): U_c
    .Input("mask: bool")
    .Input("gx: T")      // (3u,) input norm gamma
    .Input("bx: T")      // (3u,) input norm beta + input bias
    .Input("gr: T")      // (3u,) recurrent norm gamma
    .Input("off: T")     // (3u,) recurrent norm beta + recurrent bias
    .Output("ys: T")     // (time, batch, u)
    .Output("h_last: T")
    .Output("rs: T")     // (time, batch, 3u)  saved for the backward
    .Output("saved: T")  // (time, batch, 3u + 1)
    .Output("xrstd: T")  // (time, batch): input norm 1 / std
    .Output("hs: T")     // (time, batch, u): carried states
    .Output("xhat: T")   // (time, batch, 3u): the normalized x @ W
    .Attr("T: {float, double}")
    .Attr("epsilon: float")
    .Attr("masked: bool")
    .Attr("zero_output: bool")
    .Attr("shards: int = 0")  // 0: by the row count (see NumShards)
    .SetShapeFn([](InferenceContext* c) {
      auto time = c->Dim(c->input(0), 0);
      auto B = c->Dim(c->input(2), 0);
      auto u = c->Dim(c->input(2), 1);
      DimensionHandle G, width;
      TF_RETURN_IF_ERROR(c->Multiply(u, 3, &G));
      TF_RETURN_IF_ERROR(c->Add(G, 1, &width));
      c->set_output(0, c->MakeShape({time, B, u}));
      c->set_output(1, c->input(2));
      c->set_output(2, c->MakeShape({time, B, G}));
      c->set_output(3, c->MakeShape({time, B, width}));
      c->set_output(4, c->MakeShape({time, B}));
      c->set_output(5, c->MakeShape({time, B, u}));
      c->set_output(6, c->MakeShape({time, B, G}));
      return absl::OkStatus();
    });

template <typename T>
class GruForwardOp : public SequenceOp {
  static constexpr int kXhat = 6;  // the output

 public:
  explicit GruForwardOp(OpKernelConstruction* c) : SequenceOp(c, true) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = Input(ctx, 0), &w = Input(ctx, 1),
                 &h0 = Input(ctx, 2), &kernel = Input(ctx, 3),
                 &mask = Input(ctx, 4), &gx = Input(ctx, 5),
                 &bx = Input(ctx, 6), &gr = Input(ctx, 7),
                 &offs = Input(ctx, 8);
    int64_t Tn, B, u, G;
    CheckSequence(ctx, x, w, h0, kernel, mask, masked_, 3, &Tn, &B, &u,
                  &G);
    if (!ctx->status().ok()) return;
    CheckShape(ctx, "gx", gx, TensorShape({G}));
    CheckShape(ctx, "bx", bx, TensorShape({G}));
    CheckShape(ctx, "gr", gr, TensorShape({G}));
    CheckShape(ctx, "off", offs, TensorShape({G}));
    if (!ctx->status().ok()) return;
    const int64_t W = G + 1;
    Tensor *ys, *h_last, *rs, *saved, *xrstd, *hs;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {Tn, B, u}, &ys));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, h0.shape(), &h_last));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, {Tn, B, G}, &rs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, {Tn, B, W}, &saved));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, {Tn, B}, &xrstd));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, {Tn, B, u}, &hs));
    Tensor* xhat;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(kXhat, {Tn, B, G}, &xhat));
    Tensor y0;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(h0.dtype(), h0.shape(), &y0));
    y0.flat<T>().setZero();

    const auto input =
        InputNorm<T>::Of(x, w, gx, static_cast<T>(eps_), shards_);
    const GruStep<T> step{u,
                          static_cast<T>(eps_),
                          gx.flat<T>().data(),
                          bx.flat<T>().data(),
                          gr.flat<T>().data(),
                          offs.flat<T>().data(),
                          zero_output_};
    const PackedMatrix<T> U(kernel.flat<T>().data(), u, G, false);
    const bool* M = masked_ ? mask.flat<bool>().data() : nullptr;
    T* XH = xhat->flat<T>().data();
    T* XR = xrstd->flat<T>().data();
    input.Forward(ctx, Tn * B, XH, XR);
    T* RS = rs->flat<T>().data();
    T* S = saved->flat<T>().data();
    T* YS = ys->flat<T>().data();
    T* HS = hs->flat<T>().data();
    ForShards(ctx, B, NumShards(B, shards_),
              [&](int64_t, int64_t b0, int64_t b1) {
      const T* h = h0.flat<T>().data();
      const T* y = y0.flat<T>().data();
      for (int64_t t = 0; t < Tn; ++t) {
        const int64_t n = t * B;
        T* r = RS + n * G;
        U.Multiply(b1 - b0, h + b0 * u, r + b0 * G, nullptr);
        step.Forward(b0, b1, XH + n * G, r, h, y, M ? M + n : nullptr,
                     HS + n * u, YS + n * u, S + n * W);
        h = HS + n * u;
        y = YS + n * u;
      }
    });
    std::copy_n(Tn ? HS + (Tn - 1) * B * u : h0.flat<T>().data(), B * u,
                h_last->flat<T>().data());
  }

};

REGISTER_OP("KerasLnGruBackward")
    .Input("saved: T")   // (time, batch, 3u + 1)
    .Input("rs: T")      // (time, batch, 3u)
    .Input("xrstd: T")   // (time, batch)
    .Input("hs: T")      // (time, batch, u)
    .Input("x: T")       // (time, batch, features)
    .Input("w: T")       // (features, 3u)
    .Input("h0: T")      // (batch, u)
    .Input("kernel: T")  // (u, 3u)
    .Input("dys: T")     // (time, batch, u)
    .Input("dh_last: T")
    .Input("mask: bool")
    .Input("gx: T")
    .Input("gr: T")
    .Input("off: T")
    .Input("xhat: T")    // (time, batch, 3u)
    .Output("dx: T")     // (time, batch, features)
    .Output("dw: T")
    .Output("dgx: T")
    .Output("dbx: T")
    .Output("dh0: T")
    .Output("dkernel: T")
    .Output("dgr: T")
    .Output("doff: T")
    .Attr("T: {float, double}")
    .Attr("masked: bool")
    .Attr("zero_output: bool")
    .Attr("shards: int = 0")  // 0: by the row count (see NumShards)
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(4));
      c->set_output(1, c->input(5));
      c->set_output(2, c->input(11));
      c->set_output(3, c->input(11));
      c->set_output(4, c->input(6));
      c->set_output(5, c->input(7));
      c->set_output(6, c->input(12));
      c->set_output(7, c->input(13));
      return absl::OkStatus();
    });

template <typename T>
class GruBackwardOp : public SequenceOp {
 public:
  explicit GruBackwardOp(OpKernelConstruction* c) : SequenceOp(c, false) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &saved = Input(ctx, 0), &rs = Input(ctx, 1),
                 &xrstd = Input(ctx, 2), &hs = Input(ctx, 3),
                 &x = Input(ctx, 4), &w = Input(ctx, 5),
                 &h0 = Input(ctx, 6), &kernel = Input(ctx, 7),
                 &dys = Input(ctx, 8), &dh_last = Input(ctx, 9),
                 &mask = Input(ctx, 10), &gx = Input(ctx, 11),
                 &gr = Input(ctx, 12), &offs = Input(ctx, 13),
                 &xhat = Input(ctx, 14);
    int64_t Tn, B, u, G;
    CheckSequence(ctx, x, w, h0, kernel, mask, masked_, 3, &Tn, &B, &u,
                  &G);
    if (!ctx->status().ok()) return;
    const int64_t W = G + 1;
    CheckShape(ctx, "rs", rs, TensorShape({Tn, B, G}));
    CheckShape(ctx, "xhat", xhat, TensorShape({Tn, B, G}));
    CheckShape(ctx, "saved", saved, TensorShape({Tn, B, W}));
    CheckShape(ctx, "xrstd", xrstd, TensorShape({Tn, B}));
    CheckShape(ctx, "hs", hs, TensorShape({Tn, B, u}));
    CheckShape(ctx, "dys", dys, TensorShape({Tn, B, u}));
    CheckShape(ctx, "dh_last", dh_last, h0.shape());
    CheckShape(ctx, "gx", gx, TensorShape({G}));
    CheckShape(ctx, "gr", gr, TensorShape({G}));
    CheckShape(ctx, "off", offs, TensorShape({G}));
    if (!ctx->status().ok()) return;

    Tensor *dx, *dw, *dgx, *dbx, *dh0, *dkernel, *dgr, *doff;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, w.shape(), &dw));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gx.shape(), &dgx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, gx.shape(), &dbx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, h0.shape(), &dh0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, kernel.shape(), &dkernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(6, gr.shape(), &dgr));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(7, offs.shape(), &doff));
    Tensor dr_all, dz_all, carry;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(rs.dtype(), rs.shape(), &dr_all));
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_temp(h0.dtype(), {Tn, B, G}, &dz_all));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(h0.dtype(), {4, B, u}, &carry));
    T* DR = dr_all.flat<T>().data();
    T* DZ = dz_all.flat<T>().data();
    T* buf = carry.flat<T>().data();
    const int64_t Bu = B * u;
    T* dh = buf;
    T* dhs = buf + Bu;
    T* dy[2] = {buf + 2 * Bu, buf + 3 * Bu};
    std::copy_n(dh_last.flat<T>().data(), Bu, dh);
    std::fill_n(dy[0], Bu, T(0));

    const auto input = InputNorm<T>::Of(x, w, gx, T(0), shards_);
    // (The backward step reads neither epsilon nor gx and bx.)
    const GruStep<T> step{u,       T(0),
                          nullptr, nullptr,
                          gr.flat<T>().data(), offs.flat<T>().data(),
                          zero_output_};
    const PackedMatrix<T> Ut(kernel.flat<T>().data(), G, u, true);
    const T* S = saved.flat<T>().data();
    const T* R = rs.flat<T>().data();
    const T* XR = xrstd.flat<T>().data();
    const T* HS = hs.flat<T>().data();
    const T* DYS = dys.flat<T>().data();
    const bool* M = masked_ ? mask.flat<bool>().data() : nullptr;
    const int64_t shards = NumShards(B, shards_);
    ShardSums<T> sgr(shards, G), soff(shards, G);
    ForShards(ctx, B, shards, [&](int64_t s, int64_t b0, int64_t b1) {
      int cur = 0;
      for (int64_t t = Tn - 1; t >= 0; --t) {
        const int64_t n = t * B;
        const T* hp = t > 0 ? HS + (n - B) * u : h0.flat<T>().data();
        step.Backward(b0, b1, S + n * W, R + n * G, hp, DYS + n * u, dh,
                      dy[cur], M ? M + n : nullptr, DZ + n * G, DR + n * G,
                      dhs, dy[1 - cur], sgr[s], soff[s]);
        cur = 1 - cur;
        Ut.Multiply(b1 - b0, DR + (n + b0) * G, dh + b0 * u, dhs + b0 * u);
      }
    });
    std::copy_n(dh, Bu, dh0->flat<T>().data());
    input.Backward(ctx, Tn * B, B, u, h0.flat<T>().data(), HS, DR,
                   dkernel->flat<T>().data(), DZ, xhat.flat<T>().data(), XR,
                   dx->flat<T>().data(),
                   dw->flat<T>().data(), dgx->flat<T>().data(),
                   dbx->flat<T>().data());
    sgr.Total(dgr->flat<T>().data());
    soff.Total(doff->flat<T>().data());
  }

};

#define REGISTER(NAME, OP, TYPE)                                           \
  REGISTER_KERNEL_BUILDER(                                                 \
      Name(NAME).Device(tensorflow::DEVICE_CPU).TypeConstraint<TYPE>("T"), \
      OP<TYPE>)

REGISTER("KerasLnLstmForward", LstmForwardOp, float);
REGISTER("KerasLnLstmForward", LstmForwardOp, double);
REGISTER("KerasLnLstmBackward", LstmBackwardOp, float);
REGISTER("KerasLnLstmBackward", LstmBackwardOp, double);
REGISTER("KerasLnGruForward", GruForwardOp, float);
REGISTER("KerasLnGruForward", GruForwardOp, double);
REGISTER("KerasLnGruBackward", GruBackwardOp, float);
REGISTER("KerasLnGruBackward", GruBackwardOp, double);

// --------------------------------------------------------- BatchNormLSTM
//
// The recurrence of BatchNormLSTM (Cooijmans et al. 2016) in training and
// at inference; equations and mask semantics: keras_ln/layers/
// _tf_bn_lstm_kernel.py. The caller computes the normalized input
// projection plus bias, xn (time, batch, 4u), for all steps (a batch norm
// over each step's rows: large TensorFlow ops).
//
// In training each step's statistics are means over the batch rows (the
// unmasked ones, with weights v / max(sum v, 1)), so unlike the LN loops
// the rows are not independent. The units are: the recurrent norm's
// statistics are per column of r = h_{t-1} @ U, the state norm's per unit,
// and a unit's four gate columns and its state need nothing else from the
// step. So the training loops split the units into shards; each step is
// one parallel pass over them (the shards run h_{t-1} @ U[:, their
// columns], or dr_{t+1} @ U[their units, :]^T backward, then the whole step
// for their units), and the passes are the synchronization: the next
// step's product reads every shard's part of h_t (dr_t). The shards depend
// on the unit and row counts only (see UnitBounds), and every column's statistics
// and parameter gradients are sums over the rows in row order within one
// shard: the results do not depend on the threads or the load.
//
// Internally a row's 4u columns are ordered shard by shard, each shard's
// block [i | f | g | o] of its units ("permuted" layout, for the saved
// gates, rhat and dr); the ops' inputs and outputs are in keras' order.
//
// At inference the norms use moving statistics, folded by the caller into
// a scale and a shift per step: the rows are independent again and the
// inference op splits the batch, as the LN loops do.

// sum_b weight[b] * x.row(b) (1, columns), or the plain column sums
// without weights; row by row, in row order (Eigen's column-wise partial
// reductions of a row-major block do not vectorize).
template <typename T, typename Derived>
RowA<T> ColumnSums(const Eigen::ArrayBase<Derived>& x,
                   const T* weight = nullptr) {
  RowA<T> out = RowA<T>::Zero(x.cols());
  for (int64_t b = 0; b < x.rows(); ++b) {
    if (weight)
      out += weight[b] * x.row(b);
    else
      out += x.row(b);
  }
  return out;
}

// Shards of at least kBnMinShardUnits units and kBnMinShardWork unit-rows
// (a step's share of a shard must outweigh its wait for the others), at
// most kBnMaxShards. Measured on 2 cores: 128 units x 64 rows run best in 2
// shards, 64 units x 200 rows in 2 (against 1: a third faster).
constexpr int64_t kBnMinShardUnits = 32;
constexpr int64_t kBnMinShardWork = 4096;
constexpr int64_t kBnMaxShards = 8;

// The shards' unit ranges [b[s], b[s + 1]): bounds on multiples of 16
// units; by the unit and row counts only (never the machine's threads), so
// a forward op and its backward op, which read each other's saved
// activations in this order, always agree.
std::vector<int64_t> UnitBounds(int64_t u, int64_t B) {
  const int64_t S = std::max<int64_t>(
      1, std::min({kBnMaxShards, u / kBnMinShardUnits,
                   u * B / kBnMinShardWork}));
  std::vector<int64_t> b{0};
  for (int64_t s = 1; s < S; ++s) {
    const int64_t bound = std::min(u, (u * s / S + 15) / 16 * 16);
    if (bound > b.back()) b.push_back(bound);
  }
  if (u > b.back()) b.push_back(u);
  return b;
}

// Runs fn(k, s) for every step k in [0, steps) and shard s in [0, shards),
// each step's shards after all of the previous step's (their results are
// the next step's input), with the threads that are free. A parallel pass
// per step would cost more than a step here (a wake-up of the pool each
// time); instead up to `shards` threads claim (step, shard) pairs in order
// from one counter and wait, spinning, for the previous step to finish
// before running a claimed pair. A thread only waits for pairs that
// running threads claimed before it, so one thread alone (a busy pool) runs
// everything, and no thread ever waits for one that has not started.
void RunSteps(OpKernelContext* ctx, int64_t steps, int64_t shards,
              const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t total = steps * shards;
  std::atomic<int64_t> next{0}, done{0};
  auto work = [&]() {
    for (int64_t i = next.fetch_add(1); i < total; i = next.fetch_add(1)) {
      const int64_t k = i / shards, ready = k * shards;
      for (int spins = 0; done.load(std::memory_order_acquire) < ready;
           ++spins) {
        if (spins > 64) std::this_thread::yield();
      }
      fn(k, i % shards);
      done.fetch_add(1, std::memory_order_release);
    }
  };
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t threads = std::min<int64_t>(shards, pool->num_threads);
  if (threads <= 1 || total == 0) {
    work();
    return;
  }
  pool->workers->ParallelFor(
      threads, tsl::thread::ThreadPool::SchedulingParams::Fixed(1),
      [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) work();
      });
}

// The kernel U (u, G = 4u), or a (rows, G) matrix, with its columns in the
// permuted layout.
template <typename T>
std::vector<T> PermuteColumns(const T* U, int64_t u,
                              const std::vector<int64_t>& bounds,
                              int64_t rows = -1) {
  const int64_t G = 4 * u;
  if (rows < 0) rows = u;
  std::vector<T> out(rows * G);
  for (int64_t kk = 0; kk < rows; ++kk)
    for (size_t s = 0; s + 1 < bounds.size(); ++s) {
      const int64_t a = bounds[s], w = bounds[s + 1] - a;
      for (int blk = 0; blk < 4; ++blk)
        std::copy_n(U + kk * G + blk * u + a, w,
                    out.data() + kk * G + 4 * a + blk * w);
    }
  return out;
}

// Per-step row weights v / max(sum v, 1) (time * batch) from the 0/1
// valid flags.
template <typename T>
std::vector<T> StepWeights(const T* V, int64_t Tn, int64_t B) {
  std::vector<T> w(Tn * B);
  for (int64_t t = 0; t < Tn; ++t) {
    T n = 0;
    for (int64_t b = 0; b < B; ++b) n += V[t * B + b];
    n = std::max(n, T(1));
    for (int64_t b = 0; b < B; ++b) w[t * B + b] = V[t * B + b] / n;
  }
  return w;
}

// A gate-wide vector (4u) of keras' order: the shard's part [a, a + w) of
// each block, in the permuted order.
template <typename T>
Arr<T> Permuted(const T* v, int64_t u, int64_t a, int64_t w) {
  Arr<T> out(4 * w);
  for (int blk = 0; blk < 4; ++blk)
    out.segment(blk * w, w) = CRow<T>(v + blk * u + a, w);
  return out;
}

// The input side, for all steps before the recurrent loop (as cuDNN does):
// xz_t = x_t @ W, batch-normalized per step over the (valid) rows, xhat_t =
// (xz_t - mean_t) * rstd_t; the steps read xhat * gx + bias. The steps are
// independent, so both passes split the time steps into shards (by the
// step count only; sums added up in shard order).
template <typename T>
struct InputBatchNorm {
  int64_t B, F, G;
  T eps;
  const T *x, *w;
  const T* V;        // 0/1 valid flags (time * batch), or null
  const T* weights;  // their per-step weights v / max(sum v, 1)

  T Weight(int64_t i) const { return V ? weights[i] : T(1) / T(B); }
  bool On(int64_t i) const { return !V || V[i] != T(0); }

  // xhat (time, B, G) <- the normalized projection; mean, var (time, G)
  // <- each step's statistics. Masked rows of xhat are 0.
  void Forward(OpKernelContext* ctx, int64_t Tn, T* xhat, T* mean,
               T* var) const {
    const PackedMatrix<T> W(w, F, G, false);
    ForShards(ctx, Tn, NumShards(Tn, 0), [&](int64_t, int64_t t0,
                                             int64_t t1) {
      Arr<T> rstd(G);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t * B;
        T* xh = xhat + n * G;
        W.Multiply(B, x + n * F, xh, nullptr);
        Row<T> m(mean + t * G, G), v(var + t * G, G);
        m.setZero();
        for (int64_t b = 0; b < B; ++b)
          if (On(n + b)) m += Weight(n + b) * CRow<T>(xh + b * G, G);
        v.setZero();
        for (int64_t b = 0; b < B; ++b)
          if (On(n + b))
            v += Weight(n + b) * (CRow<T>(xh + b * G, G) - m).square();
        rstd = (v + eps).rsqrt();
        for (int64_t b = 0; b < B; ++b) {
          Row<T> row(xh + b * G, G);
          if (On(n + b))
            row = (row - m) * rstd;
          else
            row.setZero();
        }
      }
    });
  }

  // dz (time, B, G): dL/d(xhat * gx + bias) in, scratch out. Writes dx
  // (time, B, F), dw (F, G), dgx and dbx (G).
  void Backward(OpKernelContext* ctx, int64_t Tn, const T* gx,
                const T* xhat, const T* var, T* dz, T* dx, T* dw, T* dgx,
                T* dbx) const {
    const PackedMatrix<T> Wt(w, G, F, true);
    const int64_t parts = NumShards(Tn, 0);
    ShardSums<T> sdw(parts, F * G), sgx(parts, G), sbx(parts, G);
    CRow<T> g(gx, G);
    ForShards(ctx, Tn, parts, [&](int64_t s, int64_t t0, int64_t t1) {
      Arr<T> rstd(G), m1(G), m2(G), dy(G);
      Row<T> sg(sgx[s], G), sb(sbx[s], G);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t * B;
        rstd = (CRow<T>(var + t * G, G) + eps).rsqrt();
        m1.setZero();
        m2.setZero();
        for (int64_t b = 0; b < B; ++b) {
          CRow<T> d(dz + (n + b) * G, G), xh(xhat + (n + b) * G, G);
          sg += d * xh;
          sb += d;
          if (!On(n + b)) continue;
          dy = d * g;
          m1 += Weight(n + b) * dy;
          m2 += Weight(n + b) * dy * xh;
        }
        for (int64_t b = 0; b < B; ++b) {
          Row<T> d(dz + (n + b) * G, G);
          if (On(n + b))
            d = rstd * (d * g - m1 - CRow<T>(xhat + (n + b) * G, G) * m2);
          else
            d.setZero();
        }
        Wt.Multiply(B, dz + n * G, dx + n * F, nullptr);
        AddTransposedProduct(B, F, G, x + n * F, F, dz + n * G, G, sdw[s]);
      }
    });
    sdw.Total(dw);
    sgx.Total(dgx);
    sbx.Total(dbx);
  }
};

// The BatchNormLSTM ops take epsilon as a scalar input of their dtype (an
// attribute would round a float64 layer's epsilon to float32).
// Per step, whether no row is masked (with a mask that masks nothing the
// steps take the unmasked path: the same weights 1 / B, no row by row
// blends).
template <typename T>
std::vector<char> FullSteps(const T* V, int64_t Tn, int64_t B) {
  std::vector<char> full(Tn, 1);
  for (int64_t t = 0; V && t < Tn; ++t)
    full[t] = std::all_of(V + t * B, V + t * B + B,
                          [](T v) { return v != T(0); });
  return full;
}

class BnLstmOp : public OpKernel {
 protected:
  explicit BnLstmOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("masked", &masked_));
    OP_REQUIRES_OK(c, c->GetAttr("zero_output", &zero_output_));
  }

  // Checks x (time, batch, F), w (F, 4u) (unless null), h0 (batch, u),
  // kernel (u, 4u) and the valid flags; sets T, B, u, F. Without w, x is
  // (time, batch, 4u).
  void Check(OpKernelContext* ctx, const Tensor& x, const Tensor* w,
             const Tensor& h0, const Tensor& kernel, const Tensor& valid,
             int64_t* Tn, int64_t* B, int64_t* u, int64_t* F) {
    OP_REQUIRES(ctx, h0.dims() == 2,
                InvalidArgument("states must be (batch, units), got ",
                                h0.shape().DebugString()));
    *B = h0.dim_size(0);
    *u = h0.dim_size(1);
    OP_REQUIRES(ctx, x.dims() == 3 && x.dim_size(1) == *B,
                InvalidArgument("sequence must be (time, ", *B,
                                ", features), got ", x.shape().DebugString()));
    *Tn = x.dim_size(0);
    *F = x.dim_size(2);
    if (w)
      CheckShape(ctx, "w", *w, TensorShape({*F, 4 * *u}));
    else
      CheckShape(ctx, "xn", x, TensorShape({*Tn, *B, 4 * *u}));
    CheckShape(ctx, "kernel", kernel, TensorShape({*u, 4 * *u}));
    if (masked_)
      OP_REQUIRES(ctx, valid.NumElements() == *Tn * *B,
                  InvalidArgument("valid must have time*batch elements, got ",
                                  valid.shape().DebugString()));
  }

  template <typename T>
  static T Epsilon(OpKernelContext* ctx, int i) {
    const Tensor& e = ctx->input(i);
    if (e.NumElements() != 1) {
      ctx->SetStatus(InvalidArgument("epsilon must be a scalar, got ",
                                     e.shape().DebugString()));
      return T(0);
    }
    return e.flat<T>()(0);
  }

  bool masked_ = false, zero_output_ = false;
};

REGISTER_OP("KerasLnBnLstmForward")
    .Input("x: T")       // (time, batch, features)
    .Input("w: T")       // (features, 4u): the input kernel
    .Input("gx: T")      // (4u,) input norm gamma
    .Input("bias: T")    // (4u,)
    .Input("valid: T")   // (time, batch[, 1]) 0/1; ignored unless masked
    .Input("h0: T")      // (batch, u)
    .Input("c0: T")
    .Input("kernel: T")  // (u, 4u)
    .Input("gr: T")      // (4u,) recurrent norm gamma
    .Input("gs: T")      // (u,) state norm gamma
    .Input("bs: T")      // (u,) state norm beta
    .Input("epsilon: T")  // ()
    .Output("ys: T")     // (time, batch, u)
    .Output("h_last: T")
    .Output("c_last: T")
    .Output("mean_r: T")  // (time, 4u): each step's batch statistics
    .Output("var_r: T")
    .Output("mean_c: T")  // (time, u)
    .Output("var_c: T")
    .Output("gates: T")  // (time, batch, 4u) permuted, saved
    .Output("rhat: T")   // (time, batch, 4u) permuted, saved
    .Output("chat: T")   // (time, batch, u), saved
    .Output("th: T")     // (time, batch, u): tanh(chat * gs + bs), saved
    .Output("hs: T")     // (time, batch, u): the states after each step
    .Output("cs: T")
    .Output("mean_x: T")  // (time, 4u): the input norm's statistics
    .Output("var_x: T")
    .Output("xhat: T")   // (time, batch, 4u): the normalized x @ W, saved
    .Attr("T: {float, double}")
    .Attr("masked: bool")
    .Attr("zero_output: bool")
    .SetShapeFn([](InferenceContext* c) {
      auto time = c->Dim(c->input(0), 0);
      auto B = c->Dim(c->input(5), 0);
      auto u = c->Dim(c->input(5), 1);
      DimensionHandle G;
      TF_RETURN_IF_ERROR(c->Multiply(u, 4, &G));
      auto narrow = c->MakeShape({time, B, u});
      auto wide = c->MakeShape({time, B, G});
      c->set_output(0, narrow);
      c->set_output(1, c->input(5));
      c->set_output(2, c->input(5));
      c->set_output(3, c->MakeShape({time, G}));
      c->set_output(4, c->MakeShape({time, G}));
      c->set_output(5, c->MakeShape({time, u}));
      c->set_output(6, c->MakeShape({time, u}));
      c->set_output(7, wide);
      c->set_output(8, wide);
      for (int i = 9; i < 13; ++i) c->set_output(i, narrow);
      c->set_output(13, c->MakeShape({time, G}));
      c->set_output(14, c->MakeShape({time, G}));
      c->set_output(15, wide);
      return absl::OkStatus();
    });

template <typename T>
class BnLstmForwardOp : public BnLstmOp {
  static constexpr int kEpsilon = 11;  // the input

 public:
  explicit BnLstmForwardOp(OpKernelConstruction* c) : BnLstmOp(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = AlignedInput(ctx, 0), &w = AlignedInput(ctx, 1),
                 &gx = AlignedInput(ctx, 2), &bias = AlignedInput(ctx, 3),
                 &valid = AlignedInput(ctx, 4), &h0 = AlignedInput(ctx, 5),
                 &c0 = AlignedInput(ctx, 6), &kernel = AlignedInput(ctx, 7),
                 &gr = AlignedInput(ctx, 8), &gs = AlignedInput(ctx, 9),
                 &bs = AlignedInput(ctx, 10);
    int64_t Tn, B, u, F;
    Check(ctx, x, &w, h0, kernel, valid, &Tn, &B, &u, &F);
    if (!ctx->status().ok()) return;
    const int64_t G = 4 * u;
    CheckShape(ctx, "c0", c0, h0.shape());
    CheckShape(ctx, "gx", gx, TensorShape({G}));
    CheckShape(ctx, "bias", bias, TensorShape({G}));
    CheckShape(ctx, "gr", gr, TensorShape({G}));
    CheckShape(ctx, "gs", gs, TensorShape({u}));
    CheckShape(ctx, "bs", bs, TensorShape({u}));
    if (!ctx->status().ok()) return;
    Tensor* out[16];
    const TensorShape shapes[16] = {
        {Tn, B, u}, h0.shape(), h0.shape(), {Tn, G},    {Tn, G},
        {Tn, u},    {Tn, u},    {Tn, B, G}, {Tn, B, G}, {Tn, B, u},
        {Tn, B, u}, {Tn, B, u}, {Tn, B, u}, {Tn, G},    {Tn, G},
        {Tn, B, G}};
    for (int i = 0; i < 16; ++i)
      OP_REQUIRES_OK(ctx, ctx->allocate_output(i, shapes[i], &out[i]));
    T *YS = out[0]->flat<T>().data(), *MR = out[3]->flat<T>().data(),
      *VR = out[4]->flat<T>().data(), *MC = out[5]->flat<T>().data(),
      *VC = out[6]->flat<T>().data(), *A = out[7]->flat<T>().data(),
      *RH = out[8]->flat<T>().data(), *CH = out[9]->flat<T>().data(),
      *TH = out[10]->flat<T>().data(), *HS = out[11]->flat<T>().data(),
      *CS = out[12]->flat<T>().data();
    T* XH = out[15]->flat<T>().data();
    const T* V = masked_ ? valid.flat<T>().data() : nullptr;
    const std::vector<T> weights =
        V ? StepWeights(V, Tn, B) : std::vector<T>();
    const T uniform = T(1) / T(B);
    const T eps = Epsilon<T>(ctx, kEpsilon);
    if (!ctx->status().ok()) return;
    const std::vector<T> zeros(B * u, T(0));
    // The input side of every step first (the steps are independent).
    InputBatchNorm<T>{B, F, G, eps, x.flat<T>().data(), w.flat<T>().data(),
                      V, weights.data()}
        .Forward(ctx, Tn, XH, out[13]->flat<T>().data(),
                 out[14]->flat<T>().data());

    const std::vector<int64_t> bounds = UnitBounds(u, B);
    const int64_t S = bounds.size() - 1;
    const std::vector<T> Up =
        PermuteColumns(kernel.flat<T>().data(), u, bounds);
    // The step's row weights: v / max(sum v, 1), or 1 / B.
    const Arr<T> uniform_w = Arr<T>::Constant(B, uniform);
    struct Shard {
      int64_t a, w;
      PackedMatrix<T> U;  // (u, 4w): the columns of the shard's units
      RowA<T> gx, bx, gr, gs, bs, mean, var, mc, vc;
      Mat<T> r, cn;
    };
    std::vector<Shard> shards;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t a = bounds[s], w = bounds[s + 1] - a;
      std::vector<T> cols(u * 4 * w);
      for (int64_t kk = 0; kk < u; ++kk)
        std::copy_n(Up.data() + kk * G + 4 * a, 4 * w,
                    cols.data() + kk * 4 * w);
      Shard sh{a, w, PackedMatrix<T>(cols.data(), u, 4 * w, false)};
      sh.gx = Permuted(gx.flat<T>().data(), u, a, w).transpose();
      sh.bx = Permuted(bias.flat<T>().data(), u, a, w).transpose();
      sh.gr = Permuted(gr.flat<T>().data(), u, a, w).transpose();
      sh.gs = CRow<T>(gs.flat<T>().data() + a, w).transpose();
      sh.bs = CRow<T>(bs.flat<T>().data() + a, w).transpose();
      sh.r.resize(B, 4 * w);
      sh.cn.resize(B, w);
      shards.push_back(std::move(sh));
    }

    // One step of the shard's units, as passes over the (batch, width)
    // blocks (rows of a few dozen values: passes row by row would cost more
    // in loop overhead than in arithmetic).
    auto step = [&](Shard& sh, int64_t t) {
      const int64_t a = sh.a, w = sh.w, w4 = 4 * w, n = t * B;
      const T* H = t ? HS + (n - B) * u : h0.flat<T>().data();
      const T* C = t ? CS + (n - B) * u : c0.flat<T>().data();
      const T* Y = t ? YS + (n - B) * u : zeros.data();
      CCol<T> wv(V ? weights.data() + n : uniform_w.data(), B);
      sh.U.Multiply(B, H, sh.r.data(), nullptr);
      // the recurrent norm's statistics, two passes
      sh.mean = ColumnSums<T>(sh.r, wv.data());
      sh.var = ColumnSums<T>((sh.r.rowwise() - sh.mean).square(), wv.data());
      for (int blk = 0; blk < 4; ++blk) {
        Row<T>(MR + t * G + blk * u + a, w) =
            sh.mean.segment(blk * w, w).transpose();
        Row<T>(VR + t * G + blk * u + a, w) =
            sh.var.segment(blk * w, w).transpose();
      }
      sh.var = (sh.var + eps).rsqrt();  // now 1 / std
      Blk<T> rh(RH + n * G + 4 * a, B, w4, G), ga(A + n * G + 4 * a, B, w4, G);
      rh = (sh.r.rowwise() - sh.mean).rowwise() * sh.var;
      for (int blk = 0; blk < 4; ++blk)
        ga.middleCols(blk * w, w) = CBlk<T>(XH + n * G + blk * u + a, B, w, G);
      ga = (ga.rowwise() * sh.gx + rh.rowwise() * sh.gr).rowwise() + sh.bx;
      ga.leftCols(2 * w) = Sigmoid(ga.leftCols(2 * w));
      ga.middleCols(2 * w, w) = ga.middleCols(2 * w, w).tanh();
      ga.rightCols(w) = Sigmoid(ga.rightCols(w));
      sh.cn = ga.middleCols(w, w) * CBlk<T>(C + a, B, w, u) +
              ga.leftCols(w) * ga.middleCols(2 * w, w);
      // the state norm's statistics
      sh.mc = ColumnSums<T>(sh.cn, wv.data());
      sh.vc = ColumnSums<T>((sh.cn.rowwise() - sh.mc).square(), wv.data());
      Row<T>(MC + t * u + a, w) = sh.mc.transpose();
      Row<T>(VC + t * u + a, w) = sh.vc.transpose();
      sh.vc = (sh.vc + eps).rsqrt();
      const int64_t i = n * u + a;
      Blk<T> ch(CH + i, B, w, u), th(TH + i, B, w, u), ho(HS + i, B, w, u),
          co(CS + i, B, w, u), yo(YS + i, B, w, u);
      ch = (sh.cn.rowwise() - sh.mc).rowwise() * sh.vc;
      th = ((ch.rowwise() * sh.gs).rowwise() + sh.bs).tanh();
      ho = ga.rightCols(w) * th;
      co = sh.cn;
      yo = ho;
      if (!V) return;
      for (int64_t b = 0; b < B; ++b) {
        if (V[n + b] != T(0)) continue;
        // a masked row keeps its states and outputs; nothing of it is
        // saved (the backward passes its gradients through)
        rh.row(b).setZero();
        ga.row(b).setZero();
        ch.row(b).setZero();
        th.row(b).setZero();
        ho.row(b) = CBlk<T>(H + a, B, w, u).row(b);
        co.row(b) = CBlk<T>(C + a, B, w, u).row(b);
        if (zero_output_)
          yo.row(b).setZero();
        else
          yo.row(b) = CBlk<T>(Y + a, B, w, u).row(b);
      }
    };
    RunSteps(ctx, Tn, S, [&](int64_t t, int64_t s) { step(shards[s], t); });
    const int64_t last = (Tn - 1) * B * u;
    std::copy_n(Tn ? HS + last : h0.flat<T>().data(), B * u,
                out[1]->flat<T>().data());
    std::copy_n(Tn ? CS + last : c0.flat<T>().data(), B * u,
                out[2]->flat<T>().data());
  }
};

REGISTER_OP("KerasLnBnLstmBackward")
    .Input("gates: T")   // saved by the forward
    .Input("rhat: T")
    .Input("chat: T")
    .Input("th: T")
    .Input("var_r: T")   // (time, 4u)
    .Input("var_c: T")   // (time, u)
    .Input("hs: T")
    .Input("cs: T")
    .Input("h0: T")
    .Input("c0: T")
    .Input("kernel: T")  // (u, 4u)
    .Input("valid: T")
    .Input("gr: T")
    .Input("gs: T")
    .Input("dys: T")     // (time, batch, u)
    .Input("dh_last: T")
    .Input("dc_last: T")
    .Input("x: T")       // (time, batch, features)
    .Input("w: T")       // (features, 4u)
    .Input("gx: T")      // (4u,)
    .Input("xhat: T")    // (time, batch, 4u): saved by the forward
    .Input("var_x: T")   // (time, 4u)
    .Input("epsilon: T")  // ()
    .Output("dx: T")
    .Output("dw: T")
    .Output("dgx: T")
    .Output("dbias: T")
    .Output("dh0: T")
    .Output("dc0: T")
    .Output("dkernel: T")
    .Output("dgr: T")
    .Output("dgs: T")
    .Output("dbs: T")
    .Attr("T: {float, double}")
    .Attr("masked: bool")
    .Attr("zero_output: bool")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(17));
      c->set_output(1, c->input(18));
      c->set_output(2, c->input(19));
      c->set_output(3, c->input(19));
      c->set_output(4, c->input(8));
      c->set_output(5, c->input(8));
      c->set_output(6, c->input(10));
      c->set_output(7, c->input(12));
      c->set_output(8, c->input(13));
      c->set_output(9, c->input(13));
      return absl::OkStatus();
    });

template <typename T>
class BnLstmBackwardOp : public BnLstmOp {
  static constexpr int kEpsilon = 22;  // the input

 public:
  explicit BnLstmBackwardOp(OpKernelConstruction* c) : BnLstmOp(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &gates = AlignedInput(ctx, 0), &rhat = AlignedInput(ctx, 1),
                 &chat = AlignedInput(ctx, 2), &thv = AlignedInput(ctx, 3),
                 &var_r = AlignedInput(ctx, 4), &var_c = AlignedInput(ctx, 5),
                 &hs = AlignedInput(ctx, 6), &cs = AlignedInput(ctx, 7),
                 &h0 = AlignedInput(ctx, 8), &c0 = AlignedInput(ctx, 9),
                 &kernel = AlignedInput(ctx, 10), &valid = AlignedInput(ctx, 11),
                 &gr = AlignedInput(ctx, 12), &gs = AlignedInput(ctx, 13),
                 &dys = AlignedInput(ctx, 14), &dh_last = AlignedInput(ctx, 15),
                 &dc_last = AlignedInput(ctx, 16), &x = AlignedInput(ctx, 17),
                 &w = AlignedInput(ctx, 18), &gx = AlignedInput(ctx, 19),
                 &xhat = AlignedInput(ctx, 20), &var_x = AlignedInput(ctx, 21);
    int64_t Tn, B, u, F;
    Check(ctx, x, &w, h0, kernel, valid, &Tn, &B, &u, &F);
    if (!ctx->status().ok()) return;
    const int64_t G = 4 * u;
    CheckShape(ctx, "gates", gates, TensorShape({Tn, B, G}));
    CheckShape(ctx, "xhat", xhat, TensorShape({Tn, B, G}));
    CheckShape(ctx, "var_x", var_x, TensorShape({Tn, G}));
    CheckShape(ctx, "gx", gx, TensorShape({G}));
    CheckShape(ctx, "rhat", rhat, TensorShape({Tn, B, G}));
    CheckShape(ctx, "chat", chat, TensorShape({Tn, B, u}));
    CheckShape(ctx, "th", thv, TensorShape({Tn, B, u}));
    CheckShape(ctx, "hs", hs, TensorShape({Tn, B, u}));
    CheckShape(ctx, "cs", cs, TensorShape({Tn, B, u}));
    CheckShape(ctx, "dys", dys, TensorShape({Tn, B, u}));
    CheckShape(ctx, "var_r", var_r, TensorShape({Tn, G}));
    CheckShape(ctx, "var_c", var_c, TensorShape({Tn, u}));
    CheckShape(ctx, "c0", c0, h0.shape());
    CheckShape(ctx, "dh_last", dh_last, h0.shape());
    CheckShape(ctx, "dc_last", dc_last, h0.shape());
    CheckShape(ctx, "gr", gr, TensorShape({G}));
    CheckShape(ctx, "gs", gs, TensorShape({u}));
    if (!ctx->status().ok()) return;
    Tensor *dx, *dw, *dgx, *dbias, *dh0, *dc0, *dkernel, *dgr, *dgs, *dbs;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, w.shape(), &dw));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gx.shape(), &dgx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, gx.shape(), &dbias));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, h0.shape(), &dh0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, h0.shape(), &dc0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(6, kernel.shape(), &dkernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(7, gr.shape(), &dgr));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(8, gs.shape(), &dgs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(9, gs.shape(), &dbs));
    // every step's dL/dr (permuted, for dU after the loop) and dL/dxn
    // dL/dr of the step and of the one after it (permuted), which the
    // step's product reads
    Tensor dr_pair;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(gates.dtype(), {2, B, G}, &dr_pair));
    T* DR2 = dr_pair.flat<T>().data();
    const T *A = gates.flat<T>().data(), *RH = rhat.flat<T>().data(),
            *CH = chat.flat<T>().data(), *TH = thv.flat<T>().data(),
            *VR = var_r.flat<T>().data(), *VC = var_c.flat<T>().data(),
            *HS = hs.flat<T>().data(), *CS = cs.flat<T>().data(),
            *DYS = dys.flat<T>().data(), *X = x.flat<T>().data(),
            *XHS = xhat.flat<T>().data(), *VX = var_x.flat<T>().data();
    const T* V = masked_ ? valid.flat<T>().data() : nullptr;
    const std::vector<T> weights =
        V ? StepWeights(V, Tn, B) : std::vector<T>();
    const std::vector<char> full = FullSteps(V, Tn, B);
    const T uniform = T(1) / T(B);
    const T eps = Epsilon<T>(ctx, kEpsilon);
    if (!ctx->status().ok()) return;

    const std::vector<int64_t> bounds = UnitBounds(u, B);
    const int64_t S = bounds.size() - 1;
    const std::vector<T> Up =
        PermuteColumns(kernel.flat<T>().data(), u, bounds);
    const Arr<T> uniform_w = Arr<T>::Constant(B, uniform);
    const std::vector<T> Wp = PermuteColumns(w.flat<T>().data(), u, bounds, F);
    // Each shard's part of dL/dx of every step, added up in shard order
    // after the loop.
    Tensor dx_parts;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(x.dtype(), {S, Tn, B, F}, &dx_parts));
    T* DXP = dx_parts.flat<T>().data();
    struct Shard {
      int64_t a, w;
      PackedMatrix<T> Ut;  // (G, w): U's rows of the shard's units, transposed
      PackedMatrix<T> Wt;  // (4w, F): the input kernel's columns, transposed
      RowA<T> gr, gs, gx, sr, sc, sx, m1c, m2c, m1r, m2r, dgr, dgs, dbs, dgx,
          dbx;
      Mat<T> dh, ph, gc, gout, dcn, dyc, dz, dxz, xh, du, dw;
    };
    std::vector<Shard> shards;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t a = bounds[s], w = bounds[s + 1] - a;
      std::vector<T> wcols(F * 4 * w);
      for (int64_t f = 0; f < F; ++f)
        std::copy_n(Wp.data() + f * G + 4 * a, 4 * w, wcols.data() + f * 4 * w);
      Shard sh{a, w, PackedMatrix<T>(Up.data() + a * G, G, w, true),
               PackedMatrix<T>(wcols.data(), 4 * w, F, true)};
      sh.gx = Permuted(gx.flat<T>().data(), u, a, w).transpose();
      sh.sx.resize(4 * w);
      sh.dgx.setZero(4 * w);
      sh.dbx.setZero(4 * w);
      sh.du.setZero(u, 4 * w);
      sh.dw.setZero(F, 4 * w);
      sh.xh.resize(B, 4 * w);
      sh.dxz.resize(B, 4 * w);
      sh.gr = Permuted(gr.flat<T>().data(), u, a, w).transpose();
      sh.gs = CRow<T>(gs.flat<T>().data() + a, w).transpose();
      for (Mat<T>* v : {&sh.ph, &sh.gout, &sh.dcn, &sh.dyc})
        v->setZero(B, w);
      sh.dz.setZero(B, 4 * w);
      sh.sr.resize(4 * w);
      sh.dh = CBlk<T>(dh_last.flat<T>().data() + a, B, w, u);
      sh.gc = CBlk<T>(dc_last.flat<T>().data() + a, B, w, u);
      sh.dgr.setZero(4 * w);
      sh.dgs.setZero(w);
      sh.dbs.setZero(w);
      shards.push_back(std::move(sh));
    }

    // dL/dh after step t - 1 of the shard's units: dr_t @ U^T + what
    // masked rows of step t passed back.
    auto back_product = [&](Shard& sh, int64_t t) {
      sh.Ut.Multiply(B, DR2 + (t % 2) * B * G, sh.dh.data(),
                     V ? sh.ph.data() : nullptr);
    };
    // One step back, as passes over the (batch, width) blocks (see the
    // forward's step).
    auto step = [&](Shard& sh, int64_t t) {
      const int64_t a = sh.a, w = sh.w, w4 = 4 * w, n = t * B;
      if (t + 1 < Tn) back_product(sh, t + 1);
      const T* C = t ? CS + (n - B) * u : c0.flat<T>().data();
      const T* H = t ? HS + (n - B) * u : h0.flat<T>().data();
      CCol<T> wv(V ? weights.data() + n : uniform_w.data(), B);
      for (int blk = 0; blk < 4; ++blk) {
        sh.sr.segment(blk * w, w) =
            CRow<T>(VR + t * G + blk * u + a, w).transpose();
        sh.sx.segment(blk * w, w) =
            CRow<T>(VX + t * G + blk * u + a, w).transpose();
        sh.xh.middleCols(blk * w, w) = CBlk<T>(XHS + n * G + blk * u + a, B, w, G);
      }
      sh.sx = (sh.sx + eps).rsqrt();
      sh.sr = (sh.sr + eps).rsqrt();
      sh.sc = (CRow<T>(VC + t * u + a, w) + eps).rsqrt().transpose();
      const int64_t i = n * u + a;
      CBlk<T> dy(DYS + i, B, w, u), ch(CH + i, B, w, u), th(TH + i, B, w, u),
          ga(A + n * G + 4 * a, B, w4, G), rh(RH + n * G + 4 * a, B, w4, G),
          cp(C + a, B, w, u);
      // the step's mask, or null where it masks no row
      const T* M = V && !full[t] ? V + n : nullptr;
      if (M) {
        for (int64_t b = 0; b < B; ++b) {
          if (M[b] != T(0)) {
            sh.dh.row(b) += dy.row(b) + sh.gout.row(b);
            sh.gout.row(b).setZero();
            sh.ph.row(b).setZero();
          } else {  // states and gradients pass through a masked row
            sh.ph.row(b) = sh.dh.row(b);
            if (zero_output_)
              sh.gout.row(b).setZero();
            else
              sh.gout.row(b) += dy.row(b);
            sh.dh.row(b).setZero();
          }
        }
      } else if (V) {
        sh.dh += dy + sh.gout;
        sh.gout.setZero();
        sh.ph.setZero();
      } else {
        sh.dh += dy;
      }
      // dh: dL/dh'_t (0 on masked rows)
      sh.dyc = sh.dh * ga.rightCols(w) * (T(1) - th.square());  // da
      sh.dgs += ColumnSums<T>(sh.dyc * ch);
      sh.dbs += ColumnSums<T>(sh.dyc);
      sh.dyc = sh.dyc.rowwise() * sh.gs;
      sh.dh *= th;  // dL/do
      sh.m1c = ColumnSums<T>(sh.dyc, wv.data());
      sh.m2c = ColumnSums<T>(sh.dyc * ch, wv.data());
      // dL/dc'_t: what later steps pass back plus the state norm's part
      sh.dcn = ((sh.dyc.rowwise() - sh.m1c) - ch.rowwise() * sh.m2c)
                   .rowwise() *
               sh.sc;
      if (M) sh.dcn.colwise() *= CCol<T>(M, B);
      sh.dcn += sh.gc;
      auto i_ = ga.leftCols(w);
      auto f_ = ga.middleCols(w, w);
      auto g_ = ga.middleCols(2 * w, w);
      auto o_ = ga.rightCols(w);
      sh.dz.leftCols(w) = sh.dcn * g_ * i_ * (T(1) - i_);
      sh.dz.middleCols(w, w) = sh.dcn * cp * f_ * (T(1) - f_);
      sh.dz.middleCols(2 * w, w) = sh.dcn * i_ * (T(1) - g_ * g_);
      sh.dz.rightCols(w) = sh.dh * o_ * (T(1) - o_);
      if (M) {
        sh.dz.colwise() *= CCol<T>(M, B);
        // dL/dc_{t-1}: a masked row passes what it got
        for (int64_t b = 0; b < B; ++b)
          if (M[b] != T(0)) sh.gc.row(b) = sh.dcn.row(b) * f_.row(b);
      } else {
        sh.gc = sh.dcn * f_;
      }
      // the input side: dL/dxn = dz, through the input norm to x and W
      sh.dgx += ColumnSums<T>(sh.dz * sh.xh);
      sh.dbx += ColumnSums<T>(sh.dz);
      sh.dxz = sh.dz.rowwise() * sh.gx;
      sh.m1c = ColumnSums<T>(sh.dxz, wv.data());  // (reused for the input)
      sh.m2c = ColumnSums<T>(sh.dxz * sh.xh, wv.data());
      sh.dxz = ((sh.dxz.rowwise() - sh.m1c) - sh.xh.rowwise() * sh.m2c)
                   .rowwise() *
               sh.sx;
      if (M) sh.dxz.colwise() *= CCol<T>(M, B);
      sh.Wt.Multiply(B, sh.dxz.data(), DXP + (((&sh - shards.data()) * Tn + t) * B) * F,
                     nullptr);
      AddTransposedProduct(B, F, w4, X + n * F, F, sh.dxz.data(), w4,
                           sh.dw.data());
      sh.dgr += ColumnSums<T>(sh.dz * rh);
      sh.dz = sh.dz.rowwise() * sh.gr;
      sh.m1r = ColumnSums<T>(sh.dz, wv.data());
      sh.m2r = ColumnSums<T>(sh.dz * rh, wv.data());
      Blk<T> dr(DR2 + (t % 2) * B * G + 4 * a, B, w4, G);
      dr = ((sh.dz.rowwise() - sh.m1r) - rh.rowwise() * sh.m2r).rowwise() *
           sh.sr;
      if (M) dr.colwise() *= CCol<T>(M, B);
      // dU of the shard's columns += h_{t-1}^T dr_t
      AddTransposedProduct(B, u, w4, H + 0, u, DR2 + (t % 2) * B * G + 4 * a,
                           G, sh.du.data());
    };
    // Steps T - 1 down to 0, then dL/dh0 (k = Tn).
    RunSteps(ctx, Tn + 1, S, [&](int64_t k, int64_t s) {
      Shard& sh = shards[s];
      if (k < Tn) {
        step(sh, Tn - 1 - k);
        return;
      }
      if (Tn) back_product(sh, 0);
      Blk<T>(dh0->flat<T>().data() + sh.a, B, sh.w, u) = sh.dh;
      Blk<T>(dc0->flat<T>().data() + sh.a, B, sh.w, u) = sh.gc;
    });
    for (const Shard& sh : shards) {
      for (int blk = 0; blk < 4; ++blk)
        Row<T>(dgr->flat<T>().data() + blk * u + sh.a, sh.w) =
            sh.dgr.segment(blk * sh.w, sh.w).transpose();
      Row<T>(dgs->flat<T>().data() + sh.a, sh.w) = sh.dgs.transpose();
      Row<T>(dbs->flat<T>().data() + sh.a, sh.w) = sh.dbs.transpose();
    }
    // Back to keras' column order; dL/dx: the shards' parts, in shard order.
    T* dk = dkernel->flat<T>().data();
    T* dwk = dw->flat<T>().data();
    for (const Shard& sh : shards)
      for (int blk = 0; blk < 4; ++blk) {
        Blk<T>(dk + blk * u + sh.a, u, sh.w, G) =
            sh.du.middleCols(blk * sh.w, sh.w);
        Blk<T>(dwk + blk * u + sh.a, F, sh.w, G) =
            sh.dw.middleCols(blk * sh.w, sh.w);
        Row<T>(dgx->flat<T>().data() + blk * u + sh.a, sh.w) =
            sh.dgx.segment(blk * sh.w, sh.w).transpose();
        Row<T>(dbias->flat<T>().data() + blk * u + sh.a, sh.w) =
            sh.dbx.segment(blk * sh.w, sh.w).transpose();
      }
    Row<T> dxo(dx->flat<T>().data(), Tn * B * F);
    dxo = CRow<T>(DXP, Tn * B * F);
    for (int64_t s = 1; s < S; ++s) dxo += CRow<T>(DXP + s * Tn * B * F, Tn * B * F);
  }
};

REGISTER_OP("KerasLnBnLstmInference")
    .Input("xn: T")      // (time, batch, 4u): normalized x @ W + bias
    .Input("valid: T")   // (time, batch[, 1]) 0/1; ignored unless masked
    .Input("h0: T")
    .Input("c0: T")
    .Input("kernel: T")  // (u, 4u)
    .Input("ar: T")      // (time, 4u): the recurrent norm as scale, shift
    .Input("br: T")
    .Input("ac: T")      // (time, u): the state norm as scale, shift
    .Input("bc: T")
    .Output("ys: T")
    .Output("h_last: T")
    .Output("c_last: T")
    .Attr("T: {float, double}")
    .Attr("masked: bool")
    .Attr("zero_output: bool")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->MakeShape({c->Dim(c->input(0), 0),
                                     c->Dim(c->input(2), 0),
                                     c->Dim(c->input(2), 1)}));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      return absl::OkStatus();
    });

template <typename T>
class BnLstmInferenceOp : public BnLstmOp {
 public:
  explicit BnLstmInferenceOp(OpKernelConstruction* c) : BnLstmOp(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &xn = AlignedInput(ctx, 0), &valid = AlignedInput(ctx, 1),
                 &h0 = AlignedInput(ctx, 2), &c0 = AlignedInput(ctx, 3),
                 &kernel = AlignedInput(ctx, 4), &ar = AlignedInput(ctx, 5),
                 &br = AlignedInput(ctx, 6), &ac = AlignedInput(ctx, 7),
                 &bc = AlignedInput(ctx, 8);
    int64_t Tn, B, u, F;
    Check(ctx, xn, nullptr, h0, kernel, valid, &Tn, &B, &u, &F);
    if (!ctx->status().ok()) return;
    const int64_t G = 4 * u;
    CheckShape(ctx, "c0", c0, h0.shape());
    CheckShape(ctx, "ar", ar, TensorShape({Tn, G}));
    CheckShape(ctx, "br", br, TensorShape({Tn, G}));
    CheckShape(ctx, "ac", ac, TensorShape({Tn, u}));
    CheckShape(ctx, "bc", bc, TensorShape({Tn, u}));
    if (!ctx->status().ok()) return;
    Tensor *ys, *h_last, *c_last;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {Tn, B, u}, &ys));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, h0.shape(), &h_last));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, h0.shape(), &c_last));
    Tensor scratch;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(h0.dtype(), {B, G}, &scratch));
    T *R = scratch.flat<T>().data(), *YS = ys->flat<T>().data(),
      *H = h_last->flat<T>().data(), *C = c_last->flat<T>().data();
    std::copy_n(h0.flat<T>().data(), B * u, H);
    std::copy_n(c0.flat<T>().data(), B * u, C);
    const T *XN = xn.flat<T>().data(), *AR = ar.flat<T>().data(),
            *BR = br.flat<T>().data(), *AC = ac.flat<T>().data(),
            *BC = bc.flat<T>().data();
    const T* V = masked_ ? valid.flat<T>().data() : nullptr;
    const PackedMatrix<T> U(kernel.flat<T>().data(), u, G, false);
    Arr<T> zero = Arr<T>::Zero(u);
    // The rows are independent: shards of the batch run the whole loop.
    ForShards(ctx, B, NumShards(B, 0), [&](int64_t, int64_t b0, int64_t b1) {
      Arr<T> z(G), cn(u);
      for (int64_t t = 0; t < Tn; ++t) {
        const int64_t n = t * B;
        U.Multiply(b1 - b0, H + b0 * u, R + b0 * G, nullptr);
        CRow<T> ar_t(AR + t * G, G), br_t(BR + t * G, G), ac_t(AC + t * u, u),
            bc_t(BC + t * u, u);
        for (int64_t b = b0; b < b1; ++b) {
          Row<T> yo(YS + (n + b) * u, u), h(H + b * u, u), c(C + b * u, u);
          if (V && V[n + b] == T(0)) {
            if (zero_output_)
              yo.setZero();
            else if (t)
              yo = CRow<T>(YS + (n - B + b) * u, u);
            else
              yo.setZero();
            continue;
          }
          z = CRow<T>(XN + (n + b) * G, G) + CRow<T>(R + b * G, G) * ar_t +
              br_t;
          cn = Sigmoid(z.segment(u, u)) * c +
               Sigmoid(z.head(u)) * z.segment(2 * u, u).tanh();
          c = cn;
          h = Sigmoid(z.tail(u)) * (cn * ac_t + bc_t).tanh();
          yo = h;
        }
      }
    });
  }
};

REGISTER("KerasLnBnLstmForward", BnLstmForwardOp, float);
REGISTER("KerasLnBnLstmForward", BnLstmForwardOp, double);
REGISTER("KerasLnBnLstmBackward", BnLstmBackwardOp, float);
REGISTER("KerasLnBnLstmBackward", BnLstmBackwardOp, double);
REGISTER("KerasLnBnLstmInference", BnLstmInferenceOp, float);
REGISTER("KerasLnBnLstmInference", BnLstmInferenceOp, double);


}  // namespace
}  // namespace keras_ln
