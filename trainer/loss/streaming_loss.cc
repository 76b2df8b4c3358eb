// Streaming (tiled) forms of the losses of docs/paper.md §2; trainer/loss/loss.cc is the reference they must match.
//
// Notation: n anchors a_i, C candidates c_k (d each), s_ik = a_i . c_k, p_i the positive, e_i the excluded candidate
// (-1 = none), scale = 1 / tau (1 for hard_simple and nearest, where tau does not appear). Every tile works on
// z_ik = (s_ik - s_ii) * scale, the shift that keeps the naive loss precise when it is small.
#include "trainer/loss/streaming_loss.h"

#include <glog/logging.h>

#include <algorithm>
#include <functional>
#include <limits>

#include "common/config.h"

namespace tempered {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr double kInf = std::numeric_limits<double>::infinity();

// A tile of candidates [begin, begin + t) is computed into a window (n, 1 + t): column 0 is a sink, columns
// 1..t are the tile. Per-anchor indices that fall outside the tile are sent to the sink, so entries are set or
// added with one scatter of the indices instead of an (n, t) mask.
Tensor WindowColumn(const Tensor& index, int64_t begin, int64_t t) {  // index any shape -> same shape
  const Tensor local = index - begin;
  return (local + 1).masked_fill_(local.lt(0).logical_or(local.ge(t)), 0);
}

// Each anchor's positive and excluded candidate in the tiling, computed once per call (a GPU is launch-bound on
// small per-tile ops): tile number and window column, (n, 2) each. exclude = -1 is in tile -1, i.e. none.
struct MaskedCandidates {
  Tensor tile_number, column;

  MaskedCandidates(const Tensor& positive, const Tensor& exclude, int64_t tile) {
    const Tensor index = torch::stack({positive, exclude}, 1);  // (n, 2)
    tile_number = torch::div(index, tile, "floor");
    column = index.remainder(tile) + 1;
  }
  Tensor WindowColumns(int64_t begin, int64_t tile) const { return column * tile_number.eq(begin / tile); }
};

// window (n, 1 + t) <- [-inf | scaled_anchors @ tile^T], -inf at each anchor's positive and excluded column.
// -inf drops out of max, top-K and exp sums and gets zero gradient, as in the naive loss. (A per-anchor shift is
// applied afterwards where needed: addmm with a broadcast (n, 1) bias measured ~10x slower than mm here.)
void ScoreTile(const Tensor& window, const Tensor& scaled_anchors, const Tensor& candidates, int64_t begin,
               int64_t tile, const MaskedCandidates& masked) {
  const int64_t t = window.size(1) - 1;
  Tensor scores = window.narrow(1, 1, t);  // (n, t), written in place by the matmul
  torch::mm_out(scores, scaled_anchors, candidates.narrow(0, begin, t).t());
  window.select(1, 0).fill_(-kInf);
  window.scatter_(1, masked.WindowColumns(begin, tile), -kInf);
}

Tensor RowDot(const Tensor& a, const Tensor& b) { return (a * b).sum(1); }  // (n, d), (n, d) -> (n)

// Backward shared by the tiled losses. With g_i the incoming gradient and the loss's derivatives written as
// dL_i/ds_ik = r_i G_ik (negatives) and dL_i/ds_ii = r_i w_i (the positive), where tile_gradient returns G for the
// candidates [begin, begin + t) as an (n, t) tensor:
//   d anchors_i = r_i (sum_k G_ik c_k + w_i c_{p_i}),   d c_k = sum_i G_ik r_i a_i (+ r_i w_i a_i where k = p_i).
// The candidates' gradient is (C, d), as large as a memory bank; a bank does not require grad, so it is computed
// only when autograd asks for it (undefined otherwise).
using TileGradient = std::function<Tensor(int64_t begin, int64_t t)>;
variable_list TiledBackward(const Tensor& anchors, const Tensor& candidates, const Tensor& positive,
                            const Tensor& row_scale, const Tensor& positive_weight, int64_t tile,
                            bool candidates_need_grad, const TileGradient& tile_gradient) {
  const int64_t candidates_count = candidates.size(0);
  Tensor anchors_grad = torch::zeros_like(anchors);  // (n, d) sum_k G_ik c_k
  Tensor weighted_anchors, candidates_grad;          // (n, d) r_i a_i; (C, d), every row written by one tile
  if (candidates_need_grad) {
    weighted_anchors = anchors * row_scale.unsqueeze(1);
    candidates_grad = torch::empty_like(candidates);
  }
  for (int64_t begin = 0; begin < candidates_count; begin += tile) {
    const int64_t t = std::min(tile, candidates_count - begin);
    const Tensor g = tile_gradient(begin, t);  // (n, t)
    const Tensor tile_candidates = candidates.narrow(0, begin, t);
    anchors_grad.addmm_(g, tile_candidates);
    if (!candidates_need_grad) continue;
    Tensor tile_grad = candidates_grad.narrow(0, begin, t);  // (t, d)
    torch::mm_out(tile_grad, g.t(), weighted_anchors);
  }
  const Tensor positive_row_weight = (row_scale * positive_weight).unsqueeze(1);  // (n, 1)
  anchors_grad.mul_(row_scale.unsqueeze(1)).add_(candidates.index_select(0, positive) * positive_row_weight);
  if (candidates_need_grad) candidates_grad.index_add_(0, positive, anchors * positive_row_weight);
  return {anchors_grad, candidates_grad};
}

// The one (n, 1 + tile) buffer a backward computes its tiles' windows in, allocated on first use: peak extra memory
// of a backward is one window.
class WindowBuffer {
 public:
  WindowBuffer(const Tensor& anchors, int64_t tile, int64_t candidates_count)
      : n_(anchors.size(0)), columns_(1 + std::min(tile, candidates_count)), options_(anchors.options()) {}
  Tensor Window(int64_t t) {  // (n, 1 + t)
    if (!buffer_.defined()) buffer_ = torch::empty({n_, columns_}, options_);
    return buffer_.narrow(1, 0, 1 + t);
  }

