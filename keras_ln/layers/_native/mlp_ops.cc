// The scikit-learn MLP estimators' training loop as one op: epochs of
// minibatch Adam steps on a multilayer perceptron (keras_ln/models.py's
// build_mlp: Dense, optional LayerNormalization, activation per hidden
// layer; a Dense output), with sklearn's stopping rule after each epoch.
// keras_ln/sklearn/_execution.py (`_Program.epochs`) runs it in place of
// its XLA-compiled loop for the networks it covers (`_native_mlp`).
//
// Why: on a few cores, XLA's CPU runtime splits a small step's fusions and
// runs its independent kernels on the intra-op thread pool, and each
// hand-off between cores costs more than the kernels it hands off (a step
// of a (200, 100) batch is ~10 microseconds of arithmetic per product).
// Here a step is one pass over its rows, in two shards of rows where the
// batch has at least kSplitRows (the second on one helper thread that
// spins between steps, StepHelper), with the products of kernels.h (see
// Net), and nothing is compiled: a fit's first step costs what the others
// do.
//
// The arithmetic is `_Program.step`'s, in this order per step:
//   xb, yb, w  = the batch's rows, targets and weights (0 on padding rows)
//   scale      = 1 / sum(w)  (0 if the batch has no weight)
//   per hidden layer: z = h @ W + b; a = layer_norm(z) * gamma + beta
//                     (or a = z); h = activation(a)
//   out        = h @ W_out + b_out
//   loss       = (sum_r w_r loss_r(out_r, yb_r) + half_alpha * sum ||W||^2)
//                * scale
// with loss_r the softmax cross-entropy (yb one-hot), the sigmoid
// cross-entropy summed over the outputs, or half the squared error
// averaged over the outputs; the gradients of that loss by hand (the layer
// norm's closed form and row code of layer_norm.h), and Adam's update of
// adam_ops.cc with ResourceApplyAdam's scalars (beta powers of the step
// count, in T). An epoch's loss is the batches' losses weighted by the
// batches' total sample weights, summed in float64 and divided by the
// epoch's total weight; the rule is sklearn's `_update_no_improvement_count`.
//
// The same numbers as the XLA loop to rounding (other summation orders),
// and the same bits on every run, thread count and vector width: a fixed
// order everywhere (the shards split by the batch's size alone), products
// with explicit fused multiply-adds (kernels.h), element-wise code
// compiled without contraction, and the transcendental
// functions called one element at a time (a vectorized exp or tanh rounds
// differently from a scalar one, so a row's results would depend on its
// alignment).

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "kernels.h"
#include "layer_norm.h"

