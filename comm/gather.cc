// GatherWithGrad: an all-gather that autograd can differentiate.
//
// Each rank's loss L_r reads every rank's rows, and the quantity trained is the sum of the losses over ranks
// (the gradient reducer then averages the parameter gradients). So the gradient of local row i is the sum over
// ranks of dL_r/dZ[offset + i]: a reduce-scatter (sum) of the incoming gradient with the row counts of the
// forward. A plain all_gather would drop every term but this rank's own (MoCo's "all_gather has no gradient").
//
// The backward is a collective: every rank must backpropagate through the gathered tensor, in the same order.
// For CPU tensors autograd runs it on the calling (main) thread, as MPI_THREAD_FUNNELED requires; CUDA tensors
// go through NCCL, which may be called from autograd's device threads (on the stream autograd selects).
//
// The backward is a plain autograd Node, not a torch::autograd::Function: Function<T> keeps what it saves in a
// string-keyed map of IValues and records metadata of every input and output and takes a lock per backward, none
// of which this one-input, one-output node needs. Per call that is ~0.7 us of ~5 us of autograd overhead
// (bench/README.md, "## gather"); the rest is LibTorch's engine, paid once per backward() of a whole graph.
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include "comm/backend.h"
#include "comm/comm.h"

namespace tempered::comm {
namespace {

// (B_global, d) -> (B_local, d)
struct GatherBackward : public torch::autograd::Node {
  std::vector<int64_t> rows;  // contributed by each rank in the forward (the reduce-scatter's counts)

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    // An undefined incoming gradient (no loss read the gathered rows) still joins the reduce-scatter, as zeros:
    // the other ranks are waiting in it.
    const torch::Tensor& grad = grads[0].defined() ? grads[0] : input_metadata(0).zeros_like();
    return {ReduceScatterSum(grad, rows)};
  }
  std::string name() const override { return "GatherWithGradBackward"; }
};

// Makes `global`, the gather of `local` with `rows` from each rank, differentiable.
torch::Tensor WithGatherBackward(const torch::Tensor& local, torch::Tensor global, std::vector<int64_t> rows) {
  if (torch::autograd::compute_requires_grad(local)) {
    std::shared_ptr<GatherBackward> node(new GatherBackward(), torch::autograd::deleteNode);
    node->rows = std::move(rows);
    node->set_next_edges(torch::autograd::collect_next_edges(local));
    torch::autograd::set_history(global, node);
  }
  return global;
}

}  // namespace

torch::Tensor GatherWithGrad(const torch::Tensor& local) {
  std::vector<int64_t> rows;
  torch::Tensor global = detail::AllGatherRows(local, &rows);  // (B_global, d), a new tensor without history
  return WithGatherBackward(local, std::move(global), std::move(rows));
}

torch::Tensor GatherWithGrad(const torch::Tensor& local, const std::vector<int64_t>& rows) {
  return WithGatherBackward(local, detail::AllGatherStatedRows(local, rows), rows);
}

}  // namespace tempered::comm
