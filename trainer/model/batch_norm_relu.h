// relu(batch_norm(x)) in training mode as one autograd Function: one pass over x for the batch statistics, one to
// write the output; backward one pass for the two per-channel sums and one to write dx. PyTorch eager runs the same
// as two ops (and ReLU's backward as a third), each a full pass over (N, C, H, W) activations; on 2 CPU cores those
// passes cost about as much as the convs between them (bench/README.md, train_vs_pytorch).
#pragma once

#include <torch/torch.h>

namespace tempered {

struct BatchNormReluOptions {
  double momentum = 0.1;  // running = (1 - momentum) running + momentum batch statistic (torch::nn::BatchNorm2d's)
  double eps = 1e-5;
};

// x (N, C, H, W) float, double or bfloat16 (bf16 autocast's conv outputs: read into float, the output and dx
// rounded to bf16 once) on the CPU, N H W >= 2; weight, bias (C) parameters; running_mean, running_var (C) buffers,
// updated in place with the batch mean and the unbiased batch variance, as BatchNorm2d in training mode. Returns
// relu(weight (x - mean) / sqrt(var + eps) + bias) in x's dtype and the channels_last layout (values equal to the
// NCHW result; any layout of x is accepted, channels_last costs no copy).
torch::Tensor BatchNormReluTraining(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                    torch::Tensor& running_mean, torch::Tensor& running_var,
                                    const BatchNormReluOptions& options = {});

// Whether BatchNormReluTraining handles x (else use BatchNorm2d then ReLU): 4-d, CPU, float, double or bfloat16,
// N H W >= 2.
bool BatchNormReluSupports(const torch::Tensor& x);

}  // namespace tempered