namespace keras_ln {
namespace {

enum class Activation { kRelu, kTanh, kSigmoid, kLinear };
enum class Output { kSoftmax, kSigmoid, kIdentity };

// Input positions (the `P` parameters come three times: values, m, v).
constexpr int kX = 0, kY = 1, kIdx = 2, kW = 3, kIdxLast = 4, kWLast = 5,
              kBatchWeight = 6, kEpochWeight = 7, kEpochs = 8, kActive = 9,
              kTol = 10, kPatience = 11, kBest = 12, kCount = 13,
              kParams = 14;

REGISTER_OP("KerasLnMlpEpochs")
    .Input("x: T")
    .Input("y: T")
    .Input("idx: int32")
    .Input("w: T")
    .Input("idx_last: int32")
    .Input("w_last: T")
    .Input("batch_weight: double")
    .Input("epoch_weight: double")
    .Input("n_epochs: int32")
    .Input("active: bool")
    .Input("tol: double")
    .Input("patience: int32")
    .Input("best: double")
    .Input("count: int32")
    .Input("params: P * T")
    .Input("m: P * T")
    .Input("v: P * T")
    .Input("t: int64")
    .Input("lr: double")
    .Input("half_alpha: T")
    .Input("beta_1: double")
    .Input("beta_2: double")
    .Input("epsilon: double")
    .Input("ln_epsilon: double")
    .Output("losses: double")
    .Output("ran: int32")
    .Output("params_out: P * T")
    .Output("m_out: P * T")
    .Output("v_out: P * T")
    .Output("t_out: int64")
    .Attr("T: {float, double}")
    .Attr("P: int >= 2")
    .Attr("hidden: int >= 0")
    .Attr("layer_norm: bool")
    .Attr("activation: {'relu', 'tanh', 'sigmoid', 'linear'}")
    .Attr("output: {'softmax', 'sigmoid', 'identity'}")
    .Attr("threads: int >= 0 = 0")
    .SetShapeFn([](InferenceContext* c) {
      int p;
      TF_RETURN_IF_ERROR(c->GetAttr("P", &p));
      c->set_output(0, c->Vector(c->Dim(c->input(kIdx), 0)));
      c->set_output(1, c->Scalar());
      for (int i = 0; i < 3 * p; ++i) c->set_output(2 + i, c->input(kParams + i));
      c->set_output(2 + 3 * p, c->Scalar());
      return absl::OkStatus();
    });

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")  // see the top

// h = f(a) over n elements; the switch outside the loops, so that relu's
// and linear's vectorize.
template <typename T>
void Activate(Activation f, const T* __restrict__ a, T* __restrict__ h, int64_t n) {
  switch (f) {
    case Activation::kRelu:
      for (int64_t i = 0; i < n; ++i) h[i] = a[i] > T(0) ? a[i] : T(0);
      return;
    case Activation::kTanh:
      for (int64_t i = 0; i < n; ++i) h[i] = std::tanh(a[i]);
      return;
    case Activation::kSigmoid:
      for (int64_t i = 0; i < n; ++i) h[i] = T(1) / (T(1) + std::exp(-a[i]));
      return;
    default:
      std::copy_n(a, n, h);
  }
}

// da = the gradient by a, from the activation's output h (as TensorFlow's
// ReluGrad, TanhGrad and SigmoidGrad take it) and dh.
template <typename T>
void ActivationGrad(Activation f, const T* __restrict__ h, const T* __restrict__ dh,
                    T* __restrict__ da, int64_t n) {
  switch (f) {
    case Activation::kRelu:
      for (int64_t i = 0; i < n; ++i) da[i] = h[i] > T(0) ? dh[i] : T(0);
      return;
    case Activation::kTanh:
      for (int64_t i = 0; i < n; ++i) da[i] = dh[i] * (T(1) - h[i] * h[i]);
      return;
    case Activation::kSigmoid:
      for (int64_t i = 0; i < n; ++i) da[i] = dh[i] * (h[i] * (T(1) - h[i]));
      return;
    default:
      std::copy_n(dh, n, da);
  }
}

// The sum of the squares of a[0, n), in an order fixed by n alone (lanes
// of element-wise adds, folded in a fixed tree, then the tail in order).
template <typename T>
T SumOfSquares(const T* a, int64_t n) {
  constexpr int kL = 16;
  using A = Eigen::Array<T, kL, 1>;
  A lanes = A::Zero();
  int64_t i = 0;
  for (; i + kL <= n; i += kL) {
    const A x = Eigen::Map<const A>(a + i);
    lanes += x * x;
  }
  const Eigen::Array<T, 8, 1> l8 = lanes.template head<8>() + lanes.template tail<8>();
  const Eigen::Array<T, 4, 1> l4 = l8.template head<4>() + l8.template tail<4>();
  T sum = (l4[0] + l4[2]) + (l4[1] + l4[3]);
  for (; i < n; ++i) sum += a[i] * a[i];
  return sum;
}

// One row's loss, and its gradient by the outputs z (times `scale`, the
// row's weight over the batch's) into dz. Softmax: y one-hot.
template <typename T>
T RowLoss(Output kind, const T* z, const T* y, int64_t n, T scale, T* dz) {
  if (kind == Output::kSoftmax) {
    T top = z[0];
    for (int64_t o = 1; o < n; ++o) top = std::max(top, z[o]);
    T sum = 0, picked = 0;
    for (int64_t o = 0; o < n; ++o) {
      dz[o] = std::exp(z[o] - top);
      sum += dz[o];
      picked += y[o] * z[o];
    }
    for (int64_t o = 0; o < n; ++o) dz[o] = (dz[o] / sum - y[o]) * scale;
    return (std::log(sum) + top) - picked;
  }
  T loss = 0;
  if (kind == Output::kSigmoid) {
    // max(z, 0) - z y + log1p(exp(-|z|)), as sigmoid_cross_entropy_with_logits.
    for (int64_t o = 0; o < n; ++o) {
      const T zo = z[o];
      loss += (std::max(zo, T(0)) - zo * y[o]) + std::log1p(std::exp(-std::abs(zo)));
      dz[o] = (T(1) / (T(1) + std::exp(-zo)) - y[o]) * scale;
    }
    return loss;
  }
  for (int64_t o = 0; o < n; ++o) {
    const T e = y[o] - z[o];
    loss += e * e;
    dz[o] = ((z[o] - y[o]) / T(n)) * scale;
  }
  return T(0.5) * (loss / T(n));
}

// The square roots of a vector of kernels.h's width: correctly rounded,
// as std::sqrt (Eigen's vector square root is an approximation under its
// default fast math).
template <typename T>
typename Vectors<T>::V VectorSqrt(typename Vectors<T>::V x) {
  using V = typename Vectors<T>::V;
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) return (V)_mm512_sqrt_ps((__m512)x);
  else return (V)_mm512_sqrt_pd((__m512d)x);
#elif defined(__AVX__)
  if constexpr (sizeof(T) == 4) return (V)_mm256_sqrt_ps((__m256)x);
  else return (V)_mm256_sqrt_pd((__m256d)x);
#else
  V out;
  for (int i = 0; i < Vectors<T>::kLanes; ++i) out[i] = std::sqrt(x[i]);
  return out;
#endif
}

// adam_ops.cc's AdamUpdate, vectorized by hand: GCC keeps std::sqrt's
// errno branch in a loop, so that loop ran one element at a time. Every
// operation is an IEEE one, correctly rounded: the same bits as
// adam_ops.cc's and ResourceApplyAdam's, at any vector width.
template <typename T>
void AdamUpdate(T* var, T* m, T* v, const T* g, int64_t size, T alpha,
                T one_minus_beta1, T one_minus_beta2, T epsilon) {
  using Vec = Vectors<T>;
  using V = typename Vec::V;
  int64_t i = 0;
  for (; i + Vec::kLanes <= size; i += Vec::kLanes) {
    const V gv = Vec::Load(g + i);
    V mv = Vec::Load(m + i), vv = Vec::Load(v + i);
    mv += (gv - mv) * one_minus_beta1;
    vv += (gv * gv - vv) * one_minus_beta2;
    Vec::Store(m + i, mv);
    Vec::Store(v + i, vv);
    Vec::Store(var + i, Vec::Load(var + i) - (mv * alpha) / (VectorSqrt<T>(vv) + epsilon));
  }
  for (; i < size; ++i) {
    m[i] += (g[i] - m[i]) * one_minus_beta1;
    v[i] += (g[i] * g[i] - v[i]) * one_minus_beta2;
    var[i] -= (m[i] * alpha) / (std::sqrt(v[i]) + epsilon);
  }
}

#pragma GCC pop_options

// c (m, n) = a^T @ b over `rows` rows: a (rows, m), b (rows, n). The
// kernel's path for a panel of fewer than kPanel columns copies each row of
// b once per block of rows of c (most of a step's time, for 100 units), so
// the last, partial panel of b is copied once into the zero-padded columns
// of `pad` and its product taken there. Each element of c is the same sum,
// in the same order, either way. Not inlined (nor the products below):
// inlined into the step, GCC kept the products' accumulators on the stack.
template <typename T>
__attribute__((noinline)) void TransposedProduct(int64_t rows, int64_t m, int64_t n,
                                                 const T* a, const T* b, T* c,
                                                 Arr<T>& pad) {
  constexpr int64_t kPanel = Vectors<T>::kPanel;
  const int64_t full = n / kPanel * kPanel, rest = n - full;
  std::fill_n(c, m * n, T(0));
  if (full) AddTransposedProduct<T>(rows, m, full, a, m, b, n, c, n);
  if (!rest) return;
  pad.resize(rows * kPanel + m * kPanel);
  T* bp = pad.data();
  T* cp = bp + rows * kPanel;
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(b + r * n + full, rest, bp + r * kPanel);
    std::fill_n(bp + r * kPanel + rest, kPanel - rest, T(0));
  }
  std::fill_n(cp, m * kPanel, T(0));
  AddTransposedProduct<T>(rows, m, kPanel, a, m, bp, kPanel, cp);
  for (int64_t i = 0; i < m; ++i) std::copy_n(cp + i * kPanel, rest, c + i * n + full);
}

