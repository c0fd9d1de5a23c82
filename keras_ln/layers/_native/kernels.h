// What the native ops share (see ln_rnn_ops.cc and bn_lstm_ops.cc): the
// vectorized matrix products, the split of a loop into shards and their
// sums in a fixed order, aligned inputs and shape checks. Everything here
// has internal linkage: each source compiles its own copy.

#ifndef KERAS_LN_LAYERS_NATIVE_KERNELS_H_
#define KERAS_LN_LAYERS_NATIVE_KERNELS_H_


#define EIGEN_USE_THREADS

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "tensorflow/core/framework/allocator.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "Eigen/Core"

namespace keras_ln {

// The recurrent ops' large tensors (every step's saved gates, states and
// products: tens of MiB per training step) come from this pool, which keeps
// freed blocks for the next call of the same size. From malloc, each such
// block is memory the C library hands back to the system when it is freed
// (and faults in again, page by page, zeroed, on the next call): on 2 cores
// that was about a quarter of an LSTM training step. One pool for the whole
// library (an inline function's static is shared by every source).
//
// Blocks are reused only at their exact size (a training loop asks for the
// same sizes every step); at most kMaxCachedBytes stay cached, the least
// recently freed go first. The extern "C" functions at the end of
// ln_rnn_ops.cc report the cached bytes, free them all, and set the sizes
// (and a test mode) through ctypes.
class BlockPool : public tensorflow::Allocator {
 public:
  static constexpr size_t kMinBytes = size_t(128) << 10;
  static constexpr size_t kMaxCachedBytes = size_t(512) << 20;

  static BlockPool* Get() {
    static BlockPool* pool = new BlockPool;  // never destroyed: tensors may
    return pool;                             // outlive static destruction
  }

  std::string Name() override { return "keras_ln_block_pool"; }

  void* AllocateRaw(size_t alignment, size_t num_bytes) override {
    // A header of kHeader bytes before each block holds its size, and keeps
    // the block aligned as TensorFlow's tensors are (it asks for 64 bytes).
    if (alignment > kHeader) return nullptr;
    const size_t size = RoundUp(std::max<size_t>(num_bytes, 1));
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto found = by_size_.find(size);
      if (found != by_size_.end()) {
        char* block = *found->second;
        order_.erase(found->second);
        by_size_.erase(found);
        cached_ -= size;
        if (poison_) std::memset(block + kHeader, 0xff, size);
        return block + kHeader;
      }
    }
    char* block = static_cast<char*>(
        tensorflow::port::AlignedMalloc(size + kHeader, kHeader));
    if (block == nullptr) return nullptr;
    *reinterpret_cast<size_t*>(block) = size;
    if (poison_) std::memset(block + kHeader, 0xff, size);
    return block + kHeader;
  }

  void DeallocateRaw(void* ptr) override {
    if (ptr == nullptr) return;
    char* block = static_cast<char*>(ptr) - kHeader;
    const size_t size = *reinterpret_cast<size_t*>(block);
    std::vector<char*> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (size <= max_cached_bytes_) {
        order_.push_back(block);
        by_size_.emplace(size, std::prev(order_.end()));
        cached_ += size;
        while (cached_ > max_cached_bytes_) Evict(&dropped);
      } else {
        dropped.push_back(block);
      }
    }
    for (char* b : dropped) tensorflow::port::AlignedFree(b);
  }

  // Frees every cached block; returns the bytes freed.
  size_t Release() {
    std::vector<char*> dropped;
    size_t freed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      freed = cached_;
      while (!order_.empty()) Evict(&dropped);
    }
    for (char* b : dropped) tensorflow::port::AlignedFree(b);
    return freed;
  }

  // Tensors of fewer bytes come from TensorFlow's allocator (PooledOutput).
  std::atomic<size_t> min_bytes_{kMinBytes};
  std::atomic<size_t> max_cached_bytes_{kMaxCachedBytes};
  // Tests: every block handed out filled with NaNs (0xff bytes), so that a
  // read of an element no op wrote shows.
  std::atomic<bool> poison_{false};

  size_t CachedBytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

 private:
  static constexpr size_t kHeader = 64;  // also the blocks' alignment
  static size_t RoundUp(size_t n) { return (n + kHeader - 1) / kHeader * kHeader; }

  // Drops the least recently freed block (mu_ held).
  void Evict(std::vector<char*>* dropped) {
    char* block = order_.front();
    const size_t size = *reinterpret_cast<size_t*>(block);
    auto range = by_size_.equal_range(size);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second == order_.begin()) {
        by_size_.erase(it);
        break;
      }
    }
    order_.pop_front();
    cached_ -= size;
    dropped->push_back(block);
  }

  std::mutex mu_;
  std::list<char*> order_;  // cached blocks, least recently freed first
  std::multimap<size_t, std::list<char*>::iterator> by_size_;
  size_t cached_ = 0;
};

