// tempered-analyze: the paper's loss and hardness analysis on embeddings saved as .npy files (launch/analyze/analyze.h).
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

#include "common/errors.h"
#include "common/flag_help.h"
#include "launch/analyze/analyze.h"
#include "launch/sweep/sweep_spec.h"
#include "trainer/io/npy.h"
#include "trainer/data/data.h"

DEFINE_string(views, "", "two .npy files A,B of shape (N, d): row i of A and row i of B are the two views of sample i "
                         "(also written as --views A.npy B.npy)");
DEFINE_string(loss, "infonce", "loss: infonce, simple, hard, hard_simple or nearest");
DEFINE_string(tau, "", "temperature; for `penalty` a comma-separated list, e.g. 0.05,0.1,0.2,0.5,1");
DEFINE_string(anchors, "", "loss, bank form: .npy (n, d) anchors, each scored against every row of --bank");
DEFINE_string(bank, "", "loss, bank form: .npy (N, d) memory bank; the positive of anchor i is row --positives[i]");
DEFINE_string(positives, "", "loss, bank form: .npy (n) int64 index in [0, N) of each anchor's positive bank row");
DEFINE_int32(hard_k, 0, "hardest negatives per anchor for hard and hard_simple (0: 8% of the negatives, 2N-2 with "
                        "--views, N-1 with --bank)");
DEFINE_string(grad_out, "", "loss: write d loss / d [A; B] (2N, d), or d loss / d anchors (n, d) with --bank, "
                            "float32, through the L2 normalisation, here");
DEFINE_int64(tile_scores, tempered::LossOptions().tile_scores,
             "loss: similarities per tile of the streaming loss, as the trainer computes it; 0: the naive loss "
             "(the whole n x C matrix at once)");
DEFINE_int32(points, 201, "penalty: number of negatives, similarities evenly spaced on [-1, 1]");
DEFINE_string(out_dir, "", "penalty: write penalty.tsv and penalty.png (gnuplot) to this directory");
DEFINE_string(embeddings, "", "metrics: .npy (n, d) embeddings for uniformity and tolerance");
DEFINE_string(labels, "", "metrics: .npy (n) integer class labels of --embeddings");
DEFINE_int64(rows, 0, "metrics: use R rows of --embeddings and --labels only (0: all): the class-stratified "
                      "sample a run with eval.metric_samples R draws from its test rows");

