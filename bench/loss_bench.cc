// loss_memory and loss_time: the streaming loss (trainer/loss/streaming_loss.h) against the naive one
// (ContrastiveLoss: materialised (n, C) logits, LibTorch autograd), side by side in one run, d = 128, fwd + bwd with
// respect to anchors and candidates.
//
//   loss_bench [--quick] [--device cpu|cuda] [--threads N] [--malloc tuned|default] [--tile_scores S] [--out FILE]
//
// Time: Google Benchmark; naive and streaming alternate inside every iteration (the machine is shared, its load
// drifts), and the median over --repetitions of streaming / naive is the ratio. Peak memory: on CPU every case runs
// once in a fresh child process (this binary with --peak_case), which reports its peak resident set (VmHWM) minus its
// resident set just before the loss; on CUDA the caching allocator's peak allocated bytes over the same call. Both
// count everything the call allocates, gradients included, and not the inputs. --million adds the memory bank's
// 1M-candidate case (peak only). Ends with one line per target: TARGET <name> <measured ratio> <target> PASS|FAIL.
#include <benchmark/benchmark.h>
#include <gflags/gflags.h>
#include <torch/torch.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifdef TEMPERED_BENCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "trainer/loss/loss.h"
#include "trainer/loss/streaming_loss.h"
#include "trainer/train.h"

DEFINE_bool(quick, false, "a subset for CI and the GPU check (still the 4,096 x 65,536 memory case)");
DEFINE_string(device, "cpu", "cpu or cuda");
DEFINE_int32(threads, 0, "intra-op threads (0 = every core)");
DEFINE_string(malloc, "tuned", "tuned: keep freed memory in the heap, as tempered-train does; default: glibc's");
DEFINE_int64(tile_scores, 0, "anchors x candidates per tile of the streaming loss (0 = LossOptions' default)");
DEFINE_string(losses, "infonce,hard", "comma-separated losses to measure");
DEFINE_int32(repetitions, 5, "timed repetitions per case (the median is reported)");
DEFINE_string(out, "", "also write the summary table and the target lines to this file");
DEFINE_string(peak_case, "", "internal: measure the peak memory of one case in this process and print it");
DEFINE_bool(million, false, "also the memory bank's case: 512 anchors against 1,048,576 candidates without gradient, "
            "streaming only (its naive logits alone would take 2 GiB); TARGET loss_memory_1m: its peak in GiB");

namespace tempered {
namespace {

constexpr int64_t kDim = 128;
constexpr double kTau = 0.1;
constexpr double kHardFraction = 0.08;  // the paper's K / negatives (docs/paper.md §2)

struct Case {
  LossConfig::Name loss;
  int64_t anchors, candidates;  // B_local, C
  bool streaming;
  bool bank = false;  // the memory bank's form: streaming, candidates without gradient, no exclusion

  std::string Shape() const { return std::to_string(anchors) + "x" + std::to_string(candidates); }
  std::string Key() const { return LossName() + "/" + Shape(); }  // the naive and streaming pair
  std::string LossName() const {
    std::string name = LossConfig::Name_Name(loss);
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    return name;
  }
  std::string Name() const { return Key() + (bank ? "/bank" : streaming ? "/streaming" : "/naive"); }
};

Case ParseCase(const std::string& name) {  // inverse of Case::Name
  std::string loss, shape, impl;
  std::istringstream in(name);
  std::getline(in, loss, '/');
  std::getline(in, shape, '/');
  std::getline(in, impl);
  std::transform(loss.begin(), loss.end(), loss.begin(), ::toupper);
  Case c{};
  if (!LossConfig::Name_Parse(loss, &c.loss)) throw std::runtime_error("unknown loss in case " + name);
  c.anchors = std::stoll(shape.substr(0, shape.find('x')));
  c.candidates = std::stoll(shape.substr(shape.find('x') + 1));
  c.bank = impl == "bank";
  c.streaming = impl == "streaming" || c.bank;
  return c;
}

torch::Device Device() { return FLAGS_device == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU); }

void Synchronize() {
  if (Device().is_cuda()) torch::cuda::synchronize();
}

// One rank's view of the batch form: anchor i is candidate i of the gathered set (excluded), its positive is
// candidate i + B_local (the other view).
struct Inputs {
  torch::Tensor anchors, candidates, positive, exclude;  // (n, d) and (C, d) leaves; (n) and (n) int64
  LossOptions options;
};

Inputs MakeInputs(const Case& c) {
  torch::manual_seed(0);
  auto unit = [](int64_t rows) {
    return torch::nn::functional::normalize(torch::randn({rows, kDim}),
                                            torch::nn::functional::NormalizeFuncOptions().dim(1));
  };
  Inputs in;
  in.anchors = unit(c.anchors).to(Device()).requires_grad_(true);
  in.candidates = unit(c.candidates).to(Device()).requires_grad_(!c.bank);
  const auto index = torch::TensorOptions(torch::kLong).device(Device());
  in.exclude = torch::arange(c.anchors, index);
  in.positive = (in.exclude + c.anchors).remainder(c.candidates);
  if (c.bank) in.exclude.fill_(-1);  // an anchor's positive is its own entry; nothing else is left out
  in.options.name = c.loss;
  in.options.tau = kTau;
  LossConfig config;
  config.set_hard_fraction(kHardFraction);
  in.options.hard_k = HardK(config, c.candidates - 2);
  if (FLAGS_tile_scores > 0) in.options.tile_scores = FLAGS_tile_scores;
  return in;
}

void ForwardBackward(Inputs& in, bool streaming) {
  in.anchors.mutable_grad().reset();
  in.candidates.mutable_grad().reset();
  const auto loss_fn = streaming ? StreamingContrastiveLoss : ContrastiveLoss;
  loss_fn(in.anchors, in.candidates, in.positive, in.exclude, in.options).sum().backward();
  Synchronize();
}

// VmRSS / VmHWM of this process in bytes.
int64_t ProcStatusBytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;  // kB
  }
  throw std::runtime_error("no " + field + " in /proc/self/status");
}

