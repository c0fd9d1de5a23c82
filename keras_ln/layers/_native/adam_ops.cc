// Adam's update of several resource variables in one TensorFlow op: the
// optimizer step of the scikit-learn estimators' training loop
// (keras_ln/sklearn/_execution.py).
//
// TensorFlow's own ResourceApplyAdam does the same arithmetic for one
// variable, but it hands every update to the intra-op thread pool: for the
// few thousand weights of a small network that costs ~20 microseconds of
// thread hand-off per variable and step (measured: 21.7 us on 2 threads,
// 3.1 us on one), most of a small MLP's step. Here the variables are
// updated in the calling thread, and split into shards (by size only) only
// when they are large.
//
// The formulas are ResourceApplyAdam's (use_nesterov=False), in its order:
//   alpha = lr * sqrt(1 - beta2_power) / (1 - beta1_power)
//   m += (g - m) * (1 - beta1)
//   v += (g * g - v) * (1 - beta2)
//   var -= (m * alpha) / (sqrt(v) + epsilon)
// each operation rounded on its own (no fused multiply-add: see below), so
// that the result is the same on every CPU, scalar or vectorized, and equals
// ResourceApplyAdam's to the bit.
//
// As ResourceApplyAdam does, a variable whose buffer is shared with a read
// still alive (or in copy-on-read mode) is copied before it is updated, and
// the variables' mutexes are held, taken in address order, for the update.

#include "kernels.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"

namespace keras_ln {
namespace {

using tensorflow::DataTypeToEnum;
using tensorflow::Var;

// One shard per kAdamShardElements elements of a variable (at most
// kMaxShards): below that, a thread hand-off costs more than the update.
constexpr int64_t kAdamShardElements = 1 << 16;

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
// Every product and sum rounded on its own: a contracted (fused)
// multiply-add would round differently on CPUs with and without FMA.
template <typename T>
void AdamUpdate(T* var, T* m, T* v, const T* g, int64_t begin, int64_t end,
                T alpha, T one_minus_beta1, T one_minus_beta2, T epsilon) {
  for (int64_t i = begin; i < end; ++i) {
    m[i] += (g[i] - m[i]) * one_minus_beta1;
    v[i] += (g[i] * g[i] - v[i]) * one_minus_beta2;
    var[i] -= (m[i] * alpha) / (std::sqrt(v[i]) + epsilon);
  }
}
#pragma GCC pop_options

REGISTER_OP("KerasLnApplyAdam")
    .Input("var: N * resource")
    .Input("m: N * resource")
    .Input("v: N * resource")
    .Input("grad: N * T")
    .Input("beta1_power: T")
    .Input("beta2_power: T")
    .Input("lr: T")
    .Input("beta1: T")
    .Input("beta2: T")
    .Input("epsilon: T")
    .Attr("N: int >= 1")
    .Attr("T: {float, double}")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) { return absl::OkStatus(); });

template <typename T>
class ApplyAdamOp : public OpKernel {
 public:
  explicit ApplyAdamOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("N", &n_));
  }

  void Compute(OpKernelContext* ctx) override {
    const int n = n_;
    for (int i = 4 * n; i < 4 * n + 6; ++i) {
      CheckShape(ctx, "Adam's scalars", ctx->input(i), TensorShape({}));
      if (!ctx->status().ok()) return;
    }
    std::vector<tensorflow::core::RefCountPtr<Var>> vars(3 * n);
    for (int i = 0; i < 3 * n; ++i) {
      OP_REQUIRES_OK(ctx, tensorflow::LookupResource(
                              ctx, tensorflow::HandleFromInput(ctx, i),
                              &vars[i]));
    }
    std::vector<tsl::mutex*> mutexes;
    for (auto& var : vars) mutexes.push_back(var->mu());
    std::sort(mutexes.begin(), mutexes.end());
    mutexes.erase(std::unique(mutexes.begin(), mutexes.end()), mutexes.end());
    std::vector<tsl::mutex_lock> locks;
    locks.reserve(mutexes.size());
    for (tsl::mutex* mu : mutexes) locks.emplace_back(*mu);

    static const char* kNames[3] = {"var", "m", "v"};
    for (int j = 0; j < n; ++j) {
      const Tensor& grad = ctx->input(3 * n + j);
      for (int k = 0; k < 3; ++k) {
        Var* var = vars[k * n + j].get();
        Tensor* t = var->tensor();
        OP_REQUIRES(ctx, var->is_initialized && t->dtype() == DataTypeToEnum<T>::v(),
                    InvalidArgument(kNames[k], "[", j, "] must be an initialized ",
                                    DataTypeString(DataTypeToEnum<T>::v()),
                                    " variable"));
        OP_REQUIRES(ctx, t->shape() == grad.shape(),
                    InvalidArgument(kNames[k], "[", j, "] has shape ",
                                    t->shape().DebugString(), ", its gradient ",
                                    grad.shape().DebugString()));
        if (var->copy_on_read_mode.load() || !t->RefCountIsOne()) {
          Tensor copy;
          OP_REQUIRES_OK(ctx, ctx->allocate_temp(t->dtype(), t->shape(), &copy));
          if (t->NumElements() > 0) {
            std::memcpy(copy.flat<T>().data(), t->flat<T>().data(),
                        t->NumElements() * sizeof(T));
          }
          *t = copy;
        }
      }
    }
    auto scalar = [&](int i) { return ctx->input(4 * n + i).scalar<T>()(); };
    const T beta1_power = scalar(0), beta2_power = scalar(1), lr = scalar(2),
            beta1 = scalar(3), beta2 = scalar(4), epsilon = scalar(5);
    const T alpha =
        lr * std::sqrt(T(1) - beta2_power) / (T(1) - beta1_power);
    for (int j = 0; j < n; ++j) {
      T* var = vars[j]->tensor()->flat<T>().data();
      T* m = vars[n + j]->tensor()->flat<T>().data();
      T* v = vars[2 * n + j]->tensor()->flat<T>().data();
      const T* g = ctx->input(3 * n + j).flat<T>().data();
      const int64_t size = ctx->input(3 * n + j).NumElements();
      const int64_t shards = std::max<int64_t>(
          1, std::min<int64_t>(kMaxShards, size / kAdamShardElements));
      ForShards(ctx, size, shards, [&](int64_t, int64_t begin, int64_t end) {
        AdamUpdate(var, m, v, g, begin, end, alpha, T(1) - beta1,
                   T(1) - beta2, epsilon);
      });
    }
  }

 private:
  int n_;
};

#define REGISTER(T)                                                \
  REGISTER_KERNEL_BUILDER(                                         \
      Name("KerasLnApplyAdam").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
      ApplyAdamOp<T>);
REGISTER(float)
REGISTER(double)
#undef REGISTER

}  // namespace
}  // namespace keras_ln