// Layers of at most this many units (the estimators' outputs: one for two
// classes or one target) take the products below instead of the panel
// kernels, which compute a whole panel of kernels.h (16 or 32 columns).
constexpr int64_t kNarrow = 4;

// c (m, n) = a (m, k) @ b (k, n) for n <= kNarrow: each element a dot
// product over k in lanes of element-wise adds, folded in a fixed tree
// (an order fixed by k alone), then the tail in order. bt: b's columns.
template <typename T>
__attribute__((noinline)) void NarrowProduct(int64_t m, const T* a, const T* b,
                                             int64_t k, int64_t n, T* c, Arr<T>& bt) {
  constexpr int kL = 16;
  using A = Eigen::Array<T, kL, 1>;
  bt.resize(n * k);
  for (int64_t kk = 0; kk < k; ++kk)
    for (int64_t o = 0; o < n; ++o) bt[o * k + kk] = b[kk * n + o];
  for (int64_t i = 0; i < m; ++i) {
    const T* ai = a + i * k;
    for (int64_t o = 0; o < n; ++o) {
      const T* bo = bt.data() + o * k;
      A lanes = A::Zero();
      int64_t j = 0;
      for (; j + kL <= k; j += kL)
        lanes += Eigen::Map<const A>(ai + j) * Eigen::Map<const A>(bo + j);
      const Eigen::Array<T, 8, 1> l8 = lanes.template head<8>() + lanes.template tail<8>();
      const Eigen::Array<T, 4, 1> l4 = l8.template head<4>() + l8.template tail<4>();
      T sum = (l4[0] + l4[2]) + (l4[1] + l4[3]);
      for (; j < k; ++j) sum += ai[j] * bo[j];
      c[i * n + o] = sum;
    }
  }
}

// c (m, n) = a^T @ b over `rows` rows for n <= kNarrow: a (rows, m), b
// (rows, n); each element summed over the rows in order.
template <typename T>
__attribute__((noinline)) void NarrowTransposedProduct(int64_t rows, int64_t m, int64_t n,
                                                       const T* a, const T* b, T* c,
                                                       Arr<T>& acc) {
  acc.resize(n * m);
  acc.setZero();
  for (int64_t r = 0; r < rows; ++r) {
    CRow<T> ar(a + r * m, m);
    for (int64_t o = 0; o < n; ++o) Row<T>(acc.data() + o * m, m) += b[r * n + o] * ar;
  }
  for (int64_t i = 0; i < m; ++i)
    for (int64_t o = 0; o < n; ++o) c[i * n + o] = acc[o * m + i];
}