// The child's side: peak bytes of one fwd + bwd above what the process held just before it.
int64_t PeakInThisProcess(const Case& c) {
  Inputs in = MakeInputs(c);
  {  // LibTorch's lazy initialisation (thread pool, kernels) outside the measurement, on a small problem
    Case small = c;
    small.anchors = std::min<int64_t>(c.anchors, 8);
    small.candidates = std::min<int64_t>(c.candidates, 64);
    Inputs warm = MakeInputs(small);
    ForwardBackward(warm, c.streaming);
  }
#ifdef TEMPERED_BENCH_CUDA
  if (Device().is_cuda()) {
    const auto device = Device().index() < 0 ? 0 : Device().index();
    c10::cuda::CUDACachingAllocator::emptyCache();
    c10::cuda::CUDACachingAllocator::resetPeakStats(device);
    const auto before = c10::cuda::CUDACachingAllocator::getDeviceStats(device).allocated_bytes[0].current;
    ForwardBackward(in, c.streaming);
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device).allocated_bytes[0].peak - before;
  }
#endif
  // Freed memory the tuned allocator keeps (the inputs' temporaries: 512 MiB at 1M candidates) would be reused
  // unseen by VmHWM: hand it back first. Then reset VmHWM to the current resident set (clear_refs 5, Linux >= 4.0),
  // so that the inputs' own creation peak does not count as the call's.
  malloc_trim(0);
  std::ofstream("/proc/self/clear_refs") << "5";
  const int64_t before = ProcStatusBytes("VmRSS");
  ForwardBackward(in, c.streaming);
  return ProcStatusBytes("VmHWM") - before;
}

// The parent's side: on CPU a fresh process per case, so that no earlier case's heap counts.
int64_t MeasurePeak(const Case& c) {
  if (Device().is_cuda()) return PeakInThisProcess(c);
  std::ostringstream command;
  command << "/proc/" << ::getpid() << "/exe --peak_case=" << c.Name() << " --threads=" << at::get_num_threads()
          << " --malloc=" << FLAGS_malloc << " --tile_scores=" << FLAGS_tile_scores << " --device=" << FLAGS_device;
  FILE* child = ::popen(command.str().c_str(), "r");
  if (child == nullptr) throw std::runtime_error("cannot run " + command.str());
  long long bytes = -1;
  const int fields = std::fscanf(child, "%lld", &bytes);
  if (::pclose(child) != 0 || fields != 1) throw std::runtime_error("failed: " + command.str());
  return bytes;
}

