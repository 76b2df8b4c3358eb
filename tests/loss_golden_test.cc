// trainer/loss/loss.cc against the independent PyTorch reference tests/loss_reference.py: every loss, tau in
// {0.01, 0.07, 0.2, 1}, several K (including K >= the number of negatives), the memory-bank and the SimCLR batch
// form; losses and gradients with respect to anchors and candidates; relative penalty and its entropy.
// loss_reference_test.py writes the golden files and runs this binary with TEMPERED_GOLDEN_DIR set; run alone
// (plain ctest) it is skipped.
#include <glog/logging.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "trainer/io/npy.h"
#include "trainer/loss/loss.h"

namespace tempered {
namespace {

struct Case {
  torch::Tensor anchors, candidates, positive, exclude, weights, groups;
};

Case LoadCase(const std::string& dir) {
  return {ReadNpy(dir + "/anchors.npy"), ReadNpy(dir + "/candidates.npy"), ReadNpy(dir + "/positive.npy"),
          ReadNpy(dir + "/exclude.npy"), ReadNpy(dir + "/weights.npy"), ReadNpy(dir + "/groups.npy")};
}

LossConfig::Name ParseLoss(const std::string& name) {
  LossConfig::Name value;
  std::string upper;
  for (char c : name) upper += static_cast<char>(std::toupper(c));
  CHECK(LossConfig::Name_Parse(upper, &value)) << name;
  return value;
}

// Float64 on both sides: 1e-5 relative per element, plus an absolute floor of 1e-8 of the tensor's scale for
// entries that are sums of cancelling terms.
void ExpectClose(const torch::Tensor& actual, const torch::Tensor& expected, const std::string& what,
                 double rtol = 1e-5, double atol_scale = 1e-8) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const double scale = std::max(1.0, expected.abs().max().item<double>());
  EXPECT_TRUE(torch::allclose(actual.to(torch::kDouble), expected, rtol, atol_scale * scale))
      << what << ": largest difference " << (actual.to(torch::kDouble) - expected).abs().max().item<double>()
      << "\nactual\n" << actual << "\nexpected\n" << expected;
}

// Rows of the candidate gradient summed over groups of identical candidates (see GROUPS in loss_reference.py:
// with tied similarities the top-K may pick either duplicate, which moves gradient between them but keeps the sum).
torch::Tensor SumOverGroups(const torch::Tensor& grad, const torch::Tensor& groups) {
  const int64_t count = groups.max().item<int64_t>() + 1;
  return torch::zeros({count, grad.size(1)}, grad.options()).index_add_(0, groups, grad);
}

TEST(LossGolden, MatchesReference) {
  const char* dir = std::getenv("TEMPERED_GOLDEN_DIR");
  if (dir == nullptr) GTEST_SKIP() << "TEMPERED_GOLDEN_DIR is not set (loss_reference_test.py sets it)";
  std::ifstream index(std::string(dir) + "/index.txt");
  ASSERT_TRUE(index) << "no index.txt in " << dir;
  std::map<std::string, Case> cases;
  int checked = 0;
  for (std::string line; std::getline(index, line);) {
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string case_name, loss_name, prefix;
    double tau = 0;
    int64_t hard_k = 0;
    ASSERT_TRUE(fields >> case_name >> loss_name >> tau >> hard_k >> prefix) << line;
    SCOPED_TRACE(line);
    if (!cases.count(case_name)) cases[case_name] = LoadCase(std::string(dir) + "/" + case_name);
    const Case& c = cases.at(case_name);
    const std::string path = std::string(dir) + "/" + prefix;

    if (loss_name == "penalty") {
      const torch::Tensor sims = c.anchors.matmul(c.candidates.t());
      ExpectClose(RelativePenalty(sims, c.positive, c.exclude, tau), ReadNpy(path + "_r.npy"), "r");
      ExpectClose(PenaltyEntropy(sims, c.positive, c.exclude, tau), ReadNpy(path + "_entropy.npy"), "H(r)");
      ++checked;
      continue;
    }
    LossOptions options;
    options.name = ParseLoss(loss_name);
    options.tau = tau;
    options.hard_k = hard_k;
    torch::Tensor anchors = c.anchors.clone().requires_grad_(true);
    torch::Tensor candidates = c.candidates.clone().requires_grad_(true);
    torch::Tensor loss = ContrastiveLoss(anchors, candidates, c.positive, c.exclude, options);
    (loss * c.weights).sum().backward();
    const torch::Tensor expected_loss = ReadNpy(path + "_loss.npy");
    ExpectClose(loss.detach(), expected_loss, "loss");
    ExpectClose(anchors.grad(), ReadNpy(path + "_grad_anchors.npy"), "d/d anchors");
    ExpectClose(SumOverGroups(candidates.grad(), c.groups),
                SumOverGroups(ReadNpy(path + "_grad_candidates.npy"), c.groups), "d/d candidates (group sums)");
    // The same loss in fp32, the trainer's dtype: similarities carry ~1e-7 error, times 1/tau in the logits.
    const torch::Tensor loss32 = ContrastiveLoss(c.anchors.to(torch::kFloat), c.candidates.to(torch::kFloat),
                                                 c.positive, c.exclude, options);
    ExpectClose(loss32, expected_loss, "fp32 loss", 1e-4, 1e-4);
    ++checked;
  }
  EXPECT_GT(checked, 100) << "the golden index is shorter than loss_reference.py writes";
}

}  // namespace
}  // namespace tempered
