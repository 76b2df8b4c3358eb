// GradientReducer: the mean over ranks of every parameter's gradient, one all-reduce per bucket.
//
// Buckets are built once, from the parameters' order, so every rank packs and reduces the same buckets in the
// same order (the collective contract). One all-reduce of a few MiB costs little more than one of a few KiB, so
// packing many small gradients into one buffer saves most of the per-call latency.
//
// kDuringBackward (as PyTorch DDP): a post-hook on each parameter's AccumulateGrad node runs right after backward
// has accumulated that parameter's gradient into .grad, so the bucket packs exactly what Finalize would have read
// (also when .grad held something before backward). Buckets run in reverse parameter order and start strictly in
// bucket order. Thread level: comm is MPI_THREAD_FUNNELED; autograd runs the backward of CPU tensors on the thread
// that called backward(), so the hooks (and their MPI calls) run on the main thread. Each hook checks it.
//
// CUDA parameters (one device): the same hooks, on autograd's device thread, start each bucket's NCCL all-reduce on
// the communication stream behind the backward's work so far (nccl_backend.cc: an event, no host wait), and
// Finalize makes the compute stream wait for them (events again). The host never reads which ranks had a gradient
// (that would wait for the device): every parameter that can receive one gets the mean, zeros where no rank had
// one. Tempered's encoders give every parameter a gradient every step; RunReducerAsOnDeviceForTesting runs this
// logic on the CPU, so that the tests cover it.
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <atomic>
#include <numeric>
#include <thread>

#include "comm/backend.h"
#include "comm/comm.h"

namespace tempered::comm {
namespace {

std::atomic<bool> reducer_as_on_device{false};  // RunReducerAsOnDeviceForTesting

// Splits the parameters, taken in `order`, into runs of about bucket_bytes of one dtype on one device (a bucket is
// one flat buffer).
std::vector<std::vector<size_t>> MakeBuckets(const std::vector<torch::Tensor>& parameters,
                                             const std::vector<size_t>& order, int64_t bucket_bytes) {
  COMM_REQUIRE(bucket_bytes > 0, "GradientReducer: bucket_bytes must be positive, got ", bucket_bytes);
  std::vector<std::vector<size_t>> buckets;
  int64_t bytes = 0;
  for (size_t i : order) {
    const torch::Tensor& p = parameters[i];
    const bool fits = !buckets.empty() && bytes < bucket_bytes &&
                      parameters[buckets.back().front()].dtype() == p.dtype() &&
                      parameters[buckets.back().front()].device() == p.device();
    if (!fits) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(i);
    bytes += p.numel() * static_cast<int64_t>(p.element_size());
  }
  return buckets;
}

std::vector<size_t> Order(size_t n, ReduceTiming timing) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Backward produces the last layers' gradients first.
  if (timing == ReduceTiming::kDuringBackward) std::reverse(order.begin(), order.end());
  return order;
}

}  // namespace

struct GradientReducer::Overlap {
  // buffer = [the bucket's gradients, flattened in bucket order | one flag per parameter: 1 if this rank had a
  // gradient]. One all-reduce sums both; a summed flag of 0 means no rank had a gradient.
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;  // of each parameter's gradient in buffer
    int64_t elements = 0;          // gradient elements; the flags follow
    torch::Tensor buffer;
    size_t missing = 0;  // parameters whose gradient backward has not accumulated yet this step
  };

  std::vector<torch::Tensor> parameters;
  const bool device_mode;         // CUDA parameters (or the CPU test of their logic): see the top of this file
  std::vector<char> accumulates;  // parameter -> it can receive a gradient (has an AccumulateGrad node)
  std::vector<Bucket> buckets;
  std::vector<size_t> bucket_of;  // parameter -> bucket
  std::vector<char> ready;        // parameter -> gradient accumulated this step
  size_t started = 0;             // buckets [0, started) are being summed
  detail::AsyncSums sums;
  std::thread::id thread = std::this_thread::get_id();
  // The AccumulateGrad nodes, held so that the hooks outlive each step's graph (a parameter's node is otherwise
  // rebuilt by the next forward, without them), and the keys that remove the hooks.
  std::vector<std::pair<std::shared_ptr<torch::autograd::Node>, uintptr_t>> hooks;

  Overlap(std::vector<torch::Tensor> params, int64_t bucket_bytes, bool on_device);
  ~Overlap();
  void OnGradient(size_t i);
  void Start(Bucket& bucket);
  void StartSum(torch::Tensor& buffer);
  void WaitForSums();
  void Finish();
  void SetMean(const Bucket& bucket, int64_t k);  // parameter k of the bucket's grad = its summed slot (divided)
  void Reset();
};

