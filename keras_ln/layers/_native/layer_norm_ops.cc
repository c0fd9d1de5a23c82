// Layer normalization of a (rows, features) matrix as two TensorFlow ops,
// forward and backward: keras_ln.LayerNormalization's fast path for float32
// and float64 outside XLA (see keras_ln/layers/_tf_layer_norm.py). On a
// small input the cost of a layer norm in TensorFlow ops is their number
// (about a dozen forward and fifteen backward, each a few microseconds of
// dispatch), on a large one their passes over memory; here each pass is
// one op, one sweep over the rows. A row's sums run in an order fixed by
// its length (RowMean), so its results do not depend on its position.
//
// The formulas are those of the TensorFlow ops (`_plain_kernels`): the
// corrected two-pass statistics, m1 = mean(x), d = x - m1, dm = mean(d),
// rstd = 1 / sqrt(max(mean(d^2) - dm^2, 0) + eps), xhat = (d - dm) * rstd,
// y = xhat * gamma + beta; backward with g = dy * gamma,
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dgamma = sum(dy * xhat)
// and dbeta = sum(dy) over the rows. The forward keeps each row's m1, dm
// and rstd, not xhat: the backward recomputes xhat from the input with the
// forward's operations (the same bits), so the forward writes one matrix,
// not two (measured on 2 cores at (4096, 1024): 2.35-2.50 -> 1.68-1.75 ms,
// and the same forward+backward time). The rows are split into shards by
// the size only (LayerNormShards); the column sums add up the shards'
// parts in shard order, so the results do not depend on the threads.
//
// The row code is in layer_norm.h: within a row, the statistics that can
// share a sweep share it (RowMeans2: each sum still in RowMean's order, so
// the same bits as one RowMean each), and no intermediate row is written:
// three sweeps a row forward and two backward, where there were six and
// nine (measured: a (200, 100) forward 13.2 -> 9.5 us, forward and
// backward 37.3 -> 17.0 us; at (256, 64) 33.1 -> 12.5 us; per application
// of 64 in one graph, 2 cores; outputs and gradients bit for bit those of
// the previous code, float32 and float64, 36 shapes and parameter sets).
// The backward's column sums share the sweep of its row means (backward
// alone, per op in a graph of 64 or 8, three sweeps -> two: (256, 64)
// 6.5-6.8 -> 5.8-5.9 us, (200, 100) 10.0-10.8 -> 8.3-8.5 us, (4096, 1024)
// 1.19-1.28 -> 1.05-1.14 ms; the same bits, 360 arrays). The backward
// writes dx into dy's buffer where nothing else holds dy (a (8192, 4096)
// backward of a temporary dy: 17.3-17.8 -> 11.5 ms, no fresh 128 MiB to
// fault in; per application in a chain at (4096, 1024) 3.15-3.37 ->
// 2.79-2.91 ms).

#include "layer_norm.h"

namespace keras_ln {
namespace {

// gamma or beta: (features,), or (0,) for none.
void CheckParam(OpKernelContext* ctx, const char* name, const Tensor& p,
                int64_t F) {
  OP_REQUIRES(ctx,
              p.dims() == 1 && (p.dim_size(0) == F || p.dim_size(0) == 0),
              InvalidArgument(name, " must be (", F, ",) or (0,), got ",
                              p.shape().DebugString()));
}

void CheckMatrix(OpKernelContext* ctx, const char* name, const Tensor& x) {
  OP_REQUIRES(ctx, x.dims() == 2,
              InvalidArgument(name, " must be (rows, features), got ",
                              x.shape().DebugString()));
}

// TensorFlow's graph executor hands an op that calls itself expensive (the
// default) to its inter-op thread pool whenever other nodes are ready beside
// it, and runs the cheap ones inline. On a small input that hand-off to
// another thread costs more than the layer norm: measured on 2 cores, the
// forward and backward of a (256, 64) input in one tf.function took about
// 58-75 us above an empty function's cost as expensive ops, 23-40 us as
// cheap ones. The ops run inline, then: a large input still spreads over the
// intra-op pool in its own shards (ForShards), and only the scheduling of
// other nodes beside these ops changes, never the results.
class InlineOpKernel : public OpKernel {
 public:
  using OpKernel::OpKernel;
  bool IsExpensive() override { return false; }
};

REGISTER_OP("KerasLnLayerNormForward")
    .Input("x: T")        // (rows, features)
    .Input("gamma: T")    // (features,) or (0,): no scale
    .Input("beta: T")     // (features,) or (0,): no offset
    .Input("epsilon: T")  // scalar, in the input's dtype
    .Output("y: T")       // (rows, features)
    .Output("stats: T")   // (3, rows): m1, dm and rstd of every row
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->Matrix(3, c->Dim(c->input(0), 0)));
      return absl::OkStatus();
    });

