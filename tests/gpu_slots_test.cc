// Unit tests of the local backend's GPU slots (launch/sweep/gpu_slots.h): parsing a GPU list and nvidia-smi -L, reserving
// and releasing shares, holding those of runs an earlier coordinator started; and how GPUs limit a sweep's slots,
// reject a spec before it runs, and reach mpirun.
#include <gtest/gtest.h>

#include <google/protobuf/text_format.h>

#include <climits>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "common/errors.h"
#include "launch/sweep/gpu_slots.h"
#include "launch/sweep/scheduler.h"
#include "launch/sweep/sweep.h"
#include "launch/sweep/sweep_spec.h"

namespace tempered {
namespace {

using Gpus = std::vector<std::string>;

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(GpuList, ParsesCommaListsWithSpacesAndUuids) {
  EXPECT_EQ(ParseGpuList("0,1,2,3", "--gpus"), (Gpus{"0", "1", "2", "3"}));
  EXPECT_EQ(ParseGpuList(" 2 , 3", "--gpus"), (Gpus{"2", "3"}));
  EXPECT_EQ(ParseGpuList("GPU-8f2a,MIG-1c", "CUDA_VISIBLE_DEVICES"), (Gpus{"GPU-8f2a", "MIG-1c"}));
  EXPECT_EQ(ParseGpuList("", "--gpus"), Gpus{});
  EXPECT_EQ(JoinGpuList({"0", "1"}), "0,1");
  EXPECT_EQ(JoinGpuList({}), "");
}

TEST(GpuList, RejectsEmptyEntriesAndDuplicatesInOneSentence) {
  for (const char* bad : {"0,,1", "0,1,", ",0"}) {
    const std::string error = ErrorOf([&] { ParseGpuList(bad, "--gpus"); });
    EXPECT_NE(error.find("--gpus must be a comma-separated list of GPUs"), std::string::npos) << bad << ": " << error;
  }
  EXPECT_EQ(ErrorOf([] { ParseGpuList("0,1,0", "CUDA_VISIBLE_DEVICES"); }),
            "CUDA_VISIBLE_DEVICES names GPU 0 twice in '0,1,0'");
}

TEST(GpuList, NvidiaSmiListGivesTheIndicesOfWholeGpus) {
  const std::string output =
      "GPU 0: NVIDIA H200 (UUID: GPU-11111111-2222-3333-4444-555555555555)\n"
      "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)\n"
      "  MIG 1g.5gb      Device  0: (UUID: MIG-bbbb)\n"
      "GPU 12: NVIDIA H100 (UUID: GPU-cccc)\n";
  EXPECT_EQ(ParseNvidiaSmiList(output), (Gpus{"0", "1", "12"}));
  EXPECT_EQ(ParseNvidiaSmiList("No devices were found\n"), Gpus{});
}

TEST(GpuList, FlagBeforeCudaVisibleDevices) {
  ::setenv("CUDA_VISIBLE_DEVICES", "5,6", 1);
  const NodeGpus from_flag = DetectNodeGpus("0,1");
  const NodeGpus from_env = DetectNodeGpus("");
  ::setenv("CUDA_VISIBLE_DEVICES", "", 1);  // set but empty: this process may use no GPU, so its runs neither
  const NodeGpus empty_env = DetectNodeGpus("");
  ::unsetenv("CUDA_VISIBLE_DEVICES");
  EXPECT_EQ(from_flag.gpus, (Gpus{"0", "1"}));
  EXPECT_EQ(from_flag.source, "--gpus");
  EXPECT_EQ(from_env.gpus, (Gpus{"5", "6"}));
  EXPECT_EQ(from_env.source, "CUDA_VISIBLE_DEVICES");
  EXPECT_EQ(empty_env.size(), 0);
  EXPECT_EQ(empty_env.source, "CUDA_VISIBLE_DEVICES");
}

TEST(GpuSlots, ReservesDisjointSharesInNodeOrderUntilTooFewAreFree) {
  GpuSlots slots({"0", "1", "2", "3", "4"});
  EXPECT_EQ(slots.Reserve(2), "0,1");
  EXPECT_EQ(slots.Reserve(2), "2,3");
  EXPECT_EQ(slots.free_count(), 1);
  EXPECT_EQ(slots.Reserve(2), "");  // one left: no run starts without all of its GPUs
  EXPECT_EQ(slots.free_count(), 1);  // and a refused reservation holds nothing
  EXPECT_EQ(slots.Reserve(1), "4");
  EXPECT_EQ(slots.free_count(), 0);
}

TEST(GpuSlots, HoldsTheSharesOfRunningRunsAndIgnoresForeignNames) {
  GpuSlots slots({"0", "1", "2", "3"});
  slots.Hold("1,2");     // a run started by an earlier coordinator
  slots.Hold("7");       // not this node's (the list changed since): nothing to hold
  slots.Hold("");        // a CPU run
  EXPECT_EQ(slots.free_count(), 2);
  EXPECT_EQ(slots.Reserve(2), "0,3");
  EXPECT_EQ(slots.Reserve(1), "");
  EXPECT_EQ(slots.size(), 4);
}

SweepSpec Spec(const std::string& text) {
  SweepSpec s;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &s)) << text;
  return ResolveSweepSpec(s);
}