namespace {

// A tensor from the pool, or false when it is under the pool's smallest size
// (then ctx->allocate_output or ctx->allocate_temp, below, allocate it).
inline bool FromPool(tensorflow::DataType dtype,
                     const tensorflow::TensorShape& shape,
                     tensorflow::Tensor* out, tensorflow::Status* status) {
  if (shape.num_elements() * tensorflow::DataTypeSize(dtype) <
      BlockPool::Get()->min_bytes_)
    return false;
  *out = tensorflow::Tensor(BlockPool::Get(), dtype, shape);
  *status = out->IsInitialized()
                ? tensorflow::Status()
                : tensorflow::errors::ResourceExhausted(
                      "keras_ln: cannot allocate a tensor of shape ",
                      shape.DebugString());
  return true;
}

// ctx->allocate_output and ctx->allocate_temp, from the pool when large.
inline tensorflow::Status PooledOutput(tensorflow::OpKernelContext* ctx,
                                       int index,
                                       const tensorflow::TensorShape& shape,
                                       tensorflow::Tensor** out) {
  tensorflow::Tensor pooled;
  tensorflow::Status status;
  if (!FromPool(ctx->expected_output_dtype(index), shape, &pooled, &status))
    return ctx->allocate_output(index, shape, out);
  if (!status.ok()) return status;
  ctx->set_output(index, pooled);
  *out = ctx->mutable_output(index);
  return status;
}

inline tensorflow::Status PooledTemp(tensorflow::OpKernelContext* ctx,
                                     tensorflow::DataType dtype,
                                     const tensorflow::TensorShape& shape,
                                     tensorflow::Tensor* out) {
  tensorflow::Status status;
  if (!FromPool(dtype, shape, out, &status))
    return ctx->allocate_temp(dtype, shape, out);
  return status;
}

// The ten gradients an LSTM backward op returns (the layer-normalized and
// the batch-normalized one alike), outputs 0 to 9, each shaped as the input
// it is the gradient of: dL/dx, the input kernel w, the input norm's gamma
// gx and the bias (as gx), h0, c0 (as h0), the recurrent kernel, and the
// recurrent and state norms' gr, gs and beta (as gs).
inline tensorflow::Status AllocateLstmGradients(
    tensorflow::OpKernelContext* ctx, const tensorflow::Tensor& x,
    const tensorflow::Tensor& w, const tensorflow::Tensor& gx,
    const tensorflow::Tensor& h0, const tensorflow::Tensor& kernel,
    const tensorflow::Tensor& gr, const tensorflow::Tensor& gs,
    const std::array<tensorflow::Tensor**, 10>& out) {
  const tensorflow::Tensor* like[] = {&x,  &w,      &gx, &gx, &h0,
                                      &h0, &kernel, &gr, &gs, &gs};
  for (int i = 0; i < 10; ++i) {
    const tensorflow::Status status =
        PooledOutput(ctx, i, like[i]->shape(), out[i]);
    if (!status.ok()) return status;
  }
  return tensorflow::Status();
}

}  // namespace
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

// tanh by Eigen's rational approximation (ptanh_float, ptanh_double) in
// the vector path and the scalar path alike. Eigen's own double tanh takes
// std::tanh in its scalar path, which computes the elements after an
// array's last whole vector: their positions depend on the vector width,
// so a result's last bits depended on the CPU (AVX2 or AVX-512). (Its
// float tanh is already the approximation in both paths.)
template <typename T>
struct TanhOp {
  T operator()(const T& x) const {
    if constexpr (std::is_same<T, double>::value)
      return Eigen::internal::ptanh_double(x);
    else
      return Eigen::internal::ptanh_float(x);
  }
  template <typename Packet>
  Packet packetOp(const Packet& x) const {
    return Eigen::internal::ptanh(x);
  }
};

