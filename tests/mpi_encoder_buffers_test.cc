// BroadcastBuffers (trainer/model/model.h), under mpirun with 1-4 ranks: after training steps on each rank's own batches
// the ranks' batch-norm running statistics differ; afterwards every rank holds rank 0's, which rank 0 keeps.
#include <gtest/gtest.h>

#include <vector>

#include "comm/comm.h"
#include "common/config.h"
#include "trainer/model/model.h"

namespace tempered {
namespace {

// The default model (the small CNN with batch norm), narrow.
ModelConfig SmallBatchNormCnn() {
  ModelConfig config = ResolveConfig(RunConfig()).model();
  config.set_width(4);
  config.set_embed_dim(16);
  return config;
}

// Every rank's copy of each buffer, stacked: (W, ...) per buffer.
std::vector<torch::Tensor> GatheredBuffers(Encoder& encoder) {
  std::vector<torch::Tensor> gathered;
  for (const torch::Tensor& b : encoder->buffers()) gathered.push_back(comm::AllGather(b.unsqueeze(0)));
  return gathered;
}

TEST(BroadcastBuffersTest, EveryRankGetsRankZerosRunningStatistics) {
  torch::manual_seed(0);  // the same parameters on every rank
  Encoder encoder(SmallBatchNormCnn(), 1, 28);
  encoder->train();
  torch::manual_seed(100 + comm::Rank());  // each rank's own batches
  for (int step = 0; step < 2; ++step) encoder->forward(torch::rand({8, 1, 28, 28}) * (1 + comm::Rank()));

  std::vector<torch::Tensor> own;
  for (const torch::Tensor& b : encoder->buffers()) own.push_back(b.clone());
  ASSERT_FALSE(own.empty());
  bool any_differs = false;
  for (const torch::Tensor& all : GatheredBuffers(encoder)) {
    for (int64_t r = 1; r < all.size(0); ++r) any_differs |= !torch::equal(all[r], all[0]);
  }
  EXPECT_EQ(any_differs, comm::Size() > 1) << "the ranks' statistics should differ before the broadcast";

  BroadcastBuffers(encoder);
  const std::vector<torch::Tensor> after = GatheredBuffers(encoder);
  for (size_t i = 0; i < after.size(); ++i) {
    for (int64_t r = 0; r < after[i].size(0); ++r) EXPECT_TRUE(torch::equal(after[i][r], after[i][0])) << i;
    if (comm::Rank() == 0) {
      EXPECT_TRUE(torch::equal(after[i][0], own[i])) << "rank 0 changed buffer " << i;
    }
  }
}

}  // namespace
}  // namespace tempered
