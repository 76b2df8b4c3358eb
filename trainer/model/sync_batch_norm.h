// Batch norm whose statistics are taken over the GLOBAL batch (all ranks), so a BN model computes the same thing
// at every world size (docs/architecture.md invariant). With one rank it equals BatchNorm2d in training mode.
#pragma once

#include <torch/torch.h>

namespace tempered {

class SyncBatchNorm2dImpl : public torch::nn::Module {
 public:
  explicit SyncBatchNorm2dImpl(int64_t channels, double momentum = 0.1, double eps = 1e-5);
  torch::Tensor forward(const torch::Tensor& x);  // (N, C, H, W) or (N, C); N may differ across ranks, even 0

  torch::Tensor weight, bias, running_mean, running_var;

 private:
  double momentum_, eps_;
};
TORCH_MODULE(SyncBatchNorm2d);

}  // namespace tempered
