#include "trainer/step.h"

#include <ATen/autocast_mode.h>
#include <glog/logging.h>

#include <cmath>

#include "trainer/device.h"
#include "trainer/loss/streaming_loss.h"

namespace tempered {
namespace {

torch::TensorOptions LongOn(torch::Device device) { return torch::TensorOptions(torch::kLong).device(device); }

// Rows of `views` views of every rank's shard of the global batch (ShardOf): what each rank contributes to a gather.
std::vector<int64_t> RowsOfEveryRank(int64_t global_batch, int views) {
  std::vector<int64_t> rows;
  for (int r = 0; r < comm::Size(); ++r) rows.push_back(views * ShardOf(global_batch, r, comm::Size()).count);
  return rows;
}

// SimCLR with global batch negatives. z (2b, d) = [view 0; view 1] of this rank's b images; the gathered
// candidates are (2B, d) with rank r's rows at [2 offset_r, 2 offset_r + 2 b_r), so an anchor's positive is its
// other view and every other row of the global batch is a negative.
class BatchNegatives : public Negatives {
 public:
  BatchNegatives(int64_t global_batch, torch::Device device)
      : global_batch_(global_batch), shard_(ShardOf(global_batch, comm::Rank(), comm::Size())),
        view_rows_(RowsOfEveryRank(global_batch, 2)), device_(device) {}

  int views() const override { return 2; }
  int64_t anchors() const override { return 2 * global_batch_; }
  double PositiveSimilaritySum(const torch::Tensor& z, const StepInput&) const override {
    const int64_t b = shard_.count;  // an anchor's positive is its other view, on this rank
    return 2 * (z.narrow(0, 0, b) * z.narrow(0, b, b)).sum().item<double>();
  }
  int64_t negatives() const override { return 2 * global_batch_ - 2; }

  torch::Tensor Loss(const torch::Tensor& z, const StepInput&, const LossOptions& loss,
                     SimilaritySample* sample) override {
    const int64_t b = shard_.count;
    const torch::Tensor candidates = comm::GatherWithGrad(z, view_rows_);  // (2B, d), comm's reused buffer
    const torch::Tensor local = torch::arange(2 * b, LongOn(device_));
    const torch::Tensor self = local + 2 * shard_.offset;
    const torch::Tensor positive = (local + b).remainder(2 * b) + 2 * shard_.offset;
    if (sample) *sample = {z.detach().clone(), candidates.detach().clone(), positive, self};
    return StreamingOrNaiveLoss(z, candidates, positive, self, loss).sum();
  }

 private:
  const int64_t global_batch_;
  const Shard shard_;
  const std::vector<int64_t> view_rows_;  // every rank's rows of z: the gather's counts, known without asking
  const torch::Device device_;
};

// Memory-bank negatives: one view per image; the candidates are the bank, an anchor's positive its own entry.
// bank[i] = normalize(m bank[i] + (1 - m) f(x_i)) after each step for every image of the global batch, applied
// identically on every rank from the all-gathered (index, feature) pairs. Initialised uniform on the sphere from the
// run's seed: identical on every rank.
class MemoryBank : public Negatives {
 public:
  MemoryBank(const RunConfig& config, int64_t size, torch::Device device)
      : global_batch_(config.batch_size()), momentum_(config.loss().bank_momentum()),
        rows_(RowsOfEveryRank(config.batch_size(), 1)), device_(device) {
    torch::manual_seed(config.seed() + 1);
    bank_ = Normalized(torch::randn({size, config.model().embed_dim()})).to(device);
  }

  int views() const override { return 1; }
  int64_t anchors() const override { return global_batch_; }
  double PositiveSimilaritySum(const torch::Tensor& z, const StepInput& input) const override {
    const torch::Tensor positive = input.index.to(device_, /*non_blocking=*/true);
    return (z * bank_.index_select(0, positive)).sum().item<double>();
  }
  int64_t negatives() const override { return bank_.size(0) - 1; }

  torch::Tensor Loss(const torch::Tensor& z, const StepInput& input, const LossOptions& loss,
                     SimilaritySample* sample) override {
    const torch::Tensor positive = input.index.to(device_, /*non_blocking=*/true);
    const torch::Tensor exclude = torch::full({positive.size(0)}, -1, LongOn(device_));
    // The bank itself, not a copy (it may hold millions of entries): the histograms, drawn after the step, see it
    // with this step's entries updated.
    if (sample) *sample = {z.detach().clone(), bank_, positive, exclude};
    return StreamingOrNaiveLoss(z, bank_, positive, exclude, loss).sum();
  }