TEST(GpuSweep, SlotsAreTheFewerOfCoreAndGpuSlots) {
  // 4 GPUs, 2 per run: 2 slots although the core budget allows 4.
  EXPECT_EQ(SweepSlots(Spec("ranks_per_run: 2 gpus_per_rank: 1 core_budget: 8"), 2, 4), 2);
  // 8 GPUs, 2 per run, but only 2 cores per run on 4 cores: the core budget still holds.
  EXPECT_EQ(SweepSlots(Spec("ranks_per_run: 2 gpus_per_rank: 1 core_budget: 4"), 2, 8), 2);
  EXPECT_EQ(SweepSlots(Spec("ranks_per_run: 1 gpus_per_rank: 2 core_budget: 16"), 2, 7), 3);
  EXPECT_EQ(SweepSlots(Spec("ranks_per_run: 2 gpus_per_rank: 1 core_budget: 8 max_parallel_runs: 1"), 2, 4), 1);
  // CPU runs ignore the node's GPUs.
  EXPECT_EQ(SweepSlots(Spec("ranks_per_run: 2 core_budget: 8"), 2, 0), 4);
}

TEST(GpuSweep, TooFewGpusForOneRunIsRejectedInOneSentence) {
  const SweepSpec spec = Spec("ranks_per_run: 2 gpus_per_rank: 2");
  EXPECT_EQ(ErrorOf([&] { ValidateNodeGpus(spec, 3, "--gpus"); }),
            "one run needs ranks_per_run x gpus_per_rank = 2 x 2 = 4 GPUs, but this node has 3 (--gpus)");
  EXPECT_EQ(ErrorOf([&] { ValidateNodeGpus(spec, 0, "none"); }),
            "one run needs ranks_per_run x gpus_per_rank = 2 x 2 = 4 GPUs, but this node has none (no --gpus, "
            "CUDA_VISIBLE_DEVICES or nvidia-smi -L)");
  EXPECT_EQ(ErrorOf([&] { ValidateNodeGpus(spec, 4, "--gpus"); }), "");
  EXPECT_EQ(ErrorOf([] { ValidateNodeGpus(Spec("ranks_per_run: 4"), 0, "none"); }), "");  // CPU runs
}

TEST(GpuSweep, SpecValidationRefusesNegativeAndDisagreeingGpus) {
  EXPECT_EQ(ErrorOf([] { ValidateSweepSpec(Spec("gpus_per_rank: -1"), 2); }),
            "gpus_per_rank must be >= 0 (0 = CPU runs), got -1");
  EXPECT_EQ(ErrorOf([] { ValidateSweepSpec(Spec("backend: SLURM gpus_per_rank: 1 slurm { gpus_per_task: 2 }"), 2); }),
            "gpus_per_rank (1) and slurm.gpus_per_task (2) disagree: both are the GPUs of one rank, set one");
}

TEST(GpuSweep, OnSlurmGpusPerRankIsTheJobsRequestAndTheCoordinatorHoldsNone) {
  const SweepSpec slurm = ResolveSweepSpec(Spec("backend: SLURM ranks_per_run: 2 gpus_per_rank: 1"));
  EXPECT_EQ(slurm.slurm().gpus_per_task(), 1);
  EXPECT_EQ(LocalGpusPerRank(slurm), 0);
  EXPECT_EQ(ErrorOf([&] { ValidateNodeGpus(slurm, 0, "none"); }), "");  // the coordinator's node may have none
  EXPECT_EQ(SweepSlots(slurm, 2, 0), INT_MAX);                         // Slurm queues; no core budget given
  EXPECT_EQ(ResolveSweepSpec(Spec("gpus_per_rank: 1")).slurm().gpus_per_task(), 0);  // local: no Slurm request
}

TEST(GpuSweep, MpirunExportsTheRunsGpusOnlyWhenItHasSome) {
  BackendOptions o;
  o.train_binary = "/bin/tempered-train";
  o.ranks_per_run = 2;
  LaunchRequest r;
  r.run_dir = "/s/runs/a";
  r.config_path = "/s/runs/a/run.pbtxt";
  const auto joined = [&] {
    std::string text;
    for (const auto& a : TrainCommand(o, r)) text += a + " ";
    return text;
  };
  EXPECT_EQ(joined().find("CUDA_VISIBLE_DEVICES"), std::string::npos) << joined();
  r.gpus = "2,3";
  EXPECT_NE(joined().find("-x OPENBLAS_NUM_THREADS -x CUDA_VISIBLE_DEVICES -np 2 "), std::string::npos) << joined();
}

}  // namespace
}  // namespace tempered
