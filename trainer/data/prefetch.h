// The input pipeline of the training loop: each step's augmented views for this rank, optionally prepared a step or
// two ahead on a background thread while the current step computes.
#pragma once

#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "trainer/data/augment.h"
#include "trainer/data/data.h"

namespace tempered {

// The input of one global step on this rank.
struct StepInput {
  int64_t step = 0;              // global step, 0-based
  int64_t epoch = 0;
  std::vector<int64_t> indices;  // this rank's images: its block (ShardOf) of the step's global batch
  // int64 tensors (pinned for a GPU) of the whole global batch's images (every rank's blocks in rank order) and of
  // `indices` (a view of this rank's block), so that the step copies them to the device without blocking and the
  // memory bank's update needs no gather of indices.
  torch::Tensor global_index, index;
  // Float (views x indices.size(), C, S, S) = [view 0; view 1; ...], made on the CPU (pinned for a GPU); undefined
  // when the views are made on the device (InputOptions.batched), from:
  torch::Tensor views;
  torch::Tensor rows;                 // uint8 (indices.size(), C, H, W), this rank's images (pinned for a GPU)
  std::vector<ViewParams> params;     // views x indices.size(), in the views' order
  AugmentOptions augment;             // with out_size set
};

// The step's views on `device`: `views` copied there without blocking the host, or made there from `rows` and
// `params` by AugmentTensors.
torch::Tensor ViewsOn(const StepInput& input, torch::Device device);

struct InputOptions {
  int64_t global_batch = 0;
  int64_t steps_per_epoch = 0;
  int rank = 0;
  int world = 1;
  uint64_t seed = 0;
  int views = 2;  // 2 for batch negatives, 1 for the memory bank
  AugmentOptions augment;
  bool batched = false;  // the views made on the step's device (data.augmentation BATCHED; in-memory data only)
  bool pin = false;      // host tensors in pinned memory: the step's device is a GPU
};

// The input of global step `step`, given its epoch's permutation. A function of (data, options, step) only: the
// images come from the permutation of (seed, epoch) and their views from (seed, epoch, image, view).
StepInput MakeStepInput(const Dataset& data, const InputOptions& options, const std::vector<int64_t>& permutation,
                        int64_t step);

using StepInputMaker = std::function<StepInput(int64_t step)>;
// MakeStepInput with each epoch's permutation computed once: the function keeps the current one, so call it from
// one thread at a time. `data` must outlive it.
StepInputMaker MakeStepInputs(const Dataset& data, const InputOptions& options);

// Yields make(first_step), make(first_step + 1), ..., make(end_step - 1) in order. With depth > 0 a background
// thread keeps up to `depth` steps ready (a bounded queue), so a step's views are made while the step before it
// computes; depth 0 makes each step inside Next(), on the caller's thread. The results do not depend on the depth.
// An exception thrown by make(s) is rethrown by the Next() that asks for step s. Destruction stops the worker: it
// finishes the step it is making, if any, and exits.
//
// When it pays: making a step's two views costs ~2 ms of CPU for 256 Fashion-MNIST images and ~50 ms for 128 64x64
// RGB images with blur (prefetch_test's disabled timing test), against a step of 0.6-3 s on 2 CPU cores. With the
// compute on the CPU the worker competes for the cores the step already uses: tempered-train on 2 cores (1 rank,
// 2 threads, OMP_WAIT_POLICY=passive, shared machine) ran at 240/236 vs 232/237 img/s (Fashion-MNIST, depth 0 vs 1)
// and 46/48 vs 46/47 img/s (64x64 image folder). So depth 1 is for GPU runs, where the CPU idles during the step:
// the trainer's data.prefetch_steps defaults to 1 with device cuda and 0 on the CPU.
class Prefetcher {
 public:
  Prefetcher(StepInputMaker make, int64_t first_step, int64_t end_step, int depth);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  StepInput Next();

 private:
  void Work();  // the background thread

  const StepInputMaker make_;
  const int64_t end_step_;
  const int depth_;
  int64_t next_delivered_;  // the step the next Next() returns (the caller's thread only)
  int64_t next_made_;       // the next step to make (the worker's only)

  std::mutex mutex_;
  std::condition_variable changed_;  // ready_, error_ or stop_ changed
  std::deque<StepInput> ready_;      // at most depth_ steps, in order
  std::exception_ptr error_;         // of the step after the last one in ready_; the worker has stopped
  bool stop_ = false;
  std::thread worker_;  // last: started once everything above is initialised
};

}  // namespace tempered