template <typename T>
class LayerNormForwardOp : public InlineOpKernel {
 public:
  explicit LayerNormForwardOp(OpKernelConstruction* c) : InlineOpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor x = AlignedInput(ctx, 0);
    const Tensor &gamma = ctx->input(1), &beta = ctx->input(2);
    CheckMatrix(ctx, "x", x);
    if (!ctx->status().ok()) return;
    const int64_t n = x.dim_size(0), F = x.dim_size(1);
    CheckParam(ctx, "gamma", gamma, F);
    CheckParam(ctx, "beta", beta, F);
    const T eps = ScalarInput<T>(ctx, 3, "epsilon");
    if (!ctx->status().ok()) return;
    Tensor *y, *stats;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, {3, n}, &stats));
    if (F == 0) return;
    const T* X = x.flat<T>().data();
    const T* g = gamma.NumElements() ? gamma.flat<T>().data() : nullptr;
    const T* b = beta.NumElements() ? beta.flat<T>().data() : nullptr;
    T* Y = y->flat<T>().data();
    T* M1 = stats->flat<T>().data();  // then dm and rstd
    ForShards(ctx, n, LayerNormShards(n, F),
              [&](int64_t, int64_t r0, int64_t r1) {
      LayerNormForwardRows(X, g, b, eps, n, F, r0, r1, Y, M1);
    });
  }
};

REGISTER_OP("KerasLnLayerNormBackward")
    .Input("dy: T")      // (rows, features)
    .Input("x: T")       // (rows, features): the forward's input
    .Input("stats: T")   // (3, rows): the forward's m1, dm and rstd
    .Input("gamma: T")   // (features,) or (0,)
    .Output("dx: T")     // (rows, features)
    .Output("dgamma: T")  // (features,): sum over the rows of dy * xhat
    .Output("dbeta: T")   // (features,): sum of dy
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      auto F = c->Vector(c->Dim(c->input(0), 1));
      c->set_output(1, F);
      c->set_output(2, F);
      return absl::OkStatus();
    });

template <typename T>
class LayerNormBackwardOp : public InlineOpKernel {
 public:
  explicit LayerNormBackwardOp(OpKernelConstruction* c) : InlineOpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    CheckMatrix(ctx, "dy", ctx->input(0));
    if (!ctx->status().ok()) return;
    // dx takes dy's buffer where nothing else holds it (a gradient flowing
    // back through a network): each element of dx is written after its dy
    // is read, at the same index, and the row is then in cache. Decided
    // before the local copies below, which hold the buffer too.
    Tensor* dx;
    const TensorShape shape = ctx->input(0).shape();
    if (ctx->input(0).IsAligned()) {
      OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, shape, &dx));
    } else {
      OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &dx));
    }
    const Tensor dy = AlignedInput(ctx, 0), x = AlignedInput(ctx, 1);
    const Tensor &stats = ctx->input(2), &gamma = ctx->input(3);
    const int64_t n = dy.dim_size(0), F = dy.dim_size(1);
    CheckShape(ctx, "x", x, dy.shape());
    CheckShape(ctx, "stats", stats, TensorShape({3, n}));
    CheckParam(ctx, "gamma", gamma, F);
    if (!ctx->status().ok()) return;
    Tensor *dgamma, *dbeta;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, {F}, &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, {F}, &dbeta));
    const T* DY = dy.flat<T>().data();
    const T* X = x.flat<T>().data();
    const T* M1 = stats.flat<T>().data();  // then dm and rstd
    const T* g = gamma.NumElements() ? gamma.flat<T>().data() : nullptr;
    T* DX = dx->flat<T>().data();
    const int64_t shards = LayerNormShards(n, F);
    ShardSums<T> sg(shards, F), sb(shards, F);
    if (F > 0) {
      ForShards(ctx, n, shards, [&](int64_t s, int64_t r0, int64_t r1) {
        LayerNormBackwardRows(DY, X, M1, g, n, F, r0, r1, DX, sg[s], sb[s]);
      });
    }
    sg.Total(dgamma->flat<T>().data());
    sb.Total(dbeta->flat<T>().data());
  }
};

REGISTER("KerasLnLayerNormForward", LayerNormForwardOp, float);
REGISTER("KerasLnLayerNormForward", LayerNormForwardOp, double);
REGISTER("KerasLnLayerNormBackward", LayerNormBackwardOp, float);
REGISTER("KerasLnLayerNormBackward", LayerNormBackwardOp, double);

}  // namespace
}  // namespace keras_ln
