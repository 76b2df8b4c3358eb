// tempered-analyze: the paper's loss and hardness analysis on embeddings saved as .npy files (launch/analyze.h).
// main() only parses flags, reads the inputs and calls one analysis; results go to stdout (JSON or a table), a
// problem with the input to stderr as one sentence with exit status 1.
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "launch/analyze.h"
#include "trainer/npy.h"
#include "trainer/errors.h"
#include "trainer/flag_help.h"

DEFINE_string(views, "", "two .npy files A,B of shape (N, d): row i of A and row i of B are the two views of sample i "
                         "(also written as --views A.npy B.npy)");
DEFINE_string(loss, "infonce", "loss: infonce, simple, hard, hard_simple or nearest");
DEFINE_string(tau, "", "temperature; for `penalty` a comma-separated list, e.g. 0.05,0.1,0.2,0.5,1");
DEFINE_int32(hard_k, 0, "hardest negatives per anchor for hard and hard_simple (0: 8% of the 2N-2 negatives)");
DEFINE_string(grad_out, "", "loss: write d loss / d [A; B] (2N, d) float32, through the L2 normalisation, here");
DEFINE_int32(points, 201, "penalty: number of negatives, similarities evenly spaced on [-1, 1]");
DEFINE_string(out_dir, "", "penalty: write penalty.tsv and penalty.png (gnuplot) to this directory");
DEFINE_string(embeddings, "", "metrics: .npy (n, d) embeddings for uniformity and tolerance");
DEFINE_string(labels, "", "metrics: .npy (n) integer class labels of --embeddings");

