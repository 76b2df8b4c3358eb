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
#include "comm/backend.h"
#include "comm/comm.h"

namespace tempered::comm {
namespace {

struct GatherFunction : public torch::autograd::Function<GatherFunction> {
  // (B_local, d) -> (B_global, d)
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& local) {
    std::vector<int64_t> rows;
    torch::Tensor global = detail::AllGatherRows(local, &rows);
    ctx->saved_data["rows"] = rows;
    return global;
  }

  // (B_global, d) -> (B_local, d). Undefined incoming gradients arrive as zeros (materialize_grads), so every
  // rank still joins the reduce-scatter.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    return {ReduceScatterSum(grad_outputs[0], ctx->saved_data["rows"].toIntVector())};
  }
};

}  // namespace

torch::Tensor GatherWithGrad(const torch::Tensor& local) { return GatherFunction::apply(local); }

}  // namespace tempered::comm