 private:
  int64_t n_, columns_;
  torch::TensorOptions options_;
  Tensor buffer_;
};

// InfoNCE, Eq 1: L_i = log(e^{s_ii/tau} + sum_{k negative} e^{s_ik/tau}) - s_ii/tau. Forward keeps a running max m
// and a running sum l of e^{s/tau - m} over the tiles (both start from the positive's own term), so no exp
// overflows at tau = 0.01; L = (m - s_ii/tau) + log l, exactly log l while the positive is the largest term.
// Backward recomputes each tile: dL_i/ds_ik = P_ik / tau with P_ik = e^{s_ik/tau - s_ii/tau - L_i}, and
// dL_i/ds_ii = -(1/tau) sum_k P_ik = expm1(-L_i) / tau. When all candidates fit in one tile the forward keeps that
// tile's P = e^{s/tau - m} / l for the backward instead (memory: the one window either way; time: one matmul and
// one exp pass fewer, the naive loss's count).
struct InfoNceFunction : public torch::autograd::Function<InfoNceFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& anchors, const Tensor& candidates, const Tensor& positive,
                        const Tensor& exclude, double tau, int64_t tile) {
    const int64_t n = anchors.size(0), candidates_count = candidates.size(0);
    const Tensor scaled = anchors / tau;                                                 // (n, d)
    const Tensor positive_logit = RowDot(scaled, candidates.index_select(0, positive));  // (n) s_ii / tau
    Tensor max = positive_logit.clone();                                                 // (n) m
    Tensor sum = torch::ones({n}, anchors.options());                                    // (n) l
    const MaskedCandidates masked(positive, exclude, tile);
    Tensor buffer = torch::empty({n, 1 + std::min(tile, candidates_count)}, anchors.options());
    for (int64_t begin = 0; begin < candidates_count; begin += tile) {
      const int64_t t = std::min(tile, candidates_count - begin);
      const Tensor window = buffer.narrow(1, 0, 1 + t);  // (n, 1 + t) s / tau of the tile
      ScoreTile(window, scaled, candidates, begin, tile, masked);
      const Tensor new_max = torch::maximum(max, window.amax(1));
      sum.mul_((max - new_max).exp_()).add_(window.sub_(new_max.unsqueeze(1)).exp_().sum(1));
      max = new_max;
    }
    const Tensor loss = (max - positive_logit).add_(sum.log());  // (n)
    // One tile: the window holds e^{s/tau - m} (0 in the sink and the masked columns), so P is a division away.
    const Tensor probabilities = candidates_count <= tile ? buffer.div_(sum.unsqueeze(1)) : Tensor();
    ctx->save_for_backward({anchors, candidates, positive, exclude, loss, probabilities});
    ctx->saved_data["tau"] = tau;
    ctx->saved_data["tile"] = tile;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    torch::NoGradGuard no_grad;
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &anchors = saved[0], &candidates = saved[1], &positive = saved[2], &exclude = saved[3],
                 &loss = saved[4], &kept = saved[5];
    const double tau = ctx->saved_data["tau"].toDouble();
    const int64_t tile = ctx->saved_data["tile"].toInt();
    const MaskedCandidates masked(positive, exclude, tile);
    const Tensor scaled = anchors / tau;
    const Tensor shift = RowDot(scaled, candidates.index_select(0, positive)).add_(loss).unsqueeze(1);  // (n, 1)
    WindowBuffer buffer(anchors, tile, candidates.size(0));
    const TileGradient probabilities = [&](int64_t begin, int64_t t) {
      if (kept.defined()) return kept.narrow(1, 1, t);
      const Tensor window = buffer.Window(t);
      ScoreTile(window, scaled, candidates, begin, tile, masked);
      return window.sub_(shift).exp_().narrow(1, 1, t);  // P = e^{s/tau - (s_ii/tau + L)}
    };
    variable_list grads =
        TiledBackward(anchors, candidates, positive, grad_outputs[0] / tau, torch::expm1(-loss), tile,
                      ctx->needs_input_grad(1), probabilities);
    return {grads[0], grads[1], {}, {}, {}, {}};
  }
};