// Naive and streaming alternate within every iteration (which one goes first alternates too), so that both see the
// same load from the machine's other users; each repetition records both times and their ratio, and the summary
// takes the median over repetitions.
void TimePair(benchmark::State& state, const Case& c) {
  // Built and warmed up (allocator, thread pool, BLAS) once per case, not per repetition; ~35 MiB each.
  static std::map<std::string, Inputs> inputs;
  if (!inputs.count(c.Key())) {
    inputs[c.Key()] = MakeInputs(c);
    for (bool streaming : {false, true}) ForwardBackward(inputs[c.Key()], streaming);
  }
  Inputs& in = inputs[c.Key()];
  double seconds[2] = {0, 0};  // naive, streaming
  int64_t iteration = 0;
  for (auto _ : state) {
    for (int second = 0; second < 2; ++second) {
      const bool streaming = (iteration + second) % 2 == 1;
      const auto start = std::chrono::steady_clock::now();
      ForwardBackward(in, streaming);
      seconds[streaming] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    ++iteration;
  }
  state.counters["naive_ms"] = benchmark::Counter(seconds[0] * 1e3, benchmark::Counter::kAvgIterations);
  state.counters["streaming_ms"] = benchmark::Counter(seconds[1] * 1e3, benchmark::Counter::kAvgIterations);
  state.counters["ratio"] = seconds[1] / seconds[0];
  in.anchors.mutable_grad().reset();  // the gradients (C, d) are not kept between cases
  in.candidates.mutable_grad().reset();
}

void PeakCase(benchmark::State& state, const Case& c) {
  int64_t bytes = 0;
  for (auto _ : state) bytes = MeasurePeak(c);
  state.counters["peak_MiB"] = static_cast<double>(bytes) / (1 << 20);
}

// Collects the peak of every case and the medians of the paired times while printing the usual console report.
class Collector : public benchmark::ConsoleReporter {
 public:
  struct Times {
    double naive_ms, streaming_ms, ratio;
  };
  std::map<std::string, double> peak_mib;  // by Case::Name
  std::map<std::string, Times> times;      // by Case::Key

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      const std::string name = run.run_name.function_name;
      if (name.rfind("loss_memory/", 0) == 0) {
        peak_mib[name.substr(12)] = run.counters.at("peak_MiB").value;
      } else if (run.run_type == Run::RT_Aggregate && run.aggregate_name == "median") {
        times[name.substr(10)] = {run.counters.at("naive_ms").value, run.counters.at("streaming_ms").value,
                                  run.counters.at("ratio").value};
      }
    }
  }
};

using Shapes = std::vector<std::pair<int64_t, int64_t>>;  // (B_local, C)

const Shapes kAllShapes = {{256, 4096}, {256, 65536}, {1024, 16384}, {1024, 65536}, {4096, 16384}, {4096, 65536}};

// Every loss of --losses at every shape, naive and streaming.
std::vector<Case> Cases(const Shapes& shapes) {
  std::string loss_list = FLAGS_losses;
  if (FLAGS_quick && gflags::GetCommandLineFlagInfoOrDie("losses").is_default) loss_list = "infonce";
  std::vector<Case> cases;
  std::stringstream losses(loss_list);
  for (std::string name; std::getline(losses, name, ',');) {
    const LossConfig::Name loss = ParseCase(name + "/1x1/naive").loss;
    for (const auto& [n, columns] : shapes) {
      for (bool streaming : {false, true}) cases.push_back({loss, n, columns, streaming});
    }
  }
  return cases;
}

