// The training step (trainer/step.h) under mpirun with 1-4 ranks: the gathered rows' buffer is reused from step to
// step, also at the steps that keep a similarity sample for the histograms (once the loop kept the
// last step's gathered candidates for the histograms, so comm allocated a fresh buffer at every step); and a sample
// holds copies of the step's anchors and candidates, equal to what the step computed with.
#include <gtest/gtest.h>

#include "comm/comm.h"
#include "common/config.h"
#include "trainer/step.h"

namespace tempered {
namespace {

RunConfig SmallRun(LossConfig::Negatives negatives) {
  RunConfig config;
  config.set_batch_size(13);  // uneven shards over 2-4 ranks
  config.mutable_model()->set_width(4);
  config.mutable_model()->set_embed_dim(16);
  config.mutable_loss()->set_negatives(negatives);
  return ResolveConfig(config);
}

Dataset RandomImages(int64_t n) {
  torch::manual_seed(7);
  return {torch::randint(0, 256, {n, 1, 28, 28}, torch::kByte), torch::randint(0, 10, {n}, torch::kLong), 10};
}

// This rank's share of global step `step`, views drawn from the step (the same on every rank for a world size).
StepInput InputOf(const RunConfig& config, int views, int64_t step) {
  const Shard shard = ShardOf(config.batch_size(), comm::Rank(), comm::Size());
  StepInput input;
  input.step = step;
  for (int64_t i = 0; i < shard.count; ++i) input.indices.push_back((step * config.batch_size() + shard.offset + i) % 64);
  input.index = torch::tensor(input.indices, torch::kLong);
  input.global_index = (torch::arange(config.batch_size(), torch::kLong) + step * config.batch_size()).remainder(64);
  torch::manual_seed(1000 * step + comm::Rank());
  input.views = torch::rand({views * shard.count, 1, 28, 28});
  return input;
}

TEST(StepTest, GatheredRowsBufferIsReusedAcrossSteps) {
  const RunConfig config = SmallRun(LossConfig::BATCH);
  const Dataset train = RandomImages(64);
  std::unique_ptr<Negatives> negatives = MakeNegatives(config, train.size(), torch::kCPU);
  Learner learner = MakeLearner(config, train, *negatives, torch::kCPU);
  Step(learner, *negatives, InputOf(config, 2, 0), 0.1);  // the first step allocates the buffers
  const int64_t after_first = comm::RowBufferAllocations();
  for (int64_t step = 1; step < 5; ++step) {
    SimilaritySample sample;
    const bool logs = step % 2 == 0;  // as at a log step, on every rank
    const torch::Tensor loss_sum = Step(learner, *negatives, InputOf(config, 2, step), 0.1, logs ? &sample : nullptr);
    const double loss = SyncSteps({loss_sum}, negatives->anchors(), false).losses[0];
    EXPECT_TRUE(std::isfinite(loss));
    if (logs) {
      EXPECT_EQ(sample.candidates.size(0), 2 * config.batch_size());
      EXPECT_EQ(sample.anchors.size(0), 2 * ShardOf(config.batch_size(), comm::Rank(), comm::Size()).count);
    }
  }
  EXPECT_EQ(comm::RowBufferAllocations(), after_first) << "a step kept the gathered rows alive into the next one";
}

TEST(StepTest, SampleHoldsTheAnchorsAmongTheCandidates) {
  const RunConfig config = SmallRun(LossConfig::BATCH);
  const Dataset train = RandomImages(64);
  std::unique_ptr<Negatives> negatives = MakeNegatives(config, train.size(), torch::kCPU);
  Learner learner = MakeLearner(config, train, *negatives, torch::kCPU);
  SimilaritySample sample;
  Step(learner, *negatives, InputOf(config, 2, 0), 0.1, &sample);
  // Each anchor is the candidate it must not be compared with (itself), and is a unit vector.
  EXPECT_TRUE(torch::allclose(sample.candidates.index_select(0, sample.exclude), sample.anchors));
  EXPECT_TRUE(torch::allclose(sample.anchors.norm(2, 1), torch::ones({sample.anchors.size(0)}), 1e-5, 1e-5));
}

TEST(StepTest, MemoryBankSampleIsTheBank) {
  const RunConfig config = SmallRun(LossConfig::MEMORY_BANK);
  const Dataset train = RandomImages(64);
  std::unique_ptr<Negatives> negatives = MakeNegatives(config, train.size(), torch::kCPU);
  EXPECT_EQ(negatives->views(), 1);
  EXPECT_EQ(negatives->negatives(), 63);
  Learner learner = MakeLearner(config, train, *negatives, torch::kCPU);
  SimilaritySample sample;
  Step(learner, *negatives, InputOf(config, 1, 0), 0.1, &sample);
  EXPECT_TRUE(sample.candidates.is_same(negatives->State()));
  EXPECT_EQ(sample.candidates.size(0), 64);
}

}  // namespace
}  // namespace tempered