// c (m, n) = a (m, k) @ b (k, n), b row-major: PackedMatrix's tile (PanelTile),
// element for element (the same bits), without packing b, which changes
// at every step: its whole panels are read where they are, and only its
// last, partial panel is copied, zero-padded, into `pad`.
template <typename T>
__attribute__((noinline)) void DirectProduct(int64_t m, const T* a, const T* b, int64_t k,
                                             int64_t n, T* c, Arr<T>& pad) {
  constexpr int64_t kPanel = Vectors<T>::kPanel;
  int64_t col = 0;
  for (; col + kPanel <= n; col += kPanel)
    ForRowBlocks(m, PanelTile<T>{a, k, b + col, n, kPanel, nullptr, c + col, n});
  if (col == n) return;
  const int64_t rest = n - col;
  pad.resize(k * kPanel);
  for (int64_t kk = 0; kk < k; ++kk) {
    std::copy_n(b + kk * n + col, rest, pad.data() + kk * kPanel);
    std::fill_n(pad.data() + kk * kPanel + rest, kPanel - rest, T(0));
  }
  ForRowBlocks(m, PanelTile<T>{a, k, pad.data(), kPanel, rest, nullptr, c + col, n});
}

// c (m, k) @ B for a packed B.
template <typename T>
__attribute__((noinline)) void Product(const PackedMatrix<T>& b, int64_t m,
                                       const T* a, T* c) {
  b.Multiply(m, a, c, nullptr);
}

// A step's rows run in two shards where there are at least kSplitRows of
// them: rows [0, rows / 2) and [rows / 2, rows), each with its own buffers
// and its own part of the gradients, the parts added in shard order. The
// split depends on the batch's size alone, never on the machine or the
// threads: the same bits whether the second shard runs on the helper
// thread (StepHelper) or after the first in the calling thread. (Not
// kernels.h's ForShards: it hands shards to TensorFlow's pool, see below.)
constexpr int64_t kSplitRows = 32;

// The second thread of a step: one per process, claimed by one op at a
// time (an op that finds it claimed runs both shards itself). A hand-off
// is a counter the helper watches: between the steps of an op it spins (a
// shard's work is tens of microseconds, and waking a sleeping thread costs
// about as much), after kSpin without work it sleeps on a condition
// variable; a shard it has not taken when the caller has finished its own
// runs in the caller. (Measured on 2 cores at (200, 100) x (100, 100): the
// second shard on TensorFlow's intra-op pool, whose threads sleep between
// tasks, made a step slower than one shard, 119-133 against 109-117 us.)
class StepHelper {
 public:
  // The shards helpers have run in this process (for the tests).
  static std::atomic<uint64_t> runs;

  // The helper, claimed for this op; null where another op holds it.
  static StepHelper* Claim() {
    static std::mutex mutex;
    static StepHelper* helper = nullptr;  // never destroyed: it runs until exit
    std::lock_guard<std::mutex> lock(mutex);
    if (helper == nullptr || helper->pid_ != getpid()) {  // none, or forked
      helper = new StepHelper();
      std::thread([h = helper] { h->Loop(); }).detach();
    }
    return helper->claim_.try_lock() ? helper : nullptr;
  }
  void Release() { claim_.unlock(); }

  // Hands *fn to the helper; Finish() returns once it has run: on the
  // helper, or in the calling thread where the helper has not taken it by
  // then (asleep, or without a core: under load a step costs at most what
  // it costs in one thread). Either way the same code on the same buffers.
  void Post(const std::function<void()>* fn) {
    task_ = fn;
    posted_.fetch_add(1);
    if (sleeping_.load()) {
      std::lock_guard<std::mutex> lock(sleep_);
      wake_.notify_one();
    }
  }
  // Returns false where the caller waited more than kLateSpins for the
  // helper to finish a task it had taken (it lost its core meanwhile).
  bool Finish() {
    const uint64_t want = posted_.load(std::memory_order_relaxed);
    uint64_t expected = want - 1;
    if (taken_.compare_exchange_strong(expected, want)) {
      (*task_)();
      return true;
    }
    int64_t spins = 0;
    for (; done_.load(std::memory_order_acquire) != want; ++spins) {
      if (spins < kYieldAfter) Pause();
      else std::this_thread::yield();  // the helper lost its core: let it run
    }
    return spins <= kLateSpins;
  }

 private:
  static constexpr auto kSpin = std::chrono::microseconds(200);
  static constexpr int64_t kYieldAfter = 1 << 14;
  static constexpr int64_t kLateSpins = 1 << 10;  // ~50 us of pauses

  static void Pause() {
#if defined(__SSE2__)
    _mm_pause();
#endif
  }

