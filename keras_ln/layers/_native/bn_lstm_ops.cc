// The BatchNormLSTM recurrence as TensorFlow custom ops (the optional
// native part of its TensorFlow fast path; see
// keras_ln/layers/_native/__init__.py and _tf_bn_lstm_kernel.py).

#include <memory>

#include "kernels.h"

namespace keras_ln {
namespace {

// The recurrence of BatchNormLSTM (Cooijmans et al. 2016) in training and
// at inference; equations and mask semantics: keras_ln/layers/
// _tf_bn_lstm_kernel.py. The training ops compute the input side (x @ W,
// batch-normalized per step) inside each step (InputNorm); the inference
// op takes it from the caller, normalized and plus the bias, as xn (time,
// batch, 4u).
//
// In training each step's statistics are means over the batch rows (the
// unmasked ones, with weights v / max(sum v, 1)), so unlike the LN loops
// the rows are not independent. The units are: the recurrent norm's
// statistics are per column of r = h_{t-1} @ U, the state norm's per unit,
// the input norm's per column of x_t @ W, and a unit's four gate columns
// and its state need nothing else from the step. So the training loops
// split the units into shards; each step is one parallel pass over them
// (the shards run h_{t-1} @ U[:, their columns], or dr_{t+1} @ U[their
// units, :]^T backward, then the whole step for their units), and the
// passes are the synchronization: the next step's product reads every
// shard's part of h_t (dr_t). The shards depend on the unit and row counts
// only (see UnitBounds), and every column's statistics and parameter
// gradients are sums over the rows in row order within one shard: the
// results do not depend on the threads or the load.
//
// Internally a row's 4u columns are ordered shard by shard, each shard's
// block [i | f | g | o] of its units ("permuted" layout), and what the
// forward op keeps of a step (the saved gates, rhat, chat, th, hs and cs,
// the outputs until the loop ends) is stored shard-major: each shard's
// columns of the step as one dense block (ShardMajor), so that a core only
// writes lines of its own shard. The ops' inputs and outputs are in keras'
// order.
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
// time); instead up to `shards` threads claim (step, shard) pairs and wait,
// spinning, for the previous step to finish before running a claimed pair.
// A thread claims the earliest unclaimed step of any shard, and of the
// shards tied at that step its own first (the threads' own shards are
// 0, 1, ... in order of arrival): so every pair of an earlier step is
// already claimed by a running thread (no thread waits for one that has
// not started, and one thread alone, a busy pool, runs everything), and
// with a thread per shard each shard stays on one thread, with its scratch
// and its blocks of the step (ShardMajor) in that core's cache. (Claimed
// from one counter in step order instead, the shards changed threads at a
// third to a half of the steps; measured on 2 cores, 50 steps of 200 rows
// and 64 units, the forward op without save took 5.1-5.2 ms against
// 4.2-4.4.) Which
// thread runs a pair never changes what it computes.
void RunSteps(OpKernelContext* ctx, int64_t steps, int64_t shards,
              const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t total = steps * shards;
  // claimed[s]: shard s's first step that no thread has claimed
  std::unique_ptr<std::atomic<int64_t>[]> claimed(
      new std::atomic<int64_t>[shards]);
  for (int64_t s = 0; s < shards; ++s) claimed[s].store(0);
  std::atomic<int64_t> done{0}, arrived{0};
  auto work = [&]() {
    const int64_t own = arrived.fetch_add(1) % shards;
    for (;;) {
      int64_t shard = -1, k = steps;
      for (int64_t j = 0; j < shards; ++j) {
        const int64_t s = (own + j) % shards;
        const int64_t c = claimed[s].load(std::memory_order_relaxed);
        if (c < k) k = c, shard = s;
      }
      if (shard < 0) return;  // every pair claimed
      int64_t expected = k;
      if (!claimed[shard].compare_exchange_strong(expected, k + 1)) continue;
      const int64_t ready = k * shards;
      for (int spins = 0; done.load(std::memory_order_acquire) < ready;
           ++spins) {
        if (spins > 64) std::this_thread::yield();
      }
      fn(k, shard);
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

// A step's (batch, k * u) block of the activations, states or outputs that
// the forward op keeps, in shard-major order: shard s's (batch, k *
// w_s) columns (permuted, for k = 4) are one dense block at B * k * a_s.
// Within a row, the shards' columns would sit a few hundred bytes apart;
// each core writing its own columns of the same rows, the hardware
// prefetchers pulled the neighbouring shard's lines over and back every
// step, and two shards on two cores ran each step at half the speed of
// one core (measured: a shard's element-wise passes took 2-2.5x as long
// as when one thread ran both shards).
template <typename T>
struct ShardMajor {
  int64_t B, k;
  const std::vector<int64_t>& bounds;

  Blk<T> Get(T* step, int64_t s) const {
    const int64_t a = bounds[s], w = bounds[s + 1] - a;
    return Blk<T>(step + B * k * a, B, k * w, k * w);
  }
  CBlk<T> View(const T* step, int64_t s) const {
    const int64_t a = bounds[s], w = bounds[s + 1] - a;
    return CBlk<T>(step + B * k * a, B, k * w, k * w);
  }
  // out (B, k * u): the step block in row order (the shards' columns side by side)
  void Gather(const T* step, T* out) const {
    const int64_t u = bounds.back();
    for (size_t s = 0; s + 1 < bounds.size(); ++s) {
      const int64_t a = bounds[s], w = bounds[s + 1] - a;
      Blk<T>(out + k * a, B, k * w, k * u) = View(step, s);
    }
  }
};

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

// Every row's weight in its step's batch statistics (time * batch): v /
// max(sum v, 1) from the 0/1 valid flags V, or 1 / B without them.
template <typename T>
std::vector<T> StepWeights(const T* V, int64_t Tn, int64_t B) {
  std::vector<T> w(Tn * B, T(1) / T(B));
  for (int64_t t = 0; V && t < Tn; ++t) {
    T n = 0;
    for (int64_t b = 0; b < B; ++b) n += V[t * B + b];
    n = std::max(n, T(1));
    for (int64_t b = 0; b < B; ++b) w[t * B + b] = V[t * B + b] / n;
  }
  return w;
}

// v (4w) <- the shard's part [a, a + w) of each block of the gate-wide
// vector in (4u, keras' order; a row of a (time, 4u) array), in the
// permuted order.
template <typename T>
void LoadGates(const T* in, RowA<T>& v, int64_t u, int64_t a, int64_t w) {
  v.resize(4 * w);  // (no allocation where it has that size)
  for (int blk = 0; blk < 4; ++blk)
    v.segment(blk * w, w) = CRow<T>(in + blk * u + a, w).transpose();
}

// The inverse: out (4u, keras' order) <- the shard's gate-wide vector v.
template <typename T>
void StoreGates(const RowA<T>& v, T* out, int64_t u, int64_t a, int64_t w) {
  for (int blk = 0; blk < 4; ++blk)
    Row<T>(out + blk * u + a, w) = v.segment(blk * w, w).transpose();
}

// The input side of a step: xz_t = x_t @ W, batch-normalized over the
// step's (valid) rows, xhat_t = (xz_t - mean_t) * rstd_t; the gates read
// xhat * gx + bias. Each shard computes it for its own columns inside the
// step (a column's statistics need no other column), so no (time, batch,
// 4u) projection is ever stored: the backward op recomputes a step's xhat
// from x_t, W and the saved statistics with the same operations, which
// gives the same bits.
template <typename T>
struct InputNorm {
  int64_t B, F;
  const T* x;        // (time, batch, F)
  const T* V;        // 0/1 valid flags (time * batch), or null
  const T* weights;  // every row's weight (StepWeights)

  bool On(int64_t i) const { return !V || V[i] != T(0); }

  // xz (B, 4w) <- x_t @ W, W: the shard's columns of the input kernel
  // (row n = t * B is the step's first).
  void Project(int64_t n, const PackedMatrix<T>& W, Mat<T>& xz) const {
    W.Multiply(B, x + n * F, xz.data(), nullptr);
  }

  // mean, var <- the weighted statistics of xz's valid rows, row by row.
  void Statistics(int64_t n, const Mat<T>& xz, RowA<T>& mean,
                  RowA<T>& var) const {
    mean.setZero(xz.cols());
    for (int64_t b = 0; b < B; ++b)
      if (On(n + b)) mean += weights[n + b] * xz.row(b);
    var.setZero(xz.cols());
    for (int64_t b = 0; b < B; ++b)
      if (On(n + b)) var += weights[n + b] * (xz.row(b) - mean).square();
  }

  // xz <- (xz - mean) * rstd on the valid rows, 0 on the masked ones.
  void Normalize(int64_t n, const RowA<T>& mean, const RowA<T>& rstd,
                 Mat<T>& xz) const {
    for (int64_t b = 0; b < B; ++b) {
      if (On(n + b))
        xz.row(b) = (xz.row(b) - mean) * rstd;
      else
        xz.row(b).setZero();
    }
  }
};

// The shard's columns of the input kernel w (F, 4u), permuted: (F, 4w).
template <typename T>
std::vector<T> ShardColumns(const std::vector<T>& Wp, int64_t F, int64_t G,
                            int64_t a, int64_t w) {
  std::vector<T> cols(F * 4 * w);
  for (int64_t f = 0; f < F; ++f)
    std::copy_n(Wp.data() + f * G + 4 * a, 4 * w, cols.data() + f * 4 * w);
  return cols;
}

// The BatchNormLSTM ops take epsilon as a scalar input of their dtype
// (ScalarInput).
class BnLstmOp : public OpKernel {
 protected:
  explicit BnLstmOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("masked", &masked_));
    OP_REQUIRES_OK(c, c->GetAttr("zero_output", &zero_output_));
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
    // The activations saved for the backward op; with save=false (a pass
    // for the statistics only, no gradient) they are empty, (0,).
    // Each step's block shard-major (ShardMajor): only the backward op
    // reads them.
    .Output("gates: T")  // (time, batch, 4u) permuted, saved
    .Output("rhat: T")   // (time, batch, 4u) permuted, saved
    .Output("chat: T")   // (time, batch, u), saved
    .Output("th: T")     // (time, batch, u): tanh(chat * gs + bs), saved
    .Output("hs: T")     // (time, batch, u): the states after each step
    .Output("cs: T")
    .Output("mean_x: T")  // (time, 4u): the input norm's statistics
    .Output("var_x: T")
    .Attr("T: {float, double}")
    .Attr("masked: bool")
    .Attr("zero_output: bool")
    .Attr("save: bool = true")
    .SetShapeFn([](InferenceContext* c) {
      auto time = c->Dim(c->input(0), 0);
      auto B = c->Dim(c->input(5), 0);
      auto u = c->Dim(c->input(5), 1);
      DimensionHandle G;
      TF_RETURN_IF_ERROR(c->Multiply(u, 4, &G));
      auto narrow = c->MakeShape({time, B, u});
      auto wide = c->MakeShape({time, B, G});
      bool save;
      TF_RETURN_IF_ERROR(c->GetAttr("save", &save));
      const auto none = c->MakeShape({0});
      c->set_output(0, narrow);
      c->set_output(1, c->input(5));
      c->set_output(2, c->input(5));
      c->set_output(3, c->MakeShape({time, G}));
      c->set_output(4, c->MakeShape({time, G}));
      c->set_output(5, c->MakeShape({time, u}));
      c->set_output(6, c->MakeShape({time, u}));
      c->set_output(7, save ? wide : none);
      c->set_output(8, save ? wide : none);
      for (int i = 9; i < 13; ++i) c->set_output(i, save ? narrow : none);
      c->set_output(13, c->MakeShape({time, G}));
      c->set_output(14, c->MakeShape({time, G}));
      return absl::OkStatus();
    });

// With save=false the activations that only the backward op reads are
// not kept: the gates, rhat, chat and th of a step live in one (batch, 4u)
// or (batch, u) scratch block that every step reuses (each shard its own
// part; a step starts only after every shard of the previous one has
// finished, see RunSteps), hs and cs in two blocks that alternate by step
// (a step reads the previous one's). The arithmetic, and so every output,
// is the same as with save=true; only the memory differs (the saved
// tensors hold 12u values per step and row: for 2,000 sequences of 50
// steps and 64 units in float32, 307 MB).
template <typename T>
class BnLstmForwardOp : public BnLstmOp {
  static constexpr int kEpsilon = 11;  // the input

 public:
  explicit BnLstmForwardOp(OpKernelConstruction* c) : BnLstmOp(c) {
    OP_REQUIRES_OK(c, c->GetAttr("save", &save_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = AlignedInput(ctx, 0), &w = AlignedInput(ctx, 1),
                 &gx = AlignedInput(ctx, 2), &bias = AlignedInput(ctx, 3),
                 &valid = AlignedInput(ctx, 4), &h0 = AlignedInput(ctx, 5),
                 &c0 = AlignedInput(ctx, 6), &kernel = AlignedInput(ctx, 7),
                 &gr = AlignedInput(ctx, 8), &gs = AlignedInput(ctx, 9),
                 &bs = AlignedInput(ctx, 10);
    int64_t Tn, B, u, G;
    CheckSequence(ctx, x, &w, h0, kernel, valid, masked_, 4, &Tn, &B, &u, &G);
    if (!ctx->status().ok()) return;
    const int64_t F = x.dim_size(2);
    CheckShape(ctx, "c0", c0, h0.shape());
    CheckShape(ctx, "gx", gx, TensorShape({G}));
    CheckShape(ctx, "bias", bias, TensorShape({G}));
    CheckShape(ctx, "gr", gr, TensorShape({G}));
    CheckShape(ctx, "gs", gs, TensorShape({u}));
    CheckShape(ctx, "bs", bs, TensorShape({u}));
    if (!ctx->status().ok()) return;
    Tensor* out[15];
    const TensorShape shapes[15] = {
        {Tn, B, u}, h0.shape(), h0.shape(), {Tn, G},    {Tn, G},
        {Tn, u},    {Tn, u},    {Tn, B, G}, {Tn, B, G}, {Tn, B, u},
        {Tn, B, u}, {Tn, B, u}, {Tn, B, u}, {Tn, G},    {Tn, G}};
    Tensor temp[15];  // without save: the scratch of the saved outputs
    for (int i = 0; i < 15; ++i) {
      const bool saved = i >= 7 && i <= 12;
      if (save_ || !saved) {
        OP_REQUIRES_OK(ctx, PooledOutput(ctx, i, shapes[i], &out[i]));
        continue;
      }
      OP_REQUIRES_OK(ctx, PooledOutput(ctx, i, TensorShape({0}), &out[i]));
      // One step of the activations, two of hs and cs (outputs 11, 12).
      TensorShape scratch = shapes[i];
      scratch.set_dim(0, i >= 11 ? 2 : 1);
      OP_REQUIRES_OK(ctx, PooledTemp(ctx, x.dtype(), scratch, &temp[i]));
      out[i] = &temp[i];
    }
    // The outputs, each step shard-major (see ShardMajor; one more (time,
    // batch, u) block), put in keras' order after the loop.
    Tensor ys_shards;
    OP_REQUIRES_OK(ctx, PooledTemp(ctx, x.dtype(), shapes[0], &ys_shards));
    T *YS = ys_shards.flat<T>().data(), *MR = out[3]->flat<T>().data(),
      *VR = out[4]->flat<T>().data(), *MC = out[5]->flat<T>().data(),
      *VC = out[6]->flat<T>().data(), *A = out[7]->flat<T>().data(),
      *RH = out[8]->flat<T>().data(), *CH = out[9]->flat<T>().data(),
      *TH = out[10]->flat<T>().data(), *HS = out[11]->flat<T>().data(),
      *CS = out[12]->flat<T>().data(), *MX = out[13]->flat<T>().data(),
      *VX = out[14]->flat<T>().data();
    // Offsets (in rows of the batch) of step t's block in the activations
    // (at: gates, rhat, chat, th) and in the states (st: hs, cs); without
    // save, one block and two alternating ones.
    auto at = [&](int64_t t) { return save_ ? t * B : 0; };
    auto st = [&](int64_t t) { return save_ ? t * B : (t & 1) * B; };
    const T* V = masked_ ? valid.flat<T>().data() : nullptr;
    const std::vector<T> weights = StepWeights(V, Tn, B);
    const T eps = ScalarInput<T>(ctx, kEpsilon, "epsilon");
    if (!ctx->status().ok()) return;
    const std::vector<T> zeros(B * u, T(0));
    const std::vector<char> empty = UniformSteps(V, Tn, B, false);
    const InputNorm<T> input{B, F, x.flat<T>().data(), V, weights.data()};

    const std::vector<int64_t> bounds = UnitBounds(u, B);
    const int64_t S = bounds.size() - 1;
    const std::vector<T> Up =
        PermuteColumns(kernel.flat<T>().data(), u, bounds);
    const std::vector<T> Wp = PermuteColumns(w.flat<T>().data(), u, bounds, F);
    struct Shard {
      int64_t a, w;
      PackedMatrix<T> U;  // (u, 4w): the columns of the shard's units
      PackedMatrix<T> W;  // (F, 4w): the input kernel's columns
      RowA<T> gx, bx, gr, gs, bs, mean, var, mc, vc, mx, vx;
      Mat<T> r, cn, xz, h;  // h: h_{t-1} in keras' order, for the product
    };
    std::vector<Shard> shards;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t a = bounds[s], w = bounds[s + 1] - a;
      std::vector<T> cols(u * 4 * w);
      for (int64_t kk = 0; kk < u; ++kk)
        std::copy_n(Up.data() + kk * G + 4 * a, 4 * w,
                    cols.data() + kk * 4 * w);
      const std::vector<T> wcols = ShardColumns(Wp, F, G, a, w);
      Shard sh{a, w, PackedMatrix<T>(cols.data(), u, 4 * w, false),
               PackedMatrix<T>(wcols.data(), F, 4 * w, false)};
      LoadGates(gx.flat<T>().data(), sh.gx, u, a, w);
      LoadGates(bias.flat<T>().data(), sh.bx, u, a, w);
      LoadGates(gr.flat<T>().data(), sh.gr, u, a, w);
      sh.gs = CRow<T>(gs.flat<T>().data() + a, w).transpose();
      sh.bs = CRow<T>(bs.flat<T>().data() + a, w).transpose();
      sh.r.resize(B, 4 * w);
      sh.xz.resize(B, 4 * w);
      sh.cn.resize(B, w);
      sh.h.resize(B, u);
      shards.push_back(std::move(sh));
    }
    const ShardMajor<T> wide{B, 4, bounds}, narrow{B, 1, bounds};

    // One step of the shard's units, as passes over the (batch, width)
    // blocks (rows of a few dozen values: passes row by row would cost more
    // in loop overhead than in arithmetic).
    auto step = [&](Shard& sh, int64_t t) {
      const int64_t s = &sh - shards.data(), a = sh.a, w = sh.w, n = t * B;
      const int64_t na = at(t), ns = st(t);
      // the shard's part of the previous step's states and output (the
      // initial states in keras' order)
      const CBlk<T> hp = t ? narrow.View(HS + st(t - 1) * u, s)
                           : CBlk<T>(h0.flat<T>().data() + a, B, w, u);
      const CBlk<T> cp = t ? narrow.View(CS + st(t - 1) * u, s)
                           : CBlk<T>(c0.flat<T>().data() + a, B, w, u);
      const CBlk<T> yp = t ? narrow.View(YS + (n - B) * u, s)
                           : CBlk<T>(zeros.data(), B, w, w);
      CCol<T> wv(weights.data() + n, B);
      Blk<T> rh = wide.Get(RH + na * G, s), ga = wide.Get(A + na * G, s),
             ch = narrow.Get(CH + na * u, s), th = narrow.Get(TH + na * u, s),
             ho = narrow.Get(HS + ns * u, s), co = narrow.Get(CS + ns * u, s),
             yo = narrow.Get(YS + n * u, s);
      if (empty[t]) {
        // Every row masked: what the passes below give such a step
        // (statistics of no row: 0), without them.
        for (int blk = 0; blk < 4; ++blk)
          for (T* stat : {MR, VR, MX, VX})
            Row<T>(stat + t * G + blk * u + a, w).setZero();
        Row<T>(MC + t * u + a, w).setZero();
        Row<T>(VC + t * u + a, w).setZero();
        rh.setZero();
        ga.setZero();
        ch.setZero();
        th.setZero();
        ho = hp;
        co = cp;
        if (zero_output_)
          yo.setZero();
        else
          yo = yp;
        return;
      }
      // h_{t-1} in keras' order: every shard's part
      const T* H = h0.flat<T>().data();
      if (t) {
        narrow.Gather(HS + st(t - 1) * u, sh.h.data());
        H = sh.h.data();
      }
      // the input side (InputNorm), then the recurrent product
      input.Project(n, sh.W, sh.xz);
      input.Statistics(n, sh.xz, sh.mx, sh.vx);
      StoreGates(sh.mx, MX + t * G, u, a, w);
      StoreGates(sh.vx, VX + t * G, u, a, w);
      sh.vx = RSqrt(sh.vx + eps);  // now 1 / std
      input.Normalize(n, sh.mx, sh.vx, sh.xz);
      sh.U.Multiply(B, H, sh.r.data(), nullptr);
      // the recurrent norm's statistics, two passes
      sh.mean = ColumnSums<T>(sh.r, wv.data());
      sh.var = ColumnSums<T>((sh.r.rowwise() - sh.mean).square(), wv.data());
      StoreGates(sh.mean, MR + t * G, u, a, w);
      StoreGates(sh.var, VR + t * G, u, a, w);
      sh.var = RSqrt(sh.var + eps);  // now 1 / std
      rh = (sh.r.rowwise() - sh.mean).rowwise() * sh.var;
      ga = (sh.xz.rowwise() * sh.gx + rh.rowwise() * sh.gr).rowwise() + sh.bx;
      ga.leftCols(2 * w) = Sigmoid(ga.leftCols(2 * w));
      ga.middleCols(2 * w, w) = Tanh(ga.middleCols(2 * w, w));
      ga.rightCols(w) = Sigmoid(ga.rightCols(w));
      sh.cn = ga.middleCols(w, w) * cp + ga.leftCols(w) * ga.middleCols(2 * w, w);
      // the state norm's statistics
      sh.mc = ColumnSums<T>(sh.cn, wv.data());
      sh.vc = ColumnSums<T>((sh.cn.rowwise() - sh.mc).square(), wv.data());
      Row<T>(MC + t * u + a, w) = sh.mc.transpose();
      Row<T>(VC + t * u + a, w) = sh.vc.transpose();
      sh.vc = RSqrt(sh.vc + eps);
      ch = (sh.cn.rowwise() - sh.mc).rowwise() * sh.vc;
      th = Tanh((ch.rowwise() * sh.gs).rowwise() + sh.bs);
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
        ho.row(b) = hp.row(b);
        co.row(b) = cp.row(b);
        if (zero_output_)
          yo.row(b).setZero();
        else
          yo.row(b) = yp.row(b);
      }
    };
    RunSteps(ctx, Tn, S, [&](int64_t t, int64_t s) { step(shards[s], t); });
    // keras' order: the outputs of every step, the last states
    T* ys = out[0]->flat<T>().data();
    ForShards(ctx, Tn, NumShards(Tn, 0), [&](int64_t, int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) narrow.Gather(YS + t * B * u, ys + t * B * u);
    });
    if (Tn) {
      narrow.Gather(HS + st(Tn - 1) * u, out[1]->flat<T>().data());
      narrow.Gather(CS + st(Tn - 1) * u, out[2]->flat<T>().data());
    } else {
      std::copy_n(h0.flat<T>().data(), B * u, out[1]->flat<T>().data());
      std::copy_n(c0.flat<T>().data(), B * u, out[2]->flat<T>().data());
    }
  }

 private:
  bool save_ = true;
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
    .Input("mean_x: T")  // (time, 4u): the forward's input statistics
    .Input("var_x: T")
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
                 &mean_x = AlignedInput(ctx, 20),
                 &var_x = AlignedInput(ctx, 21);
    int64_t Tn, B, u, G;
    CheckSequence(ctx, x, &w, h0, kernel, valid, masked_, 4, &Tn, &B, &u, &G);
    if (!ctx->status().ok()) return;
    const int64_t F = x.dim_size(2);
    CheckShape(ctx, "gates", gates, TensorShape({Tn, B, G}));
    CheckShape(ctx, "mean_x", mean_x, TensorShape({Tn, G}));
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
    OP_REQUIRES_OK(ctx, AllocateLstmGradients(
                            ctx, x, w, gx, h0, kernel, gr, gs,
                            {&dx, &dw, &dgx, &dbias, &dh0, &dc0, &dkernel,
                             &dgr, &dgs, &dbs}));
    // every step's dL/dr (permuted, for dU after the loop) and dL/dxn
    // dL/dr of the step and of the one after it (permuted), which the
    // step's product reads
    Tensor dr_pair;
    OP_REQUIRES_OK(ctx, PooledTemp(ctx, gates.dtype(), {2, B, G}, &dr_pair));
    T* DR2 = dr_pair.flat<T>().data();
    const T *A = gates.flat<T>().data(), *RH = rhat.flat<T>().data(),
            *CH = chat.flat<T>().data(), *TH = thv.flat<T>().data(),
            *VR = var_r.flat<T>().data(), *VC = var_c.flat<T>().data(),
            *HS = hs.flat<T>().data(), *CS = cs.flat<T>().data(),
            *DYS = dys.flat<T>().data(), *X = x.flat<T>().data(),
            *MX = mean_x.flat<T>().data(), *VX = var_x.flat<T>().data();
    const T* V = masked_ ? valid.flat<T>().data() : nullptr;
    const std::vector<T> weights = StepWeights(V, Tn, B);
    const InputNorm<T> input{B, F, X, V, weights.data()};
    const std::vector<char> full = UniformSteps(V, Tn, B, true);
    const std::vector<char> empty = UniformSteps(V, Tn, B, false);
    const T eps = ScalarInput<T>(ctx, kEpsilon, "epsilon");
    if (!ctx->status().ok()) return;

    const std::vector<int64_t> bounds = UnitBounds(u, B);
    const int64_t S = bounds.size() - 1;
    const std::vector<T> Up =
        PermuteColumns(kernel.flat<T>().data(), u, bounds);
    const std::vector<T> Wp = PermuteColumns(w.flat<T>().data(), u, bounds, F);
    // Each shard's part of dL/dx of every step, added up in shard order
    // after the loop.
    Tensor dx_parts;
    OP_REQUIRES_OK(ctx, PooledTemp(ctx, x.dtype(), {S, Tn, B, F}, &dx_parts));
    T* DXP = dx_parts.flat<T>().data();
    struct Shard {
      int64_t a, w;
      PackedMatrix<T> Ut;  // (G, w): U's rows of the shard's units, transposed
      PackedMatrix<T> Wt;  // (4w, F): the input kernel's columns, transposed
      PackedMatrix<T> W;   // (F, 4w): the same, as the forward op packs them
      RowA<T> gr, gs, gx, sr, sc, sx, mx, m1c, m2c, m1r, m2r, dgr, dgs, dbs,
          dgx, dbx;
      Mat<T> dh, ph, gc, gout, dcn, dyc, dz, dxz, xh, du, dw;
    };
    std::vector<Shard> shards;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t a = bounds[s], w = bounds[s + 1] - a;
      const std::vector<T> wcols = ShardColumns(Wp, F, G, a, w);
      Shard sh{a, w, PackedMatrix<T>(Up.data() + a * G, G, w, true),
               PackedMatrix<T>(wcols.data(), 4 * w, F, true),
               PackedMatrix<T>(wcols.data(), F, 4 * w, false)};
      LoadGates(gx.flat<T>().data(), sh.gx, u, a, w);
      sh.dgx.setZero(4 * w);
      sh.dbx.setZero(4 * w);
      sh.du.setZero(u, 4 * w);
      sh.dw.setZero(F, 4 * w);
      sh.xh.resize(B, 4 * w);
      sh.dxz.resize(B, 4 * w);
      LoadGates(gr.flat<T>().data(), sh.gr, u, a, w);
      sh.gs = CRow<T>(gs.flat<T>().data() + a, w).transpose();
      for (Mat<T>* v : {&sh.ph, &sh.gout, &sh.dcn, &sh.dyc})
        v->setZero(B, w);
      sh.dz.setZero(B, 4 * w);
      sh.dh = CBlk<T>(dh_last.flat<T>().data() + a, B, w, u);
      sh.gc = CBlk<T>(dc_last.flat<T>().data() + a, B, w, u);
      sh.dgr.setZero(4 * w);
      sh.dgs.setZero(w);
      sh.dbs.setZero(w);
      shards.push_back(std::move(sh));
    }
    // the forward op's saved activations, shard-major
    const ShardMajor<T> wide{B, 4, bounds}, narrow{B, 1, bounds};

    // dL/dh after step t - 1 of the shard's units: dr_t @ U^T + what
    // masked rows of step t passed back.
    auto back_product = [&](Shard& sh, int64_t t) {
      if (empty[t])  // dr_t = 0 (and not written)
        sh.dh = sh.ph;
      else
        sh.Ut.Multiply(B, DR2 + (t % 2) * B * G, sh.dh.data(),
                       V ? sh.ph.data() : nullptr);
    };
    // One step back, as passes over the (batch, width) blocks (see the
    // forward's step).
    auto step = [&](Shard& sh, int64_t t) {
      const int64_t s = &sh - shards.data(), a = sh.a, w = sh.w, w4 = 4 * w,
                    n = t * B;
      if (t + 1 < Tn) back_product(sh, t + 1);
      T* dxp = DXP + ((s * Tn + t) * B) * F;
      if (empty[t]) {
        // Every row masked: states and gradients pass through, which is
        // all that the passes below would do here.
        sh.ph = sh.dh;
        if (zero_output_)
          sh.gout.setZero();
        else
          sh.gout += CBlk<T>(DYS + n * u + a, B, w, u);
        sh.dh.setZero();
        std::fill(dxp, dxp + B * F, T(0));
        return;
      }
      const CBlk<T> cp = t ? narrow.View(CS + (n - B) * u, s)
                           : CBlk<T>(c0.flat<T>().data() + a, B, w, u);
      CCol<T> wv(weights.data() + n, B);
      LoadGates(VR + t * G, sh.sr, u, a, w);
      LoadGates(VX + t * G, sh.sx, u, a, w);
      LoadGates(MX + t * G, sh.mx, u, a, w);
      sh.sx = RSqrt(sh.sx + eps);
      // the step's xhat, recomputed as the forward op computed it
      input.Project(n, sh.W, sh.xh);
      input.Normalize(n, sh.mx, sh.sx, sh.xh);
      sh.sr = RSqrt(sh.sr + eps);
      sh.sc = RSqrt(CRow<T>(VC + t * u + a, w) + eps).transpose();
      const int64_t i = n * u + a;
      const CBlk<T> dy(DYS + i, B, w, u), ch = narrow.View(CH + n * u, s),
          th = narrow.View(TH + n * u, s), ga = wide.View(A + n * G, s),
          rh = wide.View(RH + n * G, s);
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
      sh.Wt.Multiply(B, sh.dxz.data(), dxp, nullptr);
      AddTransposedProduct(B, F, w4, X + n * F, F, sh.dxz.data(), w4,
                           sh.dw.data());
      sh.dgr += ColumnSums<T>(sh.dz * rh);
      sh.dz = sh.dz.rowwise() * sh.gr;
      sh.m1r = ColumnSums<T>(sh.dz, wv.data());
      sh.m2r = ColumnSums<T>(sh.dz * rh, wv.data());
      // dr_t in the permuted layout, the rows whole: every shard's product
      // reads it (a gathered copy per shard cost more than it saved)
      Blk<T> dr(DR2 + (t % 2) * B * G + 4 * a, B, w4, G);
      dr = ((sh.dz.rowwise() - sh.m1r) - rh.rowwise() * sh.m2r).rowwise() *
           sh.sr;
      if (M) dr.colwise() *= CCol<T>(M, B);
      // dU of the shard's columns += h_{t-1}^T dr_t: each shard's units'
      // rows of dU from that shard's block of h_{t-1} (the same sums as
      // one product over all units: a row of dU is its own sum over the
      // batch)
      if (!t) {
        AddTransposedProduct(B, u, w4, h0.flat<T>().data(), u, dr.data(), G,
                             sh.du.data());
        return;
      }
      for (int64_t o = 0; o < S; ++o) {
        const CBlk<T> h = narrow.View(HS + (n - B) * u, o);
        AddTransposedProduct(B, h.cols(), w4, h.data(), h.cols(), dr.data(),
                             G, sh.du.data() + bounds[o] * w4);
      }
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
      StoreGates(sh.dgr, dgr->flat<T>().data(), u, sh.a, sh.w);
      StoreGates(sh.dgx, dgx->flat<T>().data(), u, sh.a, sh.w);
      StoreGates(sh.dbx, dbias->flat<T>().data(), u, sh.a, sh.w);
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
    int64_t Tn, B, u, G;
    CheckSequence(ctx, xn, nullptr, h0, kernel, valid, masked_, 4, &Tn, &B, &u, &G);
    if (!ctx->status().ok()) return;
    CheckShape(ctx, "c0", c0, h0.shape());
    CheckShape(ctx, "ar", ar, TensorShape({Tn, G}));
    CheckShape(ctx, "br", br, TensorShape({Tn, G}));
    CheckShape(ctx, "ac", ac, TensorShape({Tn, u}));
    CheckShape(ctx, "bc", bc, TensorShape({Tn, u}));
    if (!ctx->status().ok()) return;
    Tensor *ys, *h_last, *c_last;
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 0, {Tn, B, u}, &ys));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 1, h0.shape(), &h_last));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 2, h0.shape(), &c_last));
    Tensor scratch;
    OP_REQUIRES_OK(ctx, PooledTemp(ctx, h0.dtype(), {B, G}, &scratch));
    T *R = scratch.flat<T>().data(), *YS = ys->flat<T>().data(),
      *H = h_last->flat<T>().data(), *C = c_last->flat<T>().data();
    std::copy_n(h0.flat<T>().data(), B * u, H);
    std::copy_n(c0.flat<T>().data(), B * u, C);
    const T *XN = xn.flat<T>().data(), *AR = ar.flat<T>().data(),
            *BR = br.flat<T>().data(), *AC = ac.flat<T>().data(),
            *BC = bc.flat<T>().data();
    const T* V = masked_ ? valid.flat<T>().data() : nullptr;
    const PackedMatrix<T> U(kernel.flat<T>().data(), u, G, false);
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
               Sigmoid(z.head(u)) * Tanh(z.segment(2 * u, u));
          c = cn;
          h = Sigmoid(z.tail(u)) * Tanh(cn * ac_t + bc_t);
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