template <typename Derived>
auto Tanh(const Eigen::ArrayBase<Derived>& x) {
  return x.unaryExpr(TanhOp<typename Derived::Scalar>());
}

// 1 / sqrt(x) by two correctly rounded operations, an element at a time.
// Eigen's vectorized rsqrt (under its default fast math) refines a
// hardware estimate whose precision depends on the vector width (AVX-512's
// rsqrt14 or AVX's rsqrt), and its scalar path divides: the last bits
// depended on the CPU and on the element's place in the array.
template <typename Derived>
auto RSqrt(const Eigen::ArrayBase<Derived>& x) {
  using T = typename Derived::Scalar;
  return x.unaryExpr([](T v) { return T(1) / std::sqrt(v); });
}

// sigmoid(x) = (1 + tanh(x / 2)) / 2: Eigen's vectorized tanh is about
// twice as fast as its logistic, and as accurate in float32.
template <typename Derived>
auto Sigmoid(const Eigen::ArrayBase<Derived>& x) {
  using T = typename Derived::Scalar;
  return Tanh(x * T(0.5)) * T(0.5) + T(0.5);
}

// The mean of a vector expression (a row of a layer norm) summed in an
// order fixed by its length alone. Eigen's own reductions of a dynamic-size
// map start their vector sums at its first aligned element, so the same
// row summed at another address (another position in the batch: rows of
// 40 floats alternate between two alignments) gave other last bits, and an
// example's normalized output depended on where it sat in its batch. Here
// lane l of kMeanLanes adds the elements l, l + kMeanLanes, ... in order
// (element-wise vector adds, which reorder nothing; two or more registers,
// so two or more chains of adds at once), a remaining 16 go to the first
// 16 lanes, the lanes are folded in halves (a fixed tree), and the last
// few elements are added one by one.
constexpr int kMeanLanes = 32;  // RowMean's folds below: 32 -> 16 -> 8 -> 4
static_assert(kMeanLanes == 32, "RowMean folds 32 lanes");

template <int L, typename Derived>
auto ColumnSegment(const Eigen::ArrayBase<Derived>& x, Eigen::Index at) {
  if constexpr (Derived::RowsAtCompileTime == 1)
    return x.derived().template segment<L>(at).transpose();
  else
    return x.derived().template segment<L>(at);
}

// RowMean's lanes, held as four arrays of 8 (lanes 0-7, 8-15, 16-23 and
// 24-31). As one 32-lane array, the compiler kept the lanes in memory beside
// the registers (the 16-lane tail adds to part of it) and cleared them with
// a `rep stos` for every row: measured in an AVX2 build, a tenth of a
// (256, 64) layer norm forward's time. Arrays of one size stay in
// registers (as halves of 16, the double ones still did not). The
// additions are the 32-lane array's, lane for lane.
template <typename T>
struct MeanLanes {
  using Q = Eigen::Array<T, 8, 1>;
  Q q0 = Q::Zero(), q1 = Q::Zero(), q2 = Q::Zero(), q3 = Q::Zero();

  // Quarter k: lanes 8k to 8k + 7.
  template <int k>
  EIGEN_ALWAYS_INLINE Q& Quarter() {
    static_assert(0 <= k && k < 4, "four quarters");
    if constexpr (k == 0) return q0;
    else if constexpr (k == 1) return q1;
    else if constexpr (k == 2) return q2;
    else return q3;
  }

  // The sum of the lanes, folded in halves (a fixed tree: 32 -> 16 -> 8 ->
  // 4, then pairs). Always inlined: called, the lanes went through the
  // stack (measured, a third of a 64-float layer norm row's time in an
  // AVX2 build).
  EIGEN_ALWAYS_INLINE T Fold() const {
    const Q l8 = (q0 + q2) + (q1 + q3);
    const Eigen::Array<T, 4, 1> l4 = l8.template head<4>() + l8.template tail<4>();
    return (l4[0] + l4[2]) + (l4[1] + l4[3]);
  }
};