  void Loop() {
    uint64_t seen = 0;  // the last post seen
    for (;;) {
      const auto start = std::chrono::steady_clock::now();
      for (int64_t spins = 1; posted_.load(std::memory_order_acquire) == seen; ++spins) {
        Pause();
        if (spins % 64 == 0 && std::chrono::steady_clock::now() - start > kSpin) {
          std::unique_lock<std::mutex> lock(sleep_);
          sleeping_.store(true);
          while (posted_.load() == seen) wake_.wait(lock);
          sleeping_.store(false, std::memory_order_relaxed);
        }
      }
      seen = posted_.load(std::memory_order_acquire);
      uint64_t expected = seen - 1;  // else the poster took it, or an older one
      if (taken_.compare_exchange_strong(expected, seen)) {
        (*task_)();
        runs.fetch_add(1, std::memory_order_relaxed);
        done_.store(seen, std::memory_order_release);
      }
    }
  }

  const pid_t pid_ = getpid();
  std::mutex claim_, sleep_;
  std::condition_variable wake_;
  std::atomic<uint64_t> posted_{0}, taken_{0}, done_{0};  // post numbers
  std::atomic<bool> sleeping_{false};
  const std::function<void()>* task_ = nullptr;
};

std::atomic<uint64_t> StepHelper::runs{0};

// The network's parameters (pointers into the op's outputs, updated in
// place between steps) and a step's buffers.
template <typename T>
struct Net {
  struct Layer {
    int64_t in, out;
    T *kernel, *bias, *gamma = nullptr, *beta = nullptr;  // values
    int kernel_i, bias_i, gamma_i = -1, beta_i = -1;       // parameter indices
    std::unique_ptr<PackedMatrix<T>> backward;  // this step's kernel, transposed
  };
  // One shard's rows of every (rows, units) block of the step, and its
  // part of the gradients: its own buffers (threads writing near each
  // other's data slow each other down).
  struct Shard {
    struct Blocks {
      Arr<T> z, a, h, stats, dz, dh;
    };
    int64_t begin, rows;          // of the batch
    Arr<T> xb, yb, pad;           // its rows and targets; the products' scratch
    std::vector<Blocks> blocks;   // by layer
    std::vector<Arr<T>> grad;     // by parameter index
    T data_loss;
  };

  std::vector<Layer> layers;  // hidden layers, then the output layer
  Activation activation;
  Output output;
  bool layer_norm;
  T ln_epsilon;
  int64_t features, outputs, rows = -1, n_shards = 0;
  std::vector<int64_t> sizes;  // of the parameters
  Shard shards[2];
  // Where the second shard runs (else here). An op lets go of it once the
  // caller has waited long for it (Finish) in more than kMaxLate steps and
  // more than one in kLateShare of the steps it was given (a loaded
  // machine: two threads that wait on each other there are slower than
  // one). A shard it had not taken in time ran here and costs no wait.
  StepHelper* helper = nullptr;
  int64_t given = 0, late = 0;
  static constexpr int64_t kMaxLate = 16, kLateShare = 4;

  ~Net() { DropHelper(); }
  void DropHelper() {
    if (helper) helper->Release();
    helper = nullptr;
  }

  // The step's gradients, by parameter index (valid after Step).
  const Arr<T>& Grad(int i) const { return shards[0].grad[i]; }

  // Buffers for steps of `r` rows.
  void Allocate(int64_t r) {
    if (r == rows) return;
    rows = r;
    n_shards = rows >= kSplitRows ? 2 : 1;
    for (int64_t s = 0; s < n_shards; ++s) {
      Shard& sh = shards[s];
      sh.begin = s * (rows / 2);
      sh.rows = n_shards == 1 ? rows : s == 0 ? rows / 2 : rows - rows / 2;
      sh.xb.resize(sh.rows * features);
      sh.yb.resize(sh.rows * outputs);
      sh.blocks.resize(layers.size());
      for (size_t l = 0; l < layers.size(); ++l) {
        auto& b = sh.blocks[l];
        for (Arr<T>* a : {&b.z, &b.a, &b.h, &b.dz, &b.dh}) a->resize(sh.rows * layers[l].out);
        b.stats.resize(3 * sh.rows);
      }
      sh.grad.resize(sizes.size());
      for (size_t i = 0; i < sizes.size(); ++i) sh.grad[i].resize(sizes[i]);
    }
  }

