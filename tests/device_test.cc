// Unit tests of the rank -> GPU mapping (trainer/device.h): one GPU per rank on a node, and fewer visible GPUs than
// ranks refused in one sentence instead of two ranks silently sharing a GPU.
#include <gtest/gtest.h>

#include <string>

#include "trainer/device.h"
#include "trainer/errors.h"

namespace tempered {
namespace {

std::string ErrorOf(int local_rank, int local_ranks, int visible) {
  try {
    GpuForLocalRank(local_rank, local_ranks, visible);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(GpuForLocalRank, EachRankGetsItsOwnGpu) {
  for (int ranks : {1, 2, 4}) {
    for (int visible : {ranks, ranks + 1, 8}) {
      for (int r = 0; r < ranks; ++r) EXPECT_EQ(GpuForLocalRank(r, ranks, visible), r) << r << "/" << ranks;
    }
  }
}

TEST(GpuForLocalRank, FewerGpusThanRanksIsRefused) {
  EXPECT_EQ(ErrorOf(0, 4, 2), "device cuda needs a GPU per rank, but 4 ranks run on this node and 2 GPUs are "
                              "visible: run at most 2 ranks per node, or make more GPUs visible");
  EXPECT_EQ(ErrorOf(1, 2, 1), "device cuda needs a GPU per rank, but 2 ranks run on this node and 1 GPU is "
                              "visible: run at most 1 rank per node, or make more GPUs visible");
  EXPECT_EQ(ErrorOf(0, 1, 0), "device cuda needs a GPU per rank, but 1 rank runs on this node and no GPU is "
                              "visible: make GPUs visible, or use device cpu");
  // Every rank of the node refuses, not only those beyond the GPUs: none starts a run the others cannot join.
  EXPECT_NE(ErrorOf(0, 3, 2), "");
}

TEST(GpuForLocalRank, CpuConfigNeverAsksForAGpu) {
  RunConfig config;
  config.set_device("cpu");
  EXPECT_TRUE(DeviceFor(config).is_cpu());
}

}  // namespace
}  // namespace tempered
