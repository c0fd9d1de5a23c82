// The LN-LSTM and LN-GRU recurrences as TensorFlow custom ops, one op for
// the whole forward loop and one for the whole backward-through-time loop
// (the optional native part of the TensorFlow fast path; see
// keras_ln/layers/_native/__init__.py), like cuDNN's RNN kernels.
// (BatchNormLSTM's ops, whose batch statistics couple the rows, are in
// bn_lstm_ops.cc; what both share is in kernels.h.)
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
// between steps; the products are the library's own kernels (see
// "products" in kernels.h).
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
// - With normalize=false the ops run the recurrence without normalization
//   (keras' LSTM and GRU): the same loops with every norm the identity
//   (xhat the projection itself, rstd 1, the LSTM's chat = c), U the plain
//   recurrent kernel.
// - With carry_normalized (the LSTM ops) the carried cell state is the
//   state norm's output LN(c) * gs + bs, as tensorflow-addons' cell and
//   keras_ln's carry_normalized_cell=True, instead of c.

#include "kernels.h"

namespace keras_ln {
namespace {

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
  // false: the projection itself (xhat = x @ W, rstd = 1), for the LSTM
  // without normalization.
  bool normalize;

  // From the ops' inputs x (time, batch, F), w (F, G) and gx (G).
  static InputNorm Of(const Tensor& x, const Tensor& w, const Tensor& gx,
                      T eps, int64_t shards, bool normalize = true) {
    return {x.dim_size(2),      w.dim_size(1),       eps,
            x.flat<T>().data(), w.flat<T>().data(),  gx.flat<T>().data(),
            shards,             normalize};
  }

  // xhat (total, G) <- the normalized projection of the first n rows of x,
  // rstd (total) <- their 1 / std; zeros for the other rows (those of the
  // trailing steps without data, which no step reads).
  void Forward(OpKernelContext* ctx, int64_t n, int64_t total, T* xhat,
               T* rstd) const {
    std::fill(xhat + n * G, xhat + total * G, T(0));
    std::fill(rstd + n, rstd + total, T(0));
    const PackedMatrix<T> W(w, F, G, false);
    ForShards(ctx, n, NumShards(n, shards), [&](int64_t, int64_t r0,
                                                     int64_t r1) {
      for (int64_t c0 = r0; c0 < r1; c0 += kChunk) {
        const int64_t c1 = std::min(r1, c0 + kChunk);
        W.Multiply(c1 - c0, x + c0 * F, xhat + c0 * G, nullptr);
        if (!normalize) {
          std::fill(rstd + c0, rstd + c1, T(1));
          continue;
        }
        for (int64_t i = c0; i < c1; ++i) {
          Row<T> v(xhat + i * G, G);
          const T mu = RowMean(v);
          rstd[i] = T(1) / std::sqrt(RowMean((v - mu).square()) + eps);
          v = (v - mu) * rstd[i];
        }
      }
    });
  }

  // After a backward loop, over the n = time * batch rows: dz (n, G),
  // dL/dxp; xhat and rstd, saved by the forward. Adds the recurrent kernel's
  // gradient dU (u, G) = sum_t h_{t-1}^T dr_t, with HS the carried states
  // and DR (n, G) every step's dL/dr; DR is then the input side's scratch.
  // Writes dx (n, F), dw (F, G), dgx and dbx (G). Rows n to `total` (those
  // of trailing steps without data) add nothing to the sums: their dx is 0.
  void Backward(OpKernelContext* ctx, int64_t n, int64_t total, int64_t B,
                int64_t u, const T* h0, const T* HS, T* DR, T* dU,
                const T* dz, const T* xhat, const T* rstd, T* dx, T* dw,
                T* dgx, T* dbx) const {
    std::fill(dx + n * F, dx + total * F, T(0));
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
          if (!normalize) {
            Row<T>(DR + i * G, G) = d * g;
            continue;
          }
          dxh = d * g;
          const T m1 = RowMean(dxh), m2 = RowMean(dxh * xh);
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

// The attributes the four ops share. (The forward ops take epsilon as a
// scalar input of their dtype: ScalarInput.)
class SequenceOp : public OpKernel {
 protected:
  explicit SequenceOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("masked", &masked_));
    OP_REQUIRES_OK(c, c->GetAttr("zero_output", &zero_output_));
    OP_REQUIRES_OK(c, c->GetAttr("shards", &shards_));
    OP_REQUIRES_OK(c, c->GetAttr("normalize", &normalize_));
    OP_REQUIRES(c, shards_ >= 0,
                InvalidArgument("shards must be >= 0, got ", shards_));
  }