  // One shard's forward and backward pass: the gradients of its part of
  // the data loss (scaled) into sh.grad, its data loss (weighted, not
  // scaled) into sh.data_loss.
  void Pass(Shard& sh, const T* x, const T* y, const int32_t* idx, const T* w, T scale) {
    const int64_t B = sh.rows;
    idx += sh.begin;
    w += sh.begin;
    for (int64_t r = 0; r < B; ++r) {
      std::memcpy(sh.xb.data() + r * features, x + int64_t(idx[r]) * features,
                  features * sizeof(T));
      std::memcpy(sh.yb.data() + r * outputs, y + int64_t(idx[r]) * outputs,
                  outputs * sizeof(T));
    }
    const T* h = sh.xb.data();
    const int64_t n_layers = layers.size();
    for (int64_t l = 0; l < n_layers; ++l) {
      const Layer& L = layers[l];
      auto& b = sh.blocks[l];
      if (L.out <= kNarrow)
        NarrowProduct<T>(B, h, L.kernel, L.in, L.out, b.z.data(), sh.pad);
      else
        DirectProduct<T>(B, h, L.kernel, L.in, L.out, b.z.data(), sh.pad);
      for (int64_t r = 0; r < B; ++r) {
        T* zr = b.z.data() + r * L.out;
        for (int64_t j = 0; j < L.out; ++j) zr[j] += L.bias[j];
      }
      if (l == n_layers - 1) break;
      const T* a = b.z.data();
      if (layer_norm) {
        LayerNormForwardRows<T>(b.z.data(), L.gamma, L.beta, ln_epsilon, B,
                                L.out, 0, B, b.a.data(), b.stats.data());
        a = b.a.data();
      }
      Activate<T>(activation, a, b.h.data(), B * L.out);
      h = b.h.data();
    }

    // The loss and its gradient by the outputs.
    auto& top = sh.blocks.back();
    T data_loss = 0;
    for (int64_t r = 0; r < B; ++r) {
      const T row_loss = RowLoss<T>(output, top.z.data() + r * outputs,
                                    sh.yb.data() + r * outputs, outputs,
                                    w[r] * scale, top.dz.data() + r * outputs);
      data_loss += row_loss * w[r];
    }
    sh.data_loss = data_loss;

    for (int64_t l = n_layers - 1; l >= 0; --l) {
      const Layer& L = layers[l];
      auto& b = sh.blocks[l];
      if (l < n_layers - 1) {
        // Through the activation (from dh) and the norm, to dz.
        T* da = layer_norm ? b.a.data() : b.dz.data();
        ActivationGrad<T>(activation, b.h.data(), b.dh.data(), da, B * L.out);
        if (layer_norm) {
          Arr<T>& dgamma = sh.grad[L.gamma_i];
          Arr<T>& dbeta = sh.grad[L.beta_i];
          dgamma.setZero();
          dbeta.setZero();
          LayerNormBackwardRows<T>(da, b.z.data(), b.stats.data(), L.gamma, B,
                                   L.out, 0, B, b.dz.data(), dgamma.data(),
                                   dbeta.data());
        }
      }
      const T* dz = b.dz.data();
      const T* below = l == 0 ? sh.xb.data() : sh.blocks[l - 1].h.data();
      T* dk = sh.grad[L.kernel_i].data();
      if (L.out <= kNarrow)
        NarrowTransposedProduct<T>(B, L.in, L.out, below, dz, dk, sh.pad);
      else
        TransposedProduct<T>(B, L.in, L.out, below, dz, dk, sh.pad);
      Arr<T>& db = sh.grad[L.bias_i];
      db.setZero();
      for (int64_t r = 0; r < B; ++r)
        for (int64_t j = 0; j < L.out; ++j) db[j] += dz[r * L.out + j];
      if (l > 0) Product<T>(*L.backward, B, dz, sh.blocks[l - 1].dh.data());
    }
  }

  // One step's loss and gradients (Grad) on the batch `idx`, `w` (`rows`
  // entries, Allocate'd).
  T Step(const T* x, const T* y, const int32_t* idx, const T* w, T half_alpha) {
    T total_weight = 0;
    for (int64_t r = 0; r < rows; ++r) total_weight += w[r];
    const T scale = total_weight == T(0) ? T(0) : T(1) / total_weight;
    for (size_t l = 0; l < layers.size(); ++l) {
      Layer& L = layers[l];
      if (l > 0) L.backward.reset(new PackedMatrix<T>(L.kernel, L.out, L.in, true));
    }
    const std::function<void()> second = [&] { Pass(shards[1], x, y, idx, w, scale); };
    const bool handed = n_shards == 2 && helper;
    if (handed) helper->Post(&second);
    Pass(shards[0], x, y, idx, w, scale);
    if (handed) {
      ++given;
      if (!helper->Finish() && ++late > kMaxLate && late * kLateShare > given) DropHelper();
    } else if (n_shards == 2) {
      second();
    }
    T data_loss = shards[0].data_loss;
    if (n_shards == 2) {
      data_loss += shards[1].data_loss;
      for (size_t i = 0; i < sizes.size(); ++i) shards[0].grad[i] += shards[1].grad[i];
    }
    // The penalty: its value (none to add without a penalty: weights are
    // finite while the loss is) and its gradient.
    T penalty = 0;
    if (half_alpha != T(0)) {
      for (const Layer& L : layers) penalty += SumOfSquares(L.kernel, L.in * L.out);
      const T decay = (half_alpha * T(2)) * scale;
      for (const Layer& L : layers) {
        Arr<T>& dk = shards[0].grad[L.kernel_i];
        for (int64_t i = 0; i < L.in * L.out; ++i) dk[i] += decay * L.kernel[i];
      }
    }
    return (data_loss + half_alpha * penalty) * scale;
  }
};

