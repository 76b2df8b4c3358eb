// One global step of contrastive training (docs/contributing.md 10: no god-trainer): data -> embed -> negatives -> loss ->
// backward -> reduce -> optimiser. What varies between the paper's settings, where the negatives come from, is one
// interface; the loop (train.cc) sees neither MPI nor the memory bank.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "comm/comm.h"
#include "proto/tempered.pb.h"
#include "trainer/data/data.h"
#include "trainer/data/prefetch.h"
#include "trainer/loss/loss.h"
#include "trainer/loss/tau.h"
#include "trainer/model/model.h"

namespace tempered {

// A step's anchors, candidates and each anchor's positive and excluded column, for the similarity histograms of the
// steps that log. Copies (or the persistent memory bank), never the gather's own buffer: a reference to that kept
// into the next step would stop comm from reusing it (the use-count check of its ReusedBuffer).
struct SimilaritySample {
  torch::Tensor anchors, candidates, positive, exclude;
};

// Where a step's negatives come from: the other images of the global batch (SimCLR: two views of each image, every
// rank's embeddings gathered with their gradient) or a memory bank of the whole data set (Wu et al. 2018: one view;
// the candidates are the bank's entries, replicated identically on every rank).
class Negatives {
 public:
  virtual ~Negatives() = default;
  // Augmented views of each image that the step embeds.
  virtual int views() const = 0;
  // The sum over this rank's anchors of the similarity to their positive (no gradient): MACL's adaptive tau uses
  // the global batch's mean.
  virtual double PositiveSimilaritySum(const torch::Tensor& z, const StepInput& input) const = 0;
  // Anchors of one global batch (the step's loss is their mean).
  virtual int64_t anchors() const = 0;
  // Negatives of each anchor (the hard loss's K is a fraction of them).
  virtual int64_t negatives() const = 0;
  // The sum of this rank's anchor losses, for the embedding z of its views (rows [view 0; view 1; ...]). Collective.
  // Fills *sample when it is not null.
  virtual torch::Tensor Loss(const torch::Tensor& z, const StepInput& input, const LossOptions& loss,
                             SimilaritySample* sample) = 0;
  // After the optimiser step, with the step's embedding (the memory bank takes it in). Collective.
  virtual void Update(const StepInput& input, const torch::Tensor& z) {}
  // What a checkpoint keeps (the bank; undefined for batch negatives), and taking it back.
  virtual torch::Tensor State() const { return {}; }
  virtual void Restore(const torch::Tensor& state) {}
};

// Batch or memory-bank negatives (config.loss.negatives) for a training set of `train_size` images.
std::unique_ptr<Negatives> MakeNegatives(const RunConfig& config, int64_t train_size, torch::Device device);

// The model a step trains, and what trains it.
struct Learner {
  Encoder encoder{nullptr};
  std::unique_ptr<torch::optim::SGD> optimizer;
  std::unique_ptr<comm::GradientReducer> reducer;
  LossOptions loss;  // loss.tau: the current step's tau
  TauPlan tau_plan;
  torch::Tensor logit_scale;  // LEARNABLE: ln(1 / tau), trained with the encoder; undefined otherwise
  torch::Device device{torch::kCPU};
  bool bf16 = false;
};

// The tau of the step last taken (the learned one for LEARNABLE).
double CurrentTau(const Learner& learner);

// The encoder (seeded identically on every rank, and broadcast from rank 0 to be certain), its optimiser and
// gradient reducer, for images of `train`'s size. Collective.
Learner MakeLearner(const RunConfig& config, const Dataset& train, const Negatives& negatives, torch::Device device);

// One global step on this rank's input at learning rate `lr`, at the step's tau (loss.tau_mode). Returns this rank's
// sum of its anchors' losses, detached and on the device: reading it would make the host wait for the device, so
// the loop reads a run of them at once (SyncSteps). Collective. Fills *sample when it is not null.
torch::Tensor Step(Learner& learner, Negatives& negatives, const StepInput& input, double lr,
                   SimilaritySample* sample = nullptr);

// What the ranks agree on after a run of steps: each step's mean loss over the global batch's `anchors` anchors,
// identical on every rank, and whether any rank was asked to stop.
struct SyncedSteps {
  std::vector<double> losses;
  bool stop = false;
};
// One all-reduce of the steps' loss sums (Step's) and this rank's stop request, and one device-to-host copy: the
// host synchronisation of those steps. Collective.
SyncedSteps SyncSteps(const std::vector<torch::Tensor>& loss_sums, int64_t anchors, bool stop_requested);

// Learning rate at global step `step` (0-based): linear warm-up, then cosine, step or constant.
double LearningRate(const OptimConfig& optim, int64_t step, int64_t steps_per_epoch, int64_t total_steps);

}  // namespace tempered