// HARD (Eq 9), HARD_SIMPLE and NEAREST: functions of each anchor's K largest negative z (NEAREST: K = 1). Forward
// merges a running top-K of s * scale with every tile; only the values (n, K) and their candidate indices (n, K)
// are kept.
// Backward: dL_i/dz for the K selected entries (zero elsewhere) scattered into each tile, then two matmuls.
struct HardestFunction : public torch::autograd::Function<HardestFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& anchors, const Tensor& candidates, const Tensor& positive,
                        const Tensor& exclude, int64_t name, double scale, int64_t k, int64_t tile) {
    const int64_t n = anchors.size(0), candidates_count = candidates.size(0);
    // Each merge selects from K + tile entries per anchor, (C / tile)(K + tile) in all; topk costs ~25 exps per
    // entry here, so a tile of at least 4K keeps that within 1.25 C (the naive loss: C, sorted). Memory O(n K).
    tile = std::max(tile, 4 * k);
    const MaskedCandidates masked(positive, exclude, tile);
    const Tensor scaled = anchors * scale;
    // buffer (n, K + 1 + tile) = [running top-K values | sink | tile]; topk over it merges the tile in.
    Tensor buffer = torch::empty({n, k + 1 + std::min(tile, candidates_count)}, anchors.options());
    buffer.narrow(1, 0, k).fill_(-kInf);
    Tensor index = torch::zeros({n, k}, positive.options());  // (n, K) candidate index of each running value
    for (int64_t begin = 0; begin < candidates_count; begin += tile) {
      const int64_t t = std::min(tile, candidates_count - begin);
      ScoreTile(buffer.narrow(1, k, 1 + t), scaled, candidates, begin, tile, masked);
      auto [values, at] = buffer.narrow(1, 0, k + 1 + t).topk(k, 1, /*largest=*/true, /*sorted=*/false);
      // at < K: a running entry kept; at > K: column at - K - 1 of the tile (the sink, at = K, is -inf and loses
      // to the >= K negatives every anchor has over all tiles).
      index = torch::where(at.lt(k), index.gather(1, at.clamp_max(k - 1)), at + (begin - k - 1));
      buffer.narrow(1, 0, k).copy_(values);
    }
    const Tensor positive_score = RowDot(scaled, candidates.index_select(0, positive));  // (n) s_ii * scale
    const Tensor hardest = buffer.narrow(1, 0, k) - positive_score.unsqueeze(1);         // (n, K) z of the K hardest
    Tensor loss;
    switch (static_cast<LossConfig::Name>(name)) {
      case LossConfig::HARD:  // log(1 + sum_K e^z), the positive's term being e^0
        loss = torch::cat({torch::zeros({n, 1}, hardest.options()), hardest}, 1).logsumexp(1);
        break;
      case LossConfig::HARD_SIMPLE:  // -s_ii + mean_K s = mean_K (s - s_ii)
        loss = hardest.mean(1);
        break;
      case LossConfig::NEAREST:  // max(s_max - s_ii, 0)
        loss = torch::relu(hardest.squeeze(1));
        break;
      default:
        LOG(FATAL) << "not a top-K loss: " << LossConfig::Name_Name(static_cast<LossConfig::Name>(name));
    }
    ctx->save_for_backward({anchors, candidates, positive, hardest, index, loss});
    ctx->saved_data["name"] = name;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["tile"] = tile;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    torch::NoGradGuard no_grad;
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &anchors = saved[0], &candidates = saved[1], &positive = saved[2], &hardest = saved[3],
                 &index = saved[4], &loss = saved[5];
    // dL/dz for the K hardest (n, K) and for the positive (n); dz/ds = scale.
    Tensor weight, positive_weight;
    switch (static_cast<LossConfig::Name>(ctx->saved_data["name"].toInt())) {
      case LossConfig::HARD:  // softmax over [positive, K hardest]; the positive's is -(1 - e^{-L})
        weight = (hardest - loss.unsqueeze(1)).exp();
        positive_weight = torch::expm1(-loss);
        break;
      case LossConfig::HARD_SIMPLE:
        weight = torch::full_like(hardest, 1.0 / hardest.size(1));
        positive_weight = -torch::ones_like(loss);
        break;
      default:  // NEAREST: relu's gradient is 0 at 0, as LibTorch's
        weight = hardest.gt(0).to(hardest.dtype());
        positive_weight = -weight.squeeze(1);
        break;
    }
    const int64_t tile = ctx->saved_data["tile"].toInt();
    WindowBuffer buffer(anchors, tile, candidates.size(0));
    const TileGradient scatter = [&](int64_t begin, int64_t t) {
      const Tensor window = buffer.Window(t);  // the sink (column 0) collects the entries of other tiles
      return window.zero_().scatter_add_(1, WindowColumn(index, begin, t), weight).narrow(1, 1, t);
    };
    variable_list grads = TiledBackward(anchors, candidates, positive,
                                        grad_outputs[0] * ctx->saved_data["scale"].toDouble(), positive_weight, tile,
                                        ctx->needs_input_grad(1), scatter);
    return {grads[0], grads[1], {}, {}, {}, {}, {}, {}};
  }
};

