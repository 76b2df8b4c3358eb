// The temperature as it trains (loss.tau_mode): a constant, CLIP's learnable logit scale, Kukleva et al.'s cosine
// schedule over epochs, or MACL's adaptive rule from the batch's mean positive similarity. LEARNABLE starts at
// loss.tau and ADAPTIVE is centred on it; COSINE starts at its tau+. The tau of every log step and epoch end is
// recorded like the run's other measurements.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "proto/tempered.pb.h"

namespace tempered {

// A run's tau_mode with its parameters' defaults applied (the config leaves them 0 when unset).
struct TauPlan {
  LossConfig::TauMode mode = LossConfig::CONSTANT;
  double tau = 0.1;             // the constant, the start of every mode, MACL's tau_0
  double min = 0, max = 0;      // LEARNABLE: the clamp (max 0 = none); COSINE: tau- and tau+
  double period_epochs = 0;     // COSINE: T
  double alpha = 0, a0 = 0;     // ADAPTIVE
};
// `epochs`: the run's length, COSINE's default period. A loss without tau (simple, hard_simple, nearest) gets a
// CONSTANT plan: tau_mode changes nothing there.
TauPlan TauPlanFor(const LossConfig& config, double epochs);

// COSINE at epoch e (0-based): tau- + (tau+ - tau-) (1 + cos(2 pi e / T)) / 2.
double CosineTau(const TauPlan& plan, int64_t epoch);
// ADAPTIVE for a batch whose anchors' mean positive similarity is `a`: tau (1 + alpha (a - a0)), at least 0.01.
double AdaptiveTau(const TauPlan& plan, double a);

// LEARNABLE: the parameter logit_scale = ln(1 / tau), a 0-dim float tensor on `device` that requires grad.
torch::Tensor InitialLogitScale(const TauPlan& plan, torch::Device device);
// After every optimiser step: logit_scale clamped to [ln(1 / max), ln(1 / min)] in place.
void ClampLogitScale(const TauPlan& plan, torch::Tensor& logit_scale);

}  // namespace tempered