GradientReducer::Overlap::Overlap(std::vector<torch::Tensor> params, int64_t bucket_bytes, bool on_device)
    : parameters(std::move(params)), device_mode(on_device), accumulates(parameters.size(), 0),
      bucket_of(parameters.size()), ready(parameters.size(), 0) {
  for (std::vector<size_t>& indices :
       MakeBuckets(parameters, Order(parameters.size(), ReduceTiming::kDuringBackward), bucket_bytes)) {
    Bucket b;
    for (size_t i : indices) {
      b.offsets.push_back(b.elements);
      b.elements += parameters[i].numel();
      bucket_of[i] = buckets.size();
    }
    b.buffer = torch::empty({b.elements + static_cast<int64_t>(indices.size())}, parameters[indices[0]].options());
    b.params = std::move(indices);
    buckets.push_back(std::move(b));
  }
  Reset();
  for (size_t i = 0; i < parameters.size(); ++i) {
    // No accumulator: the parameter needs no gradient, never becomes ready, and its bucket starts in Finalize.
    std::shared_ptr<torch::autograd::Node> accumulator = torch::autograd::impl::grad_accumulator(parameters[i]);
    if (!accumulator) continue;
    accumulates[i] = 1;
    const uintptr_t key = accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          OnGradient(i);
          return outputs;
        }));
    hooks.emplace_back(std::move(accumulator), key);
  }
}

GradientReducer::Overlap::~Overlap() {
  for (auto& [accumulator, key] : hooks) accumulator->del_post_hook(key);
  // Destroyed between a hook and Finalize (an exception on its way to taking the job down): the peers may still
  // write into the buffers, so they must never be reused. Waiting instead could hang.
  if (sums.Outstanding()) {
    for (Bucket& b : buckets) new torch::Tensor(b.buffer);  // deliberately leaked
  }
}

void GradientReducer::Overlap::OnGradient(size_t i) {
  const bool on_cuda = parameters[i].is_cuda();  // CUDA backward runs on autograd's device thread; NCCL allows it
  COMM_REQUIRE(on_cuda || std::this_thread::get_id() == thread, "GradientReducer: a gradient hook ran on another "
               "thread than the one that built the reducer, but comm is MPI_THREAD_FUNNELED (CPU backward runs on "
               "the caller)");
  COMM_REQUIRE(!ready[i], "GradientReducer (kDuringBackward): parameter ", i, " received a second gradient "
               "before Finalize; run one backward per Finalize, or use ReduceTiming::kAfterBackward");
  ready[i] = 1;
  --buckets[bucket_of[i]].missing;
  // Strictly in bucket order, so that every rank starts the same sums in the same order.
  while (started < buckets.size() && buckets[started].missing == 0) Start(buckets[started++]);
  if (!device_mode) sums.Progress();  // no progress thread: started sums advance only inside MPI calls
}

void GradientReducer::Overlap::Start(Bucket& bucket) {
  torch::NoGradGuard no_grad;
  std::vector<double> flags;
  for (size_t k = 0; k < bucket.params.size(); ++k) {
    const torch::Tensor& p = parameters[bucket.params[k]];
    torch::Tensor slot = bucket.buffer.narrow(0, bucket.offsets[k], p.numel());
    flags.push_back(p.grad().defined() ? 1 : 0);
    if (p.grad().defined()) {
      slot.copy_(p.grad().reshape({-1}));
    } else {
      slot.zero_();
    }
  }
  // The flags are read on the host in Finish, which the device path does not do (and a copy from the host here
  // would make it wait); its flag slots travel unread.
  if (!device_mode) {
    bucket.buffer.narrow(0, bucket.elements, static_cast<int64_t>(flags.size())).copy_(torch::tensor(flags));
  }
  StartSum(bucket.buffer);
}

void GradientReducer::Overlap::StartSum(torch::Tensor& buffer) {
  if (buffer.is_cuda()) return detail::kNcclBackend.start_sum(buffer);
  if (device_mode) return AllReduceSum(buffer);  // the device path's logic on the CPU: a blocking sum
  sums.Start(buffer);
}

void GradientReducer::Overlap::WaitForSums() {
  if (buckets.front().buffer.is_cuda()) return detail::kNcclBackend.wait_for_started(buckets.front().buffer);
  sums.WaitAll();
}