namespace tempered {
namespace {

FlagHelp AnalyzeHelp() {
  FlagHelp help;
  help.summary = "the loss and hardness analysis of Wang & Liu (CVPR 2021) on saved embeddings (.npy).";
  help.usage =
      "one of\n"
      "  tempered-analyze loss --views A.npy B.npy --loss L --tau T [--hard_k K] [--grad_out G.npy]\n"
      "      SimCLR's symmetric loss over 2N anchors (rows L2-normalised by the tool); prints JSON.\n"
      "  tempered-analyze penalty --tau T1,T2,... [--points M] [--out_dir D]\n"
      "      relative-penalty curves r(s) and their entropy H(r) per tau (Fig 3); a table, and a PNG in D.\n"
      "  tempered-analyze metrics --embeddings E.npy --labels Y.npy [--views A.npy B.npy]\n"
      "      uniformity, tolerance; with views alignment and local separation; prints JSON.";
  help.defined_in = "launch/analyze_main.cc";
  help.groups = {"inputs", "loss", "penalty"};
  help.flags = {{"views", "inputs", ""},    {"embeddings", "inputs", ""}, {"labels", "inputs", ""},
                {"loss", "loss", ""},       {"tau", "loss", ""},          {"hard_k", "loss", ""},
                {"grad_out", "loss", ""},   {"points", "penalty", ""},    {"out_dir", "penalty", ""}};
  help.examples = {
      "tempered-analyze penalty --tau 0.05,0.2,1 --out_dir fig3",
      "tempered-analyze loss --views a.npy b.npy --loss hard --tau 0.2 --grad_out grad.npy",
      "tempered-analyze metrics --embeddings test.npy --labels test_labels.npy",
  };
  return help;
}

// gflags takes one value per flag: `--views A.npy B.npy` becomes `--views=A.npy,B.npy` first.
std::vector<std::string> JoinViewPaths(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 0; i + 2 < args.size(); ++i) {
    if ((args[i] == "--views" || args[i] == "-views") && args[i + 1][0] != '-' && args[i + 2][0] != '-') {
      args[i] = "--views=" + args[i + 1] + "," + args[i + 2];
      args.erase(args.begin() + static_cast<long>(i) + 1, args.begin() + static_cast<long>(i) + 3);
    }
  }
  return args;
}

std::vector<std::string> Split(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream stream(text);
  for (std::string item; std::getline(stream, item, ',');) items.push_back(item);
  return items;
}

std::vector<double> ParseTaus(const std::string& text) {
  if (text.empty()) throw UserError("--tau is required, e.g. --tau 0.07 (or a list for penalty: --tau 0.05,0.2,1).");
  std::vector<double> taus;
  for (const std::string& item : Split(text)) {
    size_t used = 0;
    double tau = 0;
    try {
      tau = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || !(tau > 0) || !std::isfinite(tau)) {
      throw UserError("--tau: '" + item + "' is not a positive number.");
    }
    taus.push_back(tau);
  }
  return taus;
}

// A (rows, d) float matrix whose rows can be L2-normalised.
torch::Tensor ReadEmbeddings(const std::string& path, int64_t min_rows) {
  const torch::Tensor x = ReadNpyMatrix(path, min_rows);
  const torch::Tensor zero_rows = x.norm(2, 1).eq(0).nonzero();
  if (zero_rows.numel() > 0) {
    throw UserError("Row " + std::to_string(zero_rows[0].item<int64_t>()) + " of " + path +
                    " is all zeros and cannot be L2-normalised.");
  }
  return x;
}

std::pair<torch::Tensor, torch::Tensor> ReadViews() {
  const std::vector<std::string> paths = Split(FLAGS_views);
  if (paths.size() != 2) throw UserError("--views needs two .npy files: --views A.npy B.npy.");
  torch::Tensor a = ReadEmbeddings(paths[0], 2), b = ReadEmbeddings(paths[1], 2);
  if (a.sizes() != b.sizes()) {
    throw UserError("--views: " + paths[0] + " has shape " + NpyShape(a.sizes()) + " but " + paths[1] + " has " +
                    NpyShape(b.sizes()) + "; row i of each must be a view of the same sample.");
  }
  return {a, b};
}

void RunLoss() {
  const std::vector<double> taus = ParseTaus(FLAGS_tau);
  if (taus.size() != 1) throw UserError("--tau: `loss` takes one temperature, got '" + FLAGS_tau + "'.");
  if (FLAGS_hard_k < 0) throw UserError("--hard_k must be >= 0 (0: 8% of the negatives).");
  LossOptions options;
  options.name = ParseLossName(FLAGS_loss);
  options.tau = taus[0];
  options.hard_k = FLAGS_hard_k;
  const auto [a, b] = ReadViews();
  const ViewsLoss result = SymmetricViewsLoss(a, b, options);
  nlohmann::json out = {{"loss", result.loss},
                        {"name", FLAGS_loss},
                        {"tau", options.tau},
                        {"anchors", 2 * a.size(0)},
                        {"negatives_per_anchor", 2 * a.size(0) - 2},
                        {"penalty_entropy", result.penalty_entropy}};
  if (result.hard_k > 0) out["hard_k"] = result.hard_k;
  if (!FLAGS_grad_out.empty()) {
    WriteNpy(FLAGS_grad_out, result.grad.to(torch::kFloat));
    out["grad_out"] = FLAGS_grad_out;
  }
  std::cout << out.dump() << std::endl;
}

void RunPenalty() {
  if (FLAGS_points < 2) throw UserError("--points must be at least 2.");
  const PenaltyCurves curves = UniformPenaltyCurves(ParseTaus(FLAGS_tau), FLAGS_points);
  std::cout << PenaltyTable(curves);
  if (!FLAGS_out_dir.empty()) {
    std::error_code error;
    std::filesystem::create_directories(FLAGS_out_dir, error);
    if (error) throw UserError("--out_dir: cannot create " + FLAGS_out_dir + " (" + error.message() + ").");
    WritePenaltyPlot(curves, FLAGS_out_dir);
    std::cout << "# wrote " << FLAGS_out_dir << "/penalty.tsv and " << FLAGS_out_dir << "/penalty.png\n";
  }
}

void RunMetrics() {
  if (FLAGS_embeddings.empty() || FLAGS_labels.empty()) {
    throw UserError("metrics needs --embeddings E.npy and --labels Y.npy.");
  }
  const torch::Tensor embeddings = ReadEmbeddings(FLAGS_embeddings, 2);
  const torch::Tensor labels = ReadNpyLabels(FLAGS_labels, embeddings.size(0));
  torch::Tensor a, b;
  if (!FLAGS_views.empty()) std::tie(a, b) = ReadViews();
  std::cout << EmbeddingMetrics(embeddings, labels, a, b).dump() << std::endl;
}

}  // namespace
}  // namespace tempered

int main(int argc, char** argv) {
  std::vector<std::string> args = tempered::JoinViewPaths(argc, argv);
  std::vector<char*> arg_pointers;
  for (std::string& arg : args) arg_pointers.push_back(arg.data());
  int count = static_cast<int>(arg_pointers.size());
  char** pointers = arg_pointers.data();
  tempered::ParseFlagsWithHelp(tempered::AnalyzeHelp(), &count, &pointers);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(pointers[0]);
  try {
    const std::string command = count == 2 ? pointers[1] : "";
    if (command == "loss") {
      tempered::RunLoss();
    } else if (command == "penalty") {
      tempered::RunPenalty();
    } else if (command == "metrics") {
      tempered::RunMetrics();
    } else {
      throw tempered::UserError("expected one subcommand, loss, penalty or metrics (see --help), got '" +
                                std::string(count > 1 ? pointers[1] : "") + (count > 2 ? " ..." : "") + "'.");
    }
  } catch (const tempered::UserError& e) {
    std::cerr << "tempered-analyze: error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