  void Update(const StepInput& input, const torch::Tensor& z) override {
    torch::NoGradGuard no_grad;
    const torch::Tensor index = input.global_index.to(device_, /*non_blocking=*/true);  // every rank's, in order
    const torch::Tensor feature = comm::AllGather(z.detach().contiguous(), rows_);
    const torch::Tensor mixed = bank_.index_select(0, index) * momentum_ + feature * (1 - momentum_);
    bank_.index_copy_(0, index, Normalized(mixed));
  }

  torch::Tensor State() const override { return bank_; }
  void Restore(const torch::Tensor& state) override { bank_ = state.to(device_); }

 private:
  static torch::Tensor Normalized(const torch::Tensor& x) {
    return torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1));
  }

  const int64_t global_batch_;
  const double momentum_;
  const std::vector<int64_t> rows_;  // every rank's rows of z
  const torch::Device device_;
  torch::Tensor bank_;  // (N, d)
};

// The encoder's embedding of a batch, in fp32. With bf16 the encoder runs under autocast (the convs and matmuls in
// bf16) while the loss, which needs the range of fp32 at small tau, stays in fp32.
torch::Tensor Embed(Learner& learner, const torch::Tensor& images) {
  if (!learner.bf16) return learner.encoder->forward(images).embedding;
  SetAutocast(learner.device, true);
  torch::Tensor z = learner.encoder->forward(images).embedding.to(torch::kFloat32);
  SetAutocast(learner.device, false);
  at::autocast::clear_cache();
  return z;
}

}  // namespace

std::unique_ptr<Negatives> MakeNegatives(const RunConfig& config, int64_t train_size, torch::Device device) {
  if (config.loss().negatives() == LossConfig::MEMORY_BANK) {
    return std::make_unique<MemoryBank>(config, train_size, device);
  }
  return std::make_unique<BatchNegatives>(config.batch_size(), device);
}

Learner MakeLearner(const RunConfig& config, const Dataset& train, const Negatives& negatives, torch::Device device) {
  Learner learner;
  learner.device = device;
  learner.bf16 = config.bf16();
  torch::manual_seed(config.seed());  // identical initial parameters on every rank
  learner.encoder = Encoder(config.model(), train.channels(), ImageSizeOf(config.data()));  // the stem fits it
  learner.encoder->to(device);
  for (auto& p : learner.encoder->parameters()) comm::Broadcast(p, 0);  // and made certain of it
  const OptimConfig& o = config.optim();
  const torch::optim::SGDOptions sgd =
      torch::optim::SGDOptions(o.lr()).momentum(o.momentum()).weight_decay(o.weight_decay());
  std::vector<torch::optim::OptimizerParamGroup> groups = {{learner.encoder->parameters()}};
  std::vector<torch::Tensor> reduced = learner.encoder->parameters();
  const TauPlan plan = TauPlanFor(config.loss(), config.epochs());
  if (plan.mode == LossConfig::LEARNABLE) {  // CLIP's logit scale: the same SGD and lr, no weight decay
    learner.logit_scale = InitialLogitScale(plan, device);
    auto options = std::make_unique<torch::optim::SGDOptions>(sgd);
    options->weight_decay(0);
    groups.emplace_back(std::vector<torch::Tensor>{learner.logit_scale}, std::move(options));
    reduced.push_back(learner.logit_scale);  // its gradient averaged over ranks with the others
  }
  learner.optimizer = std::make_unique<torch::optim::SGD>(groups, sgd);
  // Buckets all-reduced during backward, as each fills (the small CNN's ~1 MB of gradients makes 3-4 of 256 KiB).
  const int64_t bucket_kib = config.gradient_bucket_kib() > 0 ? config.gradient_bucket_kib() : 256;
  learner.reducer = std::make_unique<comm::GradientReducer>(
      reduced, comm::ReducerOptions{bucket_kib << 10, comm::ReduceTiming::kDuringBackward});
  if (comm::Rank() == 0 && comm::Size() > 1) {
    LOG(INFO) << "gradients all-reduced in " << learner.reducer->bucket_count() << " buckets of about "
              << bucket_kib << " KiB during backward";
  }
  learner.loss.name = config.loss().name();
  learner.loss.tau = config.loss().tau();
  learner.loss.hard_k = HardK(config.loss(), negatives.negatives());
  learner.loss.min_negatives = negatives.negatives();  // every anchor has as many: no host read of the indices
  learner.tau_plan = TauPlanFor(config.loss(), config.epochs());
  return learner;
}