  static Tensor Input(OpKernelContext* ctx, int i) {
    return AlignedInput(ctx, i);
  }

  bool masked_ = false, zero_output_ = false;
  int64_t shards_ = 0;
  // false: the recurrence without normalization (keras' LSTM and GRU).
  bool normalize_ = true;
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
  // false: no recurrent and state norms (rstd_r = rstd_c = 1, chat = c):
  // the LSTM without normalization, whose gr, gs and bs the caller sets to
  // the candidate scale, ones and zeros.
  bool normalize = true;
  // true: the carried cell state is the state norm's output
  // LN(c) * gs + bs, as tensorflow-addons' cell (carry_normalized_cell),
  // not c; the output h = o * tanh(LN(c) * gs + bs) either way.
  bool carry_normalized = false;

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
      const T rstd_r =
          normalize ? T(1) / std::sqrt(RowMean(rv.square()) + eps) : T(1);
      a = Sigmoid(xv * gxv + bxv + rv * rstd_r * grv);
      co = a.segment(u, u) * cv +
           a.head(u) * (T(2) * a.segment(2 * u, u) - T(1));
      T rstd_c = T(1);
      if (normalize) {
        const T mu = RowMean(co);
        rstd_c = T(1) / std::sqrt(RowMean((co - mu).square()) + eps);
        chat = (co - mu) * rstd_c;
      } else {
        chat = co;
      }
      if (carry_normalized) {  // the state norm's output is carried
        co = chat * gsv + bsv;
        th = Tanh(co);
      } else {
        th = Tanh(chat * gsv + bsv);
      }
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
  // through r_t), DCO, DYO; adds the norm gradients to sgr, sgs, sbs (with
  // `normalize` only: without, gr, gs and bs are constants of the caller,
  // the candidate scale, ones and zeros, and their gradients stay zero).
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
      // dL/d(the state norm's output): with the normalized state carried,
      // what the next step passed back (dcin) goes through the norm too.
      if (carry_normalized) dcn += dcin;
      gch = dcn * gsv;
      // dL/dc_t (in dco until it becomes dL/dc_{t-1}); with the raw state
      // carried, what the next step passed back adds to it here.
      if (normalize)
        dco = rstd_c * (gch - RowMean(gch) - chat * RowMean(gch * chat));
      else
        dco = gch;
      if (!carry_normalized) dco += dcin;
      dzo.head(u) = dco * (T(2) * a.segment(2 * u, u) - T(1));
      dzo.segment(u, u) = dco * cp;
      dzo.segment(2 * u, u) = T(2) * dco * a.head(u);
      dzo.tail(u) = dhn * th;
      dzo *= a * (T(1) - a);
      dco *= a.segment(u, u);
      dhso.setZero();
      if (!normalize) {  // no norms: gr, gs and bs are the caller's
        dro = dzo * grv;  // constants, whose sums are left at zero
        continue;
      }
      rhat = rv * rstd_r;
      grh = dzo * grv;
      dro = rstd_r * (grh - rhat * RowMean(grh * rhat));
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
    .Input("epsilon: T")  // (): the norms' epsilon, in the input's dtype
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
    .Attr("masked: bool")
    .Attr("zero_output: bool")
    .Attr("shards: int = 0")  // 0: by the row count (see NumShards)
    .Attr("normalize: bool = true")  // false: keras' LSTM, without norms
    .Attr("carry_normalized: bool = false")  // carry LN(c) * gs + bs, not c
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

// The LSTM ops' attributes: the shared ones and carry_normalized.
class LstmOp : public SequenceOp {
 protected:
  explicit LstmOp(OpKernelConstruction* c) : SequenceOp(c) {
    OP_REQUIRES_OK(c, c->GetAttr("carry_normalized", &carry_normalized_));
  }