template <typename T>
class MlpEpochsOp : public OpKernel {
 public:
  explicit MlpEpochsOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("P", &p_));
    OP_REQUIRES_OK(c, c->GetAttr("hidden", &hidden_));
    OP_REQUIRES_OK(c, c->GetAttr("layer_norm", &layer_norm_));
    OP_REQUIRES_OK(c, c->GetAttr("threads", &threads_));
    std::string activation, output;
    OP_REQUIRES_OK(c, c->GetAttr("activation", &activation));
    OP_REQUIRES_OK(c, c->GetAttr("output", &output));
    activation_ = activation == "relu"      ? Activation::kRelu
                  : activation == "tanh"    ? Activation::kTanh
                  : activation == "sigmoid" ? Activation::kSigmoid
                                            : Activation::kLinear;
    output_ = output == "softmax"   ? Output::kSoftmax
              : output == "sigmoid" ? Output::kSigmoid
                                    : Output::kIdentity;
    const int want = 2 * (hidden_ + 1) + (layer_norm_ ? 2 * hidden_ : 0);
    OP_REQUIRES(c, p_ == want,
                InvalidArgument("P must be ", want, " for ", hidden_,
                                " hidden layers, got ", p_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor x = AlignedInput(ctx, kX);
    const Tensor y = AlignedInput(ctx, kY);
    const Tensor& idx = ctx->input(kIdx);
    const Tensor& w = ctx->input(kW);
    const Tensor& idx_last = ctx->input(kIdxLast);
    const Tensor& w_last = ctx->input(kWLast);
    const Tensor& batch_weight = ctx->input(kBatchWeight);
    const Tensor& epoch_weight = ctx->input(kEpochWeight);
    OP_REQUIRES(ctx, x.dims() == 2 && y.dims() == 2 && x.dim_size(0) == y.dim_size(0),
                InvalidArgument("x and y must be (rows, features) and (rows, outputs), got ",
                                x.shape().DebugString(), " and ", y.shape().DebugString()));
    OP_REQUIRES(ctx, idx.dims() == 3,
                InvalidArgument("idx must be (epochs, batches, batch size), got ",
                                idx.shape().DebugString()));
    const int64_t N = x.dim_size(0), F = x.dim_size(1), O = y.dim_size(1);
    const int64_t E = idx.dim_size(0), nb = idx.dim_size(1), S = idx.dim_size(2);
    CheckShape(ctx, "w", w, idx.shape());
    OP_REQUIRES(ctx, idx_last.dims() == 2 && idx_last.dim_size(0) == E,
                InvalidArgument("idx_last must be (", E, ", last batch size), got ",
                                idx_last.shape().DebugString()));
    const int64_t S_last = idx_last.dim_size(1);
    CheckShape(ctx, "w_last", w_last, idx_last.shape());
    CheckShape(ctx, "batch_weight", batch_weight, TensorShape({E, nb + 1}));
    CheckShape(ctx, "epoch_weight", epoch_weight, TensorShape({E}));
    for (int i : {kEpochs, kActive, kTol, kPatience, kBest, kCount}) {
      CheckShape(ctx, "the stopping rule's scalars", ctx->input(i), TensorShape({}));
    }
    if (!ctx->status().ok()) return;
    for (const Tensor* t : {&idx, &idx_last}) {
      const auto flat = t->flat<int32_t>();
      for (int64_t i = 0; i < flat.size(); ++i) {
        OP_REQUIRES(ctx, flat(i) >= 0 && flat(i) < N,
                    InvalidArgument("row index ", flat(i), " out of [0, ", N, ")"));
      }
    }

    // The parameters: copied to the outputs, updated there.
    std::vector<T*> value(p_), m(p_), v(p_);
    std::vector<int64_t> size(p_);
    for (int k = 0; k < 3; ++k) {
      for (int i = 0; i < p_; ++i) {
        const Tensor& in = ctx->input(kParams + k * p_ + i);
        Tensor* out;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(2 + k * p_ + i, in.shape(), &out));
        if (in.NumElements()) std::memcpy(out->data(), in.data(), in.TotalBytes());
        T* data = out->flat<T>().data();
        (k == 0 ? value : k == 1 ? m : v)[i] = data;
        size[i] = in.NumElements();
      }
    }
    Net<T> net;
    net.activation = activation_;
    net.output = output_;
    net.layer_norm = layer_norm_;
    net.features = F;
    net.outputs = O;
    int at = 0;
    int64_t width = F;
    for (int l = 0; l <= hidden_; ++l) {
      typename Net<T>::Layer L;
      const Tensor& kernel = ctx->input(kParams + at);
      OP_REQUIRES(ctx, kernel.dims() == 2 && kernel.dim_size(0) == width,
                  InvalidArgument("params[", at, "] must be a (", width,
                                  ", units) kernel, got ", kernel.shape().DebugString()));
      L.in = width;
      L.out = kernel.dim_size(1);
      OP_REQUIRES(ctx, l < hidden_ || L.out == O,
                  InvalidArgument("the output kernel must have ", O, " columns, got ",
                                  kernel.shape().DebugString()));
      L.kernel_i = at;
      L.kernel = value[at++];
      CheckShape(ctx, "a bias", ctx->input(kParams + at), TensorShape({L.out}));
      L.bias_i = at;
      L.bias = value[at++];
      if (layer_norm_ && l < hidden_) {
        CheckShape(ctx, "gamma", ctx->input(kParams + at), TensorShape({L.out}));
        CheckShape(ctx, "beta", ctx->input(kParams + at + 1), TensorShape({L.out}));
        L.gamma_i = at;
        L.gamma = value[at++];
        L.beta_i = at;
        L.beta = value[at++];
      }
      if (!ctx->status().ok()) return;
      width = L.out;
      net.layers.push_back(std::move(L));
    }
    for (int k = 1; k < 3; ++k) {
      for (int i = 0; i < p_; ++i) {
        CheckShape(ctx, k == 1 ? "m" : "v", ctx->input(kParams + k * p_ + i),
                   ctx->input(kParams + i).shape());
      }
    }
    for (int i = kParams + 3 * p_; i < kParams + 3 * p_ + 7; ++i) {
      CheckShape(ctx, "Adam's scalars", ctx->input(i), TensorShape({}));
    }
    if (!ctx->status().ok()) return;
    net.ln_epsilon = T(ctx->input(kParams + 3 * p_ + 6).scalar<double>()());
    net.sizes = size;
    // The helper thread, where this op may use two: `threads` (0: as many
    // as the intra-op pool has), at most two.
    const int pool = ctx->device()->tensorflow_cpu_worker_threads()->num_threads;
    if (std::min(threads_ > 0 ? threads_ : pool, 2) > 1) net.helper = StepHelper::Claim();

    const int64_t t0 = ctx->input(kParams + 3 * p_).scalar<int64_t>()();
    const double lr = ctx->input(kParams + 3 * p_ + 1).scalar<double>()();
    const T half_alpha = ctx->input(kParams + 3 * p_ + 2).scalar<T>()();
    const T beta1 = T(ctx->input(kParams + 3 * p_ + 3).scalar<double>()());
    const T beta2 = T(ctx->input(kParams + 3 * p_ + 4).scalar<double>()());
    const T epsilon = T(ctx->input(kParams + 3 * p_ + 5).scalar<double>()());
    int64_t t = t0;
    auto adam = [&]() {
      ++t;
      const T n = T(t);
      const T beta1_power = std::pow(beta1, n), beta2_power = std::pow(beta2, n);
      const T alpha = T(lr) * std::sqrt(T(1) - beta2_power) / (T(1) - beta1_power);
      for (int i = 0; i < p_; ++i) {
        AdamUpdate(value[i], m[i], v[i], net.Grad(i).data(), size[i], alpha,
                   T(1) - beta1, T(1) - beta2, epsilon);
      }
    };

    const T* xd = x.flat<T>().data();
    const T* yd = y.flat<T>().data();
    const int32_t* idx_d = idx.flat<int32_t>().data();
    const T* w_d = w.flat<T>().data();
    const int32_t* idx_last_d = idx_last.flat<int32_t>().data();
    const T* w_last_d = w_last.flat<T>().data();
    const double* bw = batch_weight.flat<double>().data();
    const double* ew = epoch_weight.flat<double>().data();
    const int64_t n_epochs = std::min<int64_t>(E, ctx->input(kEpochs).scalar<int32_t>()());
    const bool active = ctx->input(kActive).scalar<bool>()();
    const double tol = ctx->input(kTol).scalar<double>()();
    const int32_t patience = ctx->input(kPatience).scalar<int32_t>()();
    double best = ctx->input(kBest).scalar<double>()();
    int32_t count = ctx->input(kCount).scalar<int32_t>()();

    Tensor* losses_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({E}), &losses_t));
    auto losses = losses_t->flat<double>();
    losses.setZero();
    int32_t ran = 0;
    for (int64_t e = 0; e < n_epochs; ++e) {
      double total = 0;
      if (nb > 0) net.Allocate(S);
      for (int64_t i = 0; i < nb; ++i) {
        const int64_t at = (e * nb + i) * S;
        const T loss = net.Step(xd, yd, idx_d + at, w_d + at, half_alpha);
        adam();
        total += double(loss) * bw[e * (nb + 1) + i];
      }
      if (S_last > 0) {
        net.Allocate(S_last);
        const T loss = net.Step(xd, yd, idx_last_d + e * S_last,
                                w_last_d + e * S_last, half_alpha);
        adam();
        total += double(loss) * bw[e * (nb + 1) + nb];
      }
      const double loss = total / ew[e];
      losses(e) = loss;
      ran = e + 1;
      count = loss > best - tol ? count + 1 : 0;
      best = std::isnan(loss) || loss < best ? loss : best;
      if (!std::isfinite(loss) || (active && count > patience)) break;
    }
    Tensor* ran_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &ran_t));
    ran_t->scalar<int32_t>()() = ran;
    Tensor* t_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2 + 3 * p_, TensorShape({}), &t_out));
    t_out->scalar<int64_t>()() = t;
  }

 private:
  int p_, hidden_, threads_;
  bool layer_norm_;
  Activation activation_;
  Output output_;
};

REGISTER("KerasLnMlpEpochs", MlpEpochsOp, float);
REGISTER("KerasLnMlpEpochs", MlpEpochsOp, double);

}  // namespace
}  // namespace keras_ln

// StepHelper::runs, through ctypes (tests/sklearn/test_native_mlp.py).
extern "C" __attribute__((visibility("default"))) uint64_t keras_ln_mlp_helper_runs() {
  return keras_ln::StepHelper::runs.load();
}