std::string Verdict(const std::string& name, double ratio, const std::string& op, double target) {
  const bool pass = op == ">=" ? ratio >= target : ratio <= target;
  char line[160];
  std::snprintf(line, sizeof(line), "TARGET %s %.2f %s%g %s", name.c_str(), ratio, op.c_str(), target,
                pass ? "PASS" : "FAIL");
  return line;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

// The table of every measured case (naive / streaming ratios) and the targets of bench/README.md, on infonce (the loss trained
// by default): peak memory at 4,096 x 65,536 and time at every measured shape (the worst ratio).
std::string Summary(Collector& collector, const std::string& load_before) {
  std::ostringstream out;
  out << "device " << FLAGS_device << ", " << at::get_num_threads() << " threads, malloc " << FLAGS_malloc
      << ", tile_scores " << (FLAGS_tile_scores > 0 ? FLAGS_tile_scores : LossOptions().tile_scores) << ", d " << kDim
      << ", tau " << kTau << ", hard K = " << kHardFraction << " x negatives; load average (1, 5, 15 min) before "
      << load_before << ", after " << LoadAverage() << "\n";
  char row[200];
  std::snprintf(row, sizeof(row), "%-24s %10s %10s %7s %10s %10s %7s\n", "case (B_local x C)", "naive ms", "stream ms",
                "ratio", "naive MiB", "stream MiB", "ratio");
  out << row;
  double worst_infonce_time = -1, infonce_memory = -1;
  for (const Case& c : Cases(kAllShapes)) {
    const std::string naive = c.Name(), streaming = c.Key() + "/streaming";
    const bool timed = collector.times.count(c.Key()) > 0, peaked = collector.peak_mib.count(naive) > 0;
    if (c.streaming || (!timed && !peaked)) continue;
    const Collector::Times t = timed ? collector.times[c.Key()] : Collector::Times{0, 0, 0};
    const double memory_ratio = peaked ? collector.peak_mib[naive] / collector.peak_mib[streaming] : 0;
    std::snprintf(row, sizeof(row), "%-24s %10.1f %10.1f %7.2f %10.0f %10.0f %7.1f\n", c.Key().c_str(), t.naive_ms,
                  t.streaming_ms, t.ratio, collector.peak_mib[naive], collector.peak_mib[streaming], memory_ratio);
    out << row;
    if (c.loss != LossConfig::INFONCE) continue;
    if (timed) worst_infonce_time = std::max(worst_infonce_time, t.ratio);
    if (peaked && c.Shape() == "4096x65536") infonce_memory = memory_ratio;
  }
  if (infonce_memory >= 0) out << Verdict("loss_memory", infonce_memory, ">=", 16) << "\n";
  const std::string million = "infonce/512x1048576/bank";
  if (collector.peak_mib.count(million)) {
    out << "memory bank case " << million << ": peak " << collector.peak_mib[million] << " MiB\n";
    out << Verdict("loss_memory_1m", collector.peak_mib[million] / 1024, "<=", 2.0) << "\n";
  }
  if (worst_infonce_time >= 0) out << Verdict("loss_time", worst_infonce_time, "<=", 1.0) << "\n";
  return out.str();
}

int Main(int argc, char** argv) {
  const std::string load_before = LoadAverage();
  at::set_num_threads(FLAGS_threads > 0 ? FLAGS_threads : static_cast<int>(std::thread::hardware_concurrency()));
  if (!FLAGS_peak_case.empty()) {
    std::printf("%lld\n", static_cast<long long>(PeakInThisProcess(ParseCase(FLAGS_peak_case))));
    return 0;
  }
  // --quick: the target's memory case, and time with the fewest (256) and the most (4,096) anchors per tile.
  const Shapes memory_shapes = FLAGS_quick ? Shapes{{4096, 65536}} : kAllShapes;
  const Shapes time_shapes = FLAGS_quick ? Shapes{{256, 65536}, {4096, 16384}} : kAllShapes;
  for (const Case& c : Cases(memory_shapes)) {
    benchmark::RegisterBenchmark(("loss_memory/" + c.Name()).c_str(), PeakCase, c)
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  }
  if (FLAGS_million) {
    const Case bank{LossConfig::INFONCE, 512, int64_t{1} << 20, /*streaming=*/true, /*bank=*/true};
    benchmark::RegisterBenchmark(("loss_memory/" + bank.Name()).c_str(), PeakCase, bank)
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  }
  for (const Case& c : Cases(time_shapes)) {
    if (c.streaming) continue;  // one pair per case
    benchmark::RegisterBenchmark(("loss_time/" + c.Key()).c_str(), TimePair, c)
        ->Repetitions(FLAGS_quick ? std::min(FLAGS_repetitions, 3) : FLAGS_repetitions)
        ->MinTime(FLAGS_quick ? 0.05 : 0.3)
        ->Unit(benchmark::kMillisecond);
  }
  Collector collector;
  benchmark::RunSpecifiedBenchmarks(&collector);
  const std::string summary = Summary(collector, load_before);
  std::printf("\n%s", summary.c_str());
  if (!FLAGS_out.empty()) std::ofstream(FLAGS_out) << summary;
  return 0;
}

}  // namespace
}  // namespace tempered

int main(int argc, char** argv) {
  // Cases and repetitions in random order: a drift in the machine's load does not fall on one case alone.
  std::vector<char*> args(argv, argv + argc);
  std::string interleave = "--benchmark_enable_random_interleaving=true";
  args.insert(args.begin() + 1, interleave.data());
  argc = static_cast<int>(args.size());
  argv = args.data();
  benchmark::Initialize(&argc, argv);  // takes the --benchmark_* flags (a later one wins), leaves ours
  gflags::ParseCommandLineFlags(&argc, &argv, /*remove_flags=*/true);
  if (FLAGS_malloc == "tuned") tempered::TuneAllocator();  // as tempered-train
  return tempered::Main(argc, argv);
}
