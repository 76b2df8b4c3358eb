#include "trainer/loss/tau.h"

#include <glog/logging.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/config.h"

namespace tempered {

TauPlan TauPlanFor(const LossConfig& config, double epochs) {
  TauPlan plan;
  plan.tau = config.tau();
  if (!LossUsesTau(config.name())) return plan;
  plan.mode = config.tau_mode();
  const bool cosine = plan.mode == LossConfig::COSINE;
  // CLIP clamps its logit scale at 100 (tau >= 0.01); Kukleva et al. swing between 0.1 and 1.
  plan.min = config.tau_min() > 0 ? config.tau_min() : cosine ? 0.1 : 0.01;
  plan.max = config.tau_max() > 0 ? config.tau_max() : cosine ? 1.0 : 0.0;
  plan.period_epochs = config.tau_period_epochs() > 0 ? config.tau_period_epochs() : std::max(1.0, epochs);
  plan.alpha = config.tau_alpha() > 0 ? config.tau_alpha() : 0.5;  // lightly's MACL default
  plan.a0 = config.tau_a0();
  return plan;
}

double CosineTau(const TauPlan& plan, int64_t epoch) {
  const double phase = 2 * M_PI * static_cast<double>(epoch) / plan.period_epochs;
  return plan.min + (plan.max - plan.min) * 0.5 * (1 + std::cos(phase));
}

double AdaptiveTau(const TauPlan& plan, double a) {
  return std::max(0.01, plan.tau * (1 + plan.alpha * (a - plan.a0)));
}

torch::Tensor InitialLogitScale(const TauPlan& plan, torch::Device device) {
  return torch::full({}, std::log(1.0 / plan.tau), torch::TensorOptions(torch::kFloat).device(device))
      .set_requires_grad(true);
}

void ClampLogitScale(const TauPlan& plan, torch::Tensor& logit_scale) {
  torch::NoGradGuard no_grad;
  const double high = std::log(1.0 / plan.min);
  const double low = plan.max > 0 ? std::log(1.0 / plan.max) : -std::numeric_limits<double>::infinity();
  logit_scale.clamp_(low, high);
}

}  // namespace tempered