namespace tempered {
namespace {

FlagHelp AnalyzeHelp() {
  FlagHelp help;
  help.summary = "the loss and hardness analysis of Wang & Liu (CVPR 2021) on saved embeddings (.npy).";
  help.usage =
      "one of\n"
      "  tempered-analyze loss --views A.npy B.npy --loss L --tau T [--hard_k K] [--grad_out G.npy]\n"
      "      SimCLR's symmetric loss over 2N anchors (rows L2-normalised by the tool); prints JSON.\n"
      "  tempered-analyze loss --anchors A.npy --bank M.npy --positives I.npy --loss L --tau T [--hard_k K]\n"
      "      [--grad_out G.npy]: the memory-bank form, n anchors against all N bank rows; prints JSON.\n"
      "  tempered-analyze penalty --tau T1,T2,... [--points M] [--out_dir D]\n"
      "      relative-penalty curves r(s) and their entropy H(r) per tau (Fig 3); a table, and a PNG in D.\n"
      "  tempered-analyze metrics --embeddings E.npy --labels Y.npy [--rows R] [--views A.npy B.npy]\n"
      "      uniformity, tolerance; with views alignment and local separation; prints JSON.";
  help.defined_in = "launch/analyze/analyze_main.cc";
  help.groups = {"inputs", "loss", "penalty"};
  help.flags = {{"views", "inputs", ""},     {"anchors", "inputs", ""},    {"bank", "inputs", ""},
                {"positives", "inputs", ""}, {"embeddings", "inputs", ""}, {"labels", "inputs", ""},
                {"rows", "inputs", ""},
                {"loss", "loss", ""},        {"tau", "loss", ""},          {"hard_k", "loss", ""},
                {"grad_out", "loss", ""},    {"tile_scores", "loss", ""},  {"points", "penalty", ""},
                {"out_dir", "penalty", ""}};
  help.examples = {
      "tempered-analyze penalty --tau 0.05,0.2,1 --out_dir fig3",
      "tempered-analyze loss --views a.npy b.npy --loss hard --tau 0.2 --grad_out grad.npy",
      "tempered-analyze loss --anchors z.npy --bank bank.npy --positives index.npy --loss infonce --tau 0.07",
      "tempered-analyze metrics --embeddings RUN/embeddings/test_embeddings.npy --labels "
      "RUN/embeddings/test_labels.npy --rows 1000",
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

struct BankInputs {
  torch::Tensor anchors, bank, positives;  // (n, d), (N, d) float64; (n) int64 in [0, N)
};

BankInputs ReadBankInputs() {
  if (FLAGS_anchors.empty() || FLAGS_bank.empty() || FLAGS_positives.empty()) {
    throw UserError("the bank form of `loss` needs all three of --anchors A.npy, --bank M.npy and --positives I.npy.");
  }
  BankInputs in{ReadEmbeddings(FLAGS_anchors, 1), ReadEmbeddings(FLAGS_bank, 2), ReadNpy(FLAGS_positives)};
  const int64_t n = in.anchors.size(0), rows = in.bank.size(0);
  if (in.bank.size(1) != in.anchors.size(1)) {
    throw UserError("--bank: " + FLAGS_bank + " has rows of d = " + std::to_string(in.bank.size(1)) +
                    " but --anchors " + FLAGS_anchors + " has d = " + std::to_string(in.anchors.size(1)) +
                    "; both must share d.");
  }
  if (in.positives.scalar_type() != torch::kLong) {
    const bool int32 = in.positives.scalar_type() == torch::kInt;  // ReadNpy reads int32, int64, float32, float64
    throw UserError("--positives: " + FLAGS_positives + " holds " + (int32 ? "int32" : "floats") +
                    "; expected int64 bank row indices (numpy.int64).");
  }
  if (in.positives.dim() != 1 || in.positives.size(0) != n) {
    throw UserError("--positives: " + FLAGS_positives + " has shape " + NpyShape(in.positives.sizes()) +
                    "; expected (" + std::to_string(n) + ",), one bank row per anchor of " + FLAGS_anchors + ".");
  }
  const torch::Tensor outside = (in.positives.lt(0) | in.positives.ge(rows)).nonzero();
  if (outside.numel() > 0) {
    const int64_t i = outside[0].item<int64_t>();
    throw UserError("--positives: entry " + std::to_string(i) + " of " + FLAGS_positives + " is " +
                    std::to_string(in.positives[i].item<int64_t>()) + ", outside the rows [0, " +
                    std::to_string(rows) + ") of --bank " + FLAGS_bank + ".");
  }
  return in;
}

LossOptions ParseLossOptions() {
  const std::vector<double> taus = ParseTaus(FLAGS_tau);
  if (taus.size() != 1) throw UserError("--tau: `loss` takes one temperature, got '" + FLAGS_tau + "'.");
  if (FLAGS_hard_k < 0) throw UserError("--hard_k must be >= 0 (0: 8% of the negatives).");
  if (FLAGS_tile_scores < 0) throw UserError("--tile_scores must be >= 0 (0: the naive loss).");
  LossOptions options;
  options.name = ParseLossName(FLAGS_loss);
  options.tau = taus[0];
  options.hard_k = FLAGS_hard_k;
  options.tile_scores = FLAGS_tile_scores;
  return options;
}

// Prints `out` with the fields both forms share, and writes the gradient to --grad_out.
void PrintLoss(nlohmann::json out, const LossOptions& options, const LossAnalysis& result) {
  out["loss"] = result.loss;
  out["name"] = FLAGS_loss;
  out["tau"] = options.tau;
  out["penalty_entropy"] = result.penalty_entropy;
  if (result.hard_k > 0) out["hard_k"] = result.hard_k;
  if (!FLAGS_grad_out.empty()) {
    WriteNpy(FLAGS_grad_out, result.grad.to(torch::kFloat));
    out["grad_out"] = FLAGS_grad_out;
  }
  std::cout << out.dump() << std::endl;
}

// A --hard_k above the negatives each anchor has is refused, not lowered to them: the user asked for another loss.
void CheckHardK(const LossOptions& options, int64_t negatives, const std::string& which) {
  if (LossUsesHardK(options.name) && options.hard_k > negatives) {
    throw UserError("--hard_k " + std::to_string(options.hard_k) + " is more than the " + std::to_string(negatives) +
                    " negatives of each anchor (" + which + ").");
  }
}

void RunBankLoss(const LossOptions& options) {
  const BankInputs in = ReadBankInputs();
  const int64_t negatives = in.bank.size(0) - 1;
  CheckHardK(options, negatives, "the rows of --bank " + FLAGS_bank + " but its positive");
  const LossAnalysis result = AnchorsVsBankLoss(in.anchors, in.bank, in.positives, options);
  PrintLoss({{"anchors", in.anchors.size(0)}, {"bank", in.bank.size(0)}, {"negatives_per_anchor", negatives}},
            options, result);
}

void RunLoss() {
  const bool bank_form = !FLAGS_anchors.empty() || !FLAGS_bank.empty() || !FLAGS_positives.empty();
  if (bank_form && !FLAGS_views.empty()) {
    throw UserError("--views and --anchors/--bank/--positives are two forms of `loss`; give one of them.");
  }
  const LossOptions options = ParseLossOptions();
  if (bank_form) {
    RunBankLoss(options);
  } else {
    const auto [a, b] = ReadViews();
    const int64_t negatives = 2 * a.size(0) - 2;
    CheckHardK(options, negatives, "2N - 2 for N rows in each of --views " + FLAGS_views);
    PrintLoss({{"anchors", 2 * a.size(0)}, {"negatives_per_anchor", negatives}}, options,
              SymmetricViewsLoss(a, b, options));
  }
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
  torch::Tensor embeddings = ReadEmbeddings(FLAGS_embeddings, 2);
  torch::Tensor labels = ReadNpyLabels(FLAGS_labels, embeddings.size(0));
  if (FLAGS_rows < 0 || FLAGS_rows == 1 || FLAGS_rows > embeddings.size(0)) {
    throw UserError("--rows " + std::to_string(FLAGS_rows) + " must be 0 (all) or in [2, " +
                    std::to_string(embeddings.size(0)) + "], the rows of " + FLAGS_embeddings + ".");
  }
  if (FLAGS_rows > 0) {  // the trainer's metric sample: StratifiedSample is a function of the labels alone
    const torch::Tensor rows = torch::tensor(StratifiedSample(labels, FLAGS_rows), torch::kInt64);
    embeddings = embeddings.index_select(0, rows);
    labels = labels.index_select(0, rows);
  }
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
