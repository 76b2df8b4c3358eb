// The contrastive losses of Wang & Liu (docs/paper.md §2) and the hardness analysis of §3.
//
// Every loss is computed for a set of anchors (n x d) against a set of candidates (C x d), all L2-normalised, so
// s = anchors @ candidates^T are cosine similarities. Each anchor has one positive candidate and may exclude
// candidates (itself, in SimCLR's batch form); every other candidate is a negative. The functions return the
// per-anchor losses (n) and are differentiable through LibTorch autograd with respect to anchors and candidates.
#pragma once

#include <torch/torch.h>

#include "proto/tempered.pb.h"

namespace tempered {

struct LossOptions {
  LossConfig::Name name = LossConfig::INFONCE;
  double tau = 0.1;
  // Hardest negatives per anchor for HARD and HARD_SIMPLE (clamped to the number of negatives).
  int64_t hard_k = 0;
  // Size of a tile of the streaming loss (trainer/loss/streaming_loss.h) in scores, anchors x candidates: a tile holds
  // max(1, tile_scores / n) candidates, so its extra memory is O(tile_scores) instead of the naive O(n x C).
  // 0 = the naive loss; ContrastiveLoss itself ignores it. 2^26 (256 MiB of fp32; 16,384 candidates for 4,096
  // anchors) measured fastest of 2^22-2^26 on 2 loaded cores (fewer, larger ops; a GPU is launch-bound on small
  // tiles) and stays > 16x below the naive peak at 4,096 x 65,536.
  int64_t tile_scores = int64_t{1} << 26;
  // A learnable tau (loss.tau_mode LEARNABLE, trainer/loss/tau.h): exp(logit_scale), a 0-dim tensor that requires
  // grad. When defined, StreamingOrNaiveLoss computes the losses that use tau on s * inverse_tau with tau = 1, by
  // scaling the anchors ((e^l a_i) . c_j = s_ij e^l), so the scale's gradient is exact through autograd.
  torch::Tensor inverse_tau;
  // The fewest negatives of any anchor, when the caller knows it (the trainer: Negatives::negatives()); 0 = unknown.
  // Known, the streaming loss checks the indices on their device (an asynchronous assert) instead of reading them on
  // the host, so that a GPU step does not wait for the device there.
  int64_t min_negatives = 0;
};

// anchors (n, d); candidates (C, d); positive (n) int64 candidate index of each anchor's positive; exclude (n)
// int64 candidate index to leave out of each anchor's row (-1 = none; never the positive). Returns per-anchor
// losses (n) in the inputs' dtype. Numerically safe down to tau = 0.01 (log-sum-exp with a running max, never a
// raw exp(s / tau)). Every anchor needs at least one negative; HARD and HARD_SIMPLE clamp hard_k to the smallest
// number of negatives of any anchor (every anchor has the same number in both the batch and the bank form).
torch::Tensor ContrastiveLoss(const torch::Tensor& anchors, const torch::Tensor& candidates,
                              const torch::Tensor& positive, const torch::Tensor& exclude,
                              const LossOptions& options);

// The same losses on precomputed similarities sims (n, C) = anchors @ candidates^T: ContrastiveLoss is
// LossFromSimilarities(anchors.matmul(candidates.t()), ...). Exposed so that tests and the analysis can take
// gradients with respect to s itself (docs/paper.md §3: dL/ds_ij = P_ij / tau).
torch::Tensor LossFromSimilarities(const torch::Tensor& sims, const torch::Tensor& positive,
                                   const torch::Tensor& exclude, const LossOptions& options);

// K for a loss given the number of negatives per anchor: config.hard_k if set, else
// round(hard_fraction * negatives), at least 1, at most negatives.
int64_t HardK(const LossConfig& config, int64_t negatives);

// Relative penalty (docs/paper.md §3): r_i(s_ij) = exp(s_ij / tau) / sum_{k negative} exp(s_ik / tau) over each
// anchor's negatives. sims (n, C) similarities, positive / exclude as above. Returns (n, C) with zeros at the
// positive and excluded entries; each row sums to 1.
torch::Tensor RelativePenalty(const torch::Tensor& sims, const torch::Tensor& positive, const torch::Tensor& exclude,
                              double tau);
// Entropy (nats) of each anchor's relative penalty (n).
torch::Tensor PenaltyEntropy(const torch::Tensor& sims, const torch::Tensor& positive, const torch::Tensor& exclude,
                             double tau);

}  // namespace tempered