void GradientReducer::Overlap::Finish() {
  torch::NoGradGuard no_grad;
  // Buckets some of whose gradients never came (a parameter unused this step, or no backward at all).
  while (started < buckets.size()) Start(buckets[started++]);
  WaitForSums();
  for (Bucket& bucket : buckets) {
    const int64_t n = static_cast<int64_t>(bucket.params.size());
    bucket.buffer.narrow(0, 0, bucket.elements).div_(Size());
    if (device_mode) {
      for (int64_t k = 0; k < n; ++k) {
        if (accumulates[bucket.params[k]]) SetMean(bucket, k);
      }
      continue;
    }
    const torch::Tensor anywhere = bucket.buffer.narrow(0, bucket.elements, n).to(torch::kDouble);
    const auto flag = anywhere.accessor<double, 1>();
    for (int64_t k = 0; k < n; ++k) {
      if (flag[k] != 0) SetMean(bucket, k);  // else no rank had a gradient: keep none, as with one rank
    }
  }
  Reset();
}

void GradientReducer::Overlap::SetMean(const Bucket& bucket, int64_t k) {
  torch::Tensor& p = parameters[bucket.params[k]];
  const torch::Tensor mean = bucket.buffer.narrow(0, bucket.offsets[k], p.numel()).view(p.sizes());
  if (p.grad().defined()) {
    p.mutable_grad().copy_(mean);
  } else {
    p.mutable_grad() = mean.clone();
  }
}

void GradientReducer::Overlap::Reset() {
  std::fill(ready.begin(), ready.end(), 0);
  for (Bucket& b : buckets) b.missing = b.params.size();
  started = 0;
}

GradientReducer::GradientReducer(std::vector<torch::Tensor> parameters, int64_t bucket_bytes)
    : GradientReducer(std::move(parameters), ReducerOptions{bucket_bytes, ReduceTiming::kAfterBackward}) {}

GradientReducer::GradientReducer(std::vector<torch::Tensor> parameters, const ReducerOptions& options)
    : parameters_(std::move(parameters)) {
  const auto all_on = [&](const torch::Device& device) {
    return std::all_of(parameters_.begin(), parameters_.end(),
                       [&](const torch::Tensor& p) { return p.device() == device; });
  };
  const bool one_device = !parameters_.empty() && all_on(parameters_.front().device());
  const bool on_cuda = one_device && parameters_.front().is_cuda();
  // One rank needs no hooks (Finalize does nothing).
  if (options.timing == ReduceTiming::kDuringBackward && Size() > 1 && one_device &&
      (on_cuda || parameters_.front().is_cpu())) {
    overlap_ = std::make_unique<Overlap>(parameters_, options.bucket_bytes, on_cuda || reducer_as_on_device);
  } else {
    buckets_ = MakeBuckets(parameters_, Order(parameters_.size(), ReduceTiming::kAfterBackward),
                           options.bucket_bytes);
  }
}

GradientReducer::~GradientReducer() = default;

void RunReducerAsOnDeviceForTesting(bool on) { reducer_as_on_device = on; }

size_t GradientReducer::bucket_count() const { return overlap_ ? overlap_->buckets.size() : buckets_.size(); }

void GradientReducer::Finalize() {
  if (Size() == 1) return;  // the mean over one rank is the gradient itself
  if (overlap_) return overlap_->Finish();
  torch::NoGradGuard no_grad;
  // A parameter may have no gradient on some ranks (unused this step there) and one on others: the missing ones
  // count as zeros and receive the mean. A parameter without a gradient anywhere keeps none, as with one rank, so
  // the optimiser treats it the same at every world size.
  std::vector<int32_t> anywhere(parameters_.size());
  for (size_t i = 0; i < parameters_.size(); ++i) anywhere[i] = parameters_[i].grad().defined() ? 1 : 0;
  torch::Tensor flags = torch::from_blob(anywhere.data(), {static_cast<int64_t>(anywhere.size())}, torch::kInt32);
  AllReduceMax(flags);  // in place, into `anywhere`

  for (const std::vector<size_t>& bucket : buckets_) {
    std::vector<torch::Tensor> pieces;
    for (size_t i : bucket) {
      if (!anywhere[i]) continue;
      const torch::Tensor& g = parameters_[i].grad();
      pieces.push_back(g.defined() ? g.reshape({-1}) : torch::zeros({parameters_[i].numel()}, parameters_[i].options()));
    }
    if (pieces.empty()) continue;  // the same on every rank: `anywhere` is global
    torch::Tensor flat = torch::cat(pieces);
    AllReduceSum(flat);
    flat.div_(Size());
    int64_t offset = 0;
    for (size_t i : bucket) {
      if (!anywhere[i]) continue;
      torch::Tensor& p = parameters_[i];
      torch::Tensor mean = flat.narrow(0, offset, p.numel()).view(p.sizes());
      offset += p.numel();
      if (p.grad().defined()) {
        p.mutable_grad().copy_(mean);
      } else {
        p.mutable_grad() = mean.clone();
      }
    }
  }
}

}  // namespace tempered::comm
