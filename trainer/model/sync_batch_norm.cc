#include "trainer/model/sync_batch_norm.h"

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

torch::Tensor SyncBatchNorm2dImpl::forward(const torch::Tensor& input) {
  if (input.dim() == 2) {
    return forward(input.view({input.size(0), input.size(1), 1, 1})).view({input.size(0), input.size(1)});
  }
  // bf16 / fp16 activations (autocast's conv outputs) are normalised in fp32: sums of them in their own type lose
  // the statistics' digits, and the MPI backend moves no 16-bit floats. The output goes back to the input's type.
  if (input.is_floating_point() && input.element_size() < 4) {
    return forward(input.to(torch::kFloat)).to(input.scalar_type());
  }
  const torch::Tensor& x = input;
  const auto shape = std::vector<int64_t>{1, x.size(1), 1, 1};
  if (!is_training()) {
    return (x - running_mean.view(shape)) * torch::rsqrt(running_var.view(shape) + eps_) * weight.view(shape) +
           bias.view(shape);
  }
  // Two passes over the global batch, each one all-reduce of (C) sums with gradient: the mean, then the variance
  // around it. (E[x^2] - mean^2 in one pass loses fp32 digits when the mean is large against the spread.)
  const auto dims = std::vector<int64_t>{0, 2, 3};
  const double local_count = static_cast<double>(x.numel() / std::max<int64_t>(x.size(1), 1));
  const torch::Tensor count = torch::full({1}, comm::AllReduceSum(local_count), x.options());
  const torch::Tensor mean = AllReduceSumFunction::apply(x.sum(dims)) / count;
  const torch::Tensor centered = x - mean.view(shape);
  const torch::Tensor var = AllReduceSumFunction::apply((centered * centered).sum(dims)) / count;  // biased
  {
    torch::NoGradGuard no_grad;
    running_mean.mul_(1 - momentum_).add_(momentum_ * mean.detach());
    running_var.mul_(1 - momentum_).add_(momentum_ * var.detach() * count / (count - 1).clamp_min(1));
  }
  return centered * torch::rsqrt(var.view(shape) + eps_) * weight.view(shape) + bias.view(shape);
}

}  // namespace tempered
