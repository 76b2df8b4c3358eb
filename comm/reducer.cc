// GradientReducer: the mean over ranks of every parameter's gradient, one all-reduce per bucket.
//
// Buckets are built once, from the parameters' order, so every rank packs and reduces the same buckets in the
// same order (the collective contract). One all-reduce of a few MiB costs little more than one of a few KiB, so
// packing many small gradients into one buffer saves most of the per-call latency.
#include "comm/backend.h"
#include "comm/comm.h"

namespace tempered::comm {

GradientReducer::GradientReducer(std::vector<torch::Tensor> parameters, int64_t bucket_bytes)
    : parameters_(std::move(parameters)) {
  COMM_REQUIRE(bucket_bytes > 0, "GradientReducer: bucket_bytes must be positive, got ", bucket_bytes);
  int64_t bytes = 0;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const torch::Tensor& p = parameters_[i];
    // A bucket is one flat buffer: it holds one dtype on one device.
    const bool fits = !buckets_.empty() && bytes < bucket_bytes &&
                      parameters_[buckets_.back().front()].dtype() == p.dtype() &&
                      parameters_[buckets_.back().front()].device() == p.device();
    if (!fits) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().push_back(i);
    bytes += p.numel() * static_cast<int64_t>(p.element_size());
  }
}

void GradientReducer::Finalize() {
  if (Size() == 1) return;  // the mean over one rank is the gradient itself
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