// RowMean's order over a row of n elements: quarter(j, k) for the 8
// elements at j, to be added to the lanes' quarter k (a
// std::integral_constant), over whole blocks of 32 (quarters 0 to 3), then
// a remaining 16 (quarters 0 and 1). Returns where the elements added one
// by one after the fold start.
template <typename Quarter>
EIGEN_ALWAYS_INLINE int64_t ForMeanQuarters(int64_t n, const Quarter& quarter) {
  static_assert(kMeanLanes == 32, "four quarters of 8 lanes");
  using std::integral_constant;
  int64_t j = 0;
  for (; j + kMeanLanes <= n; j += kMeanLanes) {
    quarter(j, integral_constant<int, 0>());
    quarter(j + 8, integral_constant<int, 1>());
    quarter(j + 16, integral_constant<int, 2>());
    quarter(j + 24, integral_constant<int, 3>());
  }
  if (j + kMeanLanes / 2 <= n) {
    quarter(j, integral_constant<int, 0>());
    quarter(j + 8, integral_constant<int, 1>());
    j += kMeanLanes / 2;
  }
  return j;
}

// RowMean's sum, before the division by the length.
template <typename Derived>
typename Derived::Scalar RowSum(const Eigen::ArrayBase<Derived>& x) {
  using T = typename Derived::Scalar;
  EIGEN_STATIC_ASSERT_VECTOR_ONLY(Derived);
  const Eigen::Index n = x.size();
  MeanLanes<T> lanes;
  Eigen::Index j = ForMeanQuarters(n, [&](int64_t at, auto k) {
    lanes.template Quarter<decltype(k)::value>() += ColumnSegment<8>(x, at);
  });
  T sum = lanes.Fold();
  for (; j < n; ++j) sum += x.derived().coeff(j);
  return sum;
}

template <typename Derived>
typename Derived::Scalar RowMean(const Eigen::ArrayBase<Derived>& x) {
  using T = typename Derived::Scalar;
  return RowSum(x) / T(x.size());
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
constexpr int kRowBlock = 6;  // 6 x 2 of 16 (with the two b vectors and
                               // the broadcast: 15): 12 fused chains hide
                               // the FMA latency that 8 (4 x 2) only just met
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

  // acc + s * b as one fused multiply-add where the CPU has one. The
  // library is compiled without implicit contraction (-ffp-contract=off,
  // __init__.py): GCC fused some a * b + c of a loop and not others (the
  // scalar ends beside the vector middle), so a row's results depended on
  // its alignment. The products' fused steps are written out here instead.
  static V MulAdd(T s, V b, V acc) {
#if defined(__AVX512F__)
    if constexpr (sizeof(T) == 4)
      return (V)_mm512_fmadd_ps(_mm512_set1_ps(s), (__m512)b, (__m512)acc);
    else
      return (V)_mm512_fmadd_pd(_mm512_set1_pd(s), (__m512d)b, (__m512d)acc);
#elif defined(__FMA__) && defined(__AVX__)
    if constexpr (sizeof(T) == 4)
      return (V)_mm256_fmadd_ps(_mm256_set1_ps(s), (__m256)b, (__m256)acc);
    else
      return (V)_mm256_fmadd_pd(_mm256_set1_pd(s), (__m256d)b, (__m256d)acc);
#else
    return acc + s * b;
#endif
  }

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
// kRowBlock, then 4 (where kRowBlock is larger), 2, then 1. (Any MR gives
// every element the same sum: its products added in k order.)
template <typename Tile>
void ForRowBlocks(int64_t m, const Tile& tile) {
  int64_t i = 0;
  for (; i + kRowBlock <= m; i += kRowBlock) tile.template Run<kRowBlock>(i);
  if constexpr (kRowBlock > 4)
    for (; i + 4 <= m; i += 4) tile.template Run<4>(i);
  for (; i + 2 <= m; i += 2) tile.template Run<2>(i);
  if (i < m) tile.template Run<1>(i);
}

// One register tile of a product c = a @ b + d: rows [i, i + MR) of a
// (m, k), row-major, times a panel of b, kPanel columns of b's rows at
// stride ldb (PackedMatrix's packed panel, or a matrix read in place), the
// first `cols` of the results (plus d's, unless d is null) stored into c;
// d and c at row stride ldc. The accumulators stay in registers: nothing
// takes their address.
template <typename T>
struct PanelTile {
  using Vec = Vectors<T>;
  using V = typename Vec::V;
  const T* a;
  int64_t k;
  const T* b;
  int64_t ldb, cols;
  const T* d;
  T* c;
  int64_t ldc;

  template <int MR>
  void Run(int64_t i) const {
    const T* ai = a + i * k;
    V acc[MR][Vec::kPerTile];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < Vec::kPerTile; ++j) acc[r][j] = V{};
    for (int64_t kk = 0; kk < k; ++kk) {
      V bv[Vec::kPerTile];
      for (int j = 0; j < Vec::kPerTile; ++j) bv[j] = Vec::Load(b + kk * ldb + j * Vec::kLanes);
      for (int r = 0; r < MR; ++r) {
        const T s = ai[r * k + kk];
        for (int j = 0; j < Vec::kPerTile; ++j) acc[r][j] = Vec::MulAdd(s, bv[j], acc[r][j]);
      }
    }
    for (int r = 0; r < MR; ++r)
      Vec::StoreRow(acc[r], cols, d ? d + (i + r) * ldc : nullptr, c + (i + r) * ldc);
  }
};