// Sets the step's tau (learner.loss) from the plan: the epoch's for COSINE, the global batch's for ADAPTIVE (an
// all-reduce of one number), the parameter's for LEARNABLE.
void SetStepTau(Learner& learner, const Negatives& negatives, const torch::Tensor& z, const StepInput& input) {
  const TauPlan& plan = learner.tau_plan;
  switch (plan.mode) {
    case LossConfig::COSINE:
      learner.loss.tau = CosineTau(plan, input.epoch);
      break;
    case LossConfig::ADAPTIVE: {
      torch::NoGradGuard no_grad;
      const double sum = comm::AllReduceSum(negatives.PositiveSimilaritySum(z.detach(), input));
      learner.loss.tau = AdaptiveTau(plan, sum / negatives.anchors());
      break;
    }
    case LossConfig::LEARNABLE:
      learner.loss.inverse_tau = learner.logit_scale.exp();
      break;
    default:
      break;
  }
}

double CurrentTau(const Learner& learner) {
  if (!learner.logit_scale.defined()) return learner.loss.tau;
  return std::exp(-learner.logit_scale.item<double>());
}

torch::Tensor Step(Learner& learner, Negatives& negatives, const StepInput& input, double lr,
                   SimilaritySample* sample) {
  const torch::Tensor z = Embed(learner, ViewsOn(input, learner.device));
  SetStepTau(learner, negatives, z, input);
  const torch::Tensor loss_sum = negatives.Loss(z, input, learner.loss, sample);
  // Each rank's share, scaled by the world size: the reducer averages gradients over ranks, so the result is the
  // gradient of the global mean loss, also with uneven shards.
  learner.optimizer->zero_grad();
  (loss_sum * (static_cast<double>(comm::Size()) / negatives.anchors())).backward();
  learner.reducer->Finalize();
  for (auto& group : learner.optimizer->param_groups()) {
    static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
  }
  learner.optimizer->step();
  if (learner.logit_scale.defined()) ClampLogitScale(learner.tau_plan, learner.logit_scale);
  negatives.Update(input, z);
  return loss_sum.detach();
}

SyncedSteps SyncSteps(const std::vector<torch::Tensor>& loss_sums, int64_t anchors, bool stop_requested) {
  CHECK(!loss_sums.empty());
  const torch::Tensor losses = torch::stack(loss_sums).to(torch::kDouble);
  torch::Tensor summed = torch::cat({losses, torch::full({1}, stop_requested ? 1.0 : 0.0, losses.options())});
  comm::AllReduceSum(summed);
  summed = summed.cpu();  // the one device-to-host copy of the steps since the last sync
  SyncedSteps synced;
  const double* value = summed.data_ptr<double>();
  for (size_t i = 0; i < loss_sums.size(); ++i) synced.losses.push_back(value[i] / static_cast<double>(anchors));
  synced.stop = value[loss_sums.size()] > 0;
  return synced;
}

double LearningRate(const OptimConfig& o, int64_t step, int64_t steps_per_epoch, int64_t total_steps) {
  const double warmup = o.warmup_epochs() * static_cast<double>(steps_per_epoch);
  if (step < warmup) return o.lr() * (static_cast<double>(step) + 1) / warmup;
  switch (o.schedule()) {
    case OptimConfig::COSINE: {
      const double progress = (step - warmup) / std::max(1.0, total_steps - warmup);
      return o.lr() * 0.5 * (1 + std::cos(M_PI * progress));
    }
    case OptimConfig::STEP: {
      double lr = o.lr();
      for (int32_t e : o.decay_epochs()) {
        if (step >= static_cast<int64_t>(e) * steps_per_epoch) lr *= o.decay_factor();
      }
      return lr;
    }
    default: return o.lr();
  }
}

}  // namespace tempered
