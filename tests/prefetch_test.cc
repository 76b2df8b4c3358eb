// The input pipeline: the prefetcher yields the same steps as making them in place, at every depth and across
// epochs; its queue is bounded; exceptions reach the caller at the failing step; destruction never hangs. Also the
// time it saves when a step's compute overlaps the next step's augmentation (printed, not checked).
#include <gtest/gtest.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <iostream>
#include <map>
#include <stdexcept>
#include <thread>

#include "tests/data_test_util.h"
#include "trainer/data/prefetch.h"
#include "trainer/loss/loss.h"
#include "trainer/model/model.h"

namespace tempered {
namespace {

using namespace std::chrono_literals;

Dataset RandomImages(int64_t count, int64_t channels, int64_t size) {
  return RandomImageSet(count, channels, size, size, /*seed=*/3);
}

InputOptions Options(int64_t n, int64_t global_batch, int rank, int world, int views) {
  InputOptions options;
  options.global_batch = global_batch;
  options.steps_per_epoch = StepsPerEpoch(n, global_batch);
  options.rank = rank;
  options.world = world;
  options.seed = 5;
  options.views = views;
  return options;
}

TEST(MakeStepInputTest, TakesTheRanksShardAndBothViews) {
  const Dataset data = RandomImages(50, 3, 16);
  const InputOptions options = Options(50, 12, 1, 3, 2);  // 4 steps per epoch; rank 1 of 3 takes rows 4..7
  const std::vector<int64_t> permutation = EpochPermutation(50, 5, 2);
  const StepInput input = MakeStepInput(data, options, permutation, 2 * 4 + 3);  // epoch 2, step 3 in it
  EXPECT_EQ(input.step, 11);
  EXPECT_EQ(input.epoch, 2);
  EXPECT_EQ(input.indices, std::vector<int64_t>(permutation.begin() + 36 + 4, permutation.begin() + 36 + 8));
  ASSERT_EQ(input.views.sizes(), (std::vector<int64_t>{8, 3, 16, 16}));
  EXPECT_TRUE(torch::equal(input.views.narrow(0, 0, 4), AugmentBatch(data, input.indices, 5, 2, 0, options.augment)));
  EXPECT_TRUE(torch::equal(input.views.narrow(0, 4, 4), AugmentBatch(data, input.indices, 5, 2, 1, options.augment)));
  // One view (memory bank).
  EXPECT_EQ(MakeStepInput(data, Options(50, 12, 1, 3, 1), permutation, 11).views.size(0), 4);
}

// data.augmentation BATCHED: the rows and each view's parameters travel instead of the views, and ViewsOn makes the
// per-image views from them (to batched_augment_test's tolerance), for two views and for one.
TEST(MakeStepInputTest, BatchedInputsGiveThePerImageViews) {
  const Dataset data = RandomImages(50, 3, 16);
  for (int views : {2, 1}) {
    const InputOptions per_image = Options(50, 12, 1, 3, views);
    InputOptions batched = per_image;
    batched.batched = true;
    const std::vector<int64_t> permutation = EpochPermutation(50, 5, 2);
    const StepInput expected = MakeStepInput(data, per_image, permutation, 11);
    const StepInput input = MakeStepInput(data, batched, permutation, 11);
    EXPECT_FALSE(input.views.defined());
    EXPECT_EQ(input.indices, expected.indices);
    ASSERT_EQ(input.rows.sizes(), (std::vector<int64_t>{4, 3, 16, 16}));
    const torch::Tensor made = ViewsOn(input, torch::kCPU);
    ASSERT_EQ(made.sizes(), expected.views.sizes());
    EXPECT_LT((made - expected.views).abs().max().item<double>(), 2e-5) << views << " views";
  }
}

// Depths 0, 1 and 2, started at step 0 or in the middle of an epoch, over three epochs: identical inputs.
TEST(PrefetcherTest, SameInputsAtEveryDepthAcrossEpochs) {
  const Dataset data = RandomImages(40, 1, 12);
  const InputOptions options = Options(40, 16, 0, 2, 2);  // 2 steps per epoch
  for (int64_t first : {0, 1, 3}) {
    std::vector<StepInput> reference;
    for (int64_t step = first; step < 6; ++step) {
      reference.push_back(MakeStepInput(data, options, EpochPermutation(40, 5, step / 2), step));
    }
    for (int depth : {0, 1, 2}) {
      Prefetcher input(MakeStepInputs(data, options), first, 6, depth);
      for (const StepInput& expected : reference) {
        const StepInput got = input.Next();
        EXPECT_EQ(got.step, expected.step) << "depth " << depth;
        EXPECT_EQ(got.epoch, expected.epoch);
        EXPECT_EQ(got.indices, expected.indices);
        EXPECT_TRUE(torch::equal(got.views, expected.views)) << "depth " << depth << " step " << expected.step;
      }
    }
  }
}

// A maker that counts its calls and can be slowed down or made to fail at one step.
struct FakeMaker {
  std::atomic<int> calls{0};
  int64_t fail_at = -1;
  std::chrono::milliseconds delay{0};
  StepInputMaker Maker() {
    return [this](int64_t step) {
      ++calls;
      std::this_thread::sleep_for(delay);
      if (step == fail_at) throw std::runtime_error("cannot make step " + std::to_string(step));
      StepInput input;
      input.step = step;
      return input;
    };
  }
};

TEST(PrefetcherTest, QueueIsBoundedByTheDepth) {
  for (int depth : {1, 2}) {
    FakeMaker maker;
    Prefetcher input(maker.Maker(), 0, 100, depth);
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(maker.calls, depth);  // nothing taken yet: only `depth` steps made
    EXPECT_EQ(input.Next().step, 0);
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(maker.calls, depth + 1);
  }
}

TEST(PrefetcherTest, StopsAtTheEndStep) {
  FakeMaker maker;
  {
    Prefetcher input(maker.Maker(), 7, 10, 2);
    for (int64_t step = 7; step < 10; ++step) EXPECT_EQ(input.Next().step, step);
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(maker.calls, 3);
}

// Steps before the failing one arrive; the failing one rethrows the maker's exception, at every depth.
TEST(PrefetcherTest, ExceptionsReachTheCallerAtTheFailingStep) {
  for (int depth : {0, 1, 2}) {
    FakeMaker maker;
    maker.fail_at = 3;
    Prefetcher input(maker.Maker(), 0, 10, depth);
    for (int64_t step = 0; step < 3; ++step) EXPECT_EQ(input.Next().step, step) << "depth " << depth;
    try {
      input.Next();
      ADD_FAILURE() << "no exception at depth " << depth;
    } catch (const std::runtime_error& error) {
      EXPECT_EQ(std::string(error.what()), "cannot make step 3");
    }
  }
}

// Destroyed while the worker waits on a full queue, while it is making a step, and before anything was taken.
TEST(PrefetcherTest, DestructionNeverHangs) {
  const auto start = std::chrono::steady_clock::now();
  {
    FakeMaker maker;
    Prefetcher input(maker.Maker(), 0, 100, 2);
    input.Next();
    std::this_thread::sleep_for(20ms);
  }
  {
    FakeMaker maker;
    maker.delay = 100ms;
    Prefetcher input(maker.Maker(), 0, 100, 1);
    std::this_thread::sleep_for(20ms);  // inside the first make
  }
  { Prefetcher input(FakeMaker().Maker(), 0, 100, 1); }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

// Not a check (run with --gtest_also_run_disabled_tests): a SimCLR step (SMALL_CNN forward, InfoNCE, backward,
// SGD) with its views made in place (depth 0) and one step ahead (depth 1), split into the time the step waits in
// Next() for its input and the time it computes; interleaved and repeated because the machine is shared. Also the
// CPU time of making one step's two views on one thread: the most that prefetching can take off a step.
double Milliseconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

void TimeSteps(const std::string& name, const Dataset& data, int64_t batch, int width, float blur_prob) {
  InputOptions options = Options(data.size(), batch, 0, 1, 2);
  options.augment.blur_prob = blur_prob;
  options.augment.threads = 1;
  const int64_t steps = 5;
  {
    const StepInputMaker make = MakeStepInputs(data, options);
    make(0);
    timespec start, end;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    for (int64_t s = 1; s <= steps; ++s) make(s);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &end);
    const double ms = (end.tv_sec - start.tv_sec) * 1e3 + (end.tv_nsec - start.tv_nsec) * 1e-6;
    std::cout << "[ timing   ] " << name << ": one step's 2 views cost " << ms / steps << " ms of thread CPU time\n";
  }
  options.augment.threads = 0;  // as in training: the intra-op threads
  ModelConfig config;
  config.set_arch(ModelConfig::SMALL_CNN);
  config.set_norm(ModelConfig::BATCH);
  config.set_head(ModelConfig::LINEAR);
  config.set_embed_dim(128);
  config.set_width(width);
  torch::manual_seed(0);
  Encoder encoder(config, data.images.size(1), data.images.size(2));
  torch::optim::SGD optimizer(encoder->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  LossOptions loss;
  loss.tau = 0.2;
  const torch::Tensor index = torch::arange(2 * batch);
  std::map<int, std::vector<std::pair<double, double>>> times;  // depth -> (step ms, wait ms) per repeat
  for (int repeat = 0; repeat < 3; ++repeat) {
    for (int depth : {0, 1}) {
      Prefetcher input(MakeStepInputs(data, options), 0, steps + 1, depth);
      input.Next();  // warm-up, and the first prefetch
      double wait = 0;
      const auto start = std::chrono::steady_clock::now();
      for (int64_t s = 0; s < steps; ++s) {
        const auto asked = std::chrono::steady_clock::now();
        const StepInput in = input.Next();
        wait += Milliseconds(std::chrono::steady_clock::now() - asked);
        const torch::Tensor z = encoder->forward(in.views).embedding;
        optimizer.zero_grad();
        ContrastiveLoss(z, z, (index + batch).remainder(2 * batch), index, loss).mean().backward();
        optimizer.step();
      }
      times[depth].push_back({Milliseconds(std::chrono::steady_clock::now() - start) / steps, wait / steps});
    }
  }
  for (auto& [depth, runs] : times) {
    std::sort(runs.begin(), runs.end());
    std::cout << "[ timing   ] " << name << ", " << at::get_num_threads() << " thread(s), prefetch depth " << depth
              << ": step " << runs[1].first << " ms (waiting for input " << runs[1].second
              << " ms; median of 3, min " << runs[0].first << ")\n";
  }
}

TEST(PrefetchTimingTest, DISABLED_StepTimeWithAndWithoutPrefetch) {
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    TimeSteps("Fashion-MNIST 1x28x28, SMALL_CNN width 32, batch 256", RandomImages(2048, 1, 28), 256, 32, 0);
    TimeSteps("ImageNet-64 3x64x64 with blur, SMALL_CNN width 16, batch 128", RandomImages(1024, 3, 64), 128, 16,
              0.5f);
  }
}

}  // namespace
}  // namespace tempered
