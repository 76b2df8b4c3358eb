// Unit tests of the rank -> GPU mapping (trainer/device.h): one GPU per rank on a node, and fewer visible GPUs than
// ranks refused in one sentence instead of two ranks silently sharing a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/errors.h"
#include "trainer/device.h"

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

// Threads per rank from the affinity masks: `mpirun --bind-to core` gives every rank its own core, --bind-to none
// every rank every core, --bind-to socket the ranks of a socket that socket's cores.
TEST(ThreadsForAffinity, RanksSharingAMaskShareItsCores) {
  const std::vector<int> all = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(ThreadsForAffinity(all, {all}), 8);                     // one rank, unbound
  EXPECT_EQ(ThreadsForAffinity(all, {all, all, all, all}), 2);      // four ranks, --bind-to none
  EXPECT_EQ(ThreadsForAffinity({3}, {{0}, {1}, {2}, {3}}), 1);      // --bind-to core
  const std::vector<int> socket0 = {0, 1, 2, 3}, socket1 = {4, 5, 6, 7};
  EXPECT_EQ(ThreadsForAffinity(socket0, {socket0, socket0, socket1, socket1}), 2);  // --bind-to socket
  EXPECT_EQ(ThreadsForAffinity({0}, {{0}, {0}, {0}}), 1);           // oversubscribed: never 0
}

TEST(ThreadsForAffinity, AffinityCpusAreThisProcesssMask) {
  const std::vector<int> cpus = AffinityCpus();
  ASSERT_FALSE(cpus.empty());
  EXPECT_TRUE(std::is_sorted(cpus.begin(), cpus.end()));
  EXPECT_EQ(CpuList({0, 1, 4}), "0,1,4");
}

}  // namespace
}  // namespace tempered
