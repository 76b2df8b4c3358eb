#include "trainer/sync_batch_norm.h"

#include "comm/comm.h"

namespace tempered {

namespace {

// Differentiable all-reduce sum: y = sum over ranks of x. Every rank's loss depends on y, so the gradient of the
// total loss with respect to x is the sum over ranks of the incoming gradients: backward is an all-reduce too.
class AllReduceSumFunction : public torch::autograd::Function<AllReduceSumFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& x) {
    torch::Tensor y = x.clone();
    comm::AllReduceSum(y);
    return y;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext*,
                                               torch::autograd::tensor_list grads) {
    torch::Tensor g = grads[0].contiguous().clone();
    comm::AllReduceSum(g);
    return {g};
  }
};

}  // namespace

SyncBatchNorm2dImpl::SyncBatchNorm2dImpl(int64_t channels, double momentum, double eps)
    : momentum_(momentum), eps_(eps) {
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
  running_mean = register_buffer("running_mean", torch::zeros({channels}));
  running_var = register_buffer("running_var", torch::ones({channels}));
}

torch::Tensor SyncBatchNorm2dImpl::forward(const torch::Tensor& x) {
  const auto shape = std::vector<int64_t>{1, x.size(1), 1, 1};
  if (!is_training()) {
    return (x - running_mean.view(shape)) * torch::rsqrt(running_var.view(shape) + eps_) * weight.view(shape) +
           bias.view(shape);
  }
  // (3, C): per-channel count, sum and sum of squares, summed over ranks with gradient.
  const auto dims = std::vector<int64_t>{0, 2, 3};
  const double local_count = static_cast<double>(x.numel() / std::max<int64_t>(x.size(1), 1));
  torch::Tensor stats = torch::stack({torch::full({x.size(1)}, local_count, x.options()), x.sum(dims),
                                      (x * x).sum(dims)});
  stats = AllReduceSumFunction::apply(stats);
  const torch::Tensor count = stats[0];
  const torch::Tensor mean = stats[1] / count;
  const torch::Tensor var = (stats[2] / count - mean * mean).clamp_min(0);  // biased, as BatchNorm normalises
  {
    torch::NoGradGuard no_grad;
    running_mean.mul_(1 - momentum_).add_(momentum_ * mean.detach());
    running_var.mul_(1 - momentum_).add_(momentum_ * var.detach() * count / (count - 1).clamp_min(1));
  }
  return (x - mean.view(shape)) * torch::rsqrt(var.view(shape) + eps_) * weight.view(shape) + bias.view(shape);
}

}  // namespace tempered