  bool carry_normalized_ = false;
};

template <typename T>
class LstmForwardOp : public LstmOp {
  static constexpr int kXhat = 9;  // the output

 public:
  explicit LstmForwardOp(OpKernelConstruction* c) : LstmOp(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = Input(ctx, 0), &w = Input(ctx, 1),
                 &h0 = Input(ctx, 2), &c0 = Input(ctx, 3),
                 &kernel = Input(ctx, 4), &mask = Input(ctx, 5),
                 &gx = Input(ctx, 6), &bx = Input(ctx, 7),
                 &gr = Input(ctx, 8), &gs = Input(ctx, 9),
                 &bs = Input(ctx, 10);
    int64_t Tn, B, u, G;
    CheckSequence(ctx, x, &w, h0, kernel, mask, masked_, 4, &Tn, &B, &u,
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
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 0, {Tn, B, u}, &ys));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 1, h0.shape(), &h_last));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 2, h0.shape(), &c_last));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 3, {Tn, B, G}, &rs));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 4, {Tn, B, G}, &gates));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 5, {Tn, B, W}, &saved));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 6, {Tn, B}, &xrstd));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 7, {Tn, B, u}, &hs));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 8, {Tn, B, u}, &cs));
    Tensor* xhat;
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, kXhat, {Tn, B, G}, &xhat));
    Tensor y0;
    OP_REQUIRES_OK(ctx, PooledTemp(ctx, h0.dtype(), h0.shape(), &y0));
    y0.flat<T>().setZero();

    const T eps = ScalarInput<T>(ctx, 11, "epsilon");
    if (!ctx->status().ok()) return;
    const auto input = InputNorm<T>::Of(x, w, gx, eps, shards_, normalize_);
    const LstmStep<T> step{u,
                           eps,
                           gx.flat<T>().data(),
                           bx.flat<T>().data(),
                           gr.flat<T>().data(),
                           gs.flat<T>().data(),
                           bs.flat<T>().data(),
                           zero_output_,
                           normalize_,
                           carry_normalized_};
    const PackedMatrix<T> U(kernel.flat<T>().data(), u, G, false);
    const bool* M = masked_ ? mask.flat<bool>().data() : nullptr;
    T* XH = xhat->flat<T>().data();
    T* XR = xrstd->flat<T>().data();
    const std::vector<char> empty = UniformSteps(M, Tn, B, false);
    const int64_t Tv = ValidSteps(empty);
    input.Forward(ctx, Tv * B, Tn * B, XH, XR);
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
        if (empty[t])  // every row masked: the step reads no r
          std::fill(r + b0 * G, r + b1 * G, T(0));
        else
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
    .Attr("normalize: bool = true")  // as the forward's
    .Attr("carry_normalized: bool = false")  // as the forward's
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
class LstmBackwardOp : public LstmOp {
 public:
  explicit LstmBackwardOp(OpKernelConstruction* c) : LstmOp(c) {}

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
    CheckSequence(ctx, x, &w, h0, kernel, mask, masked_, 4, &Tn, &B, &u,
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
    OP_REQUIRES_OK(ctx, AllocateLstmGradients(
                            ctx, x, w, gx, h0, kernel, gr, gs,
                            {&dx, &dw, &dgx, &dbx, &dh0, &dc0, &dkernel,
                             &dgr, &dgs, &dbs}));
    // dr and dL/dxp of every step, for the large products after the loop
    // (dU = sum_t h_{t-1}^T dr_t, and the input side's); double buffers of
    // the carried gradients.
    Tensor dr_all, dz_all, carry;
    OP_REQUIRES_OK(ctx, PooledTemp(ctx, gates.dtype(), gates.shape(),
                                           &dr_all));
    OP_REQUIRES_OK(ctx,
                   PooledTemp(ctx, h0.dtype(), {Tn, B, G}, &dz_all));
    OP_REQUIRES_OK(ctx, PooledTemp(ctx, h0.dtype(), {6, B, u}, &carry));
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

    const auto input =
        InputNorm<T>::Of(x, w, gx, T(0), shards_, normalize_);
    // (The backward step reads neither epsilon nor gx, bx and bs.)
    const LstmStep<T> step{u,       T(0),
                           nullptr, nullptr,
                           gr.flat<T>().data(), gs.flat<T>().data(),
                           nullptr, zero_output_,
                           normalize_, carry_normalized_};
    const PackedMatrix<T> Ut(kernel.flat<T>().data(), G, u, true);
    const T* A = gates.flat<T>().data();
    const T* S = saved.flat<T>().data();
    const T* R = rs.flat<T>().data();
    const T* XR = xrstd.flat<T>().data();
    const T* HS = hs.flat<T>().data();
    const T* CS = cs.flat<T>().data();
    const T* DYS = dys.flat<T>().data();
    const bool* M = masked_ ? mask.flat<bool>().data() : nullptr;
    const std::vector<char> empty = UniformSteps(M, Tn, B, false);
    const int64_t Tv = ValidSteps(empty);
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
        if (empty[t])  // dr_t = 0: dL/dh_{t-1} is what passed through
          std::copy(dhs + b0 * u, dhs + b1 * u, dh + b0 * u);
        else
          Ut.Multiply(b1 - b0, DR + (n + b0) * G, dh + b0 * u, dhs + b0 * u);
      }
    });
    std::copy_n(dh, Bu, dh0->flat<T>().data());
    std::copy_n(dc[Tn % 2], Bu, dc0->flat<T>().data());
    input.Backward(ctx, Tv * B, Tn * B, B, u, h0.flat<T>().data(), HS, DR,
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
  // false: no recurrent norm (rstd = 1): keras' GRU, whose gr the caller
  // sets to ones and off to the recurrent bias.
  bool normalize = true;

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
      const T rstd =
          normalize ? T(1) / std::sqrt(RowMean(rv.square()) + eps) : T(1);
      inner = rv * rstd * grv + offv;
      z = Sigmoid(xv.head(u) + inner.head(u));
      rr = Sigmoid(xv.segment(u, u) + inner.segment(u, u));
      n = Tanh(xv.tail(u) + rr * inner.tail(u));
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
      dhso = dhn * z;
      soff += din;
      if (!normalize) {  // no norm: gr is the caller's constant (ones),
        dro = din * grv;  // whose sum is left at zero
        continue;
      }
      grh = din * grv;
      dro = rstd * (grh - rhat * RowMean(grh * rhat));
      sgr += din * rhat;
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
    .Input("epsilon: T")  // (): the norms' epsilon, in the input's dtype
    .Output("ys: T")     // (time, batch, u)
    .Output("h_last: T")
    .Output("rs: T")     // (time, batch, 3u)  saved for the backward
    .Output("saved: T")  // (time, batch, 3u + 1)
    .Output("xrstd: T")  // (time, batch): input norm 1 / std
    .Output("hs: T")     // (time, batch, u): carried states
    .Output("xhat: T")   // (time, batch, 3u): the normalized x @ W
    .Attr("T: {float, double}")
    .Attr("masked: bool")
    .Attr("zero_output: bool")
    .Attr("shards: int = 0")  // 0: by the row count (see NumShards)
    .Attr("normalize: bool = true")  // false: keras' GRU, without norms
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
  explicit GruForwardOp(OpKernelConstruction* c) : SequenceOp(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = Input(ctx, 0), &w = Input(ctx, 1),
                 &h0 = Input(ctx, 2), &kernel = Input(ctx, 3),
                 &mask = Input(ctx, 4), &gx = Input(ctx, 5),
                 &bx = Input(ctx, 6), &gr = Input(ctx, 7),
                 &offs = Input(ctx, 8);
    int64_t Tn, B, u, G;
    CheckSequence(ctx, x, &w, h0, kernel, mask, masked_, 3, &Tn, &B, &u,
                  &G);
    if (!ctx->status().ok()) return;
    CheckShape(ctx, "gx", gx, TensorShape({G}));
    CheckShape(ctx, "bx", bx, TensorShape({G}));
    CheckShape(ctx, "gr", gr, TensorShape({G}));
    CheckShape(ctx, "off", offs, TensorShape({G}));
    if (!ctx->status().ok()) return;
    const int64_t W = G + 1;
    Tensor *ys, *h_last, *rs, *saved, *xrstd, *hs;
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 0, {Tn, B, u}, &ys));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 1, h0.shape(), &h_last));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 2, {Tn, B, G}, &rs));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 3, {Tn, B, W}, &saved));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 4, {Tn, B}, &xrstd));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 5, {Tn, B, u}, &hs));
    Tensor* xhat;
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, kXhat, {Tn, B, G}, &xhat));
    Tensor y0;
    OP_REQUIRES_OK(ctx, PooledTemp(ctx, h0.dtype(), h0.shape(), &y0));
    y0.flat<T>().setZero();

    const T eps = ScalarInput<T>(ctx, 9, "epsilon");
    if (!ctx->status().ok()) return;
    const auto input = InputNorm<T>::Of(x, w, gx, eps, shards_, normalize_);
    const GruStep<T> step{u,
                          eps,
                          gx.flat<T>().data(),
                          bx.flat<T>().data(),
                          gr.flat<T>().data(),
                          offs.flat<T>().data(),
                          zero_output_,
                          normalize_};
    const PackedMatrix<T> U(kernel.flat<T>().data(), u, G, false);
    const bool* M = masked_ ? mask.flat<bool>().data() : nullptr;
    T* XH = xhat->flat<T>().data();
    T* XR = xrstd->flat<T>().data();
    const std::vector<char> empty = UniformSteps(M, Tn, B, false);
    const int64_t Tv = ValidSteps(empty);
    input.Forward(ctx, Tv * B, Tn * B, XH, XR);
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
        if (empty[t])  // every row masked: the step reads no r
          std::fill(r + b0 * G, r + b1 * G, T(0));
        else
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
    .Attr("normalize: bool = true")  // false: keras' GRU, without norms
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
  explicit GruBackwardOp(OpKernelConstruction* c) : SequenceOp(c) {}

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
    CheckSequence(ctx, x, &w, h0, kernel, mask, masked_, 3, &Tn, &B, &u,
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
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 1, w.shape(), &dw));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 2, gx.shape(), &dgx));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 3, gx.shape(), &dbx));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 4, h0.shape(), &dh0));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 5, kernel.shape(), &dkernel));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 6, gr.shape(), &dgr));
    OP_REQUIRES_OK(ctx, PooledOutput(ctx, 7, offs.shape(), &doff));
    Tensor dr_all, dz_all, carry;
    OP_REQUIRES_OK(ctx, PooledTemp(ctx, rs.dtype(), rs.shape(), &dr_all));
    OP_REQUIRES_OK(ctx,
                   PooledTemp(ctx, h0.dtype(), {Tn, B, G}, &dz_all));
    OP_REQUIRES_OK(ctx, PooledTemp(ctx, h0.dtype(), {4, B, u}, &carry));
    T* DR = dr_all.flat<T>().data();
    T* DZ = dz_all.flat<T>().data();
    T* buf = carry.flat<T>().data();
    const int64_t Bu = B * u;
    T* dh = buf;
    T* dhs = buf + Bu;
    T* dy[2] = {buf + 2 * Bu, buf + 3 * Bu};
    std::copy_n(dh_last.flat<T>().data(), Bu, dh);
    std::fill_n(dy[0], Bu, T(0));

    const auto input =
        InputNorm<T>::Of(x, w, gx, T(0), shards_, normalize_);
    // (The backward step reads neither epsilon nor gx and bx.)
    const GruStep<T> step{u,       T(0),
                          nullptr, nullptr,
                          gr.flat<T>().data(), offs.flat<T>().data(),
                          zero_output_,            normalize_};
    const PackedMatrix<T> Ut(kernel.flat<T>().data(), G, u, true);
    const T* S = saved.flat<T>().data();
    const T* R = rs.flat<T>().data();
    const T* XR = xrstd.flat<T>().data();
    const T* HS = hs.flat<T>().data();
    const T* DYS = dys.flat<T>().data();
    const bool* M = masked_ ? mask.flat<bool>().data() : nullptr;
    const std::vector<char> empty = UniformSteps(M, Tn, B, false);
    const int64_t Tv = ValidSteps(empty);
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
        if (empty[t])  // dr_t = 0: dL/dh_{t-1} is what passed through
          std::copy(dhs + b0 * u, dhs + b1 * u, dh + b0 * u);
        else
          Ut.Multiply(b1 - b0, DR + (n + b0) * G, dh + b0 * u, dhs + b0 * u);
      }
    });
    std::copy_n(dh, Bu, dh0->flat<T>().data());
    input.Backward(ctx, Tv * B, Tn * B, B, u, h0.flat<T>().data(), HS, DR,
                   dkernel->flat<T>().data(), DZ, xhat.flat<T>().data(), XR,
                   dx->flat<T>().data(),
                   dw->flat<T>().data(), dgx->flat<T>().data(),
                   dbx->flat<T>().data());
    sgr.Total(dgr->flat<T>().data());
    soff.Total(doff->flat<T>().data());
  }

};


