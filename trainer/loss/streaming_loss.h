// The losses of trainer/loss/loss.h (docs/paper.md §2) over tiles of candidates: the (n, C) similarity matrix is never built.
//
// The naive loss materialises n x C logits and as much again for their gradient (1 GiB each at 4,096 x 65,536 in
// fp32). Here each tile of candidates is scored, folded into a running result and dropped, as FlashAttention
// and Inf-CL do:
//   infonce            an online log-sum-exp (running max and running sum, fp32); backward recomputes each tile's
//                      similarities from the anchors, the candidates and the saved per-anchor loss.
//   hard, hard_simple, a running top-K of each anchor's negatives, merged tile by tile (topk over the running K and
//   nearest            the new tile; nearest is K = 1); backward needs no recomputation: the K selected similarities
//                      and their candidate indices are saved.
//   simple             linear in s, so sum_k s_ik = a_i . sum_k c_k: no tile at all, O((n + C) d).
// Extra memory O(n x tile + n x K) = O(tile_scores + n x K); the candidates' gradient (C, d) is the only C-sized
// tensor.
#pragma once

#include <torch/torch.h>

#include "trainer/loss/loss.h"

namespace tempered {

// ContrastiveLoss (same arguments, per-anchor losses and gradients with respect to anchors and candidates) over
// tiles of max(1, options.tile_scores / n) candidates (tile_scores > 0). Runs on the inputs' device with LibTorch ops
// only; computes in fp32 (fp64 for fp64 inputs, as the gradient checks need) and returns the anchors' dtype. Not twice
// differentiable.
torch::Tensor StreamingContrastiveLoss(const torch::Tensor& anchors, const torch::Tensor& candidates,
                                       const torch::Tensor& positive, const torch::Tensor& exclude,
                                       const LossOptions& options);

// The loss the trainer calls: StreamingContrastiveLoss when options.tile_scores > 0, the naive ContrastiveLoss
// when 0.
torch::Tensor StreamingOrNaiveLoss(const torch::Tensor& anchors, const torch::Tensor& candidates,
                                   const torch::Tensor& positive, const torch::Tensor& exclude,
                                   const LossOptions& options);

}  // namespace tempered
