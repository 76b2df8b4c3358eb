#include "trainer/data/prefetch.h"

#include "trainer/data/batched_augment.h"

#include <glog/logging.h>

#include <algorithm>
#include <memory>

namespace tempered {

StepInput MakeStepInput(const Dataset& data, const InputOptions& options, const std::vector<int64_t>& permutation,
                        int64_t step) {
  CHECK_GT(options.steps_per_epoch, 0);
  StepInput input;
  input.step = step;
  input.epoch = step / options.steps_per_epoch;
  const Shard shard = ShardOf(options.global_batch, options.rank, options.world);
  const int64_t batch_first = (step % options.steps_per_epoch) * options.global_batch;
  const int64_t first = batch_first + shard.offset;
  CHECK_LE(batch_first + options.global_batch, static_cast<int64_t>(permutation.size()));
  input.indices.assign(permutation.begin() + first, permutation.begin() + first + shard.count);
  input.global_index =
      torch::empty({options.global_batch}, torch::TensorOptions(torch::kLong).pinned_memory(options.pin));
  std::copy(permutation.begin() + batch_first, permutation.begin() + batch_first + options.global_batch,
            input.global_index.data_ptr<int64_t>());
  input.index = input.global_index.narrow(0, shard.offset, shard.count);  // this rank's block of it
  if (options.batched) {
    CHECK(!data.streamed()) << "views of a streamed folder are made per image";
    input.rows = torch::empty({shard.count, data.images.size(1), data.images.size(2), data.images.size(3)},
                              torch::TensorOptions(torch::kUInt8).pinned_memory(options.pin));
    torch::index_select_out(input.rows, data.images, 0, input.index);
    input.augment = options.augment;
    if (input.augment.out_size <= 0) input.augment.out_size = data.images.size(2);
    for (int view = 0; view < options.views; ++view) {
      for (int64_t i : input.indices) {
        input.params.push_back(DrawViewParams(options.seed, input.epoch, i, view, data.images.size(1),
                                              data.images.size(2), data.images.size(3), options.augment));
      }
    }
    return input;
  }
  std::vector<torch::Tensor> views;
  for (int view = 0; view < options.views; ++view) {
    views.push_back(AugmentBatch(data, input.indices, options.seed, input.epoch, view, options.augment));
  }
  input.views = options.views == 1 ? views[0] : torch::cat(views);
  if (options.pin) input.views = input.views.pin_memory();
  return input;
}

torch::Tensor ViewsOn(const StepInput& input, torch::Device device) {
  if (input.views.defined()) return input.views.to(device, /*non_blocking=*/true);
  const int64_t views = static_cast<int64_t>(input.params.size()) / std::max<int64_t>(1, input.rows.size(0));
  const torch::Tensor rows = input.rows.to(device, /*non_blocking=*/true);
  return AugmentTensors(views == 1 ? rows : rows.repeat({views, 1, 1, 1}), input.params, input.augment.out_size,
                        input.augment);
}

StepInputMaker MakeStepInputs(const Dataset& data, const InputOptions& options) {
  struct Permutation {
    int64_t epoch = -1;
    std::vector<int64_t> order;
  };
  auto permutation = std::make_shared<Permutation>();
  return [&data, options, permutation](int64_t step) {
    const int64_t epoch = step / options.steps_per_epoch;
    if (permutation->epoch != epoch) {
      permutation->order = EpochPermutation(data.size(), options.seed, epoch);
      permutation->epoch = epoch;
    }
    return MakeStepInput(data, options, permutation->order, step);
  };
}

Prefetcher::Prefetcher(StepInputMaker make, int64_t first_step, int64_t end_step, int depth)
    : make_(std::move(make)), end_step_(end_step), depth_(depth), next_delivered_(first_step), next_made_(first_step) {
  CHECK(depth >= 0 && depth <= 2) << "prefetch depth " << depth << ", expected 0, 1 or 2";
  if (depth > 0) worker_ = std::thread(&Prefetcher::Work, this);
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
}

StepInput Prefetcher::Next() {
  CHECK_LT(next_delivered_, end_step_) << "Next() after the last step";
  if (depth_ == 0) return make_(next_delivered_++);
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return !ready_.empty() || error_; });
  if (ready_.empty()) std::rethrow_exception(error_);  // making this step failed
  StepInput input = std::move(ready_.front());
  ready_.pop_front();
  ++next_delivered_;
  lock.unlock();
  changed_.notify_all();
  return input;
}

void Prefetcher::Work() {
  while (next_made_ < end_step_) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return stop_ || static_cast<int>(ready_.size()) < depth_; });
      if (stop_) return;
    }
    // Outside the lock: Next() can take the steps made before this one meanwhile.
    std::exception_ptr error;
    StepInput input;
    try {
      input = make_(next_made_++);
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (error) {
        error_ = error;
      } else {
        ready_.push_back(std::move(input));
      }
    }
    changed_.notify_all();
    if (error) return;
  }
}

}  // namespace tempered