REGISTER("KerasLnLstmForward", LstmForwardOp, float);
REGISTER("KerasLnLstmForward", LstmForwardOp, double);
REGISTER("KerasLnLstmBackward", LstmBackwardOp, float);
REGISTER("KerasLnLstmBackward", LstmBackwardOp, double);
REGISTER("KerasLnGruForward", GruForwardOp, float);
REGISTER("KerasLnGruForward", GruForwardOp, double);
REGISTER("KerasLnGruBackward", GruBackwardOp, float);
REGISTER("KerasLnGruBackward", GruBackwardOp, double);


}  // namespace
}  // namespace keras_ln

// The block pool (kernels.h), through ctypes (keras_ln.layers._native):
// the bytes it holds; freeing them (returns the bytes freed); its sizes and
// test mode (every block handed out filled with NaNs).
extern "C" __attribute__((visibility("default"))) size_t
keras_ln_pool_cached_bytes() {
  return keras_ln::BlockPool::Get()->CachedBytes();
}

extern "C" __attribute__((visibility("default"))) size_t
keras_ln_pool_release() {
  return keras_ln::BlockPool::Get()->Release();
}

extern "C" __attribute__((visibility("default"))) void keras_ln_pool_configure(
    size_t min_bytes, size_t max_cached_bytes, int poison) {
  keras_ln::BlockPool* pool = keras_ln::BlockPool::Get();
  pool->min_bytes_ = min_bytes;
  pool->max_cached_bytes_ = max_cached_bytes;
  pool->poison_ = poison != 0;
  pool->Release();
}
