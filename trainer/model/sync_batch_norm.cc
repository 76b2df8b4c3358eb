#include "trainer/model/sync_batch_norm.h"

#include "comm/comm.h"

namespace tempered {

namespace {

// The batch's per-channel mean and biased variance over every rank's rows, from one gather per layer of each rank's
// (count, mean, sum of squared deviations from its own mean), combined as Chan et al.'s parallel variance: stable
// where E[x^2] - mean^2 loses fp32 digits, and differentiable (GatherWithGrad's backward is one reduce-scatter).
// Every rank contributes one row, so the counts are stated: nothing is read on the host.
struct BatchStatistics {
  torch::Tensor mean, variance, count;  // (C), (C) biased, (1): the global batch's
};
BatchStatistics GlobalStatistics(const torch::Tensor& x) {
  const auto dims = std::vector<int64_t>{0, 2, 3};
  const int64_t channels = x.size(1);
  const double count = static_cast<double>(x.numel() / std::max<int64_t>(channels, 1));
  const torch::Tensor mean = x.sum(dims) / std::max(count, 1.0);  // 0 on a rank without rows
  const torch::Tensor centered = x - mean.view({1, channels, 1, 1});
  const torch::Tensor local = torch::cat({torch::full({1}, count, x.options()), mean, (centered * centered).sum(dims)});
  const torch::Tensor all = comm::GatherWithGrad(local.unsqueeze(0), std::vector<int64_t>(comm::Size(), 1));
  const torch::Tensor counts = all.narrow(1, 0, 1);  // (W, 1)
  const torch::Tensor means = all.narrow(1, 1, channels), squares = all.narrow(1, 1 + channels, channels);
  const torch::Tensor total = counts.sum();
  const torch::Tensor global_mean = (counts * means).sum(0) / total;
  const torch::Tensor spread = (squares + counts * (means - global_mean).pow(2)).sum(0);
  return {global_mean, spread / total, total};
}

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
  const BatchStatistics batch = GlobalStatistics(x);
  {
    torch::NoGradGuard no_grad;  // the running variance is unbiased, as torch's
    const torch::Tensor count = batch.count.detach();
    running_mean.mul_(1 - momentum_).add_(momentum_ * batch.mean.detach());
    running_var.mul_(1 - momentum_).add_(momentum_ * batch.variance.detach() * count / (count - 1).clamp_min(1));
  }
  return (x - batch.mean.view(shape)) * torch::rsqrt(batch.variance.view(shape) + eps_) * weight.view(shape) +
         bias.view(shape);
}

}  // namespace tempered