// A fixed right-hand side (k, n), packed once into panels of kPanel columns
// (panel q: columns [q * kPanel, q * kPanel + kPanel), row after row,
// zero-padded), for many products a @ B.
template <typename T>
class PackedMatrix {
  static constexpr int kPanel = Vectors<T>::kPanel;

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
      ForRowBlocks(m, PanelTile<T>{a, k_, p_.data() + col * k_, kPanel,
                                   std::min<int64_t>(kPanel, n_ - col),
                                   d ? d + col : nullptr, c + col, n_});
  }

 private:
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
  int64_t ldc;

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
        for (int j = 0; j < Vec::kPerTile; ++j) acc[r][j] = Vec::MulAdd(s, bv[j], acc[r][j]);
      }
    }
    for (int r = 0; r < MR; ++r) {
      T* cr = c + (i + r) * ldc + col;
      Vec::StoreRow(acc[r], cols, cr, cr);
    }
  }
};

// c (m, n) += a^T @ b over `rows` rows: a (rows, m) and b (rows, n)
// row-major with leading dimensions lda and ldb, c with ldc (0: dense). The
// weight gradients (dU = sum h_{t-1}^T dr_t, dW = x^T dxz) are such sums
// over the (time * batch) rows; b needs no packing, its rows are read as
// they are.
template <typename T>
void AddTransposedProduct(int64_t rows, int64_t m, int64_t n, const T* a,
                          int64_t lda, const T* b, int64_t ldb, T* c,
                          int64_t ldc = 0) {
  // Blocks of rows small enough for the block of b to stay in cache while
  // every row block of c passes over it.
  constexpr int64_t kRows = 256;
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t nr = std::min(kRows, rows - r0);
    for (int64_t col = 0; col < n; col += Vectors<T>::kPanel)
      ForRowBlocks(m, TransposedTile<T>{nr, n, lda, ldb, col, a + r0 * lda,
                                        b + r0 * ldb, c, ldc ? ldc : n});
  }
}

// Per step of a (time, batch) mask (nonzero where valid; null: every row
// valid), whether all its rows are valid (`valid`) or all masked (!valid).
// The BN-LSTM ops take an unmasked step's path where no row is masked. A
// step that masks every row (the NaN padding that the estimators append to
// sequences, a batch's steps after its longest sequence) only carries
// states and gradients through: the kernels skip its products and, for
// trailing ones, its share of the input side.
template <typename M>
std::vector<char> UniformSteps(const M* mask, int64_t Tn, int64_t B,
                               bool valid) {
  std::vector<char> out(Tn, valid);
  for (int64_t t = 0; mask && t < Tn; ++t)
    out[t] = std::all_of(mask + t * B, mask + t * B + B,
                         [valid](M v) { return (v != M(0)) == valid; });
  return out;
}