// SIMPLE, Eq 3: -s_ii + (1 / C_i) sum_{k negative} s_ik with C_i = the positive plus the negatives. Linear in s, so
// the sum over negatives is a_i . (sum_k c_k) less the positive's and the excluded candidate's similarity; plain
// autograd differentiates it.
Tensor SimpleLoss(const Tensor& anchors, const Tensor& candidates, const Tensor& positive, const Tensor& exclude) {
  const Tensor positive_similarity = RowDot(anchors, candidates.index_select(0, positive));  // (n)
  const Tensor has_exclude = exclude.ge(0);                                                  // (n)
  const Tensor excluded_similarity =
      RowDot(anchors, candidates.index_select(0, exclude.clamp_min(0))).masked_fill(has_exclude.logical_not(), 0);
  const Tensor negative_sum = anchors.matmul(candidates.sum(0)) - positive_similarity - excluded_similarity;
  const Tensor count = (candidates.size(0) - has_exclude.to(anchors.dtype()));
  return negative_sum / count - positive_similarity;
}

// Checks the arguments; returns the smallest number of negatives of any anchor (C - 1, or C - 2 when some anchor
// excludes a candidate). The index checks cost one device-to-host copy, not one per check (a GPU sync each), or
// none when the caller states the number (LossOptions.min_negatives): then they assert on the device.
int64_t CheckArguments(const Tensor& anchors, const Tensor& candidates, const Tensor& positive, const Tensor& exclude,
                       const LossOptions& options) {
  CHECK(anchors.dim() == 2 && candidates.dim() == 2 && anchors.size(1) == candidates.size(1))
      << "anchors (n, d) and candidates (C, d) must share d";
  const int64_t n = anchors.size(0), columns = candidates.size(0);
  CHECK(positive.scalar_type() == torch::kLong && exclude.scalar_type() == torch::kLong)
      << "positive and exclude must be int64";
  CHECK(positive.dim() == 1 && positive.size(0) == n) << "positive must be (" << n << ")";
  CHECK(exclude.dim() == 1 && exclude.size(0) == n) << "exclude must be (" << n << ")";
  CHECK_GT(options.tau, 0.0) << "tau must be positive";
  CHECK_GT(options.tile_scores, 0) << "the streaming loss needs tile_scores > 0 (0 is the naive loss)";
  if (n == 0) return columns - 1;
  if (options.min_negatives > 0) {
    CHECK_LT(options.min_negatives, columns) << "LossOptions.min_negatives must leave room for the positive";
    at::_assert_async(positive.min().ge(0) & positive.max().lt(columns) & exclude.min().ge(-1) &
                      exclude.max().lt(columns) & exclude.ne(positive).all());
    return options.min_negatives;
  }
  const Tensor summary =
      torch::stack({positive.min(), positive.max(), exclude.min(), exclude.max(),
                    exclude.eq(positive).any().to(torch::kLong), exclude.ge(0).any().to(torch::kLong)})
          .cpu();
  const auto s = summary.accessor<int64_t, 1>();
  CHECK(s[0] >= 0 && s[1] < columns) << "positive index out of range [0, " << columns << ")";
  CHECK(s[2] >= -1 && s[3] < columns) << "exclude index out of range [-1, " << columns << ")";
  CHECK(s[4] == 0) << "an anchor excludes its own positive";
  const int64_t min_negatives = columns - 1 - s[5];
  CHECK_GE(min_negatives, 1) << "every anchor needs at least one negative";
  return min_negatives;
}

}  // namespace