// The steps up to the last with a valid row: [0, Tv).
inline int64_t ValidSteps(const std::vector<char>& empty) {
  int64_t Tv = empty.size();
  while (Tv > 0 && empty[Tv - 1]) --Tv;
  return Tv;
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
// Shards start on multiples of kShardRows rows, whatever the build's
// kRowBlock: the same shards, so the same sums over them, on every CPU
// (AVX2 or AVX-512).
constexpr int64_t kShardRows = 8;
constexpr int64_t kMaxShards = 8;

int64_t NumShards(int64_t rows, int64_t requested) {
  if (requested > 0) return requested;
  return std::max<int64_t>(
      1, std::min<int64_t>(kMaxShards, rows / kMinShardRows));
}

// The first row of shard `s` of `shards` (s == shards: `rows`).
int64_t ShardBound(int64_t rows, int64_t shards, int64_t s) {
  const int64_t b = (rows * s / shards + kShardRows - 1) / kShardRows;
  return std::min(rows, b * kShardRows);
}

// Calls fn(shard, begin, end) for each of the `shards` shards of the rows,
// concurrently.
void ForShards(OpKernelContext* ctx, int64_t rows, int64_t shards,
               const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  auto bound = [&](int64_t s) { return ShardBound(rows, shards, s); };
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

void CheckShape(OpKernelContext* ctx, const char* name, const Tensor& v,
                const TensorShape& want) {
  OP_REQUIRES(ctx, v.shape() == want,
              InvalidArgument(name, " must be ", want.DebugString(), ", got ",
                              v.shape().DebugString()));
}

// A scalar input of the op's dtype: the epsilon of the normalizing ops (an
// attribute would round a float64 layer's epsilon to float32). Sets an
// error on the context, and returns 0, where it is not a scalar (shape
// (), as tf.constant(1e-3) has; not (1,)).
template <typename T>
T ScalarInput(OpKernelContext* ctx, int i, const char* name) {
  const Tensor& e = ctx->input(i);
  if (e.dims() != 0) {
    ctx->SetStatus(InvalidArgument(name, " must be a scalar, got ",
                                   e.shape().DebugString()));
    return T(0);
  }
  return e.flat<T>()(0);
}

// Common checks of the sequence ops; sets T (time), B (batch), u (units)
// and G (gate width, blocks * u). `x` is the input (time, batch, features)
// and `w` the input kernel (features, G), or without `w` (null) `x` is the
// projected input (time, batch, G).
void CheckSequence(OpKernelContext* ctx, const Tensor& x, const Tensor* w,
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
  if (w) {
    OP_REQUIRES(ctx, w->shape() == TensorShape({F, *G}),
                InvalidArgument("input kernel must be (", F, ", ", *G,
                                "), got ", w->shape().DebugString()));
  } else {
    OP_REQUIRES(ctx, F == *G,
                InvalidArgument("projected sequence must be (time, ", *B,
                                ", ", *G, "), got ", x.shape().DebugString()));
  }
  OP_REQUIRES(ctx, kernel.shape() == TensorShape({*u, *G}),
              InvalidArgument("kernel must be (", *u, ", ", *G, "), got ",
                              kernel.shape().DebugString()));
  if (masked) {
    OP_REQUIRES(ctx, mask.NumElements() == *T * *B,
                InvalidArgument("mask must have time*batch elements, got ",
                                mask.shape().DebugString()));
  }
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

#define REGISTER(NAME, OP, TYPE)                                           \
  REGISTER_KERNEL_BUILDER(                                                 \
      Name(NAME).Device(tensorflow::DEVICE_CPU).TypeConstraint<TYPE>("T"), \
      OP<TYPE>)

}  // namespace
}  // namespace keras_ln

// TanhOp vectorizes as Eigen's own tanh does.
namespace Eigen {
namespace internal {
template <typename T>
struct functor_traits<keras_ln::TanhOp<T>> {
  enum {
    Cost = functor_traits<scalar_tanh_op<T>>::Cost,
    PacketAccess = packet_traits<T>::HasTanh,
  };
};
}  // namespace internal
}  // namespace Eigen

#endif  // KERAS_LN_LAYERS_NATIVE_KERNELS_H_