Tensor StreamingContrastiveLoss(const Tensor& anchors, const Tensor& candidates, const Tensor& positive,
                                const Tensor& exclude, const LossOptions& options) {
  const int64_t min_negatives = CheckArguments(anchors, candidates, positive, exclude, options);
  // No anchors: the naive loss, whose empty result still reaches the candidates in autograd (their gradient, zeros,
  // then flows into a collective backward like every other rank's).
  if (anchors.size(0) == 0) return ContrastiveLoss(anchors, candidates, positive, exclude, options);
  // fp32 (the range small tau needs) unless the inputs are fp64; autograd casts the gradients back.
  const auto compute = anchors.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  const Tensor a = anchors.to(compute), c = candidates.to(compute);
  const int64_t tile = std::max<int64_t>(1, options.tile_scores / anchors.size(0));  // candidates per tile
  Tensor loss;
  switch (options.name) {
    case LossConfig::INFONCE:
      loss = InfoNceFunction::apply(a, c, positive, exclude, options.tau, tile);
      break;
    case LossConfig::SIMPLE:
      loss = SimpleLoss(a, c, positive, exclude);
      break;
    case LossConfig::HARD:
    case LossConfig::HARD_SIMPLE: {
      CHECK_GT(options.hard_k, 0) << "HARD and HARD_SIMPLE need hard_k > 0 (see HardK)";
      const double scale = options.name == LossConfig::HARD ? 1.0 / options.tau : 1.0;
      loss = HardestFunction::apply(a, c, positive, exclude, static_cast<int64_t>(options.name), scale,
                                    std::min(options.hard_k, min_negatives), tile);
      break;
    }
    case LossConfig::NEAREST:
      loss = HardestFunction::apply(a, c, positive, exclude, static_cast<int64_t>(options.name), 1.0, int64_t{1}, tile);
      break;
    default:
      LOG(FATAL) << "unknown loss " << LossConfig::Name_Name(options.name);
  }
  return loss.to(anchors.scalar_type());
}

Tensor StreamingOrNaiveLoss(const Tensor& anchors, const Tensor& candidates, const Tensor& positive,
                            const Tensor& exclude, const LossOptions& options) {
  if (options.inverse_tau.defined() && LossUsesTau(options.name)) {  // a learnable tau: s * e^l at tau 1
    LossOptions at_one = options;
    at_one.tau = 1.0;
    at_one.inverse_tau = Tensor();
    return StreamingOrNaiveLoss(anchors * options.inverse_tau.to(anchors.scalar_type()), candidates, positive,
                                exclude, at_one);
  }
  return options.tile_scores > 0 ? StreamingContrastiveLoss(anchors, candidates, positive, exclude, options)
                                 : ContrastiveLoss(anchors, candidates, positive, exclude, options);
}

}  // namespace tempered
